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

With the log keys (:class:`ChainContext`), the keyed rules (docs/audit.md, "Tamper evidence"):

- ``chain``: the event's keyed chain value is not HMAC(key, previous chain, position,
  key id, hash) (:func:`jobtape.eventlog.hashing.chain_link`): the event, its hash or its
  position was changed, e.g. a stream edited and re-chained with plain sha256. The walk
  continues from the stored value, so only changed events are named.
- ``chain_missing``: the event has no keyed chain (inserted behind the store's back).
- ``removed``: positions are missing between two events (or after the last one, up to
  the recorded head) and no valid archive record (nor the keyed upgrade, for positions
  before it) covers them: events were deleted, e.g. a job's last event.
- ``archive_forged``: an ``archives`` row (and its ``archived_jobs`` rows) whose MAC is
  missing or does not verify: the rows were inserted or edited without the key.
- ``upgrade_forged``: a ``chain_upgrades`` row whose MAC does not verify.
- ``key``: no event's chain verifies under the keys held (a wrong key), or a key id is not held.
- ``checkpoint``: the log does not extend the checkpoint given (``verify --against``):
  the event at its position is gone or has another chain (the tail was removed, the log rewritten).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import Callable, Iterable, Sequence

import msgspec

from jobtape import errors
from jobtape.audit.checkpoint import Checkpoint
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, key_events
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.stored import StoredEvent, to_recorded, to_recorded_key
from jobtape.projections import key_state
from jobtape.projections import state as job_state
from jobtape.projections.archives import ArchiveRecord, UpgradeRecord, archive_signed_fields

__all__ = ["TERMINAL_TYPES", "ChainContext", "VerifyReport", "Violation", "verify"]

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

    ``jobs_checked`` counts job streams, ``keys_checked`` API-key streams. ``chain`` says what
    the keyed checks covered: ``keyed (key ids ...)``, or ``unkeyed`` (no log key held: only
    the unkeyed sha256 chains were checked).
    """

    events_checked: int
    jobs_checked: int
    violations: list[Violation]
    keys_checked: int = 0
    chain: str = "unkeyed"


@dataclasses.dataclass(frozen=True)
class ChainContext:
    """What the keyed checks need besides the events.

    Attributes:
        keys: the log keys held (``None``: unkeyed, the keyed rules are skipped).
        archives: every ``archives`` row with its ``archived_jobs`` rows.
        upgrades: every ``chain_upgrades`` row.
        head: ``log_head``'s (position, chain).
        checkpoint: a verified checkpoint the log must extend (``verify --against``).
    """

    keys: LogKeys | None
    archives: Sequence[ArchiveRecord] = ()
    upgrades: Sequence[UpgradeRecord] = ()
    head: tuple[int, str | None] = (0, None)
    checkpoint: Checkpoint | None = None


@dataclasses.dataclass
class _Stream:
    last_version: int = 0
    last_hash: str = ""
    state: job_state.JobState | None = None
    terminal_position: int | None = None
    open_children: dict[int, int] = dataclasses.field(default_factory=dict)
    key: key_state.KeyState | None = None


def verify(stored: Iterable[StoredEvent], context: ChainContext | None = None) -> VerifyReport:
    """Check every invariant over the log.

    Args:
        stored: every stored event in position order (e.g. :func:`jobtape.eventlog.stored.iter_stored`).
        context: the keys and records of the keyed checks; ``None`` or without keys: unkeyed.
    """
    streams: dict[str, _Stream] = {}
    found: list[Violation] = []
    count = 0
    walk = _ChainWalk(context, found) if context is not None and context.keys is not None else None
    for row in stored:
        count += 1
        if walk is not None:
            walk.step(row)
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
    chain = "unkeyed: no log key held; the keyed chain, archive records and checkpoints were not checked"
    if walk is not None:
        walk.finish()
        chain = walk.describe()
    found.sort(key=lambda v: (v.position, v.rule))
    keys = sum(1 for job_id in streams if key_events.is_key_stream(job_id))
    return VerifyReport(events_checked=count, jobs_checked=len(streams) - keys, violations=found, keys_checked=keys, chain=chain)


class _ChainWalk:
    """The keyed checks, fed the events in position order."""

    def __init__(self, context: ChainContext, found: list[Violation]) -> None:
        assert context.keys is not None
        self.keys = context.keys
        self.context = context
        self.found = found
        self.previous_chain = hashing.GENESIS_CHAIN
        self.previous_position = 0
        self.legacy_limit = 0
        self.bridges: dict[int, str] = {}  # removed position -> its chain (valid archive records)
        self.chained = 0
        self.mismatched: list[Violation] = []
        self.unknown_keys: set[str] = set()
        self.used_keys: set[str] = set()
        self.checkpoint_seen = context.checkpoint is None or context.checkpoint.position == 0
        legacy_archives = self._upgrades()
        self._archives(legacy_archives)

    def _add(self, position: int, job_id: str, rule: str, message: str) -> None:
        self.found.append(Violation(position=position, job_id=job_id, rule=rule, message=message))

    def _upgrades(self) -> set[str]:
        legacy: set[str] = set()
        for record in self.context.upgrades:
            key = self.keys.get(record.key_id)
            fields = (record.position, record.chain, record.key_id, record.upgraded_at, record.events, record.archives)
            if key is None or not hmac.compare_digest(hashing.record_mac(key, "upgrade", fields), record.mac):
                self._add(
                    record.position,
                    "-",
                    "upgrade_forged",
                    "the chain_upgrades row's MAC does not verify: it was inserted or edited without the log key",
                )
                continue
            self.legacy_limit = max(self.legacy_limit, record.position)
            legacy.update(a for a in record.archives.split(",") if a)
            self.bridges.setdefault(record.position, record.chain)
        return legacy

    def _archives(self, legacy: set[str]) -> None:
        for record in self.context.archives:
            key = self.keys.get(record.key_id) if record.key_id else None
            valid = False
            if record.mac is None:
                valid = record.row[0] in legacy
                problem = "it has no MAC and the keyed upgrade did not list it"
            elif key is None:
                problem = f"its key id {record.key_id!r} is not held"
            else:
                expected = hashing.record_mac(key, "archive", archive_signed_fields(record))
                valid = hmac.compare_digest(expected, record.mac)
                problem = "its MAC does not verify (the row or its archived_jobs rows were inserted or edited without the log key)"
            if valid:
                for position, chain in json.loads(record.removed or "[]"):
                    self.bridges[int(position)] = str(chain)
                continue
            self._add(0, "-", "archive_forged", f"archive {record.row[0]} is not authorised: {problem}")
            for job_id, last_position, _count in record.jobs:
                self._add(last_position, job_id, "archive_forged", f"archived_jobs row of archive {record.row[0]} is not authorised")

    def _bridge(self, position: int) -> bool:
        """Account for the positions between the previous event and ``position``; ``False`` if some are unexplained."""
        missing = [p for p in range(self.previous_position + 1, position) if p not in self.bridges and p > self.legacy_limit]
        bridged = [p for p in range(self.previous_position + 1, position) if p in self.bridges]
        if bridged:
            self.previous_chain = self.bridges[bridged[-1]]
        if missing:
            span = f"{missing[0]}" if len(missing) == 1 else f"{missing[0]}..{missing[-1]}"
            self._add(
                missing[0],
                "-",
                "removed",
                f"the event(s) at position {span} are missing and no archive record covers them: events were deleted",
            )
            return False
        return True

    def step(self, row: StoredEvent) -> None:
        linked = self._bridge(row.position) if row.position > self.previous_position + 1 else True
        if self.context.checkpoint is not None and row.position == self.context.checkpoint.position:
            self.checkpoint_seen = row.chain == self.context.checkpoint.chain
        if row.chain is None or row.key_id is None:
            self._add(row.position, row.job_id, "chain_missing", "the event has no keyed chain: it was inserted without the log key")
            self.previous_position = row.position
            return
        key = self.keys.get(row.key_id)
        if key is None:
            self.unknown_keys.add(row.key_id)
        elif linked:
            self.used_keys.add(row.key_id)
            self.chained += 1
            if hashing.chain_link(key, row.key_id, self.previous_chain, row.position, row.hash) != row.chain:
                self.mismatched.append(
                    Violation(
                        position=row.position,
                        job_id=row.job_id,
                        rule="chain",
                        message="the keyed chain does not match: the event, its hash or its position was changed after it was"
                        " written (e.g. re-chained with plain sha256; recomputing it needs the log key)",
                    )
                )
        self.previous_chain, self.previous_position = row.chain, row.position

    def finish(self) -> None:
        head_position, head_chain = self.context.head
        if head_position > self.previous_position:
            if self._bridge(head_position + 1) and head_chain is not None and head_position > self.legacy_limit:
                if self.bridges.get(head_position, head_chain) != head_chain:
                    self._add(head_position, "-", "removed", "log_head does not match the archive record of its position")
        if self.context.checkpoint is not None and not self.checkpoint_seen:
            checkpoint = self.context.checkpoint
            if self.bridges.get(checkpoint.position) != checkpoint.chain:
                self._add(
                    checkpoint.position,
                    "-",
                    "checkpoint",
                    f"the log does not extend the checkpoint of {checkpoint.at}: the event at position {checkpoint.position}"
                    " is gone or has another chain (the log's tail was removed or the log was rewritten)",
                )
        if self.mismatched and len(self.mismatched) == self.chained:
            ids = ", ".join(sorted(self.used_keys))
            self._add(0, "-", "key", f"no event's chain verifies under log key {ids}: the key is wrong (JOBTAPE_LOG_KEY)")
        else:
            self.found.extend(self.mismatched)
        for key_id in sorted(self.unknown_keys):
            self._add(0, "-", "key", f"events are chained under log key {key_id!r}, which this process does not hold (JOBTAPE_LOG_KEYS)")

    def describe(self) -> str:
        return f"keyed: {self.chained} events checked under log key(s) {', '.join(sorted(self.used_keys)) or '-'}"


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
