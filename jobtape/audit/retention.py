"""Retention: archive finished jobs older than a cutoff, then remove them through the recorded path.

:func:`archive` exports the jobs' whole streams to a file (JSON Lines, see
:mod:`jobtape.audit.exchange`) and then, in ONE batch, inserts an ``archives`` row (who,
when, the cutoff, the file name, the file's sha256, counts), one ``archived_jobs`` row per
job, and deletes their events and their rows in every registered projection (``jobs``, and a
package's, e.g. the audio package's ``assets`` and ``previews``: an archived ingest's asset
leaves the ``assets`` table with it); that batch is
:func:`jobtape.projections.archives.record_archive`. The guards are in SQL (migration
``0004_archives``): ``events_no_delete`` refuses a DELETE unless the job is listed in
``archived_jobs`` up to that position, and ``archived_jobs_finished_only`` refuses a job
that is not finished or gained events since the export. ``archives`` and
``archived_jobs`` themselves refuse UPDATE and DELETE.

Blobs: with a ``storage``, the archive first removes the blobs the jobs own (uploads,
prepared assets, rendered previews: :func:`jobtape.projections.state.owned_keys`) through
the recorded path (:func:`jobtape.blobs.remove_job_blobs`): a ``job.blobs_deleted`` naming
the keys and the archive (``reason``) is appended to each job's stream, the keys are
deleted, and only then are the streams exported. So the record of which keys went and why
travels in the archive file with the jobs it concerns (an ``import`` of the file brings
it back, and polls of those jobs offer no dead links), rather than in an ``archives``
column that an import would not restore. ``job.blobs_deleted`` leaves ``updated_at`` at the
job's finish, so a re-run after a crash selects the same jobs and deletes their recorded
keys again (a no-op for keys already gone). Without a ``storage`` (``--keep-blobs``) the
blobs stay and :attr:`ArchiveReport.kept_keys` counts them.

``jobtape import FILE`` brings archived jobs back (at new positions).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import uuid
from pathlib import Path

from jobtape import blobs, errors
from jobtape.audit import exchange, transfer
from jobtape.eventlog.store import EventStore
from jobtape.projections import archives, registry
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = ["ArchiveReport", "archive", "list_archives"]


@dataclasses.dataclass(frozen=True)
class ArchiveReport:
    """What an archive did.

    Attributes:
        archive_id: the ``archives`` row's id (32 hex digits), ``None`` if nothing matched.
        jobs: jobs exported and removed.
        events: events exported and removed.
        path: the export file.
        sha256: hex sha256 of the file's bytes.
        cutoff: jobs whose last event is older than this UTC time were archived.
        removed_keys: storage keys of the archived jobs that are gone (recorded in their
            ``job.blobs_deleted`` events, by this archive or earlier), ``{job_id: keys}``.
        kept_keys: keys the archived jobs own that were left in storage (``storage=None``).
    """

    archive_id: str | None
    jobs: int
    events: int
    path: Path
    sha256: str
    cutoff: dt.datetime
    removed_keys: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    kept_keys: int = 0


def archive(
    store: EventStore,
    *,
    cutoff: dt.datetime,
    path: Path,
    actor: str,
    storage: Storage | None = None,
    tables: registry.Tables = registry.ENGINE_TABLES,
) -> ArchiveReport:
    """Remove the jobs' blobs on record, export the finished jobs whose last event is older than
    ``cutoff`` to ``path``, then remove them.

    Args:
        store: the event store.
        cutoff: aware UTC time; jobs with ``finished = 1`` and ``updated_at < cutoff`` are archived.
        path: the file to write (replaced atomically; written even when no job matched).
        actor: recorded in ``archives.archived_by`` and as the actor of each ``job.blobs_deleted``
            (the CLI passes ``cli:<user>@<host>``).
        storage: where the jobs' blobs are: they are removed first (see the module docstring);
            ``None`` keeps them.
        tables: the log's registered projections (an app's :attr:`jobtape.App.tables`): the
            jobs' rows leave each of them (by :attr:`registry.Projection.job_column`), and a
            key another job's row holds (:attr:`registry.Projection.blob_holder`) is kept.

    Raises:
        errors.InvalidExport: the exported streams fail the import checks (a broken hash
            chain, a gap): nothing was removed (no event, no file in storage) and no file was
            written (run ``jobtape verify``). The streams are exported and checked once before
            any blob is removed, and once more after, with the removals in them.
        ConstraintViolation: a job changed between the export and the removal (the batch
            was refused; no event was removed; the file stays).
        errors.StorageError: a blob could not be deleted (its removal is recorded; run the
            archive again); nothing was exported or removed from the log.
    """
    job_ids = JobRepository(store).finished_before(cutoff)
    archive_id = uuid.uuid4().hex
    temporary = path.with_name(path.name + ".tmp")
    report = _export_checked(store, job_ids, temporary)  # refuse a broken log before removing any file
    try:
        removed, kept = _remove_blobs(store, storage, sorted(job_ids), archive_id, path, actor, tables)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if storage is not None and job_ids:
        report = _export_checked(store, job_ids, temporary)  # again, with the job.blobs_deleted events
    temporary.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not job_ids:
        return ArchiveReport(None, 0, 0, path, digest, cutoff)
    archives.record_archive(
        store,
        archive_id=archive_id,
        actor=actor,
        cutoff=cutoff,
        file_name=str(path),
        sha256=digest,
        events_per_job=report.events_per_job,
        projections=tables.projections,
    )
    return ArchiveReport(archive_id, report.jobs, report.events, path, digest, cutoff, removed, kept)


def _export_checked(store: EventStore, job_ids: set[str], temporary: Path) -> transfer.ExportReport:
    """Export the streams of ``job_ids`` to ``temporary`` and check the file as ``import`` would.

    Raises:
        errors.InvalidExport: the file fails the checks; it is removed.
    """
    with temporary.open("w", encoding="utf-8") as out:
        report = transfer.export(store, out, job_ids) if job_ids else transfer.ExportReport(0, 0, {})
        out.flush()
        os.fsync(out.fileno())
    try:
        with temporary.open(encoding="utf-8") as written:
            exchange.check_export(written)  # a broken hash chain or gap: refuse before removing anything
    except errors.InvalidExport:
        temporary.unlink()
        raise
    return report


def _remove_blobs(
    store: EventStore,
    storage: Storage | None,
    job_ids: list[str],
    archive_id: str,
    path: Path,
    actor: str,
    tables: registry.Tables,
) -> tuple[dict[str, list[str]], int]:
    """Record and delete the blobs of ``job_ids`` (``storage`` given), or count them (``None``).

    Returns:
        ``({job_id: keys gone}, number of keys kept)``.
    """
    repository = JobRepository(store, projections=tables.projections)
    holders = [p.blob_holder for p in tables.projections if p.blob_holder is not None]
    removed: dict[str, list[str]] = {}
    kept = 0
    reason = f"archive {archive_id} to {path.name}"
    archived = set(job_ids)

    def held_elsewhere(key: str) -> bool:  # e.g. a render of the same recipe outside this archive caches that MP3
        return any((holder := find(store, key)) is not None and holder not in archived for find in holders)

    def select(state: job_state.JobState) -> list[str]:
        return [key for key in job_state.owned_keys(state) if not held_elsewhere(key)]

    for job_id in job_ids:
        if storage is None:
            state = repository.load(job_id)
            kept += len([k for k in job_state.owned_keys(state) if k not in state.removed_keys]) if state else 0
            continue
        fresh = blobs.remove_job_blobs(repository, storage, job_id, select, reason=reason, actor=actor)
        state = repository.load(job_id)
        if state is not None and state.removed_keys:
            for key in state.removed_keys:
                if key not in fresh and not held_elsewhere(key):  # recorded earlier: a crash may have left it
                    storage.delete(key)
            removed[job_id] = list(state.removed_keys)
    return removed, kept


def list_archives(store: EventStore) -> list[dict[str, object]]:
    """Every ``archives`` row, oldest first, as ``{column: value}`` dicts (:func:`jobtape.projections.archives.list_archives`)."""
    return archives.list_archives(store)
