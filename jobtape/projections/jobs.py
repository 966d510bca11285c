"""The ``jobs`` projection: one row per job, written in the same batch as its events.

Rows are the output of the pure fold (:mod:`jobtape.projections.state`); nothing else
writes them. The ``state`` column holds the whole :class:`JobState` as JSON (a snapshot
the next append folds onto); the other columns exist for indexes and for operators.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection
from typing import Any

import msgspec

from jobtape import clock
from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections import state as job_state
from jobtape.projections.state import JobState

__all__ = [
    "COLUMNS",
    "decode_state",
    "encode_state",
    "row_values",
    "select_blob_removals",
    "select_by_idempotency_key",
    "select_claimable",
    "select_claimable_heads",
    "select_claimable_states",
    "select_claimers",
    "select_expired_leases",
    "select_finished_before",
    "select_held",
    "select_retained_uploads",
    "select_state",
    "select_with_orphans",
    "update",
    "upsert",
    "upsert_at",
]

_STATE_ENCODER = msgspec.json.Encoder()
_STATE_DECODER = msgspec.json.Decoder(JobState)
_JSON = msgspec.json.Encoder()

#: Columns of ``jobs`` in table order (migrations append new columns at the end).
COLUMNS = (
    "job_id",
    "job_type",
    "owner",
    "idempotency_key",
    "status",
    "stage",
    "progress",
    "attempt",
    "worker_id",
    "lease_expires_at",
    "result",
    "error",
    "cancel_requested",
    "finished",
    "created_at",
    "updated_at",
    "created_position",
    "last_version",
    "last_position",
    "state",
    "not_before",
    "orphaned_count",
    "retained_upload",
    "blobs_removed_at",
)
#: Columns whose value is looked up in ``events`` by the statement itself.
_FROM_EVENTS = {
    "created_position": "(SELECT position FROM events WHERE job_id = ? AND version = 1)",
    "last_position": "(SELECT position FROM events WHERE job_id = ? AND version = ?)",
}
_NEVER_UPDATED = {"job_id", "job_type", "owner", "idempotency_key", "created_at", "created_position"}


def encode_state(state: JobState) -> str:
    """Encode a state as the JSON text stored in ``jobs.state``."""
    return _STATE_ENCODER.encode(state).decode()


def decode_state(text: str | bytes) -> JobState:
    """Decode ``jobs.state``; raises ``msgspec.ValidationError`` on a corrupt snapshot."""
    return _STATE_DECODER.decode(text)


def _stamp(value: Any) -> str | None:
    """``clock.format_timestamp(value)`` without its cache (:func:`clock.format_uncached`); ``None`` stays ``None``."""
    return None if value is None else clock.format_uncached(value)


def row_values(state: JobState) -> dict[str, Any]:
    """The column values of a job's row, except the ones looked up in ``events`` (positions)."""
    return {
        "job_id": state.job_id,
        "job_type": state.job_type,
        "owner": state.owner,
        "idempotency_key": state.idempotency_key,
        "status": state.status,
        "stage": state.stage,
        "progress": state.progress,
        "attempt": state.attempt,
        "worker_id": state.worker_id,
        "lease_expires_at": _stamp(state.lease_expires_at),
        "result": _JSON.encode(state.result).decode() if state.result is not None else None,
        "error": state.error,
        "cancel_requested": int(state.cancel_requested),
        "finished": int(state.finished),
        "created_at": _stamp(state.created_at),
        "updated_at": _stamp(state.updated_at),
        "last_version": state.version,
        "state": encode_state(state),
        "not_before": _stamp(state.not_before),
        "orphaned_count": len(state.orphaned_children),
        **_derived(state),
    }


def _derived(state: JobState) -> dict[str, Any]:
    """Columns computed from the state for the blob sweeps' indexes (migration 0009)."""
    return {"retained_upload": job_state.retained_upload(state), "blobs_removed_at": _stamp(state.blobs_removed_at)}


@functools.cache
def _upsert_sql(table: str, looked_up: bool = True) -> str:
    placeholders = ", ".join(_FROM_EVENTS.get(column, "?") if looked_up else "?" for column in COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in _NEVER_UPDATED)
    return f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) ON CONFLICT (job_id) DO UPDATE SET {updates}"


