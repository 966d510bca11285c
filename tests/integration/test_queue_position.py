"""Queue position from ``queue_counts`` (:mod:`jobtape.projections.queue`) on a real SQLite file.

The answer must equal the definition it replaces: 1 + COUNT of the pending jobs with a
smaller ``created_position`` (backoff or not), ``None`` unless the job is pending; under
any interleaving of creates, claims, cancels, retries with backoff, lease expiries,
releases, completions and failures; after a rebuild; and the table must equal a fill from
``jobs`` (the migration's statement) with no empty blocks left behind.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobtape import errors
from jobtape.audit import transfer
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import queue
from jobtape.projections.rebuild import rebuild
from jobtape.projections.repository import JobRepository

#: The definition queue_counts replaces (the query of main before it), read from ``jobs``.
_COUNT = (
    "SELECT 1 + (SELECT COUNT(*) FROM jobs AS other WHERE other.status = 'pending'"
    " AND other.created_position < me.created_position)"
    " FROM jobs AS me WHERE me.job_id = ? AND me.status = 'pending'"
)


def counted_position(repository: JobRepository, job_id: str) -> int | None:
    rows = repository.store.backend.query(_COUNT, [job_id])
    return int(rows[0][0]) if rows else None


def queue_rows(store: EventStore) -> list[tuple[int, int]]:
    return [(int(node), int(pending)) for node, pending in store.backend.query("SELECT node, pending FROM queue_counts ORDER BY node")]


def filled_rows(store: EventStore) -> list[tuple[int, int]]:
    """The rows :data:`queue.FILL_FROM_JOBS` gives for the current ``jobs`` (in a rolled-back write)."""
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    conn = backend._connect()  # a connection of its own: the fill is rolled back, never committed
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM queue_counts")
        conn.execute(queue.FILL_FROM_JOBS)
        rows = [(int(a), int(b)) for a, b in conn.execute("SELECT node, pending FROM queue_counts ORDER BY node")]
        conn.execute("ROLLBACK")
        return rows
    finally:
        conn.close()


def assert_exact(repository: JobRepository, job_ids: list[str]) -> None:
    for job_id in job_ids:
        counted = counted_position(repository, job_id)
        assert repository.queue_position(job_id) == counted, job_id
        state, position = repository.get_with_position(job_id)  # the poll's one-statement read
        assert (state, position) == (repository.get(job_id), counted), job_id
    assert queue_rows(repository.store) == filled_rows(repository.store)
    assert all(pending > 0 for _node, pending in queue_rows(repository.store))  # empty blocks are deleted


def _later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


class QueueMachine(RuleBasedStateMachine):
    """Random job histories through the real repository; the fold refuses what is illegal."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="jobtape-queue-"))
        backend = SQLiteBackend(self.folder / "jobtape.db")
        backend.migrate(TABLES.migrations)
        self.repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        self.job_ids: list[str] = []

    def teardown(self) -> None:
        try:
            report = rebuild(self.repository.store, apply_changes=False, tables=TABLES)
            assert [d for d in report.differences if d.table == queue.TABLE] == []
        finally:
            self.repository.store.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _append(self, index: int, make: str) -> None:
        job_id = self.job_ids[index % len(self.job_ids)]
        state = self.repository.get(job_id)
        worker = state.worker_id or "w"
        events: dict[str, ev.Event] = {
            "claim": ev.JobClaimed(worker_id="w", attempt=state.attempt + 1, lease_ttl_s=30.0),
            "cancel": ev.JobCancelRequested(reason="test"),
            "cancelled": ev.JobCancelled(),
            "retry_backoff": ev.JobRetryScheduled(error="transient", attempt=state.attempt, not_before=_later()),
            "retry_now": ev.JobRetryScheduled(error="transient", attempt=state.attempt),
            "lease_expired": ev.JobLeaseExpired(worker_id=worker, attempt=state.attempt, not_before=_later()),
            "released": ev.JobReleased(worker_id=worker),
            "complete": ev.JobCompleted(result={"ok": True}),
            "fail": ev.JobFailed(error="broken"),
            "progress": ev.JobProgress(percent=50),
        }
        try:
            self.repository.append(job_id, [events[make]], state, actor=worker)
        except errors.IllegalTransition:
            pass  # refused by the fold: nothing was written

    @rule(cache_hit=st.booleans())
    def create(self, cache_hit: bool) -> None:
        extra = [ev.JobCompleted(result={"cached": True})] if cache_hit else []
        self.job_ids.append(self.repository.create("noop", {}, extra_events=extra).state.job_id)

    @precondition(lambda self: bool(self.job_ids))
    @rule(
        index=st.integers(min_value=0, max_value=10_000),
        make=st.sampled_from(
            [
                "claim",
                "claim",
                "cancel",
                "cancelled",
                "retry_backoff",
                "retry_now",
                "lease_expired",
                "released",
                "complete",
                "fail",
                "progress",
            ]
        ),
    )
    def transition(self, index: int, make: str) -> None:
        self._append(index, make)

    @precondition(lambda self: bool(self.job_ids))
    @rule()
    def rebuild_and_swap(self) -> None:
        report = rebuild(self.repository.store, apply_changes=True, tables=TABLES)
        assert report.differences == []

    @invariant()
    def positions_are_the_count(self) -> None:
        assert_exact(self.repository, self.job_ids)


QueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestQueueMachine = QueueMachine.TestCase


def test_positions_follow_claims_backoff_and_lease_expiry(repository: JobRepository) -> None:
    jobs = [repository.create("noop", {}).state for _ in range(5)]
    ids = [job.job_id for job in jobs]
    assert [repository.queue_position(j) for j in ids] == [1, 2, 3, 4, 5]
    claimed = repository.append(ids[1], [ev.JobClaimed(worker_id="w", attempt=1, lease_ttl_s=30.0)], jobs[1], actor="w").state
    repository.append(ids[3], [ev.JobCancelRequested()], jobs[3], actor="api")
    assert [repository.queue_position(j) for j in ids] == [1, None, 2, None, 3]
    # A retry with backoff puts the job back at its created place; it counts while it waits.
    backed_off = repository.append(ids[1], [ev.JobRetryScheduled(error="x", attempt=1, not_before=_later())], claimed, actor="w").state
    assert [repository.queue_position(j) for j in ids] == [1, 2, 3, None, 4]
    claimed = repository.append(ids[0], [ev.JobClaimed(worker_id="w", attempt=1, lease_ttl_s=30.0)], jobs[0], actor="w").state
    assert [repository.queue_position(j) for j in ids] == [None, 1, 2, None, 3]
    repository.append(ids[0], [ev.JobLeaseExpired(worker_id="w", attempt=1)], claimed, actor="reaper")  # back to pending
    assert [repository.queue_position(j) for j in ids] == [1, 2, 3, None, 4]
    assert backed_off.status == "pending"
    assert_exact(repository, ids)


def test_a_drifted_table_is_found_by_verify_and_recomputed_by_rebuild(repository: JobRepository) -> None:
    ids = [repository.create("noop", {}).state.job_id for _ in range(6)]
    good = queue_rows(repository.store)
    repository.store.backend.execute_batch(
        [Statement("UPDATE queue_counts SET pending = pending + 5"), Statement("DELETE FROM queue_counts WHERE node = 3")]
    )
    assert repository.queue_position(ids[-1]) != 6
    found = rebuild(repository.store, apply_changes=False, tables=TABLES).differences
    assert {d.table for d in found} == {queue.TABLE} and len(found) == len(good)
    assert rebuild(repository.store, apply_changes=True, compare=True, tables=TABLES).differences == found
    assert queue_rows(repository.store) == good
    assert [repository.queue_position(j) for j in ids] == [1, 2, 3, 4, 5, 6]


def test_an_import_that_splits_a_stream_over_batches_counts_each_job_once(
    repository: JobRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [repository.create("noop", {}).state.job_id for _ in range(4)]
    state = repository.get(ids[0])
    state = repository.append(ids[0], [ev.JobClaimed(worker_id="w", attempt=1)], state, actor="w").state
    repository.append(ids[0], [ev.JobRetryScheduled(error="x", attempt=1)], state, actor="w")  # pending again, 3 events
    export = tmp_path / "export.jsonl"
    with export.open("w") as out:
        transfer.export(repository.store, out, None)
    backend = SQLiteBackend(tmp_path / "imported.db")
    backend.migrate(TABLES.migrations)
    target = JobRepository(EventStore(backend), projections=TABLES.projections)
    try:
        monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)  # the first job's stream spans batches
        transfer.import_lines(target.store, export.read_text().splitlines(), tables=TABLES)
        assert [target.queue_position(j) for j in ids] == [repository.queue_position(j) for j in ids] == [1, 2, 3, 4]
        assert_exact(target, ids)
        assert rebuild(target.store, apply_changes=False, tables=TABLES).differences == []
    finally:
        target.store.close()
