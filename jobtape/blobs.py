"""Removing the blobs of finished jobs, only through the recorded path.

A blob a job owns (the keys its ``job.created`` and ``job.completed`` declare, e.g. an
ingest's upload and prepared asset: :func:`jobtape.projections.state.owned_keys`) leaves storage only here, in this order:

1. append ``job.blobs_deleted`` (``keys``, ``reason``; the actor is who removes) to the
   job's stream through :meth:`JobRepository.execute`: the fold decides (only a finished
   job, only keys it owns, each once) and the append is guarded by the version read, so
   of several hosts sweeping at once exactly one records the removal and deletes; the
   others re-read, find the keys recorded, and do nothing;
2. delete the keys (:meth:`Storage.delete` of a missing key is a no-op).

The event comes first so that storage never lacks a blob the log does not account for. A
crash between 1 and 2 leaves an event naming keys that may still exist; a re-run deletes
them again: :meth:`BlobSweeper.sweep` re-deletes the uploads recorded as removed in the last
:data:`REDELETE_WINDOW_S` on its first run in a process, and ``jobtape archive`` deletes
every recorded key of the jobs it archives (but a preview's, ``previews/<recipe hash>.mp3``,
while a newer render holds it in the preview cache).

Failed-upload retention (:class:`BlobSweeper`): the inputs a job's creator handed it
(``job.created``'s ``owned_keys``, e.g. an ingest's upload;
:func:`jobtape.projections.state.retained_inputs`) of a job that finished ``failed`` or
``cancelled`` (no output came of them, and a finished job is never retried) are
removed ``Settings.failed_upload_retention_s`` after it finished (default 24 h, like
Celery's ``result_expires``: long enough to look at a failure, short enough that a month
of bad uploads does not fill the disk; 0 removes it at the next sweep). Every worker
sweeps on its reaper cycle.

Orphan uploads (:class:`OrphanUploadSweeper`): the ingest route writes an upload to
``ingest-uploads/<jobId>.<ext>`` and then appends the job's ``job.created``; a process
killed between the two (or during the write) leaves a blob no job refers to, which the
recorded path above never sees. Every worker lists ``ingest-uploads/`` from its reaper
cycle, at its start and then every :data:`ORPHAN_SWEEP_INTERVAL_S` (at most
:data:`ORPHAN_SWEEP_LIMIT` blobs a sweep, going on where the last one stopped), and
deletes a blob only when it is older than ``Settings.orphan_upload_grace_s`` (default 1 h;
0 turns the sweep off) and the job id its key names has no event in the log and was never
archived (:meth:`jobtape.eventlog.store.EventStore.known_job_ids`). A blob whose job exists
is never deleted, nor one whose key names no job id. Nothing is recorded: there is no job
to record it on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence

from jobtape import clock, errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = [
    "ORPHAN_SWEEP_INTERVAL_S",
    "ORPHAN_SWEEP_LIMIT",
    "REDELETE_WINDOW_S",
    "UPLOAD_PREFIX",
    "BlobSweeper",
    "OrphanUploadReport",
    "OrphanUploadSweeper",
    "SweepReport",
    "remove_job_blobs",
    "upload_job_id",
]

log = logging.getLogger(__name__)

#: On its first run in a process, a sweep deletes again the keys of removals recorded in the
#: last this many seconds (a crash between the record and the delete; 1 day).
REDELETE_WINDOW_S = 24 * 3600.0
#: Jobs one sweep handles at most (the next sweep takes the rest).
_SWEEP_LIMIT = 200
#: Where the ingest route stores uploads: ``ingest-uploads/<jobId>.<ext>`` (``<jobId>/original.<ext>`` before issue 12).
UPLOAD_PREFIX = "ingest-uploads/"
#: Uploads one orphan sweep lists at most (one S3 ``ListObjectsV2`` page); the next sweep goes on after the last.
ORPHAN_SWEEP_LIMIT = 1000
#: Seconds between two orphan sweeps of a worker (:meth:`OrphanUploadSweeper.sweep_if_due`; a local
#: listing reads the whole folder): 5 minutes, the first at the worker's start.
ORPHAN_SWEEP_INTERVAL_S = 300.0
#: A job id as the ingest route makes them (:func:`jobtape.projections.repository.new_job_id`).
_JOB_ID = re.compile(r"[0-9a-f]{32}")

Select = Callable[[job_state.JobState], Sequence[str]]


def remove_job_blobs(
    repository: JobRepository,
    storage: Storage,
    job_id: str,
    select: Select,
    *,
    reason: str,
    actor: str,
    on_error: Callable[[str], None] | None = None,
) -> list[str]:
    """Record ``job.blobs_deleted`` for the keys ``select`` picks, then delete them.

    Args:
        repository: the job log.
        storage: where the blobs are.
        job_id: the job.
        select: given the job's current state, the keys to remove; keys already recorded as
            removed are skipped, and nothing is appended when none is left (also when the job
            no longer exists, e.g. archived meanwhile).
        reason: why, recorded in the event (e.g. ``failed-upload retention (24h)``).
        actor: who removes (a worker id, ``cli:user@host``).
        on_error: called with each key whose delete failed (the event stays recorded);
            ``None`` raises the failure instead.

    Returns:
        The keys this call recorded and deleted (empty when another writer recorded them first).

    Raises:
        errors.IllegalTransition: the fold refused the removal (the job is not finished, or
            does not own a key); nothing was appended or deleted.
        errors.StorageError: a delete failed after the event was recorded (only without
            ``on_error``); a re-run (a later sweep or archive) deletes the key.
    """

    def decide(current: job_state.JobState | None) -> list[ev.Event]:
        if current is None:
            return []
        keys = [key for key in dict.fromkeys(select(current)) if key not in current.removed_keys]
        return [ev.JobBlobsDeleted(keys=keys, reason=reason)] if keys else []

    appended = repository.execute(job_id, decide, actor=actor)
    if appended is None:
        return []
    event = appended.recorded[0].event
    assert isinstance(event, ev.JobBlobsDeleted)
    for key in event.keys:
        try:
            storage.delete(key)
        except errors.StorageError:
            if on_error is None:
                raise
            on_error(key)
    return list(event.keys)


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one sweep did.

    Attributes:
        removed: ``{job_id: keys}`` recorded and deleted by this sweep.
        redeleted: keys of earlier recorded removals deleted again (first sweep in a process).
    """

    removed: dict[str, list[str]]
    redeleted: int = 0