def upsert(state: JobState, table: str = "jobs") -> Statement:
    """The statement that writes ``state`` as the job's row (run it in the append's batch).

    Its parameters are :func:`row_values` in :data:`COLUMNS` order, the looked-up columns
    (``created_position``, ``last_position``) taking the job id (and version) instead,
    built as one tuple (:func:`_row_params`, shared with :func:`upsert_at`): a rebuild builds
    one for every job of the log (``tests/unit/test_rebuild.py`` checks they match :func:`row_values`).
    """
    job_id, version = state.job_id, state.version
    # created_position: (SELECT position ... version = 1); last_version; last_position: (SELECT position ... version = ?)
    return Statement(_upsert_sql(table), _row_params(state, (job_id, version, job_id, version)))


def upsert_at(state: JobState, table: str, created_position: int | None, last_position: int) -> Statement:
    """:func:`upsert` with the positions given instead of looked up in ``events`` by the statement.

    For a caller that read them with the events (a rebuild's fold: the positions of the
    stream's version 1 and of its event at ``state.version``), so each row costs no two
    index lookups into ``events``. The parameters are the same as :func:`upsert`'s, the
    positions in their columns (``tests/unit/test_rebuild.py`` checks them).

    Args:
        state: the job's state.
        table: ``jobs`` or a rebuild's scratch copy.
        created_position: the position of the stream's version 1; ``None`` when the log has
            none, which the column's ``NOT NULL`` refuses as it refuses the lookup's NULL.
        last_position: the position of the stream's event at ``state.version``.
    """
    return Statement(_upsert_sql(table, looked_up=False), _row_params(state, (created_position, state.version, last_position)))


