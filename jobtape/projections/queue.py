"""The ``queue_counts`` projection: pending jobs counted by blocks of ``created_position``, for queue position in O(log n).

A job's queue position is 1 + the number of ``pending`` jobs with a smaller
``created_position`` (docs/jobs.md, ``queuePosition``): every pending job counts, a job
waiting out a retry's backoff (``not_before``) too, in created order. Counting them with
``COUNT(*)`` over an index range walks every entry before the job (linear: 29.3 ms for the
last of 1,000,000 pending jobs against 0.25 ms for the last of 10,000). This table keeps the
same number as an order-statistics structure, so the answer reads O(log n) rows.

**The blocks.** Node ``(L, k)`` (``L >= 0``, ``k >= 1``) counts the pending jobs whose
``created_position`` lies in ``[k * 2**L, (k + 1) * 2**L)``. A job at position ``p`` is
counted in the nodes ``(L, p >> L)`` for

- ``L = 0`` (the leaf: 1 while the job is pending), and
- every ``L`` where ``p >> L`` is even (and at least 2), and
- the ``L`` where ``p >> L == 1`` (the job's bit-length class ``[2**L, 2**(L + 1))``).

The rank of position ``q`` (pending jobs before it) is the sum of

- ``(L, 1)`` for every ``L`` below ``q``'s top bit (all jobs with a shorter position), and
- ``(L, (q >> L) - 1)`` for every set bit ``L`` of ``q`` below its top bit (jobs with the same
  top bits as ``q`` down to ``L + 1``, a 0 at ``L`` where ``q`` has a 1),

so an update touches at most ``bit_length(p) + 1`` nodes and a query at most
``2 * bit_length(q)`` nodes, each a primary-key lookup: O(log n) both ways.

**No size bound.** The nodes are keyed by the blocks themselves, not by slots of a tree of
fixed size, so the structure never has to grow or be re-shaped as ``created_position``
grows: the levels a position needs exist once a job there is pending. The key of
``(L, k)`` is one integer, ``(2 * k + 1) << L`` (odd part ``2k + 1``, power ``2**L``: unique),
at most ``3 * p``: exact for positions below ``2**61`` (2.3e18; a log appending a million
events a second reaches it in 73,000 years). Nodes whose count falls to 0 are deleted in
the same batch, so the table holds only blocks with pending jobs and a rebuild (which
writes pending jobs only) yields the same rows.

**Writes.** The node keys are a pure function of ``created_position``, computed by the SQL
from the job's first event (a create's position is only known inside its batch: the event
insert assigns it). Each statement sets the job's membership: the count added is the
wanted membership (1 pending, 0 not) minus the job's current leaf, so writing the same
state twice (a rebuild's catch-up round, an import continuing a stream in its next batch)
changes nothing. Counts change by ``pending = pending + delta`` upserts in the append's
batch, never a value read in Python and written back, so two writers cannot lose an update.

``queue_counts`` is a ``WITHOUT ROWID`` table: its inserts leave ``last_insert_rowid()``
alone, which the ``jobs`` update of the same batch relies on.
"""

from __future__ import annotations

from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections.state import JobState

__all__ = ["COLUMNS", "FILL_FROM_JOBS", "TABLE", "fill", "queue_position", "select_state_and_position", "statements"]

#: The projection's table.
TABLE = "queue_counts"
#: Its columns: the node key, then the pending jobs counted in that block.
COLUMNS = ("node", "pending")

#: Levels 0..62: the bits of a positive 63-bit position (a VALUES list: half the cost of a recursive CTE in the
#: membership upsert; the empty-block delete walks only ``bit_length(p)`` levels with one, :func:`_delete_empty_sql`).
_LEVELS = "lv(l) AS (VALUES " + ", ".join(f"({level})" for level in range(63)) + ")"
#: The blocks a job at position ``p`` is counted in (see the module docstring), as node keys.
_NODE_KEY = "((2 * (p >> l) + 1) << l)"
_NODES_OF_P = "FROM me, lv WHERE (p >> l) >= 1 AND (l = 0 OR (p >> l) = 1 OR (p >> l) % 2 = 0)"
_FIRST_POSITION = "SELECT position FROM events WHERE job_id = ? AND version = 1"


def _set_membership_sql(table: str) -> str:
    # The delta is the wanted membership minus the current leaf (node (0, p): key 2p + 1).
    # `me` is MATERIALIZED (SQLite >= 3.35, which RETURNING needs already): the delta is
    # computed once, before any write, so the leaf's own update cannot change it for the
    # nodes written after it.
    return (
        f"WITH {_LEVELS}, me(p, delta) AS MATERIALIZED (SELECT position, ? - COALESCE((SELECT pending FROM {table}"
        f" WHERE node = 2 * position + 1), 0) FROM events WHERE job_id = ? AND version = 1)"
        f" INSERT INTO {table} (node, pending) SELECT {_NODE_KEY}, delta {_NODES_OF_P} AND delta != 0"
        " ON CONFLICT (node) DO UPDATE SET pending = pending + excluded.pending"
    )


def _delete_empty_sql(table: str) -> str:
    # Only after this job's count was taken away (its leaf is there, at 0): a job that was
    # never counted (created finished, a rebuild of a finished job) skips the node scan.
    # The levels are counted up from the leaf while p >> l >= 1 (a recursive CTE of
    # bit_length(p) rows): the same nodes as _NODES_OF_P, ~10% less CPU than the 63-row
    # VALUES list here, where the IN list is built once (the upsert's join is not slower).
    return (
        f"WITH RECURSIVE me(p) AS ({_FIRST_POSITION}"
        f" AND EXISTS (SELECT 1 FROM {table} WHERE node = 2 * position + 1 AND pending = 0)),"
        " up(l, q) AS (SELECT 0, p FROM me UNION ALL SELECT l + 1, q >> 1 FROM up WHERE q > 1)"
        f" DELETE FROM {table} WHERE pending = 0 AND node IN (SELECT (2 * q + 1) << l FROM up WHERE l = 0 OR q = 1 OR q % 2 = 0)"
    )


