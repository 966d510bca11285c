"""The row format of the ``events`` table: a stored event exactly as the table holds it.

This module is the one place that knows the table's columns: :data:`INSERT_EVENT` is the
only statement that inserts an event (an append and an import both use it), and
:func:`from_row` + :func:`to_recorded` are the only decoding of a row into a
:class:`~jobtape.eventlog.events.RecordedEvent`. The audit tools (export, import, verify)
work on :class:`StoredEvent` itself, since the hash chain (:mod:`jobtape.eventlog.hashing`)
is computed over the stored text. The queries live on :class:`jobtape.eventlog.store.EventStore`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from jobtape import clock, errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev

__all__ = [
    "COLUMNS",
    "INSERT_EVENT",
    "RECORDED_COLUMNS",
    "StoredEvent",
    "any_recorded_from_row",
    "any_recorded_from_rows",
    "content_params",
    "from_row",
    "recorded_from_row",
    "to_recorded",
    "to_recorded_any",
    "to_recorded_key",
]

#: The columns a read selects, in :func:`from_row`'s order.
COLUMNS = "position, job_id, version, type, data, actor, recorded_at, hash, key_id, chain"
#: The columns a decoding into a :class:`~jobtape.eventlog.events.RecordedEvent` reads, in
#: :func:`any_recorded_from_rows`' order: a recorded event holds no hash or chain, so a read
#: of every stream's events (a rebuild) leaves those columns (~40% of a row) unread.
RECORDED_COLUMNS = "position, job_id, version, type, data, actor, recorded_at"
#: The one statement that inserts an event. The store gives the ``position`` (the log's
#: head + 1) and the keyed ``chain``; the ``events_chain_guard`` trigger refuses a position
#: that does not follow the head (another writer appended first: the store re-reads the head).
#: No ``RETURNING``: the store knows the positions it gives, and the SQLite backend runs a
#: run of these (an import's batch of 5,000 events) as one ``executemany``, which a
#: statement returning rows cannot be.
INSERT_EVENT = "INSERT INTO events (position, job_id, version, type, data, actor, recorded_at, hash, key_id, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``events``, every column as stored.

    Attributes:
        position: global position (``AUTOINCREMENT``: increasing, never reused).
        job_id: the stream.
        version: 1, 2, 3 ... within the stream.
        type: the event tag, e.g. ``job.created``.
        data: the event's fields as the stored JSON text (without the tag).
        actor: who appended it.
        recorded_at: the stored UTC timestamp text, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
        hash: 64 hex digits of the stream's sha256 chain; ``None`` for events written
            before migration 0003.
        key_id: the id of the log key :attr:`chain` was made with; ``None`` before the
            keyed upgrade (migration 0012) chained the event.
        chain: 64 hex digits of the keyed whole-log chain
            (:func:`jobtape.eventlog.hashing.chain_link`); ``None`` as ``key_id``.
    """

    position: int
    job_id: str
    version: int
    type: str
    data: str
    actor: str
    recorded_at: str
    hash: str | None = None
    key_id: str | None = None
    chain: str | None = None


def content_params(stored: StoredEvent) -> tuple[Any, ...]:
    """The content columns of :data:`INSERT_EVENT` for ``stored`` (without position, key id and chain)."""
    return (stored.job_id, stored.version, stored.type, stored.data, stored.actor, stored.recorded_at, stored.hash)


def from_row(row: Sequence[Any]) -> StoredEvent:
    """A row selected with :data:`COLUMNS` as a :class:`StoredEvent` (``data`` as text)."""
    position, job_id, version, type_, data, actor, recorded_at, hash_, key_id, chain = row
    data_text = data.decode() if isinstance(data, bytes) else str(data)
    return StoredEvent(
        position=int(position),
        job_id=str(job_id),
        version=int(version),
        type=str(type_),
        data=data_text,
        actor=str(actor),
        recorded_at=str(recorded_at),
        hash=hash_,
        key_id=key_id,
        chain=chain,
    )


def to_recorded(stored: StoredEvent) -> ev.RecordedEvent:
    """Decode a stored event.

    Raises:
        errors.MalformedEvent: unknown type, data not matching it, or a bad timestamp (names the position).
    """
    return _decode(stored.position, stored.job_id, stored.version, stored.type, stored.data, stored.actor, stored.recorded_at)


def recorded_from_row(row: Sequence[Any]) -> ev.RecordedEvent:
    """A row selected with :data:`COLUMNS` decoded straight to a :class:`~jobtape.eventlog.events.RecordedEvent`.

    The same decoding as ``to_recorded(from_row(row))`` without the intermediate
    :class:`StoredEvent` (a rebuild decodes every event of the log through it).

    Raises:
        errors.MalformedEvent: as :func:`to_recorded`.
    """
    position, job_id, version, type_, data, actor, recorded_at, _hash, _key_id, _chain = row
    return _decode(position, job_id, version, type_, data, actor, recorded_at)


