"""The log's invariants, checked over stored events; each violation names its position (pure).

Rules (``Violation.rule``):

- ``hash``: the stored hash is not sha256 over the event's stored columns and the
  previous event's stored hash (:mod:`jobtape.eventlog.hashing`): the row was edited
  after it was written. The chain continues from the stored hash, so only the edited
  event is named (an edit that also rewrote the hash breaks the next event's link).
- ``hash_missing``: the event has no hash (written before migration 0003).
- ``version_gap``: a stream's versions are not 1, 2, 3 ... in position order.
- ``malformed``: the event cannot be decoded.
- ``after_terminal``: an event follows the job's terminal event (``job.completed``,
  ``job.failed``, ``job.cancelled``, or the ``job.cancel_requested`` that finished a
  pending job), except ``job.blobs_deleted``, which the fold allows after one (the
  state machine still checks it: only keys the job owns, each once).
- ``second_terminal``: a second terminal event (so a finished job has exactly one).
- ``fold``: the state machine (:mod:`jobtape.projections.state`) refuses the event.
- ``fold`` in an API key's stream (``key-<key_id>``, :mod:`jobtape.eventlog.key_events`):
  the key fold (:mod:`jobtape.projections.key_state`) refuses the event (a second
  ``key.created``, a revoke of a revoked key). A key stream's hash chain and versions are
  checked like a job's; the job rules never apply to it.
- ``child_unexited``: a finished job's ``job.child_started`` has no later
  ``job.child_exited`` for that pid, and no later ``job.lease_expired``/``job.released``
  lists the pid in ``orphaned_pids`` (issue 4: orphans are killed by the host's orphan sweep).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import msgspec

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, key_events
from jobtape.eventlog.stored import StoredEvent, to_recorded, to_recorded_key
from jobtape.projections import key_state
from jobtape.projections import state as job_state

__all__ = ["TERMINAL_TYPES", "VerifyReport", "Violation", "verify"]

_Report = Callable[[str, str], None]

#: Event types that end a job.
TERMINAL_TYPES = frozenset({"job.completed", "job.failed", "job.cancelled"})


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """One broken invariant: ``rule`` (see the module docstring) at global ``position`` of ``job_id``."""

    position: int
    job_id: str
    rule: str
    message: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`verify` checked and found; ``violations`` sorted by position (empty: the log is sound).

    ``jobs_checked`` counts job streams, ``keys_checked`` API-key streams.
    """

    events_checked: int
    jobs_checked: int
    violations: list[Violation]
    keys_checked: int = 0


@dataclasses.dataclass
class _Stream:
    last_version: int = 0
    last_hash: str = ""
    state: job_state.JobState | None = None
    terminal_position: int | None = None
    open_children: dict[int, int] = dataclasses.field(default_factory=dict)
    key: key_state.KeyState | None = None


def verify(stored: Iterable[StoredEvent]) -> VerifyReport:
    """Check every invariant over the log.

    Args:
        stored: every stored event in position order (e.g. :func:`jobtape.eventlog.stored.iter_stored`).
    """
    streams: dict[str, _Stream] = {}
    found: list[Violation] = []
    count = 0
    for row in stored:
        count += 1
        stream = streams.setdefault(row.job_id, _Stream(last_hash=hashing.genesis_hash(row.job_id)))

        def violation(rule: str, message: str, row: StoredEvent = row) -> None:
            found.append(Violation(position=row.position, job_id=row.job_id, rule=rule, message=message))

        _check_hash(row, stream, violation)
        if row.version != stream.last_version + 1:
            violation("version_gap", f"version {row.version} follows version {stream.last_version} of the stream")
        stream.last_version = row.version
        if key_events.is_key_stream(row.job_id):
            _fold_key(row, stream, violation)
            continue
        try:
            recorded = to_recorded(row)
        except errors.MalformedEvent as exc:
            violation("malformed", exc.message)
            continue
        if stream.terminal_position is not None and not isinstance(recorded.event, ev.JobBlobsDeleted):
            rule = "second_terminal" if row.type in TERMINAL_TYPES else "after_terminal"
            violation(rule, f"{row.type} after the terminal event at position {stream.terminal_position}")
            continue
        _fold(recorded, stream, violation)
        _track_children(recorded, stream)
    for job_id, stream in streams.items():
        if stream.terminal_position is not None:
            for pid, position in stream.open_children.items():
                found.append(
                    Violation(
                        position=position,
                        job_id=job_id,
                        rule="child_unexited",
                        message=f"child pid {pid} has no job.child_exited and was not listed as orphaned",
                    )
                )
    found.sort(key=lambda v: (v.position, v.rule))
    keys = sum(1 for job_id in streams if key_events.is_key_stream(job_id))
    return VerifyReport(events_checked=count, jobs_checked=len(streams) - keys, violations=found, keys_checked=keys)


def _check_hash(row: StoredEvent, stream: _Stream, violation: _Report) -> None:
    if row.hash is None:
        violation("hash_missing", "the event has no hash (written before migration 0003)")
        stream.last_hash = ""  # what EventStore.append chains from after an unhashed event
        return
    expected = hashing.event_hash(stream.last_hash, row.job_id, row.version, row.type, row.data, row.actor, row.recorded_at)
    if expected != row.hash:
        violation(
            "hash", "the stored hash does not match the event's content and the previous hash: the event was changed after it was written"
        )
    stream.last_hash = row.hash


def _fold(recorded: ev.RecordedEvent, stream: _Stream, violation: _Report) -> None:
    version = stream.state.version + 1 if stream.state is not None else recorded.version
    try:
        stream.state = job_state.apply(
            stream.state, recorded.event, job_id=recorded.job_id, version=version, recorded_at=recorded.recorded_at
        )
    except errors.IllegalTransition as exc:
        violation("fold", f"{recorded.type} refused: {exc.reason} (state {exc.status})")
        return
    if stream.state.finished and stream.terminal_position is None:
        stream.terminal_position = recorded.position


def _fold_key(row: StoredEvent, stream: _Stream, violation: _Report) -> None:
    """Decode and fold one event of an API key's stream (the job rules do not apply to it)."""
    try:
        recorded = to_recorded_key(row)
    except errors.MalformedEvent as exc:
        violation("malformed", exc.message)
        return
    version = stream.key.version + 1 if stream.key is not None else recorded.version
    try:
        stream.key = key_state.apply(stream.key, recorded.event, stream=row.job_id, version=version, recorded_at=recorded.recorded_at)
    except errors.IllegalTransition as exc:
        violation("fold", f"{recorded.type} refused: {exc.reason} (key {exc.status})")


def _track_children(recorded: ev.RecordedEvent, stream: _Stream) -> None:
    match recorded.event:
        case ev.JobChildStarted(pid=pid):
            stream.open_children[pid] = recorded.position
        case ev.JobChildExited(pid=pid):
            stream.open_children.pop(pid, None)
        case ev.JobLeaseExpired(orphaned_pids=pids) | ev.JobReleased(orphaned_pids=pids):
            for pid in pids:
                stream.open_children.pop(pid, None)
