"""The libSQL backend waits out a locked database like SQLite's busy timeout (a real sqld).

The write lock is held by a plain SQLite connection on sqld's own database file
(``<db-path>/dbs/default/data``, WAL mode) in ``BEGIN IMMEDIATE``: it writes nothing, and
sqld, which cannot steal a lock it does not manage, answers a write made meanwhile with
``SQLITE_BUSY`` after about 0.1 s, every time. (A lock held through sqld itself, an
interactive Hrana transaction, is stolen by sqld after 5 s instead.) Before the busy wait
the append below raised :class:`errors.StoreBusy` at once: the soak's 503s.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import libsql
from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.store import EventStore

__all__: list[str] = []


class _Retries(logging.Handler):
    """Records the names of the threads whose call the backend retried because the database was locked."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.threads: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if "locked by another writer" in record.getMessage():
            self.threads.add(record.threadName or "")


@pytest.fixture
def retries() -> Iterator[_Retries]:
    handler = _Retries()
    logger = logging.getLogger(libsql.__name__)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def write_lock(sqld: SqldServer) -> Iterator[sqlite3.Connection]:
    """A connection on sqld's database file, in a transaction holding the write lock; rolled back at the end."""
    path = sqld.data_dir / "dbs" / "default" / "data"
    assert path.is_file(), f"sqld keeps its database elsewhere: {sorted(map(str, sqld.data_dir.rglob('*')))}"
    holder = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def _store(sqld: SqldServer, busy_timeout_s: float) -> EventStore:
    backend = LibSQLBackend(sqld.ws_url, busy_timeout_s=busy_timeout_s)
    backend.migrate(TABLES.migrations)
    return EventStore(backend)


@pytest.fixture
def stores(sqld: SqldServer) -> Iterator[list[EventStore]]:
    opened: list[EventStore] = []
    yield opened
    for store in opened:
        store.close()


class _Append(threading.Thread):
    """``store.append(job_id, [JobCreated], 0)`` in a thread of its own; ``result`` or ``error`` when done."""

    def __init__(self, store: EventStore, job_id: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.store = store
        self.job_id = job_id
        self.result: list[ev.RecordedEvent] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.store.append(self.job_id, [ev.JobCreated(job_type="ingest")], 0, actor=self.name)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_an_append_waits_for_the_write_lock_and_succeeds_once_it_is_released(
    sqld: SqldServer, stores: list[EventStore], write_lock: sqlite3.Connection, retries: _Retries
) -> None:
    store = _store(sqld, busy_timeout_s=60.0)
    stores.append(store)
    write_lock.execute("BEGIN IMMEDIATE")
    append = _Append(store, "j1", "appender")
    append.start()

    # sqld answers SQLITE_BUSY; the backend retries instead of raising StoreBusy
    wait_for(lambda: "appender" in retries.threads or not append.is_alive(), timeout_s=30, what="a busy retry")
    assert append.error is None, f"the append failed while the lock was held: {append.error!r}"
    assert append.is_alive()
    assert store.read_stream("j1") == []  # a read is not blocked, and nothing is written yet

    write_lock.execute("ROLLBACK")
    append.join(30)
    assert not append.is_alive()
    assert append.error is None, append.error
    assert append.result is not None
    assert [(e.version, e.event) for e in store.read_stream("j1")] == [(1, ev.JobCreated(job_type="ingest"))]
    assert store.read_stream("j1")[0].position == append.result[0].position


def test_an_append_still_locked_at_the_busy_timeout_raises_store_busy_and_writes_nothing(
    sqld: SqldServer, stores: list[EventStore], write_lock: sqlite3.Connection, retries: _Retries
) -> None:
    busy_timeout_s = 0.5
    store = _store(sqld, busy_timeout_s=busy_timeout_s)
    stores.append(store)
    write_lock.execute("BEGIN IMMEDIATE")

    started = time.monotonic()
    with pytest.raises(errors.StoreBusy) as raised:
        store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    waited_s = time.monotonic() - started

    assert raised.value.in_doubt is False
    assert retries.threads  # it was retried, not given up on sqld's first answer
    assert waited_s >= busy_timeout_s * 0.8, f"gave up after {waited_s:.3f} s"
    assert waited_s < busy_timeout_s + 5.0
    write_lock.execute("ROLLBACK")
    assert store.read_stream("j1") == []  # nothing of a refused batch was written
    assert store.head_position() == 0


def test_two_appends_retried_for_the_same_version_one_wins_one_gets_a_concurrency_error(
    sqld: SqldServer, stores: list[EventStore], write_lock: sqlite3.Connection, retries: _Retries
) -> None:
    # two processes' backends; the version guard stays in SQL across the retries
    first, second = _store(sqld, busy_timeout_s=60.0), _store(sqld, busy_timeout_s=60.0)
    stores.extend((first, second))
    write_lock.execute("BEGIN IMMEDIATE")
    appends = [_Append(first, "j1", "first"), _Append(second, "j1", "second")]
    for append in appends:
        append.start()

    wait_for(
        lambda: {"first", "second"} <= retries.threads or not all(a.is_alive() for a in appends), timeout_s=30, what="both appends retrying"
    )
    assert [a.error for a in appends] == [None, None]
    assert all(a.is_alive() for a in appends)

    write_lock.execute("ROLLBACK")
    for append in appends:
        append.join(30)
        assert not append.is_alive()
    outcomes = sorted((a.result is not None, type(a.error).__name__) for a in appends)
    assert outcomes == [(False, "ConcurrencyError"), (True, "NoneType")], [a.error for a in appends]
    assert len(first.read_stream("j1")) == 1
