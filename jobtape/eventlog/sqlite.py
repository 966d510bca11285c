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

__all__ = ["SQLiteBackend"]

#: Same PRAGMAs for every connection (bench/lifecycle.py uses them for its baseline).
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


class SQLiteBackend(SQLBackend):
    """Runs event-store statements on a SQLite file.

    Each thread gets its own connection (sqlite3 connections are not shared across
    threads); ``":memory:"`` uses one shared connection behind a lock instead, since every
    connection to ``:memory:`` would be a different database.

    Args:
        path: the database file (created with its folder), or ``":memory:"``.
        busy_timeout_s: how long a writer waits for another writer's lock, in seconds.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.RLock()
        self._memory = self.path == ":memory:"
        self._shared: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
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
        """Run the statements in one ``BEGIN IMMEDIATE`` transaction; see :meth:`SQLBackend.execute_batch`."""
        with self._lock if self._memory else _NULL:
            conn = self._conn()
            results: list[list[tuple[Any, ...]]] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    results.append(conn.execute(sql, params).fetchall())
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK")
                raise ConstraintViolation(str(exc)) from exc
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return results

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


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()
