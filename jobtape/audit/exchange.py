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
Each line also carries the event's ``keyId`` and keyed whole-log ``chain``
(:func:`jobtape.eventlog.hashing.chain_link`).

An export made by a process holding the log key ends with a trailer line,
``{"exportTrailer": {...}}`` (:class:`ExportTrailer`): the number of event lines, the
sha256 over them, the log's head when exported, and a MAC under the key over all of it.
With keys, :func:`check_lines` refuses a file whose trailer is missing, forged, or does
not match its lines (a line removed, added or edited), and checks every chain link
between lines of consecutive positions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

import msgspec

from jobtape import errors
from jobtape.audit.checkpoint import Checkpoint
from jobtape.eventlog import hashing, key_events
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.stored import StoredEvent, to_recorded, to_recorded_key
from jobtape.projections import key_state
from jobtape.projections import state as job_state

__all__ = [
    "CheckedEvent",
    "ExportLine",
    "ExportTrailer",
    "StreamMemory",
    "StreamTip",
    "check_export",
    "check_lines",
    "decode_line",
    "encode_line",
    "encode_trailer",
    "make_trailer",
]


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
    key_id: str | None = None
    chain: str | None = None


class ExportTrailer(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """The keyed last line of an export (``{"exportTrailer": {...}}``).

    Attributes:
        events: how many event lines precede it.
        sha256: hex sha256 over the event lines, each as written plus ``\n``.
        head_position: the log's head position when the export was made.
        head_chain: the head's chain value.
        exported_at: UTC timestamp text.
        key_id: the key of :attr:`mac`.
        mac: :func:`jobtape.eventlog.hashing.record_mac` of kind ``export`` over the fields above.
    """

    events: int
    sha256: str
    head_position: int
    head_chain: str | None
    exported_at: str
    key_id: str
    mac: str

    def signed_fields(self) -> tuple[object, ...]:
        """The fields the MAC covers, in order."""
        return (self.events, self.sha256, self.head_position, self.head_chain, self.exported_at, self.key_id)


class _TrailerLine(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    export_trailer: ExportTrailer


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
        key_id=line.key_id,
        chain=line.chain,
    )


_TRAILER_DECODER = msgspec.json.Decoder(_TrailerLine)


def encode_trailer(trailer: ExportTrailer) -> str:
    """The trailer line (without the newline)."""
    return _ENCODER.encode(_TrailerLine(export_trailer=trailer)).decode()


def make_trailer(keys: LogKeys, *, events: int, sha256: str, head_position: int, head_chain: str | None, exported_at: str) -> ExportTrailer:
    """A trailer signed with the current key (see :class:`ExportTrailer`)."""
    unsigned = ExportTrailer(
        events=events,
        sha256=sha256,
        head_position=head_position,
        head_chain=head_chain,
        exported_at=exported_at,
        key_id=keys.current_id,
        mac="",
    )
    return msgspec.structs.replace(unsigned, mac=hashing.record_mac(keys.current, "export", unsigned.signed_fields()))


def _trailer_of(text: str) -> ExportTrailer | None:
    if '"exportTrailer"' not in text:
        return None
    try:
        return _TRAILER_DECODER.decode(text).export_trailer
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


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


def check_lines(
    lines: Iterable[str],
    streams: StreamMemory | None = None,
    *,
    keys: LogKeys | None = None,
    checkpoint: Checkpoint | None = None,
) -> Iterator[CheckedEvent]:
    """Parse and check an export line by line, yielding each event once it passed (a stream, not a list).

    Checks, per stream: versions start at 1 and are gapless; every event has a hash and
    the chain (:mod:`jobtape.eventlog.hashing`) recomputes to it; every event decodes
    and the state machine accepts it. Blank lines are skipped. Memory: one entry per
    stream seen (its last version, hash and state), never the file's events.

    With ``keys`` (the importing process's log keys), also: the file ends with a trailer
    (:class:`ExportTrailer`) whose MAC verifies under one of the keys and whose count and
    sha256 match the lines before it (so a removed, added or edited line is refused);
    every line's keyed chain links from the line before when their positions are
    consecutive; and, with ``checkpoint``, the export extends it (a line or the trailer's
    head is at the checkpoint's position with its chain). The trailer is checked after the
    last event is yielded: a caller writing as it reads must check the whole file first
    (:func:`jobtape.audit.transfer.import_lines` does for a file).

    Args:
        lines: the file's lines (trailing newlines are fine); read once, lazily.
        streams: where each stream's tip is kept (default: a dict, one entry per stream
            seen; an import passes a :class:`jobtape.eventlog.spill.SpillMap` to bound it).
        keys: the log keys the export must be signed with; ``None``: no keyed checks (a trailer is skipped).
        checkpoint: a verified checkpoint the export must extend (only with ``keys``).

    Yields:
        :class:`CheckedEvent` per event, in file order.

    Raises:
        errors.InvalidExport: at the first line that breaks a check, with the reason.
    """
    last = streams if streams is not None else _InMemory()
    digest = hashlib.sha256()
    count = 0
    trailer: tuple[int, ExportTrailer] | None = None
    previous_line: StoredEvent | None = None
    extends = checkpoint is None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if trailer is not None:
            raise errors.InvalidExport(number, "a line follows the export's trailer: lines were appended to the export")
        found_trailer = _trailer_of(text)
        if found_trailer is not None:
            trailer = (number, found_trailer)
            continue
        stored = decode_line(number, text)
        digest.update(text.rstrip("\r\n").encode() + b"\n")
        count += 1
        if keys is not None:
            _check_link(number, stored, previous_line, keys)
            if checkpoint is not None and stored.position == checkpoint.position and stored.chain == checkpoint.chain:
                extends = True
        previous_line = stored
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
    if keys is not None:
        _check_trailer(trailer, count, digest.hexdigest(), keys)
        assert trailer is not None
        if checkpoint is not None and (trailer[1].head_position, trailer[1].head_chain) == (checkpoint.position, checkpoint.chain):
            extends = True
        if not extends:
            raise errors.InvalidExport(
                trailer[0],
                f"the export does not extend the checkpoint at position {checkpoint.position if checkpoint else 0}:"
                " no line has that position and chain (the log was rewritten, or the export does not reach it)",
            )


def _check_link(number: int, stored: StoredEvent, previous: StoredEvent | None, keys: LogKeys) -> None:
    if stored.chain is None or stored.key_id is None:
        raise errors.InvalidExport(number, "the line has no keyed chain: export it again with this version, or import with --unkeyed")
    key = keys.get(stored.key_id)
    if key is None:
        raise errors.InvalidExport(
            number,
            f"the line was chained under log key {stored.key_id!r}, which this process does not hold (pass the source's key file with --key-file, or set JOBTAPE_LOG_KEYS)",
        )
    if previous is not None and previous.chain is not None and previous.position + 1 == stored.position:
        if hashing.chain_link(key, stored.key_id, previous.chain, stored.position, stored.hash) != stored.chain:
            raise errors.InvalidExport(number, f"the keyed chain breaks at position {stored.position}: the line was changed after export")


def _check_trailer(trailer: tuple[int, ExportTrailer] | None, count: int, sha256: str, keys: LogKeys) -> None:
    if trailer is None:
        raise errors.InvalidExport(
            count + 1,
            "the export has no keyed trailer: it was cut short, or made without the log key (import it with --unkeyed to accept that)",
        )
    number, found = trailer
    key = keys.get(found.key_id)
    if key is None:
        raise errors.InvalidExport(
            number,
            f"the export was signed with log key {found.key_id!r}, which this process does not hold (pass the source's key file with --key-file, or set JOBTAPE_LOG_KEYS)",
        )
    if not hmac.compare_digest(hashing.record_mac(key, "export", found.signed_fields()), found.mac):
        raise errors.InvalidExport(number, "the export's trailer MAC does not verify: the trailer was forged or edited")
    if found.events != count or found.sha256 != sha256:
        raise errors.InvalidExport(
            number,
            f"the export's lines do not match its trailer ({count} lines, the trailer signed {found.events}): lines were removed, added or edited",
        )


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
