"""The per-owner quota of active jobs, guarded in SQL inside the create batch.

A new job may be created only while its owner has fewer than ``max_active_jobs`` jobs
``pending`` or ``processing`` (:data:`jobtape.projections.state.ACTIVE_STATUSES`). The
check is not a read in Python followed by a write: :func:`guard_statements` go into the
create's batch, after its ``jobs`` row (so a duplicate idempotency key is reported as
such, not as a quota refusal), and insert one row into ``_jobtape_quota_guard`` whose
``CHECK (active_jobs < max_active_jobs)`` (constraint ``quota_exceeded``) aborts the whole
batch when the owner's OTHER active jobs, counted inside the batch's transaction, have
reached the limit (counted up to the limit only: the cost is bounded by the quota, not by
how many jobs the owner has). The row is deleted again in the same batch.

:func:`count_active` is the cheap early check a route may run before expensive work (an
upload); it can be stale by the time the batch runs, which is why the guard decides.
"""

from __future__ import annotations

from jobtape import errors
from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections.state import ACTIVE_STATUSES

__all__ = ["CONSTRAINT", "check_early", "count_active", "guard_statements", "is_quota_violation"]

#: The CHECK constraint's name; a backend's violation message contains it.
CONSTRAINT = "quota_exceeded"
_ACTIVE = ", ".join(f"'{status}'" for status in sorted(ACTIVE_STATUSES))


def guard_statements(owner: str, max_active_jobs: int, job_id: str) -> list[Statement]:
    """The statements that abort the batch creating ``job_id`` when ``owner`` is at ``max_active_jobs``.

    Run them after the new job's ``jobs`` row; the count leaves ``job_id`` itself out.
    """
    return [
        Statement(
            "INSERT INTO _jobtape_quota_guard (owner, active_jobs, max_active_jobs)"
            f" SELECT ?, COUNT(*), ? FROM (SELECT 1 FROM jobs WHERE owner = ? AND status IN ({_ACTIVE}) AND job_id != ? LIMIT ?)",
            (owner, int(max_active_jobs), owner, job_id, int(max_active_jobs)),
        ),
        Statement("DELETE FROM _jobtape_quota_guard"),
    ]


def is_quota_violation(detail: str) -> bool:
    """Whether a backend's constraint message is the quota guard's."""
    return CONSTRAINT in detail


def count_active(backend: SQLBackend, owner: str, up_to: int | None = None) -> int:
    """The owner's pending + processing jobs now (an index range on ``jobs (owner, status)``).

    Args:
        backend: the store's backend.
        owner: the owner.
        up_to: count at most this many (the quota: whether the owner is at it needs no more,
            so the cost stays bounded by the quota, not by how many jobs the owner has).
    """
    if up_to is None:
        rows = backend.query(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ({_ACTIVE})", [owner])
    else:
        rows = backend.query(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE owner = ? AND status IN ({_ACTIVE}) LIMIT ?)", [owner, int(up_to)]
        )
    return int(rows[0][0])


def check_early(backend: SQLBackend, owner: str, max_active_jobs: int) -> None:
    """Refuse at once when ``owner`` is at the limit, before expensive work (e.g. receiving an upload).

    Advisory only: the guard in the create batch decides.

    Raises:
        errors.QuotaExceeded: the owner has ``max_active_jobs`` active jobs now.
    """
    if count_active(backend, owner, up_to=max_active_jobs) >= max_active_jobs:
        raise errors.QuotaExceeded(owner, max_active_jobs)
