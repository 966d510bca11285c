"""The job state machine: a pure fold over a job's events (no I/O).

This module is the ONE place that decides a job's state. Everything else (the HTTP
layer, the worker, the SQL projections) asks it: appends run the new events through
:func:`apply` first, so an illegal transition is refused before anything is written.

States (``status``)::

    pending ──claimed──▶ processing ──completed──▶ complete
       │                    │ └──────failed──────▶ failed
       │                    └─cancel_requested──▶ cancelled (stage "cancelling", not finished)
       │                                              └──cancelled──▶ cancelled (finished)
       └──cancel_requested──▶ cancelled (finished at once: no worker to wait for)

    processing ──lease_expired / retry_scheduled / released──▶ pending (again)
    pending ──failed──▶ failed   (a reaper giving up after the last attempt)
    pending ──completed──▶ complete   (only as version 2: a cache hit completes at creation)
    finished ──blobs_deleted──▶ finished (same status; the removed keys are recorded)

Leases: ``job.claimed`` may carry ``lease_ttl_s``; every later event of the holding worker
(stage, progress, child, heartbeat) renews ``lease_expires_at`` to its own time + TTL.

From the moment cancel is requested the job *shows* ``cancelled`` (seed 002: the cancel
route answers ``status: cancelled``); ``finished`` turns true only when the worker has
confirmed its children dead (``job.cancelled``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import legacy

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "JobState",
    "Status",
    "apply",
    "download_key",
    "fold",
    "owned_inputs",
    "owned_keys",
    "owned_outputs",
    "retained_inputs",
    "retained_upload",
]

Status = Literal["pending", "processing", "complete", "failed", "cancelled"]

#: Statuses a poll reports as terminal (the cancel route answers 409 for these).
TERMINAL_STATUSES: frozenset[str] = frozenset({"complete", "failed", "cancelled"})
#: Statuses that count against a quota and that a worker may still act on.
ACTIVE_STATUSES: frozenset[str] = frozenset({"pending", "processing"})


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """A job's state after folding its events.

    Attributes:
        job_id: the stream id.
        job_type: the job type's name (e.g. ``ingest``, ``preview``, ``save``).
        owner: who submitted the job.
        params: the job's parameters (from ``job.created``).
        idempotency_key: the client's key, if any.
        status: see the module docstring.
        stage: the current stage name, ``cancelling`` while a cancel awaits the worker,
            ``None`` when there is none.
        progress: 0-100 percent within the current stage (100 when complete).
        attempt: 0 until claimed, then the claim's attempt number.
        worker_id: the worker holding (or that last held) the job.
        lease_expires_at: UTC expiry of the worker's lease.
        result: the completion result, else ``None``.
        error: the failure message, else ``None``.
        cancel_requested: a cancel was requested.
        finished: a terminal event (completed, failed, cancelled) is in the stream, or a
            pending job was cancelled. Nothing may follow.
        running_children: pids of child processes started in the current attempt and not yet exited.
        orphaned_children: pids of children of an earlier attempt whose worker lost the job
            without recording their exit (killed later by that host's orphan sweep).
        lease_ttl_s: the current claim's lease length in seconds (``None``: no lease).
        not_before: a pending job is not claimed before this UTC time (retry backoff).
        last_error: the error of the last retryable failure or lease expiry.
        created_at / updated_at: UTC times of the first and latest events (a
            ``job.blobs_deleted`` after the job finished leaves ``updated_at`` at the
            finish, so retention cut-offs keep meaning "finished before").
        version: the version of the last event folded in.
        removed_keys: storage keys of this job recorded as removed (``job.blobs_deleted``), in order.
        blobs_removed_at: UTC time of the latest ``job.blobs_deleted``; ``None`` if none.
        declared_inputs: ``job.created``'s ``owned_keys``; ``None`` when it names none
            (then :func:`owned_inputs` reads the legacy rules).
        declared_outputs / declared_download: ``job.completed``'s ``owned_keys`` and
            ``download_key``; both ``None`` when it declares neither (or before completion).
            Ask :func:`owned_keys`, :func:`download_key`, :func:`retained_inputs` rather
            than these fields.
    """

    job_id: str
    job_type: str
    owner: str = "anonymous"
    params: dict[str, Any] = {}
    idempotency_key: str | None = None
    status: Status = "pending"
    stage: str | None = None
    progress: int = 0
    attempt: int = 0
    worker_id: str | None = None
    lease_expires_at: dt.datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    finished: bool = False
    running_children: tuple[int, ...] = ()
    orphaned_children: tuple[int, ...] = ()
    lease_ttl_s: float | None = None
    not_before: dt.datetime | None = None
    last_error: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int = 0
    removed_keys: tuple[str, ...] = ()
    blobs_removed_at: dt.datetime | None = None
    declared_inputs: tuple[str, ...] | None = None
    declared_outputs: tuple[str, ...] | None = None
    declared_download: str | None = None


def owned_inputs(state: JobState) -> tuple[str, ...]:
    """The keys the job's creator handed to it (``job.created``'s ``owned_keys``, e.g. an
    upload ingest's upload); for a ``job.created`` that declares none, the reading of logs
    written before the field existed (:func:`jobtape.projections.legacy.legacy_inputs`)."""
    if state.declared_inputs is not None:
        return state.declared_inputs
    return legacy.legacy_inputs(state.job_type, state.params)


def _declares_completion(state: JobState) -> bool:
    return state.declared_outputs is not None or state.declared_download is not None


def owned_outputs(state: JobState) -> tuple[str, ...]:
    """The outputs a complete job owns (``job.completed``'s ``owned_keys``); for a completion
    that declares nothing, :func:`jobtape.projections.legacy.legacy_outputs`. ``()`` unless complete."""
    if state.status != "complete":
        return ()
    if _declares_completion(state):
        return state.declared_outputs or ()
    return legacy.legacy_outputs(state.job_type, state.result or {})


def owned_keys(state: JobState) -> tuple[str, ...]:
    """The storage keys this job owns, which only its ``job.blobs_deleted`` may remove:
    :func:`owned_inputs`, then (once complete) :func:`owned_outputs`, each once."""
    return tuple(dict.fromkeys((*owned_inputs(state), *owned_outputs(state))))


def download_key(state: JobState) -> str | None:
    """The key a complete job's poll links to (``job.completed``'s ``download_key``), owned or
    not, unless recorded as removed; for a completion that declares nothing,
    :func:`jobtape.projections.legacy.legacy_download`. ``None`` unless complete."""
    if state.status != "complete":
        return None
    key = state.declared_download if _declares_completion(state) else legacy.legacy_download(state.job_type, state.result or {})
    return None if key is None or key in state.removed_keys else key


def retained_inputs(state: JobState) -> tuple[str, ...]:
    """The inputs failed-upload retention will remove: the :func:`owned_inputs` of a job that
    finished ``failed`` or ``cancelled`` (no output came of them) not recorded as removed."""
    if not state.finished or state.status not in ("failed", "cancelled"):
        return ()
    return tuple(key for key in owned_inputs(state) if key not in state.removed_keys)


def retained_upload(state: JobState) -> str | None:
    """The first of :func:`retained_inputs`, or ``None``: the ``jobs`` row's ``retained_upload``
    column, which marks the rows failed-upload retention has work in."""
    return next(iter(retained_inputs(state)), None)


def _blobs_deleted(state: JobState, event: ev.JobBlobsDeleted, version: int, at: dt.datetime) -> JobState:
    if version != state.version + 1:
        raise _refuse(state, event, f"version {version} does not follow {state.version}")
    if not state.finished:
        raise _refuse(state, event, "the job has not finished; its blobs are still in use")
    if not event.keys:
        raise _refuse(state, event, "no keys named")
    owned = owned_keys(state)
    for key in event.keys:
        if key not in owned:
            raise _refuse(state, event, f"the job does not own {key!r} (it owns {list(owned)})")
        if key in state.removed_keys:
            raise _refuse(state, event, f"{key!r} is recorded as removed already")
    if len(set(event.keys)) != len(event.keys):
        raise _refuse(state, event, "a key is named twice")
    return msgspec.structs.replace(state, removed_keys=(*state.removed_keys, *event.keys), blobs_removed_at=at, version=version)


def _refuse(state: JobState, event: ev.Event, reason: str) -> errors.IllegalTransition:
    return errors.IllegalTransition(state.job_id, state.status, ev.event_type(event), reason)


def apply(
    state: JobState | None,
    event: ev.Event,
    *,
    job_id: str,
    version: int,
    recorded_at: dt.datetime,
) -> JobState:
    """Fold one event into a job's state.

    Args:
        state: the state before the event; ``None`` for an empty stream.
        event: the event to apply.
        job_id: the stream the event belongs to.
        version: the event's version in the stream (must be ``state.version + 1``).
        recorded_at: the event's UTC time.

    Returns:
        The new state (states are immutable).

    Raises:
        errors.IllegalTransition: the event is not allowed in this state (for example
            progress after completion, a second claim, completion after a cancel request,
            any event after a terminal one, anything but ``job.created`` on an empty stream).
    """
    if state is None:
        if not isinstance(event, ev.JobCreated):
            raise errors.IllegalTransition(job_id, "absent", ev.event_type(event), "the job does not exist")
        return JobState(
            job_id=job_id,
            job_type=event.job_type,
            owner=event.owner,
            params=event.params,
            idempotency_key=event.idempotency_key,
            declared_inputs=tuple(event.owned_keys) if event.owned_keys else None,
            created_at=recorded_at,
            updated_at=recorded_at,
            version=version,
        )
    if isinstance(event, ev.JobBlobsDeleted):  # the one event allowed after a terminal one
        return _blobs_deleted(state, event, version, recorded_at)
    if version != state.version + 1:
        raise _refuse(state, event, f"version {version} does not follow {state.version}")
    if state.finished:
        raise _refuse(state, event, "the job has finished; nothing may follow a terminal event")
    transition = _TRANSITIONS.get(type(event))
    if transition is None:  # pragma: no cover - the union is exhaustive
        raise _refuse(state, event, "unknown event")
    return transition(state, event, recorded_at, version)


def _require_running(state: JobState, event: ev.Event, *, allow_cancelling: bool = False) -> None:
    if state.status == "pending":
        raise _refuse(state, event, "the job has not been claimed")
    if state.cancel_requested and not allow_cancelling:
        raise _refuse(state, event, "cancellation was requested")


def _renewed(state: JobState, recorded_at: dt.datetime) -> dict[str, Any]:
    if state.lease_ttl_s is None or state.status == "pending":
        return {}
    return {"lease_expires_at": recorded_at + dt.timedelta(seconds=state.lease_ttl_s)}


def _back_to_pending(state: JobState, not_before: dt.datetime | None) -> dict[str, Any]:
    return {
        "status": "pending",
        "worker_id": None,
        "lease_expires_at": None,
        "lease_ttl_s": None,
        "stage": None,
        "progress": 0,
        "not_before": not_before,
        "running_children": (),
        "orphaned_children": (*state.orphaned_children, *state.running_children),
    }


def _require_holder(state: JobState, event: ev.Event, worker_id: str) -> None:
    if state.status == "pending" or state.worker_id != worker_id:
        raise _refuse(state, event, f"worker {worker_id} does not hold the job (holder: {state.worker_id})")


# The transitions, one function per event type, looked up by the event's class
# (:data:`_TRANSITIONS`): a dict lookup instead of a ``match`` trying each class in turn.
# Each returns the new state, ``updated_at`` and ``version`` set, or raises the refusal.
# The common ones call ``replace`` with plain keywords: a rebuild folds every event of the
# log, and ``replace(state, **changes)`` costs ~3x a call with the keywords written out.
_replace = msgspec.structs.replace


def _created(state: JobState, event: ev.JobCreated, at: dt.datetime, version: int) -> JobState:
    raise _refuse(state, event, "the job exists already")


def _claimed(state: JobState, event: ev.JobClaimed, at: dt.datetime, version: int) -> JobState:
    attempt, lease, ttl = event.attempt, event.lease_expires_at, event.lease_ttl_s
    if state.status != "pending":
        raise _refuse(state, event, "only a pending job can be claimed")
    if state.not_before is not None and at < state.not_before:
        raise _refuse(state, event, f"the job is backed off until {state.not_before.isoformat()}")
    if attempt != state.attempt + 1:
        raise _refuse(state, event, f"attempt {attempt} does not follow attempt {state.attempt}")
    if lease is None and ttl is not None:
        lease = at + dt.timedelta(seconds=ttl)
    return _replace(
        state,
        status="processing",
        worker_id=event.worker_id,
        attempt=attempt,
        lease_expires_at=lease,
        lease_ttl_s=ttl,
        not_before=None,
        stage=None,
        progress=0,
        updated_at=at,
        version=version,
    )


def _stage_changed(state: JobState, event: ev.JobStageChanged, at: dt.datetime, version: int) -> JobState:
    _require_running(state, event)
    ttl = state.lease_ttl_s
    if ttl is None:  # nothing to renew
        return _replace(state, stage=event.stage, progress=0, updated_at=at, version=version)
    # running (not pending): the lease renews as in _renewed
    return _replace(state, stage=event.stage, progress=0, lease_expires_at=at + dt.timedelta(seconds=ttl), updated_at=at, version=version)


def _progress(state: JobState, event: ev.JobProgress, at: dt.datetime, version: int) -> JobState:
    _require_running(state, event)
    percent = event.percent
    if not 0 <= percent <= 100:
        raise _refuse(state, event, f"percent {percent} is outside 0-100")
    ttl = state.lease_ttl_s
    if ttl is None:  # nothing to renew
        return _replace(state, progress=percent, updated_at=at, version=version)
    # running (not pending): the lease renews as in _renewed
    return _replace(state, progress=percent, lease_expires_at=at + dt.timedelta(seconds=ttl), updated_at=at, version=version)


def _heartbeat(state: JobState, event: ev.JobHeartbeat, at: dt.datetime, version: int) -> JobState:
    _require_running(state, event, allow_cancelling=True)
    lease = event.lease_expires_at
    if lease is not None:
        return _replace(state, lease_expires_at=lease, updated_at=at, version=version)
    return _replace(state, **_renewed(state, at), updated_at=at, version=version)


def _lease_expired(state: JobState, event: ev.JobLeaseExpired, at: dt.datetime, version: int) -> JobState:
    worker_id, attempt = event.worker_id, event.attempt
    _require_holder(state, event, worker_id)
    if attempt != state.attempt:
        raise _refuse(state, event, f"attempt {attempt} is not the current attempt {state.attempt}")
    changes = _back_to_pending(state, event.not_before)
    changes["last_error"] = f"lease of worker {worker_id} expired (attempt {attempt})"
    if state.cancel_requested:  # stays cancelled; the reaper confirms with job.cancelled
        changes.update(status="cancelled", stage="cancelling")
    return _replace(state, **changes, updated_at=at, version=version)


def _released(state: JobState, event: ev.JobReleased, at: dt.datetime, version: int) -> JobState:
    _require_holder(state, event, event.worker_id)
    if state.cancel_requested:
        raise _refuse(state, event, "cancellation was requested: cancel, do not release")
    return _replace(state, **_back_to_pending(state, None), attempt=state.attempt - 1, updated_at=at, version=version)


def _retry_scheduled(state: JobState, event: ev.JobRetryScheduled, at: dt.datetime, version: int) -> JobState:
    attempt = event.attempt
    _require_running(state, event)
    if attempt != state.attempt:
        raise _refuse(state, event, f"attempt {attempt} is not the current attempt {state.attempt}")
    if state.running_children:
        raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
    return _replace(state, **_back_to_pending(state, event.not_before), last_error=event.error, updated_at=at, version=version)


def _cancel_requested(state: JobState, event: ev.JobCancelRequested, at: dt.datetime, version: int) -> JobState:
    if state.cancel_requested:
        raise _refuse(state, event, "cancellation was requested already")
    if state.status == "pending":
        return _replace(state, status="cancelled", cancel_requested=True, finished=True, stage=None, updated_at=at, version=version)
    return _replace(state, status="cancelled", cancel_requested=True, stage="cancelling", updated_at=at, version=version)


def _child_started(state: JobState, event: ev.JobChildStarted, at: dt.datetime, version: int) -> JobState:
    pid = event.pid
    _require_running(state, event)
    if pid in state.running_children:
        raise _refuse(state, event, f"a child with pid {pid} is running already")
    return _replace(state, running_children=(*state.running_children, pid), **_renewed(state, at), updated_at=at, version=version)


def _child_exited(state: JobState, event: ev.JobChildExited, at: dt.datetime, version: int) -> JobState:
    pid = event.pid
    if pid in state.running_children:
        _require_running(state, event, allow_cancelling=True)
        running = tuple(p for p in state.running_children if p != pid)
        return _replace(state, running_children=running, **_renewed(state, at), updated_at=at, version=version)
    if pid in state.orphaned_children:  # an earlier attempt's child, found by the orphan sweep
        orphaned = tuple(p for p in state.orphaned_children if p != pid)
        return _replace(state, orphaned_children=orphaned, updated_at=at, version=version)
    raise _refuse(state, event, f"no running child with pid {pid}")


def _cancelled(state: JobState, event: ev.JobCancelled, at: dt.datetime, version: int) -> JobState:
    if not state.cancel_requested:
        raise _refuse(state, event, "no cancellation was requested")
    if state.running_children:
        raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
    return _replace(state, finished=True, stage=None, updated_at=at, version=version)


def _completed(state: JobState, event: ev.JobCompleted, at: dt.datetime, version: int) -> JobState:
    # A cache hit (e.g. a preview already rendered) completes right at creation:
    # job.created and job.completed in one append, never after any other event.
    if not (state.status == "pending" and state.version == 1):
        _require_running(state, event)
    if state.running_children:
        raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
    outputs = event.owned_keys
    return _replace(
        state,
        status="complete",
        result=event.result,
        progress=100,
        finished=True,
        stage=None,
        declared_outputs=tuple(outputs) if outputs else None,
        declared_download=event.download_key or None,
        updated_at=at,
        version=version,
    )


def _failed(state: JobState, event: ev.JobFailed, at: dt.datetime, version: int) -> JobState:
    if state.cancel_requested:
        raise _refuse(state, event, "cancellation was requested")
    if state.running_children:
        raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
    return _replace(state, status="failed", error=event.error, finished=True, stage=None, updated_at=at, version=version)


def _blobs_deleted_late(state: JobState, event: ev.JobBlobsDeleted, at: dt.datetime, version: int) -> JobState:  # pragma: no cover
    raise _refuse(state, event, "the job has not finished")  # handled by apply before the finished check


#: Event class -> its transition; every member of :data:`jobtape.eventlog.events.Event` (checked by tests/unit/test_fold.py).
_TRANSITIONS: dict[type, Callable[[JobState, Any, dt.datetime, int], JobState]] = {
    ev.JobCreated: _created,
    ev.JobClaimed: _claimed,
    ev.JobStageChanged: _stage_changed,
    ev.JobProgress: _progress,
    ev.JobHeartbeat: _heartbeat,
    ev.JobLeaseExpired: _lease_expired,
    ev.JobReleased: _released,
    ev.JobRetryScheduled: _retry_scheduled,
    ev.JobCancelRequested: _cancel_requested,
    ev.JobChildStarted: _child_started,
    ev.JobChildExited: _child_exited,
    ev.JobCancelled: _cancelled,
    ev.JobCompleted: _completed,
    ev.JobFailed: _failed,
    ev.JobBlobsDeleted: _blobs_deleted_late,
}


def fold(recorded: Iterable[ev.RecordedEvent], state: JobState | None = None) -> JobState | None:
    """Fold recorded events (one stream, in version order) into a state.

    Raises:
        errors.IllegalTransition: the stored stream breaks the state rules.
    """
    for item in recorded:
        state = apply(state, item.event, job_id=item.job_id, version=item.version, recorded_at=item.recorded_at)
    return state