class BlobSweeper:
    """Failed-upload retention: removes the inputs handed to failed and cancelled jobs, e.g. an ingest's upload (see the module docstring).

    Args:
        repository: the job log.
        storage: where the uploads are.
        retention_s: seconds after the job finished; 0 removes at the next sweep.
        actor: recorded as the event's actor (the worker id).
    """

    def __init__(self, repository: JobRepository, storage: Storage, *, retention_s: float, actor: str) -> None:
        self.repository = repository
        self.storage = storage
        self.retention_s = retention_s
        self.actor = actor
        self._redeleted = False
        self._undeleted: set[str] = set()  # recorded, but the delete failed: retried next sweep

    @property
    def reason(self) -> str:
        """The ``reason`` recorded in the events, e.g. ``failed-upload retention (86400 s after the job ended)``."""
        return f"failed-upload retention ({self.retention_s:g} s after the job ended)"

    def sweep(self, now: dt.datetime | None = None) -> SweepReport:
        """Remove every retained upload whose job finished more than ``retention_s`` before ``now``.

        Safe on many hosts at once: the append's version guard lets one host record and
        delete each upload. The first call in a process also re-deletes the uploads recorded
        as removed in the last :data:`REDELETE_WINDOW_S` (a crash between record and delete).

        Args:
            now: aware UTC time; defaults to :func:`jobtape.clock.utcnow`.

        Raises:
            errors.StoreUnavailable: the log cannot be read or written (the caller retries later).
        """
        now = now or clock.utcnow()
        if not self._redeleted:
            since = now - dt.timedelta(seconds=REDELETE_WINDOW_S)
            # Uploads only: a preview's key is the recipe's, and a newer render may own it again.
            self._undeleted.update(
                key for state in self.repository.blob_removals(since) for key in job_state.owned_inputs(state) if key in state.removed_keys
            )
            self._redeleted = True
        redeleted = self._delete_pending()
        cutoff = now - dt.timedelta(seconds=self.retention_s)
        removed: dict[str, list[str]] = {}
        for job_id in self.repository.retained_uploads(cutoff, _SWEEP_LIMIT):
            keys = remove_job_blobs(
                self.repository,
                self.storage,
                job_id,
                lambda state: _due(state, cutoff),
                reason=self.reason,
                actor=self.actor,
                on_error=self._undeleted.add,
            )
            if keys:
                removed[job_id] = keys
        if removed:
            log.info("%s removed the uploads of %d failed or cancelled job(s)", self.actor, len(removed))
        return SweepReport(removed, redeleted)

    def _delete_pending(self) -> int:
        deleted = 0
        for key in sorted(self._undeleted):
            try:
                self.storage.delete(key)
            except errors.StorageError as exc:
                log.warning("%s: could not delete %s (recorded as removed; retried next sweep): %s", self.actor, key, exc)
                continue
            self._undeleted.discard(key)
            deleted += 1
        return deleted