def to_recorded_key(stored: StoredEvent) -> kev.RecordedKeyEvent:
    """Decode a stored event of a key stream (:mod:`jobtape.eventlog.key_events`).

    Raises:
        errors.MalformedEvent: not a key event, data not matching it, or a bad timestamp (names the position).
    """
    return _decode_key(stored.position, stored.job_id, stored.version, stored.type, stored.data, stored.actor, stored.recorded_at)


def to_recorded_any(stored: StoredEvent) -> ev.RecordedEvent | kev.RecordedKeyEvent:
    """Decode a stored event of any stream: :func:`to_recorded_key` for a key stream, else :func:`to_recorded`.

    Raises:
        errors.MalformedEvent: as those two.
    """
    return to_recorded_key(stored) if kev.is_key_stream(stored.job_id) else to_recorded(stored)


def any_recorded_from_row(row: Sequence[Any]) -> ev.RecordedEvent | kev.RecordedKeyEvent:
    """A row selected with :data:`COLUMNS` of any stream, decoded (a job's or a key's, by its stream id).

    Raises:
        errors.MalformedEvent: as :func:`to_recorded`.
    """
    position, job_id, version, type_, data, actor, recorded_at, _hash, _key_id, _chain = row
    if kev.is_key_stream(job_id):
        return _decode_key(position, job_id, version, type_, data, actor, recorded_at)
    return _decode(position, job_id, version, type_, data, actor, recorded_at)


def any_recorded_from_rows(rows: Iterable[Sequence[Any]]) -> list[ev.RecordedEvent | kev.RecordedKeyEvent]:
    """Rows selected with :data:`RECORDED_COLUMNS`, of any stream, decoded (as :func:`any_recorded_from_row` each).

    Raises:
        errors.MalformedEvent: as :func:`to_recorded`.
    """
    # This runs for every event of a rebuild, so the common case is written out here: a job
    # event of a known type whose data decodes and whose time is in the stored form
    # (``...Z``, what clock.parse_timestamp reads with one fromisoformat). Any other row
    # (a key stream's, an unknown type, data or a time that does not decode) goes through
    # _decode / _decode_key, which decode it the same way or raise the MalformedEvent.
    decoders, key_prefix, recorded = _DECODERS, kev.KEY_STREAM_PREFIX, ev.RecordedEvent
    from_iso, utc = clock.real_datetime().fromisoformat, dt.UTC  # the real class: parse_timestamp's fast path (freezegun)
    decoded: list[ev.RecordedEvent | kev.RecordedKeyEvent] = []
    append = decoded.append
    for row in rows:
        position, job_id, version, type_, data, actor, recorded_at = row
        decoder = decoders.get(type_)
        if decoder is not None and len(recorded_at) == _STORED_TIME_LENGTH and recorded_at[-1] == "Z" and not job_id.startswith(key_prefix):
            try:
                event, at = decoder.decode(data), from_iso(recorded_at)
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
                pass
            else:
                if at.tzinfo is utc:
                    append(recorded(position=position, job_id=job_id, version=version, event=event, actor=actor, recorded_at=at))
                    continue
        append(_decode_key(*row) if job_id.startswith(key_prefix) else _decode(*row))
    return decoded


#: The job events' decoders by tag (the same as :func:`jobtape.eventlog.events.decode_event`'s, built from the same types).
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {tag: msgspec.json.Decoder(cls) for tag, cls in ev.EVENT_TYPES.items()}
#: ``len("YYYY-MM-DDTHH:MM:SS.ffffffZ")``.
_STORED_TIME_LENGTH = 27


def _timestamp(position: int, type_: str, recorded_at: str) -> dt.datetime:
    try:
        return clock.parse_timestamp(recorded_at)
    except (TypeError, ValueError) as exc:
        raise errors.MalformedEvent(position, type_, f"recorded_at {recorded_at!r} is not a timestamp") from exc


def _decode(position: int, job_id: str, version: int, type_: str, data: str | bytes, actor: str, recorded_at: str) -> ev.RecordedEvent:
    """The one decoding of a stored job event's columns (``tests/unit/test_store_layer.py`` checks it is the only one)."""
    event = ev.decode_event(position, type_, data)
    try:  # _timestamp inlined: one call less for every event of a rebuild
        at = clock.parse_timestamp(recorded_at)
    except (TypeError, ValueError):
        at = _timestamp(position, type_, recorded_at)  # raises the MalformedEvent
    return ev.RecordedEvent(position=position, job_id=job_id, version=version, event=event, actor=actor, recorded_at=at)


def _decode_key(
    position: int, stream: str, version: int, type_: str, data: str | bytes, actor: str, recorded_at: str
) -> kev.RecordedKeyEvent:
    """The one decoding of a stored key event's columns."""
    event = kev.decode_key_event(position, type_, data)
    at = _timestamp(position, type_, recorded_at)
    return kev.RecordedKeyEvent(position=position, stream=stream, version=version, event=event, actor=actor, recorded_at=at)
