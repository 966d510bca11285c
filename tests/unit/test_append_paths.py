"""The cheaper append paths (issue 12, helper "append") write what the full paths write.

- ``jobs.update`` (the columns an append changes) leaves the row the full upsert and a
  rebuild write, after every kind of event;
- a claim chains from the hash the claimable read found (no read of it), and the
  per-stream chain still verifies;
- a batch alone in its transaction (no SAVEPOINT) that a guard refuses leaves nothing and
  no transaction open.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import msgspec
import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import jobs
from jobtape.projections import state as job_state
from jobtape.projections.rebuild import rebuild
from jobtape.projections.repository import JobRepository

__all__: list[str] = []

LEASE = dt.datetime(2026, 11, 23, 12, 5, 0, 123456, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 11, 23, 12, 9, 0, tzinfo=dt.UTC)


def _row(repository: JobRepository, job_id: str) -> tuple[Any, ...]:
    return repository.store.backend.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])[0]


def _upserted_row(repository: JobRepository, state: job_state.JobState) -> tuple[Any, ...]:
    """The row the full upsert writes for ``state`` (into a copy of ``jobs``; its positions read from ``events``)."""
    backend = repository.store.backend
    assert isinstance(backend, SQLiteBackend)
    statement = jobs.upsert(state, table="jobs_upsert_copy")
    conn = sqlite3.connect(backend.path, isolation_level=None)  # a temp table of its own: the log is left alone
    try:
        conn.execute("CREATE TEMP TABLE jobs_upsert_copy AS SELECT * FROM jobs WHERE 0")
        conn.execute("CREATE UNIQUE INDEX temp.jobs_upsert_copy_id ON jobs_upsert_copy (job_id)")
        conn.execute(statement.sql, statement.params)
        return conn.execute("SELECT * FROM jobs_upsert_copy WHERE job_id = ?", [state.job_id]).fetchone()  # type: ignore[no-any-return]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(
            [
                ev.JobClaimed(worker_id="w-1", lease_ttl_s=30),
                ev.JobStageChanged(stage="measuring"),
                ev.JobProgress(percent=40),
                ev.JobHeartbeat(lease_expires_at=LEASE),
                ev.JobChildStarted(pid=41, argv=["ffmpeg"]),
                ev.JobChildExited(pid=41, exit_status=0),
                ev.JobProgress(percent=90),
                ev.JobCompleted(result={"preparedKey": "p/a.flac"}),
            ],
            id="completed",
        ),
        pytest.param(
            [
                ev.JobClaimed(worker_id="w-1", lease_expires_at=LEASE),
                ev.JobRetryScheduled(error="network", attempt=1, not_before=LATER),
                ev.JobClaimed(worker_id="w-2", attempt=2, lease_expires_at=LEASE),
                ev.JobChildStarted(pid=7, argv=["ffmpeg"]),
                ev.JobLeaseExpired(worker_id="w-2", attempt=2, orphaned_pids=[7]),
                ev.JobFailed(error="gave up"),
                ev.JobBlobsDeleted(keys=["u/a.wav"], reason="retention"),
            ],
            id="failed-retained-removed",
        ),
        pytest.param(
            [ev.JobClaimed(worker_id="w-1", lease_expires_at=LEASE), ev.JobCancelRequested(reason="user"), ev.JobCancelled()],
            id="cancelled",
        ),
    ],
)
def test_each_update_leaves_the_row_of_the_full_upsert_and_of_a_rebuild(repository: JobRepository, events: list[ev.Event]) -> None:
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}, owned_keys=["u/a.wav"]).state
    for event in events:
        state = repository.append(state.job_id, [event], state, actor="worker").state
        assert _row(repository, state.job_id) == _upserted_row(repository, state), ev.event_type(event)
        assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == [], ev.event_type(event)


def test_a_progress_update_sets_only_the_columns_it_changes(repository: JobRepository) -> None:
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state
    state = repository.append(state.job_id, [ev.JobClaimed(worker_id="w-1", lease_ttl_s=30)], state, actor="w-1").state
    after = job_state.apply(state, ev.JobProgress(percent=40), job_id=state.job_id, version=state.version + 1, recorded_at=LATER)

    statement = jobs.update(state, after)

    assigned = statement.sql.split(" SET ")[1].split(" WHERE ")[0]
    columns = [part.split(" = ")[0] for part in assigned.split(", ")]
    assert columns == ["updated_at", "last_version", "last_position", "state", "progress", "lease_expires_at"]
    assert jobs.update(state, after) == statement  # the SQL of a set of columns is built once, the same text


#: One change of each column ``jobs.update`` may set (the columns of ``jobs._MUTABLE`` and the derived ones).
CHANGES: dict[str, dict[str, Any]] = {
    "status": {"status": "failed"},
    "stage": {"stage": "x"},
    "progress": {"progress": 7},
    "attempt": {"attempt": 9},
    "worker_id": {"worker_id": "w-9"},
    "lease_expires_at": {"lease_expires_at": LATER},
    "result": {"result": {"a": 1}},
    "error": {"error": "e"},
    "cancel_requested": {"cancel_requested": True},
    "finished": {"finished": True},
    "not_before": {"not_before": LATER},
    "orphaned_count": {"orphaned_children": (5,)},
    "retained_upload": {"status": "failed", "finished": True, "declared_inputs": ("u/a.wav",)},
    "blobs_removed_at": {"blobs_removed_at": LATER},
}


@pytest.mark.parametrize("column", sorted(CHANGES))
def test_the_update_sets_every_column_that_changed(column: str) -> None:
    before = job_state.JobState(job_id="j", job_type="ingest", created_at=LEASE, updated_at=LEASE, version=2)
    after = msgspec.structs.replace(before, version=3, **CHANGES[column])

    statement = jobs.update(before, after)

    assert f" {column} = ?" in statement.sql
    assert set(jobs._MUTABLE) <= set(CHANGES)


def test_a_claim_chains_from_the_hash_the_claimable_read_found(tmp_path: Any) -> None:
    path = tmp_path / "jobtape.db"
    creator = JobRepository(EventStore(SQLiteBackend(path)), projections=TABLES.projections)
    creator.store.backend.migrate(TABLES.migrations)
    job_id = creator.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state.job_id
    worker = JobRepository(EventStore(SQLiteBackend(path)), projections=TABLES.projections)  # another process's store
    try:
        (candidate,) = worker.claimable_states(["ingest"], LATER.replace(year=2100))
        (first,) = worker.store.read_stored(job_id=job_id)
        assert worker.store._last_hash[job_id] == (1, first.hash)  # noted by the read: the claim reads no hash

        worker.append(job_id, [ev.JobClaimed(worker_id="w-1")], candidate, actor="w-1")

        first, second = worker.store.read_stored(job_id=job_id)
        assert second.hash == hashing.event_hash(first.hash or "", job_id, 2, second.type, second.data, second.actor, second.recorded_at)
    finally:
        creator.store.close()
        worker.store.close()


def test_an_imported_stream_is_chained_from_its_imported_hash_not_a_kept_one(tmp_path: Any) -> None:
    """A stream archived and imported again from another copy holds other hashes at the same
    versions: the store forgets what it kept for the streams it imports."""
    copy = JobRepository(EventStore(SQLiteBackend(tmp_path / "copy.db")), projections=TABLES.projections)
    copy.store.backend.migrate(TABLES.migrations)
    target = JobRepository(EventStore(SQLiteBackend(tmp_path / "target.db")), projections=TABLES.projections)
    target.store.backend.migrate(TABLES.migrations)
    try:
        state = copy.create("ingest", {"sourceType": "upload", "storageKey": "u/other.wav"}).state
        copy.append(state.job_id, [ev.JobClaimed(worker_id="w-1")], state, actor="w-1")
        imported = copy.store.read_stored(job_id=state.job_id)
        target.store.note_last_hash(state.job_id, 2, "0" * 64)  # what the target kept of its earlier copy of the stream

        target.store.import_events(imported)
        target.store.append(state.job_id, [ev.JobProgress(percent=5)], 2, actor="w-1")

        first, second, third = target.store.read_stored(job_id=state.job_id)
        assert (first.hash, second.hash) == (imported[0].hash, imported[1].hash)
        assert third.hash == hashing.event_hash(second.hash or "", state.job_id, 3, third.type, third.data, third.actor, third.recorded_at)
    finally:
        copy.store.close()
        target.store.close()


def test_a_refused_batch_alone_in_its_transaction_leaves_nothing_and_no_transaction_open(repository: JobRepository) -> None:
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state
    claimed = repository.append(state.job_id, [ev.JobClaimed(worker_id="w-1")], state, actor="w-1").state
    backend = repository.store.backend
    assert isinstance(backend, SQLiteBackend)
    head = repository.store.log_head()

    with pytest.raises(errors.ConcurrencyError):  # a stale version: the guard refuses the lone batch
        repository.append(state.job_id, [ev.JobClaimed(worker_id="w-2")], state, actor="w-2")

    assert repository.store.log_head() == head
    assert [row[0] for row in backend.query("SELECT version FROM events WHERE job_id = ?", [state.job_id])] == [1, 2]
    assert not any(conn.in_transaction for conn, _ in backend._idle)
    done = repository.append(state.job_id, [ev.JobProgress(percent=5)], claimed, actor="w-1").state
    assert done.version == 3

    # refused by a later statement, after its event insert and chain update went through: the
    # jobs row's UNIQUE (owner, idempotency_key); all of it must be rolled back, not committed
    repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    head, jobs_before = repository.store.log_head(), backend.query("SELECT COUNT(*) FROM jobs")
    with pytest.raises(errors.DuplicateIdempotencyKey):
        repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    assert repository.store.log_head() == head
    assert backend.query("SELECT COUNT(*) FROM jobs") == jobs_before
    assert backend.query("SELECT COUNT(*) FROM events") == [(4,)]  # the job's 3 and alice's first: not the refused one
    assert not any(conn.in_transaction for conn, _ in backend._idle)
    assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []


@pytest.mark.parametrize(
    "value",
    [
        LEASE,
        LATER,
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),  # no microseconds: still six digits
        dt.datetime(2026, 1, 2, 3, 4, 5, 7),  # naive: taken as UTC
        dt.datetime(2026, 6, 30, 23, 30, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # converted to UTC
        dt.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
    ],
)
def test_the_row_timestamps_are_the_clock_format(value: dt.datetime) -> None:
    from jobtape import clock

    utc = value.astimezone(dt.UTC) if value.tzinfo is not None else value
    isoformat = utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # the format's reference
    assert jobs._stamp(value) == clock.format_timestamp(value) == clock.format_uncached(value) == isoformat
    assert clock.parse_timestamp(isoformat) == utc.replace(tzinfo=dt.UTC)
