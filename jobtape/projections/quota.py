"""The per-owner quota of active jobs, guarded in SQL inside the create batch.

A new job may be created only while its owner has fewer than ``max_active_jobs`` jobs
``pending`` or ``processing`` (:data:`jobtape.projections.state.ACTIVE_STATUSES`). The
check is not a read in Python followed by a write: :func:`guard_statements` go into the
create's batch, before its ``jobs`` row, and insert one row into
``_jobtape_quota_guard`` whose ``CHECK (active_jobs < max_active_jobs)`` (constraint
``quota_exceeded``) aborts the whole batch when the count, taken inside the batch's
transaction, has reached the limit. The row is deleted again in the same batch.

:func:`count_active` is the cheap early check a route may run before expensive work (an
upload); it can be stale by the time the batch runs, which is why the guard decides.
"""

from __future__ import annotations

from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections.state import ACTIVE_STATUSES

__all__ = ["CONSTRAINT", "count_active", "guard_statements", "is_quota_violation"]

#: The CHECK constraint's name; a backend's violation message contains it.
CONSTRAINT = "quota_exceeded"
_ACTIVE = ", ".join(f"'{status}'" for status in sorted(ACTIVE_STATUSES))


def guard_statements(owner: str, max_active_jobs: int) -> list[Statement]:
    """The statements that abort a create batch when ``owner`` is at ``max_active_jobs``.

    Run them after the events' inserts and before the new job's ``jobs`` row.
    """
    return [
        Statement(
            "INSERT INTO _jobtape_quota_guard (owner, active_jobs, max_active_jobs)"
            f" SELECT ?, COUNT(*), ? FROM jobs WHERE owner = ? AND status IN ({_ACTIVE})",
            (owner, int(max_active_jobs), owner),
        ),
        Statement("DELETE FROM _jobtape_quota_guard"),
    ]


def is_quota_violation(detail: str) -> bool:
    """Whether a backend's constraint message is the quota guard's."""
    return CONSTRAINT in detail


def count_active(backend: SQLBackend, owner: str) -> int:
    """The owner's pending + processing jobs now (an index range on ``jobs (owner, status)``)."""
    rows = backend.query(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND status IN ({_ACTIVE})", [owner])
    return int(rows[0][0])