def _row_params(state: JobState, positions: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row's parameters in :data:`COLUMNS` order, ``positions`` standing for ``created_position``,
    ``last_version`` and ``last_position`` (values, or the parameters of their lookups)."""
    result = state.result
    return (
        state.job_id,
        state.job_type,
        state.owner,
        state.idempotency_key,
        state.status,
        state.stage,
        state.progress,
        state.attempt,
        state.worker_id,
        _stamp(state.lease_expires_at),
        _JSON.encode(result).decode() if result is not None else None,
        state.error,
        int(state.cancel_requested),
        int(state.finished),
        _stamp(state.created_at),
        _stamp(state.updated_at),
        *positions,
        encode_state(state),
        _stamp(state.not_before),
        len(state.orphaned_children),
        job_state.retained_upload(state),
        _stamp(state.blobs_removed_at),
    )


#: State attributes that map 1:1 to a column which may change after creation.
_MUTABLE = (
    "status",
    "stage",
    "progress",
    "attempt",
    "worker_id",
    "lease_expires_at",
    "result",
    "error",
    "cancel_requested",
    "finished",
    "not_before",
)


def update(before: JobState, after: JobState) -> Statement:
    """The statement that moves an existing job's row from ``before`` to ``after``.

    Only the columns that changed are set, so an append that leaves ``status`` alone (progress,
    heartbeats) does not rewrite the status indexes. Must run right after the batch's last
    event insert: ``last_position`` is that insert's ``last_insert_rowid()``. The SQL of each
    set of changed columns is built once (:func:`_update_sql`).
    """
    changed: list[str] = []
    params: list[Any] = [None, after.version, encode_state(after)]
    # the columns of _MUTABLE, compared attribute by attribute (this runs on every append)
    if after.status != before.status:
        changed.append("status")
        params.append(after.status)
    if after.stage != before.stage:
        changed.append("stage")
        params.append(after.stage)
    if after.progress != before.progress:
        changed.append("progress")
        params.append(after.progress)
    if after.attempt != before.attempt:
        changed.append("attempt")
        params.append(after.attempt)
    if after.worker_id != before.worker_id:
        changed.append("worker_id")
        params.append(after.worker_id)
    if after.lease_expires_at != before.lease_expires_at:
        changed.append("lease_expires_at")
        params.append(_stamp(after.lease_expires_at))
    if after.result != before.result:
        changed.append("result")
        params.append(_JSON.encode(after.result).decode() if after.result is not None else None)
    if after.error != before.error:
        changed.append("error")
        params.append(after.error)
    if after.cancel_requested != before.cancel_requested:
        changed.append("cancel_requested")
        params.append(int(after.cancel_requested))
    if after.finished != before.finished:
        changed.append("finished")
        params.append(int(after.finished))
    if after.not_before != before.not_before:
        changed.append("not_before")
        params.append(_stamp(after.not_before))
    if len(after.orphaned_children) != len(before.orphaned_children):
        changed.append("orphaned_count")
        params.append(len(after.orphaned_children))
    if after.finished or before.finished:  # retained_upload is None for a job not finished: no call per append
        retained = job_state.retained_upload(after)
        if retained != job_state.retained_upload(before):
            changed.append("retained_upload")
            params.append(retained)
    if after.blobs_removed_at != before.blobs_removed_at:
        changed.append("blobs_removed_at")
        params.append(_stamp(after.blobs_removed_at))
    params.append(after.job_id)
    # the event's own time, formatted by clock.format_timestamp, which keeps the last one: the store formats it next
    params[0] = clock.format_timestamp(after.updated_at)
    return Statement(_update_sql(tuple(changed)), tuple(params))


@functools.cache
def _update_sql(changed: tuple[str, ...]) -> str:
    """``UPDATE jobs`` setting the columns every append changes and ``changed``, for :func:`update`."""
    assignments = ["updated_at = ?", "last_version = ?", "last_position = last_insert_rowid()", "state = ?"]
    assignments += [f"{name} = ?" for name in changed]
    return f"UPDATE jobs SET {', '.join(assignments)} WHERE job_id = ?"


def select_state(backend: SQLBackend, job_id: str) -> JobState | None:
    """Read a job's state snapshot from the projection (``None`` if there is no such job)."""
    rows = backend.query("SELECT state FROM jobs WHERE job_id = ?", [job_id])
    return decode_state(rows[0][0]) if rows else None


def select_retained_uploads(backend: SQLBackend, finished_before: dt.datetime, limit: int) -> list[str]:
    """Ids of failed or cancelled ingests whose upload is still stored and that finished before
    ``finished_before`` (aware UTC), oldest first, at most ``limit``.

    An index range over ``jobs_retained_upload`` (rows whose upload awaits removal), never a
    scan of all jobs.
    """
    rows = backend.query(
        "SELECT job_id FROM jobs WHERE retained_upload IS NOT NULL AND updated_at < ? ORDER BY updated_at LIMIT ?",
        [clock.format_timestamp(finished_before), limit],
    )
    return [str(row[0]) for row in rows]


def select_blob_removals(backend: SQLBackend, since: dt.datetime) -> list[JobState]:
    """States of the jobs whose latest ``job.blobs_deleted`` was recorded at or after ``since``
    (aware UTC), oldest first (an index range over ``jobs_blobs_removed``)."""
    rows = backend.query(
        "SELECT state FROM jobs WHERE blobs_removed_at IS NOT NULL AND blobs_removed_at >= ? ORDER BY blobs_removed_at",
        [clock.format_timestamp(since)],
    )
    return [decode_state(row[0]) for row in rows]


#: Jobs a worker holds: ``processing``, or ``cancelled`` (cancel requested) and not finished yet.
_HELD = "status IN ('processing', 'cancelled') AND finished = 0"


def select_by_idempotency_key(backend: SQLBackend, owner: str, idempotency_key: str | None) -> str | None:
    """The id of the job ``owner`` created with ``idempotency_key``, or ``None``."""
    rows = backend.query("SELECT job_id FROM jobs WHERE owner = ? AND idempotency_key = ?", [owner, idempotency_key])
    return str(rows[0][0]) if rows else None


@functools.cache
def _claimable_sql(column: str, type_count: int, partitioned: bool = False, newest_first: bool = False) -> str:
    return (
        f"SELECT {column} FROM jobs WHERE status = 'pending' AND job_type IN ({', '.join('?' * type_count)})"
        " AND (not_before IS NULL OR not_before <= ?)"
        + (" AND created_position % ? = ?" if partitioned else "")
        + (" ORDER BY created_position DESC" if newest_first else " ORDER BY created_position")
        + " LIMIT ? OFFSET ?"
    )


def _claimable_query(
    column: str,
    job_types: Collection[str],
    now: dt.datetime,
    limit: int,
    offset: int,
    partition: tuple[int, int] | None = None,
    newest_first: bool = False,
) -> tuple[str, list[Any]]:
    types = sorted(job_types)
    params: list[Any] = [*types, clock.format_timestamp(now)]
    if partition is not None:
        params += partition
    return _claimable_sql(column, len(types), partition is not None, newest_first), [*params, limit, offset]


def select_claimable(backend: SQLBackend, job_types: Collection[str], now: dt.datetime, limit: int, offset: int = 0) -> list[str]:
    """Ids of up to ``limit`` pending jobs of ``job_types`` whose ``not_before`` (backoff) has passed at
    ``now`` (aware UTC), in created order from the ``offset``-th on (an index range on ``jobs_status_created``)."""
    if not job_types:
        return []
    sql, params = _claimable_query("job_id", job_types, now, limit, offset)
    return [str(row[0]) for row in backend.query(sql, params)]


def select_claimable_states(
    backend: SQLBackend,
    job_types: Collection[str],
    now: dt.datetime,
    limit: int,
    offset: int = 0,
    partition: tuple[int, int] | None = None,
    newest_first: bool = False,
) -> list[JobState]:
    """Like :func:`select_claimable`, but the jobs' state snapshots (one query: no load per candidate).

    ``partition``: ``(count, index)`` keeps only the jobs whose ``created_position`` modulo
    ``count`` is ``index`` (still an index range in created order; the others are skipped).
    ``newest_first``: in reverse created order (the same index range, read backwards).
    """
    return [state for state, _hash in select_claimable_heads(backend, job_types, now, limit, offset, partition, newest_first)]


#: The claimable read's columns for :func:`select_claimable_heads`: the state and the stored hash of the
#: job's last event (``''`` for an event without one; NULL only if that event is missing).
_STATE_AND_HASH = "state, last_version, (SELECT COALESCE(hash, '') FROM events WHERE job_id = jobs.job_id AND version = jobs.last_version)"


def select_claimable_heads(
    backend: SQLBackend,
    job_types: Collection[str],
    now: dt.datetime,
    limit: int,
    offset: int = 0,
    partition: tuple[int, int] | None = None,
    newest_first: bool = False,
) -> list[tuple[JobState, str | None]]:
    """:func:`select_claimable_states` with the hash of each job's last event, read in the same query.

    A claim chains its event from that hash (:meth:`jobtape.eventlog.store.EventStore.note_last_hash`):
    a worker claiming jobs another process created needs no read of it per claim.

    Returns:
        ``(state, hash)`` pairs; ``hash`` is ``None`` when the row's ``last_version`` is not the
        state's version or the event is missing (the store then reads it, as for any append).
    """
    if not job_types:
        return []
    sql, params = _claimable_query(_STATE_AND_HASH, job_types, now, limit, offset, partition, newest_first)
    found: list[tuple[JobState, str | None]] = []
    for text, last_version, hash_ in backend.query(sql, params):
        state = decode_state(text)
        found.append((state, hash_ if last_version == state.version else None))
    return found


def select_claimers(backend: SQLBackend, job_types: Collection[str], now: dt.datetime) -> list[str]:
    """Ids of the workers holding a job of ``job_types`` whose lease has not expired at ``now``
    (aware UTC), sorted (an index range over the held rows of ``jobs_status_created``)."""
    if not job_types:
        return []
    types = sorted(job_types)
    rows = backend.query(
        f"SELECT DISTINCT worker_id FROM jobs WHERE {_HELD} AND job_type IN ({', '.join('?' * len(types))})"
        " AND lease_expires_at >= ? ORDER BY worker_id",
        [*types, clock.format_timestamp(now)],
    )
    return [str(row[0]) for row in rows if row[0] is not None]


def select_expired_leases(backend: SQLBackend, now: dt.datetime, limit: int) -> list[str]:
    """Ids of up to ``limit`` held jobs whose ``lease_expires_at`` is before ``now`` (aware UTC), oldest lease first."""
    rows = backend.query(
        f"SELECT job_id FROM jobs WHERE {_HELD} AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?",
        [clock.format_timestamp(now), limit],
    )
    return [str(row[0]) for row in rows]


def select_held(backend: SQLBackend) -> list[str]:
    """Ids of every held job (``processing``, or cancelling, and not finished)."""
    return [str(row[0]) for row in backend.query(f"SELECT job_id FROM jobs WHERE {_HELD}")]


def select_with_orphans(backend: SQLBackend, finished_since: dt.datetime) -> list[str]:
    """Ids of the jobs with orphaned children on record (``orphaned_count > 0``) that are not finished
    or changed at or after ``finished_since`` (aware UTC)."""
    rows = backend.query(
        "SELECT job_id FROM jobs WHERE orphaned_count > 0 AND (finished = 0 OR updated_at >= ?)", [clock.format_timestamp(finished_since)]
    )
    return [str(row[0]) for row in rows]


def select_finished_before(backend: SQLBackend, cutoff: dt.datetime) -> set[str]:
    """Ids of the finished jobs whose ``updated_at`` is before ``cutoff`` (aware UTC)."""
    rows = backend.query("SELECT job_id FROM jobs WHERE finished = 1 AND updated_at < ?", [clock.format_timestamp(cutoff)])
    return {str(row[0]) for row in rows}
