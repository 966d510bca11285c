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
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from jobtape import clock, errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = ["REDELETE_WINDOW_S", "BlobSweeper", "SweepReport", "remove_job_blobs"]

log = logging.getLogger(__name__)

#: On its first run in a process, a sweep deletes again the keys of removals recorded in the
#: last this many seconds (a crash between the record and the delete; 1 day).
REDELETE_WINDOW_S = 24 * 3600.0
#: Jobs one sweep handles at most (the next sweep takes the rest).
_SWEEP_LIMIT = 200

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


def _due(state: job_state.JobState, cutoff: dt.datetime) -> list[str]:
    return list(job_state.retained_inputs(state)) if state.updated_at < cutoff else []
