"""Shared fixtures: real SQLite event stores in temp folders, local storage, the media folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository

MEDIA = Path(__file__).resolve().parent.parent / "media"


@pytest.fixture
def media_dir() -> Path:
    """The folder of real recordings shipped with the repo (see media/SOURCES.md)."""
    return MEDIA


@pytest.fixture
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """A migrated event store on a fresh SQLite file.

    After the test, the projections must equal a rebuild from the log (every scenario of
    the suite checks that the projections written with each append match the fold), unless
    the test is marked ``raw_log`` (it writes the log or projection rows directly).
    """
    from jobtape.projections.rebuild import rebuild

    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    event_store = EventStore(backend)
    yield event_store
    try:
        if request.node.get_closest_marker("raw_log") is None and backend.query("SELECT name FROM sqlite_master WHERE name = 'jobs'"):
            differences = rebuild(event_store, apply_changes=False, tables=TABLES).differences
            assert differences == [], f"projections differ from a rebuild of the log: {differences[:3]}"
    finally:
        event_store.close()


@pytest.fixture
def repository(store: EventStore) -> JobRepository:
    """A job repository over :func:`store`, writing the default app's projections."""
    return JobRepository(store, projections=TABLES.projections)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API over HTTP: moto's standalone server on 127.0.0.1 and a free port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint: str, request: pytest.FixtureRequest) -> Any:
    """An ``S3Storage`` on a fresh bucket of the moto server (credentials are moto's dummies)."""
    import uuid

    from jobtape.storage.s3 import S3Storage

    bucket = f"jobtape-{uuid.uuid4().hex[:12]}"
    made = S3Storage(
        bucket,
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        multipart_threshold_bytes=5 * 1024 * 1024,
        multipart_chunk_bytes=5 * 1024 * 1024,
    )
    made.client.create_bucket(Bucket=bucket)
    return made


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs at a folder, ``mount_tmpfs(folder, size="1m")``: a disk that fills up.

    Needs root (the tests run as root, locally and in CI: with ``CI=true`` a mount failure
    fails the test). Every mount is lazily unmounted after the test.
    """
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        if os.geteuid() != 0 and os.environ.get("CI") != "true":
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def hold_write_lock() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Start another process that holds a SQLite file's write lock (``BEGIN IMMEDIATE``), ``hold_write_lock(path)``.

    Returns once the lock is held; the lock is released when the test ends, or earlier
    with ``process.communicate("")``.
    """
    holders: list[subprocess.Popen[str]] = []
    script = (
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE');"
        " print('locked', flush=True); sys.stdin.read()"
    )

    def hold(path: Path) -> subprocess.Popen[str]:
        holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        return holder

    yield hold
    for holder in holders:
        if holder.poll() is None:
            holder.communicate("", timeout=10)
