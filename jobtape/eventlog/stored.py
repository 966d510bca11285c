"""Stored events exactly as the ``events`` table holds them, and the verbatim import path.

:class:`EventStore` reads decoded :class:`~jobtape.eventlog.events.RecordedEvent` objects;
the audit tools (export, import, verify) need the stored text columns themselves, since
the hash chain (:mod:`jobtape.eventlog.hashing`) is computed over that text. This module
reads them and writes them back verbatim (an import keeps each event's original
``recorded_at``, ``actor`` and ``hash``), through the same guards as an append: the
``UNIQUE (job_id, version)`` constraint and the ``events_gapless_version`` trigger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from jobtape import clock, errors
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import ConstraintViolation, SQLBackend, Statement

__all__ = ["StoredEvent", "import_batch", "iter_stored", "read_stored", "to_recorded"]

_COLUMNS = "position, job_id, version, type, data, actor, recorded_at, hash"
_INSERT = (
    "INSERT INTO events (job_id, version, type, data, actor, recorded_at, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING position"
)


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
    """

    position: int
    job_id: str
    version: int
    type: str
    data: str
    actor: str
    recorded_at: str
    hash: str | None = None


def _row(row: Sequence[Any]) -> StoredEvent:
    position, job_id, version, type_, data, actor, recorded_at, hash_ = row
    data_text = data.decode() if isinstance(data, bytes) else str(data)
    return StoredEvent(position=int(position), job_id=str(job_id), version=int(version), type=str(type_),
                       data=data_text, actor=str(actor), recorded_at=str(recorded_at), hash=hash_)


def read_stored(
    backend: SQLBackend,
    *,
    from_position: int = 1,
    to_position: int | None = None,
    job_id: str | None = None,
    limit: int = 1000,
) -> list[StoredEvent]:
    """Return up to ``limit`` stored events with ``from_position <= position <= to_position``, in position order.

    Args:
        backend: the event store's backend.
        from_position: first global position to return.
        to_position: last global position to return (``None``: up to the head).
        job_id: only this stream (``None``: every stream).
        limit: at most this many rows.
    """
    sql = f"SELECT {_COLUMNS} FROM events WHERE position >= ?"
    params: list[Any] = [from_position]
    if to_position is not None:
        sql += " AND position <= ?"
        params.append(to_position)
    if job_id is not None:
        sql += " AND job_id = ?"
        params.append(job_id)
    rows = backend.query(sql + " ORDER BY position LIMIT ?", [*params, limit])
    return [_row(row) for row in rows]


def iter_stored(
    backend: SQLBackend,
    *,
    from_position: int = 1,
    to_position: int | None = None,
    job_id: str | None = None,
    page_size: int = 1000,
) -> Iterator[StoredEvent]:
    """Iterate over :func:`read_stored`'s rows page by page (``page_size`` rows per query)."""
    position = from_position
    while True:
        page = read_stored(backend, from_position=position, to_position=to_position, job_id=job_id, limit=page_size)
        yield from page
        if len(page) < page_size:
            return
        position = page[-1].position + 1


def to_recorded(stored: StoredEvent) -> ev.RecordedEvent:
    """Decode a stored event.

    Raises:
        errors.MalformedEvent: unknown type, data not matching it, or a bad timestamp (names the position).
    """
    event = ev.decode_event(stored.position, stored.type, stored.data)
    try:
        at = clock.parse_timestamp(stored.recorded_at)
    except (TypeError, ValueError) as exc:
        raise errors.MalformedEvent(stored.position, stored.type, f"recorded_at {stored.recorded_at!r} is not a timestamp") from exc
    return ev.RecordedEvent(position=stored.position, job_id=stored.job_id, version=stored.version, event=event,
                            actor=stored.actor, recorded_at=at)


def import_batch(backend: SQLBackend, events: Sequence[StoredEvent], extra: Sequence[Statement] = ()) -> list[int]:
    """Insert events verbatim (new positions, every other column as given) plus ``extra``, in ONE batch.

    The events' ``position`` is ignored: the table assigns the next positions, in the
    order given. The gapless-version trigger and ``UNIQUE (job_id, version)`` apply as
    for any append, so a stream that exists already, or a version that does not follow
    the stream's last one, refuses the whole batch.

    Args:
        backend: the event store's backend.
        events: the events to insert, each stream's in version order.
        extra: statements run after the inserts in the same batch (projection rows).

    Returns:
        The new positions, one per event.

    Raises:
        errors.ConcurrencyError: a version does not follow its stream's last one (names
            the job); nothing was written.
        ConstraintViolation: any other constraint failed; nothing was written.
    """
    statements = [Statement(_INSERT, (e.job_id, e.version, e.type, e.data, e.actor, e.recorded_at, e.hash)) for e in events]
    try:
        results = backend.execute_batch([*statements, *extra])
    except ConstraintViolation as exc:
        if "version conflict" in exc.detail or "events.job_id, events.version" in exc.detail:
            raise errors.ConcurrencyError(
                "*", 0, f"the batch does not continue the streams in the store ({exc.detail}); nothing was written"
            ) from exc
        raise
    return [int(results[i][0][0]) for i in range(len(events))]
