"""The ``jobs`` projection: one row per job, written in the same batch as its events.

Rows are the output of the pure fold (:mod:`jobtape.projections.state`); nothing else
writes them. The ``state`` column holds the whole :class:`JobState` as JSON (a snapshot
the next append folds onto); the other columns exist for indexes and for operators.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobtape import clock
from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections.state import JobState

__all__ = ["COLUMNS", "decode_state", "encode_state", "queue_position", "row_values", "select_state", "upsert"]

_STATE_ENCODER = msgspec.json.Encoder()
_STATE_DECODER = msgspec.json.Decoder(JobState)
_JSON = msgspec.json.Encoder()

#: Columns of ``jobs`` in table order.
COLUMNS = (
    "job_id", "job_type", "owner", "idempotency_key", "status", "stage", "progress", "attempt",
    "worker_id", "lease_expires_at", "result", "error", "cancel_requested", "finished",
    "created_at", "updated_at", "created_position", "last_version", "last_position", "state",
)


def encode_state(state: JobState) -> str:
    """Encode a state as the JSON text stored in ``jobs.state``."""
    return _STATE_ENCODER.encode(state).decode()


def decode_state(text: str | bytes) -> JobState:
    """Decode ``jobs.state``; raises ``msgspec.ValidationError`` on a corrupt snapshot."""
    return _STATE_DECODER.decode(text)


def row_values(state: JobState) -> tuple[Any, ...]:
    """The values of every column but ``created_position`` and ``last_position``, in :data:`COLUMNS` order."""
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
        clock.format_timestamp(state.lease_expires_at) if state.lease_expires_at else None,
        _JSON.encode(state.result).decode() if state.result is not None else None,
        state.error,
        int(state.cancel_requested),
        int(state.finished),
        clock.format_timestamp(state.created_at),
        clock.format_timestamp(state.updated_at),
        state.version,
        encode_state(state),
    )


_UPDATED = [c for c in COLUMNS if c not in ("job_id", "created_position", "owner", "job_type", "idempotency_key", "created_at")]


def _upsert_sql(table: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ("
        + ", ".join(["?"] * 16)
        + ", (SELECT position FROM events WHERE job_id = ? AND version = 1), ?,"
        " (SELECT position FROM events WHERE job_id = ? AND version = ?), ?)"
        " ON CONFLICT (job_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _UPDATED)
    )


_UPSERT = _upsert_sql("jobs")


def upsert(state: JobState, table: str = "jobs") -> Statement:
    """The statement that writes ``state`` as the job's row (run it in the append's batch)."""
    values = row_values(state)
    params = (*values[:16], state.job_id, state.version, state.job_id, state.version, values[17])
    return Statement(_UPSERT if table == "jobs" else _upsert_sql(table), params)


def select_state(backend: SQLBackend, job_id: str) -> JobState | None:
    """Read a job's state snapshot from the projection (``None`` if there is no such job)."""
    rows = backend.query("SELECT state FROM jobs WHERE job_id = ?", [job_id])
    return decode_state(rows[0][0]) if rows else None


def queue_position(backend: SQLBackend, job_id: str) -> int | None:
    """1 + the number of pending jobs created before this one; ``None`` unless the job is pending.

    Answered from the ``jobs_status_created`` index (a range count over pending jobs
    only), never a scan of all jobs.
    """
    rows = backend.query(
        "SELECT 1 + (SELECT COUNT(*) FROM jobs AS other WHERE other.status = 'pending'"
        " AND other.created_position < me.created_position)"
        " FROM jobs AS me WHERE me.job_id = ? AND me.status = 'pending'",
        [job_id],
    )
    return int(rows[0][0]) if rows else None
