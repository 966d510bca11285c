"""A job's history summarised: attempts, time in each stage, who ran which child (pure).

Built from one stream's recorded events in version order. Besides the job handler's own
stages (``job.stage_changed``) three spans are named here: ``queued`` (from creation, or
from a return to pending, until the next claim), ``claimed`` (from the claim until the
job handler's first stage) and ``cancelling`` (from a cancel request on a running job until
the worker confirms with ``job.cancelled``). So the spans of a finished job cover its
whole life. Durations are in seconds, from the events' ``recorded_at``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import PurePath

import msgspec

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

__all__ = ["Attempt", "ChildRun", "JobTimeline", "StageSpan", "summarize"]

#: Events after which the job waits for a claim again (the attempt ends).
_BACK_TO_PENDING = (ev.JobLeaseExpired, ev.JobReleased, ev.JobRetryScheduled)
_TERMINAL = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled)


def _seconds(start: dt.datetime, end: dt.datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 6)


class StageSpan(msgspec.Struct, kw_only=True):
    """Time spent in one stage.

    Attributes:
        stage: the stage name, or ``queued`` / ``claimed`` / ``cancelling`` (see the module docstring).
        attempt: the attempt it belongs to (0 for ``queued``: waiting belongs to no attempt).
        worker_id: the worker that ran it (``None`` for ``queued``).
        started_at: UTC time the stage began.
        ended_at: UTC time it ended (``None``: still running at the last event).
        duration_s: ``ended_at - started_at`` in seconds, ``None`` while running.
    """

    stage: str
    attempt: int
    worker_id: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    duration_s: float | None = None


class ChildRun(msgspec.Struct, kw_only=True):
    """One child process a worker started for the job.

    Attributes:
        pid: process id on ``host_id``.
        program: the file name of ``argv[0]`` (e.g. ``ffmpeg-linux-x86_64-v7.1``).
        argv: the whole command line.
        host_id: the host it ran on.
        worker_id: the worker that started it (the event's actor).
        attempt: the attempt it belongs to.
        stage: the stage it ran in.
        started_at / exited_at: UTC times (``exited_at`` ``None`` if no exit was recorded).
        exit_status: the return code (negative: the signal that killed it), ``None`` if unknown.
        orphaned: listed in a later ``job.lease_expired``/``job.released`` as left running.
        duration_s: seconds from start to exit, ``None`` without an exit.
    """

    pid: int
    program: str
    argv: list[str]
    host_id: str
    worker_id: str
    attempt: int
    stage: str | None
    started_at: dt.datetime
    exited_at: dt.datetime | None = None
    exit_status: int | None = None
    orphaned: bool = False
    duration_s: float | None = None


class Attempt(msgspec.Struct, kw_only=True):
    """One claim of the job by a worker, up to how it ended.

    Attributes:
        attempt: the claim's attempt number (1, 2 ...).
        worker_id: the claiming worker.
        claimed_at / ended_at: UTC times (``ended_at`` ``None`` while running).
        outcome: the event type that ended it without its ``job.`` prefix (``completed``,
            ``failed``, ``cancelled``, ``lease_expired``, ``released``, ``retry_scheduled``),
            ``None`` while running.
        duration_s: seconds from claim to end, ``None`` while running.
    """

    attempt: int
    worker_id: str
    claimed_at: dt.datetime
    ended_at: dt.datetime | None = None
    outcome: str | None = None
    duration_s: float | None = None


class JobTimeline(msgspec.Struct, kw_only=True):
    """The summary of one job.

    Attributes:
        job_id / job_type / owner: from ``job.created``.
        status: the folded status (``None`` if the stream breaks the state rules).
        created_at: UTC time of ``job.created``.
        finished_at: UTC time of the terminal event, ``None`` if not finished.
        total_s: seconds from creation to the terminal event, ``None`` if not finished.
        attempts / stages / children: in the order they began.
        cancel_requested_by: actor of ``job.cancel_requested``, ``None`` if none.
        cancel_requested_at: its UTC time.
        events: how many events the stream has.
    """

    job_id: str
    job_type: str
    owner: str
    status: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    total_s: float | None = None
    attempts: list[Attempt] = []
    stages: list[StageSpan] = []
    children: list[ChildRun] = []
    cancel_requested_by: str | None = None
    cancel_requested_at: dt.datetime | None = None
    events: int = 0


class _Builder:
    def __init__(self, created: ev.RecordedEvent, event: ev.JobCreated) -> None:
        self.timeline = JobTimeline(
            job_id=created.job_id, job_type=event.job_type, owner=event.owner, status=None, created_at=created.recorded_at
        )
        self.attempt: Attempt | None = None
        self.stage: StageSpan | None = None
        self.open_children: dict[int, ChildRun] = {}
        self._open_stage("queued", created.recorded_at, None)

    def _open_stage(self, name: str, at: dt.datetime, worker_id: str | None) -> None:
        self._close_stage(at)
        attempt = self.attempt.attempt if self.attempt is not None else 0
        self.stage = StageSpan(stage=name, attempt=attempt, worker_id=worker_id, started_at=at)
        self.timeline.stages.append(self.stage)

    def _close_stage(self, at: dt.datetime) -> None:
        if self.stage is not None:
            self.stage.ended_at, self.stage.duration_s = at, _seconds(self.stage.started_at, at)
            self.stage = None

    def _end_attempt(self, outcome: str, at: dt.datetime) -> None:
        if self.attempt is not None:
            self.attempt.ended_at, self.attempt.outcome = at, outcome
            self.attempt.duration_s = _seconds(self.attempt.claimed_at, at)
            self.attempt = None

    def _orphan(self, pids: Sequence[int]) -> None:
        for pid in pids:
            child = self.open_children.pop(pid, None)
            if child is not None:
                child.orphaned = True

    def add(self, item: ev.RecordedEvent) -> None:
        at = item.recorded_at
        match item.event:
            case ev.JobClaimed(worker_id=worker_id, attempt=attempt):
                self.attempt = Attempt(attempt=attempt, worker_id=worker_id, claimed_at=at)
                self.timeline.attempts.append(self.attempt)
                self._open_stage("claimed", at, worker_id)
            case ev.JobStageChanged(stage=stage):
                self._open_stage(stage, at, item.actor)
            case ev.JobCancelRequested():
                self.timeline.cancel_requested_by, self.timeline.cancel_requested_at = item.actor, at
                if self.attempt is not None:
                    self._open_stage("cancelling", at, self.attempt.worker_id)
                else:
                    self._close_stage(at)
                    self._finish(at)
            case ev.JobChildStarted(pid=pid, argv=argv, host_id=host_id):
                child = ChildRun(
                    pid=pid,
                    program=PurePath(argv[0]).name if argv else "",
                    argv=list(argv),
                    host_id=host_id,
                    worker_id=item.actor,
                    attempt=self.attempt.attempt if self.attempt else 0,
                    stage=self.stage.stage if self.stage else None,
                    started_at=at,
                )
                self.open_children[pid] = child
                self.timeline.children.append(child)
            case ev.JobChildExited(pid=pid, exit_status=status):
                exited = self.open_children.pop(pid, None) or next(
                    (c for c in reversed(self.timeline.children) if c.pid == pid and c.orphaned and c.exited_at is None), None
                )
                if exited is not None:
                    exited.exited_at, exited.exit_status = at, status
                    exited.duration_s = _seconds(exited.started_at, at)
            case ev.JobLeaseExpired(orphaned_pids=pids) | ev.JobReleased(orphaned_pids=pids):
                self._orphan(pids)
                self._orphan(list(self.open_children))
                self._end_attempt(item.type.removeprefix("job."), at)
                self._open_stage("queued", at, None)
            case ev.JobRetryScheduled():
                self._end_attempt("retry_scheduled", at)
                self._open_stage("queued", at, None)
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled():
                self._close_stage(at)
                self._end_attempt(item.type.removeprefix("job."), at)
                self._finish(at)

    def _finish(self, at: dt.datetime) -> None:
        self.timeline.finished_at = at
        self.timeline.total_s = _seconds(self.timeline.created_at, at)


def summarize(recorded: Sequence[ev.RecordedEvent]) -> JobTimeline:
    """Summarise one job's events (one stream, version order).

    Args:
        recorded: the stream; its first event must be ``job.created``.

    Returns:
        The timeline; spans still open at the last event have ``ended_at`` ``None``.

    Raises:
        ValueError: the stream is empty or does not start with ``job.created``.
    """
    if not recorded or not isinstance(recorded[0].event, ev.JobCreated):
        raise ValueError("a job's stream must start with job.created")
    builder = _Builder(recorded[0], recorded[0].event)
    for item in recorded[1:]:
        builder.add(item)
    timeline = builder.timeline
    timeline.events = len(recorded)
    try:
        state = job_state.fold(recorded)
        timeline.status = state.status if state is not None else None
    except errors.IllegalTransition:
        timeline.status = None
    return timeline
