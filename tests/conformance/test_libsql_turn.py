"""The libSQL write turn (``BEGIN IMMEDIATE`` and a read on one Hrana stream, then the batch and
``COMMIT``) releases its stream whatever happens between the read and the commit (a real sqld).

A stream left open keeps its transaction, and with it sqld's write lock, until the connection
ends: every other writer waits (sqld steals the lock only after 5 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqld_server import SqldServer

from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.store import Statement

__all__: list[str] = []


@pytest.fixture
def backends(sqld: SqldServer) -> Iterator[list[LibSQLBackend]]:
    opened: list[LibSQLBackend] = []
    yield opened
    for backend in opened:
        backend.close()


def _open(sqld: SqldServer, opened: list[LibSQLBackend], **options: Any) -> LibSQLBackend:
    backend = LibSQLBackend(sqld.ws_url, **options)
    opened.append(backend)
    return backend


def _other_writer(sqld: SqldServer, opened: list[LibSQLBackend]) -> LibSQLBackend:
    """A second client that gives up after 3 s (the turn's lock, if held, is stolen only after 5 s)."""
    other = _open(sqld, opened, timeout_s=3.0, busy_timeout_s=1.0)
    other.execute_batch([Statement("CREATE TABLE IF NOT EXISTS t (x INTEGER)")])
    return other


def test_a_batch_failing_before_its_commit_releases_the_write_turn(sqld: SqldServer, backends: list[LibSQLBackend]) -> None:
    """A statement whose parameters do not convert fails after the turn's read opened the
    transaction: the stream is closed at once, so another writer is not held up."""
    other = _other_writer(sqld, backends)
    backend = _open(sqld, backends)

    def build() -> list[Statement]:
        backend.query("SELECT COUNT(*) FROM t")  # opens the write turn: BEGIN IMMEDIATE on a stream
        return [Statement("INSERT INTO t VALUES (?)", 5)]  # type: ignore[arg-type]  # not a sequence

    with pytest.raises(TypeError):
        backend.execute_built(build)
    other.execute_batch([Statement("INSERT INTO t VALUES (2)")])  # before: timed out behind the open turn
    backend.execute_batch([Statement("INSERT INTO t VALUES (3)")])  # the backend itself goes on
    assert other.query("SELECT x FROM t ORDER BY x") == [(2,), (3,)]


def test_a_backend_closed_between_the_build_and_the_commit_ends_the_turn(sqld: SqldServer, backends: list[LibSQLBackend]) -> None:
    other = _other_writer(sqld, backends)
    backend = _open(sqld, backends)
    streams: list[Any] = []

    def build() -> list[Statement]:
        backend.query("SELECT COUNT(*) FROM t")
        streams.append(backend._turn.stream)  # the turn's stream, to see it closed
        backend.close()  # e.g. a shutdown from another thread, right now
        return [Statement("INSERT INTO t VALUES (1)")]

    with pytest.raises(RuntimeError, match="closed"):
        backend.execute_built(build)
    assert streams[0] is not None and streams[0].closed  # close() closed the turn's stream itself
    other.execute_batch([Statement("INSERT INTO t VALUES (2)")])
    assert other.query("SELECT x FROM t") == [(2,)]  # nothing of the closed backend's batch


def test_a_build_failing_after_the_backend_closed_raises_its_own_error(sqld: SqldServer, backends: list[LibSQLBackend]) -> None:
    other = _other_writer(sqld, backends)
    backend = _open(sqld, backends)

    def build() -> list[Statement]:
        backend.query("SELECT COUNT(*) FROM t")
        backend.close()
        raise ValueError("the build's own error")

    with pytest.raises(ValueError, match="the build's own error"):  # before: RuntimeError('Event loop is closed')
        backend.execute_built(build)
    other.execute_batch([Statement("INSERT INTO t VALUES (2)")])
    assert other.query("SELECT x FROM t") == [(2,)]
