"""The embedded SQLite backend of the event store (WAL, a busy timeout, one connection per thread)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from jobtape.eventlog import schema
from jobtape.eventlog.store import ConstraintViolation, SQLBackend, Statement

__all__ = ["PRAGMAS", "SYNCHRONOUS_MODES", "SQLiteBackend", "pragmas"]

#: ``PRAGMA synchronous`` values a backend accepts. FULL (the default) fsyncs the WAL at
#: every commit, so an append acknowledged to a client survives a power loss; NORMAL
#: fsyncs only at checkpoints (a crash of the process loses nothing, a power loss may lose
#: the last commits) and is several times faster per commit.
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def pragmas(synchronous: str = "FULL") -> tuple[str, ...]:
    """The PRAGMAs every connection runs (bench/lifecycle.py uses the same for its baseline).

    Raises:
        ValueError: ``synchronous`` is not one of :data:`SYNCHRONOUS_MODES`.
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}")
    return ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={synchronous}", "PRAGMA foreign_keys=ON")


#: The default PRAGMAs (``synchronous=FULL``).
PRAGMAS = pragmas()


class SQLiteBackend(SQLBackend):
    """Runs event-store statements on a SQLite file.

    Each thread gets its own connection (sqlite3 connections are not shared across
    threads); ``":memory:"`` uses one shared connection behind a lock instead, since every
    connection to ``:memory:`` would be a different database.

    Args:
        path: the database file (created with its folder), or ``":memory:"``.
        busy_timeout_s: how long a writer waits for another writer's lock, in seconds.
        synchronous: ``FULL`` (default: every acknowledged append is on disk) or ``NORMAL``;
            see :data:`SYNCHRONOUS_MODES`. Group commit shares one fsync between the
            appends that arrive together.

    Raises:
        ValueError: an unknown ``synchronous`` mode.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        self._pragmas = pragmas(synchronous)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._group_ready = threading.Condition(threading.Lock())
        self._leader_active = False
        self._queue: list[_Pending] = []
        #: Counters for benchmarks and tests: batches run, and the transactions that held them.
        self.batches_committed = 0
        self.transactions = 0
        self._memory = self.path == ":memory:"
        self._shared: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        for pragma in self._pragmas:
            conn.execute(pragma)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        with self._lock:
            self._all.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._memory:
            if self._shared is None:
                self._shared = self._connect()
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def execute_batch(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        """Run the statements atomically; see :meth:`SQLBackend.execute_batch`.

        Group commit: batches submitted by several threads at once share one transaction.
        The first thread to take the write lock becomes the leader and commits every batch
        queued so far, each inside its own SAVEPOINT, so a batch whose guard fails is rolled
        back alone while the others commit. Every caller returns only after the COMMIT that
        holds its batch, so durability and atomicity per batch are unchanged; the commit
        cost (the WAL write) is shared. A lone caller takes the plain one-transaction path.
        """
        if self._memory:
            with self._lock:
                return self._run_alone(self._conn(), statements)
        pending = _Pending(statements)
        with self._group_ready:
            self._queue.append(pending)
            while not pending.done and self._leader_active:
                self._group_ready.wait()
            if not pending.done:  # become the leader: take every batch queued so far
                self._leader_active = True
                group, self._queue = self._queue, []
        if not pending.done:
            try:
                self._commit_group(self._conn(), group)
            finally:
                with self._group_ready:
                    self._leader_active = False
                    self._group_ready.notify_all()
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return pending.results

    @staticmethod
    def _run_alone(conn: sqlite3.Connection, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [conn.execute(sql, params).fetchall() for sql, params in statements]
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise ConstraintViolation(str(exc)) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return results

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Pending]) -> None:
        self.transactions += 1
        self.batches_committed += len(group)
        try:
            if len(group) == 1:
                try:
                    group[0].results = self._run_alone(conn, group[0].statements)
                except BaseException as exc:  # handed to the caller's thread
                    group[0].error = exc
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in group:
                    conn.execute("SAVEPOINT batch")
                    try:
                        item.results = [conn.execute(sql, params).fetchall() for sql, params in item.statements]
                    except sqlite3.Error as exc:
                        conn.execute("ROLLBACK TO batch")
                        item.results = None
                        item.error = ConstraintViolation(str(exc)) if isinstance(exc, sqlite3.IntegrityError) else exc
                        if item.error is not exc:
                            item.error.__cause__ = exc
                    conn.execute("RELEASE batch")
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for item in group:
                    if item.error is None:
                        item.results, item.error = None, exc
        finally:
            for item in group:
                item.done = True

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read; see :meth:`SQLBackend.query`."""
        with self._lock if self._memory else _NULL:
            return self._conn().execute(sql, tuple(params)).fetchall()

    def migrate(self) -> list[str]:
        """Apply pending migrations with sqlite-utils; see :func:`jobtape.eventlog.schema.migrate`."""
        with self._lock:
            return schema.migrate(sqlite_utils.Database(self._conn()))

    def close(self) -> None:
        """Close every connection this backend opened."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._shared = None
            self._local = threading.local()


class _Pending:
    """One caller's batch waiting for (or done by) a group commit."""

    __slots__ = ("done", "error", "results", "statements")

    def __init__(self, statements: Sequence[Statement]) -> None:
        self.statements = statements
        self.results: list[list[tuple[Any, ...]]] | None = None
        self.error: BaseException | None = None
        self.done = False


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()
