"""Factories that open the configured backends (the composition root's building blocks)."""

from __future__ import annotations

from collections.abc import Callable

from jobtape.config import Settings
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import AppendResult, JobRepository

__all__ = ["open_repository", "open_store"]


def open_store(settings: Settings) -> EventStore:
    """Open (and migrate) the event store the settings name: the embedded SQLite file."""
    backend = SQLiteBackend(settings.database_path)
    backend.migrate()
    return EventStore(backend)


def open_repository(settings: Settings, on_append: Callable[[AppendResult], None] | None = None) -> JobRepository:
    """Open the event store and wrap it in a :class:`JobRepository`."""
    return JobRepository(open_store(settings), on_append=on_append)
