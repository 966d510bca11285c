"""The SQLite backend's resources stay bounded, its files are private, and its operational errors are named.

Issue 9: a worker runs every job in a new thread; one connection per thread grew by one
connection (two fds) per job until the process ran out of file descriptors.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import errors
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections.repository import JobRepository
from jobtape.storage.local import LocalStorage


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_and_fds_stay_flat_however_many_job_threads_ran(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "jobtape.db", synchronous="NORMAL")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    storage = LocalStorage(tmp_path / "storage")
    worker = Worker(
        repository,
        storage,
        Settings(data_dir=tmp_path, concurrency=4, poll_interval_s=0.01),
        handlers={"ingest": lambda context, storage_, settings: {}},
    )

    def run(jobs: int) -> None:
        for _ in range(jobs):
            repository.create("ingest", {})
        worker.run(until_idle=True)

    run(50)  # warm-up: the pool fills to the calls that ran at once
    fds, connections = open_fds(), backend.open_connections
    run(300)
    assert worker.finished_count == 350
    assert backend.open_connections <= max(connections, backend.max_idle_connections)
    assert open_fds() - fds <= 2 * backend.max_idle_connections  # a connection holds the db and the WAL
    backend.close()
    assert backend.open_connections == 0


def test_many_threads_share_a_bounded_pool(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "x.db", max_idle_connections=2)
    backend.migrate(TABLES.migrations)
    barrier = threading.Barrier(6)

    def read() -> None:
        barrier.wait(10)
        for _ in range(20):
            backend.query("SELECT COUNT(*) FROM events")

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert backend.open_connections <= 2
    backend.close()


def test_a_new_log_and_its_folder_are_private(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "data" / "jobtape.db")
    backend.migrate(TABLES.migrations)
    JobRepository(EventStore(backend), projections=TABLES.projections).create("ingest", {})
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for name in ("jobtape.db", "jobtape.db-wal", "jobtape.db-shm"):
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600, name
    backend.close()


def test_a_write_lock_held_past_the_busy_timeout_is_store_busy_and_writes_nothing(
    tmp_path: Path, hold_write_lock: Callable[[Path], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "jobtape.db"
    backend = SQLiteBackend(path, busy_timeout_s=0.2)
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    holder = hold_write_lock(path)  # another process holds the write lock (e.g. `jobtape import`)
    with pytest.raises(errors.StoreBusy) as raised:
        repository.create("ingest", {})
    assert raised.value.retry_after_s >= 1 and str(path) not in raised.value.message
    assert isinstance(raised.value, errors.StoreUnavailable)  # workers back off as for any outage
    holder.communicate("", timeout=10)
    assert backend.query("SELECT COUNT(*) FROM events") == [(0,)]
    repository.create("ingest", {})  # the lock is gone: the next append lands
    backend.close()


def test_a_full_disk_is_store_full_and_the_batch_is_not_half_written(tmp_path: Path, mount_tmpfs: Callable[..., Path]) -> None:
    small_disk = mount_tmpfs(tmp_path / "small")
    backend = SQLiteBackend(small_disk / "jobtape.db", synchronous="NORMAL")
    backend.migrate(TABLES.migrations)
    store = EventStore(backend)
    repository = JobRepository(store, projections=TABLES.projections)
    big = "x" * 200_000
    created = 0
    with pytest.raises(errors.StoreFull) as raised:
        for _ in range(50):
            repository.create("ingest", {"padding": big})
            created += 1
    assert created >= 1 and str(small_disk) not in raised.value.message
    assert backend.query("SELECT COUNT(*) FROM events") == [(created,)]
    assert backend.query("SELECT COUNT(*) FROM jobs") == [(created,)]
    backend.close()


def test_other_operational_errors_are_translated_or_passed_on() -> None:
    from jobtape.eventlog.sqlite import translate_operational_error

    assert isinstance(translate_operational_error(sqlite3.OperationalError("disk I/O error")), errors.StoreUnavailable)
    assert isinstance(translate_operational_error(sqlite3.OperationalError("database or disk is full")), errors.StoreFull)
    syntax = sqlite3.OperationalError('near "SELEC": syntax error')
    assert translate_operational_error(syntax) is syntax  # a bug stays a bug


def test_statement_errors_inside_a_group_commit_do_not_poison_other_batches(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "g.db")
    backend.migrate(TABLES.migrations)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def write(i: int) -> None:
        barrier.wait(10)
        try:
            backend.execute_batch(
                [Statement("INSERT INTO _jobtape_migrations (name, applied_at) VALUES (?, 'x')", ("dup" if i % 2 else f"n{i}",))]
            )
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("ok") == 5 and outcomes.count("ConstraintViolation") == 3
    backend.close()


def test_processes_that_start_together_on_a_new_file_migrate_it_once(tmp_path: Path) -> None:
    # serve and two workers started at once on a new data dir: one raced the others'
    # CREATE TABLE and died with "table events already exists".
    path = tmp_path / "jobtape.db"
    barrier = threading.Barrier(6)
    applied: list[list[str]] = []
    failures: list[BaseException] = []

    def start() -> None:
        backend = SQLiteBackend(path)
        barrier.wait(10)
        try:
            applied.append(backend.migrate(TABLES.migrations))
        except BaseException as exc:
            failures.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    names = [migration.name for migration in TABLES.migrations]
    assert sorted(name for names_applied in applied for name in names_applied) == sorted(names)


def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    from freezegun import freeze_time

    with freeze_time("2026-11-30 12:00:00") as frozen:
        backend = SQLiteBackend(tmp_path / "idle.db", idle_timeout_s=10)
        backend.migrate(TABLES.migrations)
        with backend._connection(), backend._connection(), backend._connection():  # three calls at once
            pass
        assert backend.open_connections == 3
        frozen.tick(5)
        backend.query("SELECT 1")
        assert backend.open_connections == 3  # not idle long enough
        frozen.tick(6)
        backend.query("SELECT 1")  # the next call closes the connections idle past the timeout
        assert backend.open_connections == 1
        backend.close()
