"""The event store's operational failures reach clients as named 5xx answers, never a 500.

A write lock held past the busy timeout is 503 with ``Retry-After``; a full disk under the
log is 507; neither leaves an event or a stored file behind (issue 9).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from jobtape import errors
from jobtape.config import Settings
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.http import create_app
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_librispeech.mp3"


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def post_upload(client: TestClient) -> object:
    return client.post("/api/audio/ingest", files={"file": ("speech.mp3", SPEECH.read_bytes(), "audio/mpeg")})


def test_a_locked_log_is_503_with_retry_after_and_nothing_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "jobtape.db"
    backend = SQLiteBackend(path, busy_timeout_s=0.3)
    backend.migrate()
    app = create_app(JobRepository(EventStore(backend)), LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE');"
         " print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with TestClient(app) as client:
            response = post_upload(client)
            assert response.status_code == 503, response.text  # type: ignore[attr-defined]
            assert int(response.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
            assert set(response.json()) == {"error"} and str(tmp_path) not in response.text  # type: ignore[attr-defined]
            assert client.get("/api/audio/jobs/" + "0" * 32).status_code == 404  # reads still answer
    finally:
        holder.communicate("", timeout=10)
    assert backend.query("SELECT COUNT(*) FROM events") == [(0,)]
    assert stored_files(tmp_path / "storage") == []
    backend.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the test runs as root, locally and in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_under_the_log_is_507_and_nothing_is_kept(tmp_path: Path, small_disk: Path) -> None:
    backend = SQLiteBackend(small_disk / "jobtape.db", synchronous="NORMAL")
    backend.migrate()
    repository = JobRepository(EventStore(backend))
    for size in (100_000, 10_000, 1_000, 100, 10):  # fill the disk until not even a small job fits
        with pytest.raises(errors.StoreFull):
            while True:
                repository.create("ingest", {"padding": "x" * size})
    events = backend.query("SELECT COUNT(*) FROM events")
    app = create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        response = post_upload(client)
        assert response.status_code == 507, response.text  # type: ignore[attr-defined]
        assert set(response.json()) == {"error"} and str(small_disk) not in response.text  # type: ignore[attr-defined]
    assert backend.query("SELECT COUNT(*) FROM events") == events
    assert stored_files(tmp_path / "storage") == []
    backend.close()
