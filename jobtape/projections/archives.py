"""The archive's write: record an archive and remove its jobs' events and projection rows, in ONE batch.

:func:`record_archive` is the SQL side of :func:`jobtape.audit.retention.archive`: it
inserts the ``archives`` row and one ``archived_jobs`` row per job, then deletes the jobs'
events and their rows in every registered projection, all in one batch. The guards are in
SQL (migration ``0004_archives``): ``events_no_delete`` refuses a DELETE unless the job is
listed in ``archived_jobs`` up to that position, and ``archived_jobs_finished_only``
refuses a job that is not finished or gained events since the export (its
``last_position`` and ``event_count`` must still match the log).

The ``archives`` row is the keyed archive record (migration ``0012_log_chain``): it
carries the positions and keyed chain values of the events it removes (``removed``, what
verify needs to bridge the whole-log chain across them), the key id and a MAC under the
log key over the row, its ``archived_jobs`` rows and ``removed``
(:func:`archive_signed_fields`). ``events_no_delete`` lets a DELETE through only for an
archive row with a MAC; verify recomputes the MAC and names forged rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping

from jobtape import clock, errors
from jobtape.eventlog import hashing
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import registry

__all__ = [
    "ARCHIVE_COLUMNS",
    "ArchiveRecord",
    "UpgradeRecord",
    "archive_records",
    "archive_signed_fields",
    "list_archives",
    "record_archive",
    "upgrade_records",
]
#: Columns of ``archives`` in table order.
ARCHIVE_COLUMNS = ("archive_id", "archived_at", "archived_by", "cutoff", "file_name", "export_sha256", "job_count", "event_count")


@dataclasses.dataclass(frozen=True)
class ArchiveRecord:
    """One ``archives`` row with its ``archived_jobs`` rows, as verify checks it.

    Attributes:
        row: the values of :data:`ARCHIVE_COLUMNS`, in order.
        jobs: ``(job_id, last_position, event_count)`` per ``archived_jobs`` row, sorted by job id.
        key_id: the key of :attr:`mac` (``None`` for an archive made before migration 0012).
        removed: JSON ``[[position, chain], ...]`` of the removed events.
        mac: the record's MAC (``None`` as ``key_id``).
    """

    row: tuple[object, ...]
    jobs: tuple[tuple[str, int, int], ...]
    key_id: str | None
    removed: str | None
    mac: str | None


@dataclasses.dataclass(frozen=True)
class UpgradeRecord:
    """One ``chain_upgrades`` row: the keyed upgrade chained the events up to ``position``.

    Attributes:
        position: the log's head at the upgrade.
        chain: the chain value it reached.
        key_id: the key of the chain and of :attr:`mac`.
        upgraded_at: UTC timestamp text.
        events: how many events it chained.
        archives: the ids of the archives made before it, comma-separated.
        mac: :func:`jobtape.eventlog.hashing.record_mac` of kind ``upgrade`` over the fields above.
    """

    position: int
    chain: str
    key_id: str
    upgraded_at: str
    events: int
    archives: str
    mac: str


def archive_signed_fields(record: ArchiveRecord) -> tuple[object, ...]:
    """The fields an archive record's MAC covers, in order: the row, its jobs, the removed events, the key id."""
    jobs = ";".join(f"{job_id}:{last}:{count}" for job_id, last, count in record.jobs)
    return (*record.row, jobs, record.removed, record.key_id)


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
        errors.LogKeyError: the store holds no log key (the archive record must be keyed).
    """
    keys = store.keys
    if keys is None:
        raise errors.LogKeyError("an archive needs the log key (its record is keyed): set JOBTAPE_LOG_KEY")
    last_positions = store.last_positions(events_per_job)
    # The removed events' chains, read before the batch: archived_jobs_finished_only refuses
    # the batch unless each job still has exactly these events (its count and last position).
    removed = [[row.position, row.chain] for job_id in sorted(events_per_job) for row in store.iter_stored(job_id=job_id)]
    removed.sort()
    row = (
        archive_id,
        clock.format_timestamp(clock.utcnow()),
        actor,
        clock.format_timestamp(cutoff),
        file_name,
        sha256,
        len(events_per_job),
        sum(events_per_job.values()),
    )
    jobs = tuple((job_id, last_positions.get(job_id, 0), count) for job_id, count in sorted(events_per_job.items()))
    record = ArchiveRecord(row=row, jobs=jobs, key_id=keys.current_id, removed=json.dumps(removed, separators=(",", ":")), mac=None)
    mac = hashing.record_mac(keys.current, "archive", archive_signed_fields(record))
    columns = (*ARCHIVE_COLUMNS, "key_id", "removed", "mac")
    statements = [
        Statement(
            f"INSERT INTO archives ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            (*row, record.key_id, record.removed, mac),
        )
    ]
    statements += [
        Statement("INSERT INTO archived_jobs (archive_id, job_id, last_position, event_count) VALUES (?, ?, ?, ?)", (archive_id, *job))
        for job in jobs
    ]
    listed = "SELECT job_id FROM archived_jobs WHERE archive_id = ?"
    statements.append(Statement(f"DELETE FROM events WHERE job_id IN ({listed})", (archive_id,)))
    statements += [
        Statement(f"DELETE FROM {p.table} WHERE {p.job_column} IN ({listed})", (archive_id,))
        for p in projections
        if p.job_column is not None
    ]
    store.backend.execute_batch(statements)
    store.forget_streams(job_id for job_id, _last, _count in jobs)


def list_archives(store: EventStore) -> list[dict[str, object]]:
    """Every ``archives`` row, oldest first, as ``{column: value}`` dicts."""
    rows = store.backend.query(f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM archives ORDER BY archived_at")
    return [dict(zip(ARCHIVE_COLUMNS, row, strict=True)) for row in rows]


def archive_records(store: EventStore) -> list[ArchiveRecord]:
    """Every ``archives`` row with its ``archived_jobs`` rows (what verify checks)."""
    rows = store.backend.query(f"SELECT {', '.join(ARCHIVE_COLUMNS)}, key_id, removed, mac FROM archives ORDER BY archive_id")
    jobs: dict[str, list[tuple[str, int, int]]] = {}
    for archive_id, job_id, last_position, count in store.backend.query(
        "SELECT archive_id, job_id, last_position, event_count FROM archived_jobs ORDER BY archive_id, job_id"
    ):
        jobs.setdefault(str(archive_id), []).append((str(job_id), int(last_position), int(count)))
    width = len(ARCHIVE_COLUMNS)
    return [
        ArchiveRecord(row=tuple(r[:width]), jobs=tuple(jobs.get(str(r[0]), ())), key_id=r[width], removed=r[width + 1], mac=r[width + 2])
        for r in rows
    ]


def upgrade_records(store: EventStore) -> list[UpgradeRecord]:
    """Every ``chain_upgrades`` row, oldest first."""
    rows = store.backend.query("SELECT position, chain, key_id, upgraded_at, events, archives, mac FROM chain_upgrades ORDER BY position")
    return [UpgradeRecord(int(p), str(c), str(k), str(at), int(n), str(a), str(m)) for p, c, k, at, n, a, m in rows]
