"""Shared fixtures: real SQLite event stores in temp folders, local storage, the media folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository

MEDIA = Path(__file__).resolve().parent.parent / "media"


@pytest.fixture
def media_dir() -> Path:
    """The folder of real recordings shipped with the repo (see media/SOURCES.md)."""
    return MEDIA


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """A migrated event store on a fresh SQLite file."""
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate()
    event_store = EventStore(backend)
    yield event_store
    event_store.close()


@pytest.fixture
def repository(store: EventStore) -> JobRepository:
    """A job repository over :func:`store`."""
    return JobRepository(store)
