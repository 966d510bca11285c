"""The reaper and the orphan sweep: taking back jobs whose worker is gone, killing its children.

Both run in every worker's loop (:class:`jobtape.worker.runner.Worker`); the decisions are
the pure :func:`jobtape.worker.policy.reap_events`, and every append is guarded by the
version the decision was made on, so of several reapers exactly one wins and a worker
that renewed its lease in between wins over all of them.

- :meth:`Reaper.reap_expired`: held jobs (``processing``, or cancelling) whose
  ``lease_expires_at`` passed -> ``job.lease_expired`` + back to pending with backoff, or
  ``job.failed`` after ``max_attempts``, or ``job.cancelled`` if a cancel was requested.
- :meth:`Reaper.sweep_orphans`: the children this host's log shows started and not
  exited (``job.child_started`` without ``job.child_exited``): each one still alive with
  the recorded start time (``/proc``; a reused pid is never killed) gets SIGTERM, then
  SIGKILL, and its ``job.child_exited`` is appended while the job is not finished. A job
  held by a worker of this host whose process is gone is reaped at once (not waiting for
  its lease), which also answers a cancel that arrived while that worker was down.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import random
from collections.abc import Collection, Mapping

from jobtape import clock, errors
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.worker import children, policy

__all__ = ["ORPHAN_LOOKBACK", "OrphanReport", "Reaper"]

log = logging.getLogger(__name__)

#: Finished jobs are searched for orphans this long after their last event (their log
#: can take no child_exited, but a child of a lost attempt may still run).
ORPHAN_LOOKBACK = dt.timedelta(days=1)


@dataclasses.dataclass
class OrphanReport:
    """What one orphan sweep did.

    Attributes:
        killed: pids of live orphans it terminated (SIGTERM, SIGKILL if needed).
        exits_recorded: ``job.child_exited`` events it appended.
        reaped: ids of jobs taken back because their holder's process is gone.
    """

    killed: list[int] = dataclasses.field(default_factory=list)
    exits_recorded: int = 0
    reaped: list[str] = dataclasses.field(default_factory=list)


class Reaper:
    """Takes back jobs whose worker lost them, and kills this host's orphaned children.

    Args:
        repository: the job log.
        settings: ``max_attempts`` (total attempts), backoff, ``kill_grace_s``.
        actor: who appends (the worker id of the worker running the reaper).
        host_id: this host's id (as in ``job.child_started.host_id`` and worker ids).
        live_worker_ids: ids of the workers running in this process (their jobs are never
            taken over by the orphan sweep).
        rng: jitter source for the backoff; defaults to a fresh ``random.Random``.
        limits: job type -> its own limits; a type's ``max_attempts`` (total attempts)
            decides when a lease expiry fails its job (other types: ``settings.max_attempts``).
    """

    def __init__(
        self,
        repository: JobRepository,
        settings: Settings,
        *,
        actor: str,
        host_id: str,
        live_worker_ids: Collection[str] = (),
        rng: policy.Random | None = None,
        limits: Mapping[str, policy.TypeLimits] | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.actor = actor
        self.host_id = host_id
        self.live_worker_ids = live_worker_ids
        self.rng = rng or random.Random()
        self.limits = dict(limits or {})

    def _settings_of(self, state: job_state.JobState) -> Settings:
        return policy.type_settings(self.settings, self.limits.get(state.job_type))

    def _append(self, state: job_state.JobState, events: list[ev.Event]) -> bool:
        try:
            self.repository.append(state.job_id, events, state, actor=self.actor)
        except (errors.ConcurrencyError, errors.IllegalTransition) as exc:
            log.info("reaper %s: job %s moved on, left alone (%s)", self.actor, state.job_id, exc)
            return False
        return True

    def reap_expired(self, now: dt.datetime | None = None, *, limit: int = 100) -> list[str]:
        """Take back up to ``limit`` held jobs whose lease expired before ``now`` (default: the clock).

        Returns:
            The ids of the jobs this reaper took back (others may have been won by another
            reaper or renewed by their worker: left alone).
        """
        now = now or clock.utcnow()
        reaped = []
        for job_id in self.repository.expired_leases(now, limit=limit):
            state = self.repository.load(job_id)
            events = policy.reap_events(state, now, self._settings_of(state), self.rng) if state else []
            if state is not None and events and self._append(state, events):
                log.warning("reaper %s took back job %s from %s (attempt %d)", self.actor, job_id, state.worker_id, state.attempt)
                reaped.append(job_id)
        return reaped

    def _holder_gone(self, state: job_state.JobState) -> bool:
        """The holding worker ran on this host and its process no longer exists."""
        parsed = policy.parse_worker_id(state.worker_id or "")
        if parsed is None or state.worker_id in self.live_worker_ids:
            return False
        host, pid = parsed
        if host != self.host_id or pid == os.getpid():
            return False  # another host's, or a sibling worker of this process: its lease decides
        return not children.process_alive(pid, None)

    def sweep_orphans(self, now: dt.datetime | None = None) -> OrphanReport:
        """Kill this host's orphaned children and record their exit; reap jobs of dead local workers.

        Args:
            now: the current UTC time (default: the clock); finished jobs older than
                :data:`ORPHAN_LOOKBACK` are not searched.

        Returns:
            What was done (see :class:`OrphanReport`).
        """
        now = now or clock.utcnow()
        job_ids = self.repository.held_jobs() + self.repository.jobs_with_orphans(now - ORPHAN_LOOKBACK)
        report = OrphanReport()
        for job_id in dict.fromkeys(job_ids):
            state = self.repository.load(job_id)
            if state is not None:
                self._sweep_job(state, now, report)
        return report

    def _sweep_job(self, state: job_state.JobState, now: dt.datetime, report: OrphanReport) -> None:
        holder_gone = not state.finished and state.status != "pending" and self._holder_gone(state)
        pids = set(state.orphaned_children) | (set(state.running_children) if holder_gone else set())
        if not pids and not holder_gone:
            return
        started = {
            r.event.pid: r.event
            for r in self.repository.store.read_stream(state.job_id)
            if isinstance(r.event, ev.JobChildStarted) and r.event.pid in pids
        }
        exited: list[tuple[int, int | None]] = []
        for pid, child in started.items():
            if child.host_id != self.host_id or child.started_at_ticks is None:
                continue  # another host's child (its workers sweep it), or one we cannot identify
            status = children.kill_if_ours(pid, child.started_at_ticks, self.settings.kill_grace_s)
            if status is not None:
                log.warning("orphan sweep: killed pid %d of job %s (%s)", pid, state.job_id, " ".join(child.argv[:1]))
                report.killed.append(pid)
            exited.append((pid, status))
        if state.finished:
            return  # nothing may follow a terminal event; the children are dead, which is what matters
        if holder_gone:
            events = policy.reap_events(state, now, self._settings_of(state), self.rng, exited=exited, holder_gone=True)
            if events and self._append(state, events):
                report.reaped.append(state.job_id)
                report.exits_recorded += sum(isinstance(e, ev.JobChildExited) for e in events)
            return
        events = [ev.JobChildExited(pid=pid, exit_status=status) for pid, status in exited]
        if events and self._append(state, events):
            report.exits_recorded += len(events)
