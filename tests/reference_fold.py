"""The job fold as it was before issue 12 (one ``match`` over the event classes), kept verbatim as a reference.

``tests/unit/test_fold_reference.py`` folds generated event sequences with it and with
:func:`jobtape.projections.state.apply` (the one authority, rewritten as a dispatch table
for speed) and requires the same states and the same refusals. Nothing in ``jobtape``
imports this module.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections.state import JobState, owned_keys


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
    changes = _transition(state, event, recorded_at)
    return msgspec.structs.replace(state, **changes, updated_at=recorded_at, version=version)


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


def _transition(state: JobState, event: ev.Event, at: dt.datetime) -> dict[str, Any]:
    match event:
        case ev.JobCreated():
            raise _refuse(state, event, "the job exists already")
        case ev.JobClaimed(worker_id=worker_id, attempt=attempt, lease_expires_at=lease, lease_ttl_s=ttl):
            if state.status != "pending":
                raise _refuse(state, event, "only a pending job can be claimed")
            if state.not_before is not None and at < state.not_before:
                raise _refuse(state, event, f"the job is backed off until {state.not_before.isoformat()}")
            if attempt != state.attempt + 1:
                raise _refuse(state, event, f"attempt {attempt} does not follow attempt {state.attempt}")
            if lease is None and ttl is not None:
                lease = at + dt.timedelta(seconds=ttl)
            return {
                "status": "processing",
                "worker_id": worker_id,
                "attempt": attempt,
                "lease_expires_at": lease,
                "lease_ttl_s": ttl,
                "not_before": None,
                "stage": None,
                "progress": 0,
            }
        case ev.JobStageChanged(stage=stage):
            _require_running(state, event)
            return {"stage": stage, "progress": 0, **_renewed(state, at)}
        case ev.JobProgress(percent=percent):
            _require_running(state, event)
            if not 0 <= percent <= 100:
                raise _refuse(state, event, f"percent {percent} is outside 0-100")
            return {"progress": percent, **_renewed(state, at)}
        case ev.JobHeartbeat(lease_expires_at=lease):
            _require_running(state, event, allow_cancelling=True)
            return {"lease_expires_at": lease} if lease is not None else _renewed(state, at)
        case ev.JobLeaseExpired(worker_id=worker_id, attempt=attempt, not_before=not_before):
            _require_holder(state, event, worker_id)
            if attempt != state.attempt:
                raise _refuse(state, event, f"attempt {attempt} is not the current attempt {state.attempt}")
            changes = _back_to_pending(state, not_before)
            changes["last_error"] = f"lease of worker {worker_id} expired (attempt {attempt})"
            if state.cancel_requested:  # stays cancelled; the reaper confirms with job.cancelled
                changes.update(status="cancelled", stage="cancelling")
            return changes
        case ev.JobReleased(worker_id=worker_id):
            _require_holder(state, event, worker_id)
            if state.cancel_requested:
                raise _refuse(state, event, "cancellation was requested: cancel, do not release")
            return {**_back_to_pending(state, None), "attempt": state.attempt - 1}
        case ev.JobRetryScheduled(error=error, attempt=attempt, not_before=not_before):
            _require_running(state, event)
            if attempt != state.attempt:
                raise _refuse(state, event, f"attempt {attempt} is not the current attempt {state.attempt}")
            if state.running_children:
                raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
            return {**_back_to_pending(state, not_before), "last_error": error}
        case ev.JobCancelRequested():
            if state.cancel_requested:
                raise _refuse(state, event, "cancellation was requested already")
            if state.status == "pending":
                return {"status": "cancelled", "cancel_requested": True, "finished": True, "stage": None}
            return {"status": "cancelled", "cancel_requested": True, "stage": "cancelling"}
        case ev.JobChildStarted(pid=pid):
            _require_running(state, event)
            if pid in state.running_children:
                raise _refuse(state, event, f"a child with pid {pid} is running already")
            return {"running_children": (*state.running_children, pid), **_renewed(state, at)}
        case ev.JobChildExited(pid=pid):
            if pid in state.running_children:
                _require_running(state, event, allow_cancelling=True)
                return {"running_children": tuple(p for p in state.running_children if p != pid), **_renewed(state, at)}
            if pid in state.orphaned_children:  # an earlier attempt's child, found by the orphan sweep
                return {"orphaned_children": tuple(p for p in state.orphaned_children if p != pid)}
            raise _refuse(state, event, f"no running child with pid {pid}")
        case ev.JobCancelled():
            if not state.cancel_requested:
                raise _refuse(state, event, "no cancellation was requested")
            if state.running_children:
                raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
            return {"finished": True, "stage": None}
        case ev.JobCompleted(result=result, owned_keys=outputs, download_key=download):
            # A cache hit (e.g. a preview already rendered) completes right at creation:
            # job.created and job.completed in one append, never after any other event.
            if not (state.status == "pending" and state.version == 1):
                _require_running(state, event)
            if state.running_children:
                raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
            return {
                "status": "complete",
                "result": result,
                "progress": 100,
                "finished": True,
                "stage": None,
                "declared_outputs": tuple(outputs) if outputs else None,
                "declared_download": download or None,
            }
        case ev.JobFailed(error=error):
            if state.cancel_requested:
                raise _refuse(state, event, "cancellation was requested")
            if state.running_children:
                raise _refuse(state, event, f"children {list(state.running_children)} have not exited")
            return {"status": "failed", "error": error, "finished": True, "stage": None}
        case ev.JobBlobsDeleted():  # pragma: no cover - handled by apply before the finished check
            raise _refuse(state, event, "the job has not finished")
    raise _refuse(state, event, "unknown event")  # pragma: no cover - the union is exhaustive
