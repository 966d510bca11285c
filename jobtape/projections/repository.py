"""Command handling over the event store: load a job's state, decide, append guarded.

:class:`JobRepository` is how the HTTP layer, the worker and the CLI change a job: it
folds the new events onto the current state with :func:`state.apply` (so the fold alone
decides, and an illegal transition is refused before anything is written), then appends
the events and the statements of every registered projection (``jobs``, ``assets``,
``previews``: :mod:`jobtape.projections.registry`) in ONE batch guarded by the expected
version, plus, for a create, the per-owner quota guard (:mod:`jobtape.projections.quota`).

It also answers the named queries over the ``jobs`` projection that the worker, the
reaper, the blob sweeps, the API and the audit tools ask (claimable jobs, expired leases,
held jobs, retained uploads...): the SQL stays in this package, the callers name what
they want.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Collection, Sequence

from jobtape import clock, errors
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import ConstraintViolation, EventStore, Statement
from jobtape.projections import jobs as jobs_projection
from jobtape.projections import queue, quota, registry
from jobtape.projections import state as job_state

__all__ = ["AppendResult", "JobRepository", "new_job_id"]


def new_job_id() -> str:
    """A new job id: 32 lowercase hex digits (a UUID4 without dashes)."""
    return uuid.uuid4().hex


class AppendResult:
    """What an append produced: the new ``state`` and the ``recorded`` events."""

    __slots__ = ("recorded", "state")

    def __init__(self, state: job_state.JobState, recorded: list[ev.RecordedEvent]) -> None:
        self.state = state
        self.recorded = recorded


Decide = Callable[[job_state.JobState | None], Sequence[ev.Event]]


class JobRepository:
    """Loads job states and appends events with the ``jobs`` projection in the same batch.

    Args:
        store: the event store.
        on_append: optional callback run after every successful append with the result
            (the embedded worker uses it to wake at once on new jobs and cancels).
        projections: the projections written in each append's batch (default: all registered).
    """

    def __init__(
        self,
        store: EventStore,
        on_append: Callable[[AppendResult], None] | None = None,
        projections: tuple[registry.Projection, ...] = registry.PROJECTIONS,
    ) -> None:
        self.store = store
        self.on_append = on_append
        self.projections = projections

    @property
    def local_reads(self) -> bool:
        """Whether its reads are local and never wait for a writer (SQLite in WAL mode:
        :attr:`jobtape.eventlog.store.SQLBackend.local_reads`), short enough to run inline on
        an event loop."""
        return self.store.backend.local_reads

    def load(self, job_id: str) -> job_state.JobState | None:
        """The job's current state from the projection; ``None`` if it does not exist."""
        return jobs_projection.select_state(self.store.backend, job_id)

    def find_by_idempotency_key(self, owner: str, idempotency_key: str | None) -> job_state.JobState | None:
        """The job ``owner`` created with ``idempotency_key`` (from the projection), or ``None``.

        Read after a create failed with :class:`errors.DuplicateIdempotencyKey`, to answer the
        replay; the guard itself is the ``jobs (owner, idempotency_key)`` UNIQUE index.
        """
        job_id = jobs_projection.select_by_idempotency_key(self.store.backend, owner, idempotency_key)
        return self.load(job_id) if job_id is not None else None

    def get(self, job_id: str) -> job_state.JobState:
        """Like :meth:`load`, raising :class:`errors.JobNotFound` for an unknown job."""
        found = self.load(job_id)
        if found is None:
            raise errors.JobNotFound(job_id)
        return found

    def append(
        self,
        job_id: str,
        events: Sequence[ev.Event],
        current: job_state.JobState | None,
        *,
        actor: str,
        guards: Sequence[Statement] = (),
    ) -> AppendResult:
        """Fold ``events`` onto ``current`` and append them guarded by ``current.version``.

        Args:
            job_id: the stream.
            events: the events to append.
            current: the state the caller decided on (``None`` for a new job).
            actor: who appends.
            guards: more guard statements for the batch, run after the event inserts and
                the projections (e.g. :func:`quota.guard_statements`); a guard that fails
                raises its backend's ``ConstraintViolation``.

        Raises:
            errors.IllegalTransition: the fold refuses an event; nothing was written.
            errors.ConcurrencyError: the stream moved on since ``current``; nothing was written.
            errors.DuplicateIdempotencyKey: a job with that owner and key exists.
        """
        at = clock.utcnow()
        expected = current.version if current is not None else 0
        new_state = current
        for offset, event in enumerate(events, start=1):
            new_state = job_state.apply(new_state, event, job_id=job_id, version=expected + offset, recorded_at=at)
        assert new_state is not None
        extra = [*registry.statements_for(current, new_state, self.projections), *guards]
        recorded = self.store.append(job_id, events, expected, actor=actor, extra=extra, recorded_at=at)
        result = AppendResult(new_state, recorded)
        if self.on_append is not None:
            self.on_append(result)
        return result

    def execute(self, job_id: str, decide: Decide, *, actor: str, max_cycles: int = 10) -> AppendResult | None:
        """Load, decide and append, retrying the whole cycle on a concurrency conflict.

        Args:
            job_id: the stream.
            decide: given the current state (``None`` for no job), returns the events to
                append; an empty sequence means "nothing to do" and :meth:`execute` returns ``None``.
            actor: who appends.
            max_cycles: how many load-decide-append cycles to try (not a job's attempts).

        Raises:
            errors.ConcurrencyError: still conflicting after ``max_cycles`` cycles.
            errors.IllegalTransition: the fold refused the decided events.
            Any exception ``decide`` raises.
        """
        for cycle in range(max_cycles):
            current = self.load(job_id)
            events = decide(current)
            if not events:
                return None
            try:
                return self.append(job_id, events, current, actor=actor)
            except errors.ConcurrencyError:
                if cycle == max_cycles - 1:
                    raise
        return None  # pragma: no cover

    def create(
        self,
        job_type: ev.JobType,
        params: dict[str, object],
        *,
        owner: str = "anonymous",
        idempotency_key: str | None = None,
        actor: str = "api",
        job_id: str | None = None,
        extra_events: Sequence[ev.Event] = (),
        max_active_jobs: int | None = None,
        owned_keys: Sequence[str] | None = None,
    ) -> AppendResult:
        """Create a job: append ``job.created`` (plus ``extra_events``) as version 1...

        Args:
            owned_keys: storage keys the caller wrote for this job and hands to it
                (``job.created``'s ``owned_keys``: removed with the job, and by failed-upload
                retention if it fails or is cancelled); ``None``: none.
            max_active_jobs: the owner's quota of pending + processing jobs; ``None``: no
                limit. Guarded in SQL inside the batch (:mod:`jobtape.projections.quota`);
                a job created already finished (a cache hit) is not counted or refused.

        Raises:
            errors.QuotaExceeded: the owner has ``max_active_jobs`` active jobs; nothing was written.
            errors.DuplicateIdempotencyKey: that owner already used that key.
            errors.ConcurrencyError: the job id exists already.
        """
        created = ev.JobCreated(
            job_type=job_type,
            params=dict(params),
            owner=owner,
            idempotency_key=idempotency_key,
            owned_keys=list(owned_keys) if owned_keys else None,
        )
        finishes = any(isinstance(event, ev.JobCompleted | ev.JobFailed) for event in extra_events)
        job_id = job_id or new_job_id()
        limited = max_active_jobs is not None and not finishes
        guards = quota.guard_statements(owner, max_active_jobs, job_id) if limited else []  # type: ignore[arg-type]
        try:
            return self.append(job_id, [created, *extra_events], None, actor=actor, guards=guards)
        except ConstraintViolation as exc:
            if max_active_jobs is not None and quota.is_quota_violation(exc.detail):
                raise errors.QuotaExceeded(owner, max_active_jobs) from exc
            raise

    def get_with_position(self, job_id: str) -> tuple[job_state.JobState, int | None]:
        """The job's current state and its queue position (``None`` unless pending), read by one statement.

        What a poll needs (:func:`jobtape.projections.queue.select_state_and_position`): one
        read of one snapshot instead of :meth:`get` then :meth:`queue_position`.

        Raises:
            errors.JobNotFound: no such job.
        """
        found = queue.select_state_and_position(self.store.backend, job_id)
        if found is None:
            raise errors.JobNotFound(job_id)
        return jobs_projection.decode_state(found[0]), found[1]

    def queue_position(self, job_id: str) -> int | None:
        """1 + pending jobs created before this one; ``None`` unless it is pending.

        O(log n) reads of ``queue_counts`` (:func:`jobtape.projections.queue.queue_position`).
        """
        return queue.queue_position(self.store.backend, job_id)

    def claimable(self, job_types: Collection[str], now: dt.datetime, *, limit: int = 16, offset: int = 0) -> list[str]:
        """Ids of up to ``limit`` pending jobs of ``job_types`` due at ``now`` (aware UTC), oldest first,
        skipping the ``offset`` oldest.

        Candidates only: the claim itself is an append guarded by the job's version.
        """
        return jobs_projection.select_claimable(self.store.backend, job_types, now, limit, offset)

    def claimable_states(
        self,
        job_types: Collection[str],
        now: dt.datetime,
        *,
        limit: int = 16,
        offset: int = 0,
        partition: tuple[int, int] | None = None,
        newest_first: bool = False,
    ) -> list[job_state.JobState]:
        """The states of the jobs :meth:`claimable` names, read in the same query (a claim appends
        guarded by the version read here, so no load per candidate is needed).

        ``partition``: ``(count, index)`` reads only the jobs whose created position modulo
        ``count`` is ``index`` (``0 <= index < count``), still oldest first; ``newest_first``
        reads them newest first instead. The same query reads the hash of each job's last
        event, which the store keeps for the claim's chain (:meth:`EventStore.note_last_hash`).
        """
        heads = jobs_projection.select_claimable_heads(self.store.backend, job_types, now, limit, offset, partition, newest_first)
        for state, hash_ in heads:
            if hash_ is not None:
                self.store.note_last_hash(state.job_id, state.version, hash_)
        return [state for state, _hash in heads]

    def claimers(self, job_types: Collection[str], now: dt.datetime) -> list[str]:
        """Ids of the workers (sorted) holding a job of ``job_types`` under a lease not expired at ``now`` (aware UTC)."""
        return jobs_projection.select_claimers(self.store.backend, job_types, now)

    def expired_leases(self, now: dt.datetime, *, limit: int = 100) -> list[str]:
        """Ids of up to ``limit`` held jobs (``processing``, or cancelling) whose lease expired before ``now``."""
        return jobs_projection.select_expired_leases(self.store.backend, now, limit)

    def held_jobs(self) -> list[str]:
        """Ids of every job held by a worker now (``processing``, or cancelling, not finished)."""
        return jobs_projection.select_held(self.store.backend)

    def jobs_with_orphans(self, finished_since: dt.datetime) -> list[str]:
        """Ids of the jobs with orphaned children on record, unfinished or finished at or after ``finished_since``."""
        return jobs_projection.select_with_orphans(self.store.backend, finished_since)

    def finished_before(self, cutoff: dt.datetime) -> set[str]:
        """Ids of the finished jobs whose last change is older than ``cutoff`` (aware UTC)."""
        return jobs_projection.select_finished_before(self.store.backend, cutoff)

    def retained_uploads(self, finished_before: dt.datetime, limit: int) -> list[str]:
        """See :func:`jobtape.projections.jobs.select_retained_uploads`."""
        return jobs_projection.select_retained_uploads(self.store.backend, finished_before, limit)

    def blob_removals(self, since: dt.datetime) -> list[job_state.JobState]:
        """See :func:`jobtape.projections.jobs.select_blob_removals`."""
        return jobs_projection.select_blob_removals(self.store.backend, since)

    def count_active(self, owner: str) -> int:
        """The owner's pending + processing jobs now (:func:`jobtape.projections.quota.count_active`)."""
        return quota.count_active(self.store.backend, owner)

    def check_quota_early(self, owner: str, max_active_jobs: int) -> None:
        """Refuse at once when ``owner`` is at the limit, before expensive work; advisory only
        (the guard in the create batch decides; :func:`jobtape.projections.quota.check_early`).

        Raises:
            errors.QuotaExceeded: the owner has ``max_active_jobs`` active jobs now.
        """
        quota.check_early(self.store.backend, owner, max_active_jobs)
