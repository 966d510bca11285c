"""The export format (JSON Lines, one stored event per line) and the checks an import makes (pure).

Each line is a JSON object with the stored columns, verbatim::

    {"position": 12, "jobId": "…32 hex…", "version": 3, "type": "job.stage_changed",
     "data": "{\\"stage\\":\\"probing\\"}", "actor": "host:41:1",
     "recordedAt": "2026-01-02T14:02:03.123456Z", "hash": "…64 hex…"}

``data`` is the stored JSON *text* (not an object), so the hash chain can be recomputed
byte for byte (``jq '.data | fromjson'`` shows it as an object). Lines are in position
order. An export holds whole streams (version 1 to the last), so it can be imported. The
streams of API keys (``key-<key_id>``, :mod:`jobtape.eventlog.key_events`) travel like a
job's and are checked by the key fold (:mod:`jobtape.projections.key_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

import msgspec

from jobtape import errors
from jobtape.eventlog import hashing, key_events
from jobtape.eventlog.stored import StoredEvent, to_recorded, to_recorded_key
from jobtape.projections import key_state
from jobtape.projections import state as job_state

__all__ = ["CheckedEvent", "ExportLine", "StreamMemory", "StreamTip", "check_export", "check_lines", "decode_line", "encode_line"]


class ExportLine(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """One line of an export (field names camelCase on the wire); see the module docstring."""

    position: int
    job_id: str
    version: int
    type: str
    data: str
    actor: str
    recorded_at: str
    hash: str | None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ExportLine)


def encode_line(stored: StoredEvent) -> str:
    """One export line (without the newline) for a stored event."""
    return _ENCODER.encode(ExportLine(**msgspec.structs.asdict(stored))).decode()


def decode_line(line_number: int, text: str) -> StoredEvent:
    """Parse one export line.

    Raises:
        errors.InvalidExport: not a JSON object with exactly the export's fields (names the line).
    """
    try:
        line = _DECODER.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.InvalidExport(line_number, f"not an export line: {exc}") from exc
    return StoredEvent(
        position=line.position,
        job_id=line.job_id,
        version=line.version,
        type=line.type,
        data=line.data,
        actor=line.actor,
        recorded_at=line.recorded_at,
        hash=line.hash,
    )


class CheckedEvent(NamedTuple):
    """One export line that passed every check: its line number, the event, its stream's state after it
    (a job's, or an API key's for a key stream)."""

    line: int
    stored: StoredEvent
    state: job_state.JobState | key_state.KeyState


#: What the checker remembers of a stream: its last version, that event's hash, the state after it.
StreamTip = tuple[int, str, job_state.JobState | key_state.KeyState]


class StreamMemory(Protocol):
    """Where :func:`check_lines` keeps each stream's :data:`StreamTip` (a dict, or a bounded map that spills)."""

    def get(self, key: str) -> StreamTip | None:
        """The tip of stream ``key``, or ``None`` for a stream not seen yet."""

    def put(self, key: str, value: StreamTip) -> None:
        """Remember the tip of stream ``key``."""


class _InMemory:
    def __init__(self) -> None:
        self._tips: dict[str, StreamTip] = {}

    def get(self, key: str) -> StreamTip | None:
        return self._tips.get(key)

    def put(self, key: str, value: StreamTip) -> None:
        self._tips[key] = value


def check_lines(lines: Iterable[str], streams: StreamMemory | None = None) -> Iterator[CheckedEvent]:
    """Parse and check an export line by line, yielding each event once it passed (a stream, not a list).

    Checks, per stream: versions start at 1 and are gapless; every event has a hash and
    the chain (:mod:`jobtape.eventlog.hashing`) recomputes to it; every event decodes
    and the state machine accepts it. Blank lines are skipped. Memory: one entry per
    stream seen (its last version, hash and state), never the file's events.

    Args:
        lines: the file's lines (trailing newlines are fine); read once, lazily.
        streams: where each stream's tip is kept (default: a dict, one entry per stream
            seen; an import passes a :class:`jobtape.eventlog.spill.SpillMap` to bound it).

    Yields:
        :class:`CheckedEvent` per event, in file order.

    Raises:
        errors.InvalidExport: at the first line that breaks a check, with the reason.
    """
    last = streams if streams is not None else _InMemory()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        stored = decode_line(number, text)
        found = last.get(stored.job_id)
        version, previous, state = found if found is not None else (0, hashing.genesis_hash(stored.job_id), None)
        if stored.version != version + 1:
            where = "starts at" if version == 0 else f"jumps from version {version} to"
            raise errors.InvalidExport(
                number,
                f"job {stored.job_id} {where} version {stored.version}: the export "
                "is gapped (export whole streams: `jobtape export` without editing)",
            )
        expected = hashing.event_hash(previous, stored.job_id, stored.version, stored.type, stored.data, stored.actor, stored.recorded_at)
        if stored.hash != expected:
            raise errors.InvalidExport(
                number,
                f"the hash of job {stored.job_id} version {stored.version} does not match its content: the line was changed after export",
            )
        try:
            state = _apply(state, stored)
        except (errors.MalformedEvent, errors.IllegalTransition) as exc:
            raise errors.InvalidExport(number, exc.message) from exc
        last.put(stored.job_id, (stored.version, expected, state))
        yield CheckedEvent(number, stored, state)


def _apply(state: job_state.JobState | key_state.KeyState | None, stored: StoredEvent) -> job_state.JobState | key_state.KeyState:
    """Fold one stored event into its stream's state: the key fold for a key stream, the job fold for a job's."""
    if key_events.is_key_stream(stored.job_id):
        key = to_recorded_key(stored)
        before = state if isinstance(state, key_state.KeyState) else None
        return key_state.apply(before, key.event, stream=stored.job_id, version=stored.version, recorded_at=key.recorded_at)
    recorded = to_recorded(stored)
    job = state if isinstance(state, job_state.JobState) else None
    return job_state.apply(job, recorded.event, job_id=stored.job_id, version=stored.version, recorded_at=recorded.recorded_at)


def check_export(lines: Iterable[str]) -> list[StoredEvent]:
    """Parse and check a whole export (:func:`check_lines`) and return its events in file order.

    Raises:
        errors.InvalidExport: the first line that breaks a check, with the reason.
    """
    return [checked.stored for checked in check_lines(lines)]