def upload_job_id(key: str) -> str | None:
    """The job id an upload's key names (``ingest-uploads/<jobId>.<ext>``, or ``ingest-uploads/<jobId>/...``);
    ``None`` for a key outside :data:`UPLOAD_PREFIX` or naming no job id."""
    if not key.startswith(UPLOAD_PREFIX):
        return None
    rest = key[len(UPLOAD_PREFIX) :]
    name = rest.split("/", 1)[0] if "/" in rest else rest.split(".", 1)[0]
    return name if _JOB_ID.fullmatch(name) else None


@dataclasses.dataclass(frozen=True)
class OrphanUploadReport:
    """What one orphan-upload sweep did.

    Attributes:
        listed: blobs it looked at.
        deleted: keys of the orphan uploads it deleted.
    """

    listed: int = 0
    deleted: list[str] = dataclasses.field(default_factory=list)


class OrphanUploadSweeper:
    """Deletes uploads no job refers to, left by a process killed between the write and ``job.created`` (see the module docstring).

    Args:
        repository: the job log (its store says which job ids exist or were archived).
        storage: where the uploads are.
        grace_s: seconds an upload must be older than (its write time: mtime, ``LastModified``)
            before it counts as an orphan; far longer than an upload's write and its create
            take. 0 turns the sweep off.
        limit: blobs listed per sweep (see :data:`ORPHAN_SWEEP_LIMIT`).
    """

    def __init__(self, repository: JobRepository, storage: Storage, *, grace_s: float, limit: int = ORPHAN_SWEEP_LIMIT) -> None:
        self.repository = repository
        self.storage = storage
        self.grace_s = grace_s
        self.limit = limit
        self._after: str | None = None  # the last key the previous sweep listed, when it did not reach the end
        self._next_sweep = 0.0  # time.monotonic() of the next sweep_if_due

    def sweep_if_due(self) -> OrphanUploadReport:
        """:meth:`sweep` at most every :data:`ORPHAN_SWEEP_INTERVAL_S` seconds (the first call sweeps)."""
        if time.monotonic() < self._next_sweep:
            return OrphanUploadReport()
        self._next_sweep = time.monotonic() + ORPHAN_SWEEP_INTERVAL_S
        return self.sweep()

    def sweep(self, now: dt.datetime | None = None) -> OrphanUploadReport:
        """List the next :attr:`limit` uploads and delete those older than ``grace_s`` whose job the log does not know.

        A storage that cannot list, or fails, is logged and skipped (the next sweep tries again).

        Args:
            now: aware UTC time; defaults to :func:`jobtape.clock.utcnow`.

        Raises:
            errors.StoreUnavailable: the log cannot be read (nothing was deleted; the caller retries later).
        """
        if self.grace_s <= 0:
            return OrphanUploadReport()
        now = now or clock.utcnow()
        try:
            blobs = self.storage.list_blobs(UPLOAD_PREFIX, start_after=self._after, limit=self.limit)
        except NotImplementedError:
            return OrphanUploadReport()
        except errors.StorageError as exc:
            log.warning("orphan-upload sweep: cannot list %s (next sweep tries again): %s", UPLOAD_PREFIX, exc)
            return OrphanUploadReport()
        self._after = blobs[-1].key if len(blobs) == self.limit else None  # at the end: from the start next time
        cutoff = now - dt.timedelta(seconds=self.grace_s)
        candidates = {blob.key: job_id for blob in blobs if blob.modified < cutoff and (job_id := upload_job_id(blob.key)) is not None}
        known = self.repository.store.known_job_ids(set(candidates.values())) if candidates else set()
        deleted = []
        for key, job_id in candidates.items():
            if job_id in known:
                continue
            try:
                self.storage.delete(key)
            except errors.StorageError as exc:
                log.warning("orphan-upload sweep: could not delete %s (next pass tries again): %s", key, exc)
                continue
            deleted.append(key)
        if deleted:
            log.warning(
                "removed %d upload(s) older than %g s that no job refers to (a process killed before job.created): %s",
                len(deleted),
                self.grace_s,
                ", ".join(deleted[:10]),
            )
        return OrphanUploadReport(len(blobs), deleted)


def _due(state: job_state.JobState, cutoff: dt.datetime) -> list[str]:
    return list(job_state.retained_inputs(state)) if state.updated_at < cutoff else []
