"""The registered projections: every table folded from the log, written in each append's batch.

A :class:`Projection` turns one transition of a job's state (``before`` -> ``after``, both
from the pure fold) into SQL statements on its table. :class:`JobRepository` runs the
statements of every projection in :data:`PROJECTIONS` in the same batch as the events,
and :func:`jobtape.projections.rebuild.rebuild` runs them with ``before=None`` over the
final state of every stream into scratch tables to verify or repair each projection.

Order matters: ``jobs`` comes first, because its update reads ``last_insert_rowid()``
(the batch's last event insert) and any later insert would move it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from jobtape.eventlog.store import Statement
from jobtape.projections import assets, jobs, previews
from jobtape.projections.state import JobState

__all__ = ["ASSETS", "JOBS", "PREVIEWS", "PROJECTIONS", "Projection", "statements_for"]


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
    """

    table: str
    columns: tuple[str, ...]
    statements: Callable[[JobState | None, JobState, str], list[Statement]]
    decoders: Mapping[str, Callable[[Any], Any]] = MappingProxyType({})

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
#: ``assets``: one row per prepared asset.
ASSETS = Projection(assets.TABLE, assets.COLUMNS, assets.statements)
#: ``previews``: the preview cache, recipe hash -> rendering job.
PREVIEWS = Projection(previews.TABLE, previews.COLUMNS, previews.statements)
#: Every projection, ``jobs`` first (see the module docstring).
PROJECTIONS: tuple[Projection, ...] = (JOBS, ASSETS, PREVIEWS)


def statements_for(
    before: JobState | None, after: JobState, projections: tuple[Projection, ...] = PROJECTIONS
) -> list[Statement]:
    """The statements of every projection for one append, in registry order."""
    return [statement for projection in projections for statement in projection.statements(before, after, projection.table)]