_SET = _set_membership_sql(TABLE)
_DELETE_EMPTY = _delete_empty_sql(TABLE)


def statements(before: JobState | None, after: JobState, table: str = TABLE) -> list[Statement]:
    """The statements an append from ``before`` to ``after`` runs on ``table``.

    Nothing unless the job enters or leaves ``pending`` (a create, a claim, a cancel of a
    pending job, a retry with backoff, a lease expiry putting it back, a completion...), or
    ``before`` is ``None`` (a create, or a rebuild or import writing the stream's state:
    idempotent, see the module docstring). Leaving pending also deletes the blocks left empty.

    Args:
        before: the state before the append (``None``: new or re-folded stream).
        after: the state after it.
        table: ``queue_counts`` or a rebuild's scratch copy.
    """
    pending = after.status == "pending"
    if before is not None and (before.status == "pending") == pending:
        return []
    live = table == TABLE
    membership = Statement(_SET if live else _set_membership_sql(table), (int(pending), after.job_id))
    if pending:
        return [membership]
    return [membership, Statement(_DELETE_EMPTY if live else _delete_empty_sql(table), (after.job_id,))]


def _fill_sql(jobs_table: str, table: str) -> str:
    # `me` is MATERIALIZED: the pending jobs are read once. Inlined, SQLite planned the join
    # with `lv` outside, so it scanned the jobs once per level (63 full scans of a rebuild's
    # scratch `jobs`, which has no index on `status`: 2.7 s of a 1M-event rebuild).
    return (
        f"WITH {_LEVELS}, me(p) AS MATERIALIZED (SELECT created_position FROM {jobs_table} WHERE status = 'pending')"
        f" INSERT INTO {table} (node, pending) SELECT node, COUNT(*) FROM (SELECT {_NODE_KEY} AS node {_NODES_OF_P})"
        " GROUP BY node"
    )


#: The rows for every pending job of ``jobs``, written at once (the bench's bulk path; the
#: migration ``0010_queue_counts`` fills an existing data dir with the same rows).
FILL_FROM_JOBS = _fill_sql("jobs", TABLE)


def fill(jobs_table: str, table: str) -> list[Statement]:
    """The statements that compute all of ``table`` at once from the pending rows of ``jobs_table``.

    A rebuild runs them on its scratch copies after writing every ``jobs`` row, instead of
    a job's :func:`statements` per job (two statements of a few dozen node writes for every
    finished job, which the result does not hold): the same rows, as ``rebuild --verify``
    checks against the live table.
    """
    return [Statement(f"DELETE FROM {table}"), Statement(_fill_sql(jobs_table, table))]


_QUERY = (
    f"WITH {_LEVELS}, me(q) AS (SELECT created_position FROM jobs WHERE job_id = ? AND status = 'pending')"
    f" SELECT 1 + COALESCE((SELECT SUM(pending) FROM {TABLE} WHERE node IN ("
    "SELECT 3 << l FROM me, lv WHERE (q >> l) >= 2"
    " UNION ALL SELECT (2 * (q >> l) - 1) << l FROM me, lv WHERE (q >> l) >= 3 AND (q >> l) % 2 = 1)), 0) FROM me"
)


def queue_position(backend: SQLBackend, job_id: str) -> int | None:
    """1 + the number of pending jobs created before this one; ``None`` unless the job is pending.

    Sums at most ``2 * bit_length(created_position)`` rows of ``queue_counts`` by primary
    key (O(log n) in the pending jobs and the log's length), never a count over a range.
    Exactly ``1 + COUNT(*)`` of the ``pending`` jobs with a smaller ``created_position``,
    backoff (``not_before``) or not.
    """
    rows = backend.query(_QUERY, [job_id])
    return int(rows[0][0]) if rows else None


#: The poll's read: a job's ``jobs.state`` and, when pending, its queue position, in one statement.
#: The same nodes as :data:`_QUERY`, found by one pass over the levels joined to
#: ``queue_counts`` by primary key (each level names ``3 << l`` and, for an odd ``q >> l``, the
#: block before it; a node's key encodes its level, so no row is counted twice): about a
#: third cheaper than the ``IN (... UNION ALL ...)`` form.
_Q = "created_position"
_STATE_AND_POSITION = (
    f"WITH {_LEVELS} SELECT state, CASE WHEN status = 'pending' THEN 1 + (SELECT COALESCE(SUM(pending), 0)"
    f" FROM lv CROSS JOIN {TABLE} ON node = 3 << l"
    f" OR node = CASE WHEN ({_Q} >> l) >= 3 AND ({_Q} >> l) % 2 = 1 THEN (2 * ({_Q} >> l) - 1) << l END"
    f" WHERE ({_Q} >> l) >= 2) END FROM jobs WHERE job_id = ?"
)


def select_state_and_position(backend: SQLBackend, job_id: str) -> tuple[str, int | None] | None:
    """A job's state snapshot (``jobs.state``, JSON text) and its queue position, read by ONE statement.

    The position is :func:`queue_position`'s (``None`` unless the job is pending), computed
    in the same statement from the same ``jobs`` row, so both come from one snapshot and the
    poll pays one statement instead of two (issue 12, ``bench/poll.py``).

    Returns:
        ``(state_json, position)``, or ``None`` if there is no such job.
    """
    rows = backend.query(_STATE_AND_POSITION, [job_id])
    if not rows:
        return None
    text, position = rows[0]
    return str(text), None if position is None else int(position)
