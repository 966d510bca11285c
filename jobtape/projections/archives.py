"""The archive's write: record an archive and remove its jobs' events and projection rows, in ONE batch.

:func:`record_archive` is the SQL side of :func:`jobtape.audit.retention.archive`: it
inserts the ``archives`` row and one ``archived_jobs`` row per job, then deletes the jobs'
events and their rows in every registered projection, all in one batch. The guards are in
SQL (migration ``0004_archives``): ``events_no_delete`` refuses a DELETE unless the job is
listed in ``archived_jobs`` up to that position, and ``archived_jobs_finished_only``
refuses a job that is not finished or gained events since the export (its
``last_position`` and ``event_count`` must still match the log).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from jobtape import clock
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import registry

__all__ = ["ARCHIVE_COLUMNS", "list_archives", "record_archive"]
#: Columns of ``archives`` in table order.
ARCHIVE_COLUMNS = ("archive_id", "archived_at", "archived_by", "cutoff", "file_name", "export_sha256", "job_count", "event_count")


def record_archive(
    store: EventStore,
    *,
    archive_id: str,
    actor: str,
    cutoff: dt.datetime,
    file_name: str,
    sha256: str,
    events_per_job: Mapping[str, int],
    projections: tuple[registry.Projection, ...] = registry.PROJECTIONS,
) -> None:
    """Record the archive and remove its jobs, in one batch.

    Args:
        store: the event store.
        archive_id: 32 hex digits, the ``archives`` row's id.
        actor: recorded in ``archives.archived_by``.
        cutoff: the archive's cutoff (aware UTC).
        file_name: the export file, as recorded.
        sha256: hex sha256 of the export file's bytes.
        events_per_job: job id -> the number of its events in the export file (each must
            still be the job's whole stream).
        projections: the registered projections (:attr:`registry.Tables.projections`): each
            one's rows go with the jobs, found by its :attr:`~registry.Projection.job_column`.

    Raises:
        ConstraintViolation: a job is not finished or changed since the export; nothing was removed.
    """
    last_positions = store.last_positions(events_per_job)
    statements = [
        Statement(
            f"INSERT INTO archives ({', '.join(ARCHIVE_COLUMNS)}) VALUES ({', '.join('?' * len(ARCHIVE_COLUMNS))})",
            (
                archive_id,
                clock.format_timestamp(clock.utcnow()),
                actor,
                clock.format_timestamp(cutoff),
                file_name,
                sha256,
                len(events_per_job),
                sum(events_per_job.values()),
            ),
        )
    ]
    statements += [
        Statement(
            "INSERT INTO archived_jobs (archive_id, job_id, last_position, event_count) VALUES (?, ?, ?, ?)",
            (archive_id, job_id, last_positions.get(job_id, 0), count),
        )
        for job_id, count in sorted(events_per_job.items())
    ]
    listed = "SELECT job_id FROM archived_jobs WHERE archive_id = ?"
    statements.append(Statement(f"DELETE FROM events WHERE job_id IN ({listed})", (archive_id,)))
    statements += [
        Statement(f"DELETE FROM {p.table} WHERE {p.job_column} IN ({listed})", (archive_id,))
        for p in projections
        if p.job_column is not None
    ]
    store.backend.execute_batch(statements)


def list_archives(store: EventStore) -> list[dict[str, object]]:
    """Every ``archives`` row, oldest first, as ``{column: value}`` dicts."""
    rows = store.backend.query(f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archives ORDER BY archived_at")
    return [dict(zip(ARCHIVE_COLUMNS, row, strict=True)) for row in rows]
