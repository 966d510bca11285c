"""The registered projections: every table folded from the log, written in each append's batch.

A :class:`Projection` turns one transition of a job's state (``before`` -> ``after``, both
from the pure fold) into SQL statements on its table. :class:`JobRepository` runs the
statements of every registered projection in the same batch as the events, and
:func:`jobtape.projections.rebuild.rebuild` runs them with ``before=None`` over the
final state of every stream into scratch tables to verify or repair each projection.

The engine has three projections, :data:`JOBS`, :data:`QUEUE` (queue position in O(log n))
and :data:`KEYS` (``api_keys``, folded from the key streams rather than the jobs':
:attr:`Projection.key_statements`). A package (the audio jobs: ``jobtape.audio``)
registers its own on an :class:`jobtape.App` (``app.projection(...)``, ``app.migration(...)``);
:class:`Tables` is what a log opened for that app has: the engine's migrations and
projections followed by the package's. Every tool that writes or rebuilds projections
(the repository, ``rebuild``, ``archive``, ``import``) takes a :class:`Tables`.

Order matters: ``jobs`` comes first, because its update reads ``last_insert_rowid()``
(the batch's last event insert) and any later insert into a rowid table would move it
(``queue_counts`` is ``WITHOUT ROWID``: its inserts do not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from jobtape.eventlog import schema
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import jobs, keys, queue
from jobtape.projections.key_state import KeyState
from jobtape.projections.state import JobState

__all__ = ["ENGINE_TABLES", "JOBS", "KEYS", "PROJECTIONS", "QUEUE", "Projection", "Tables", "statements_for"]


class Projection(NamedTuple):
    """One projection table.

    Attributes:
        table: the live table's name.
        columns: its columns in table order; the first is the row key.
        statements: ``statements(before, after, table)`` -> the SQL an append from
            ``before`` (``None`` for a new or re-folded stream) to ``after`` runs on
            ``table`` (the live table, or a rebuild's scratch copy).
        decoders: column -> decoder, for columns holding an encoded value (``jobs.state``'s
            JSON snapshot): a rebuild compares those decoded, so a snapshot written before
            a field with a default was added means the same as one written after.
        job_column: the column naming the job a row was folded from; an archive deletes
            the rows of the jobs it removes by it. ``None``: rows are not per job and hold
            nothing of a finished job (``queue_counts`` counts pending jobs only), so an
            archive, which removes finished jobs only, leaves the table alone.
        blob_holder: ``blob_holder(store, key)`` -> the id of the job whose row still
            refers to storage ``key`` (a cache shared between jobs), or ``None``; an archive
            keeps a key another job's row still holds. ``None``: rows hold no shared keys.
    """

    table: str
    columns: tuple[str, ...]
    statements: Callable[[JobState | None, JobState, str], list[Statement]]
    decoders: Mapping[str, Callable[[Any], Any]] = MappingProxyType({})
    job_column: str | None = "job_id"
    blob_holder: Callable[[EventStore, str], str | None] | None = None
    key_statements: Callable[[KeyState | None, KeyState, str], list[Statement]] | None = None

    @property
    def key(self) -> str:
        """The row-key column."""
        return self.columns[0]


def _jobs_statements(before: JobState | None, after: JobState, table: str) -> list[Statement]:
    if before is None or table != "jobs":  # jobs.update targets the live table only
        return [jobs.upsert(after, table=table)]
    return [jobs.update(before, after)]


#: ``jobs``: one row per job (status, stage, progress, the state snapshot).
JOBS = Projection("jobs", jobs.COLUMNS, _jobs_statements, MappingProxyType({"state": jobs.decode_state}))
#: ``queue_counts``: pending jobs counted by blocks of ``created_position`` (:mod:`jobtape.projections.queue`).
QUEUE = Projection(queue.TABLE, queue.COLUMNS, queue.statements, job_column=None)


def _no_job_rows(before: JobState | None, after: JobState, table: str) -> list[Statement]:
    return []


#: ``api_keys``: one row per API key, folded from the key streams (:mod:`jobtape.projections.keys`);
#: a job's append writes nothing there, and an archive (which removes jobs only) leaves it alone.
KEYS = Projection(keys.TABLE, keys.COLUMNS, _no_job_rows, job_column=None, key_statements=keys.statements)
#: The engine's projections (``jobs`` first, see the module docstring); packages add theirs after them.
PROJECTIONS: tuple[Projection, ...] = (JOBS, QUEUE, KEYS)


@dataclasses.dataclass(frozen=True)
class Tables:
    """The tables of a log: the migrations that create them and the projections that write them.

    Attributes:
        migrations: applied in order when the log is opened (the engine's first).
        projections: written in each append's batch, in order (``jobs`` first).
    """

    migrations: tuple[schema.Migration, ...] = tuple(schema.MIGRATIONS)
    projections: tuple[Projection, ...] = PROJECTIONS

    def extended(self, *, migrations: tuple[schema.Migration, ...] = (), projections: tuple[Projection, ...] = ()) -> Tables:
        """These tables followed by more.

        Raises:
            ValueError: a migration name or a projection table is taken already.
        """
        names = [m.name for m in (*self.migrations, *migrations)]
        tables = [p.table for p in (*self.projections, *projections)]
        for kind, found in (("migration", names), ("projection table", tables)):
            taken = sorted({item for item in found if found.count(item) > 1})
            if taken:
                raise ValueError(f"{kind} {', '.join(taken)} is registered twice")
        return Tables((*self.migrations, *migrations), (*self.projections, *projections))


#: The engine's own tables (a log opened without any package).
ENGINE_TABLES = Tables()


def statements_for(before: JobState | None, after: JobState, projections: tuple[Projection, ...] = PROJECTIONS) -> list[Statement]:
    """The statements of every projection for one append, in registry order."""
    return [statement for projection in projections for statement in projection.statements(before, after, projection.table)]
