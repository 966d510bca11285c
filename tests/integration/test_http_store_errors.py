"""The event store's operational failures reach clients as named 5xx answers, never a 500.

A write lock held past the busy timeout is 503 with ``Retry-After``; a full disk under the
log is 507; neither leaves an event or a stored file behind (issue 9).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient

from jobtape import errors
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_librispeech.mp3"


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def post_upload(client: TestClient) -> object:
    return client.post("/api/audio/ingest", files={"file": ("speech.mp3", SPEECH.read_bytes(), "audio/mpeg")})


def test_a_locked_log_is_503_with_retry_after_and_nothing_is_kept(
    tmp_path: Path, hold_write_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "jobtape.db"
    backend = SQLiteBackend(path, busy_timeout_s=0.3)
    backend.migrate(TABLES.migrations)
    app = create_app(
        JobRepository(EventStore(backend), projections=TABLES.projections), LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path)
    )
    holder = hold_write_lock(path)
    with TestClient(app) as client:
        response = post_upload(client)
        assert response.status_code == 503, response.text  # type: ignore[attr-defined]
        assert int(response.headers["retry-after"]) >= 1  # type: ignore[attr-defined]
        assert set(response.json()) == {"error"} and str(tmp_path) not in response.text  # type: ignore[attr-defined]
        assert client.get("/api/audio/jobs/" + "0" * 32).status_code == 404  # reads still answer
    holder.communicate("", timeout=10)
    assert backend.query("SELECT COUNT(*) FROM events") == [(0,)]
    assert stored_files(tmp_path / "storage") == []
    backend.close()


def test_a_full_disk_under_the_log_is_507_and_nothing_is_kept(tmp_path: Path, mount_tmpfs: Callable[..., Path]) -> None:
    small_disk = mount_tmpfs(tmp_path / "small")
    backend = SQLiteBackend(small_disk / "jobtape.db", synchronous="NORMAL")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    for size in (100_000, 10_000, 1_000, 100, 10):  # fill the disk until not even a small job fits
        with pytest.raises(errors.StoreFull):
            while True:
                repository.create("ingest", {"padding": "x" * size}, owner="filler")  # not the uploader's quota
    events = backend.query("SELECT COUNT(*) FROM events")
    app = create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        response = post_upload(client)
        assert response.status_code == 507, response.text  # type: ignore[attr-defined]
        assert set(response.json()) == {"error"} and str(small_disk) not in response.text  # type: ignore[attr-defined]
    assert backend.query("SELECT COUNT(*) FROM events") == events
    assert stored_files(tmp_path / "storage") == []
    backend.close()
