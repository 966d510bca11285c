"""The event-store contract, run on every backend (SQLite file and libSQL over a real sqld).

Each test gets a fresh, migrated database of the parametrized kind (see ``conftest.py``):
the same statements, the same guards in SQL, the same answers.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from freezegun import freeze_time

from jobtape import errors
from jobtape.eventlog import ddl, hashing, schema
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import (
    ConstraintViolation,
    EventStore,
    SQLBackend,
    Statement,
)
from jobtape.projections import rebuild as rebuild_module
from jobtape.projections.repository import JobRepository

__all__: list[str] = []


def count(backend: SQLBackend, sql: str = "SELECT COUNT(*) FROM events") -> int:
    return int(backend.query(sql)[0][0])


# -- appends ------------------------------------------------------------------------------


@freeze_time("2026-11-23 12:00:00.123456")
def test_append_records_versions_positions_actor_and_time(repository: JobRepository) -> None:
    first = repository.create("ingest", {"storageKey": "k", "n": 1.5, "ok": True, "none": None}, actor="api")
    second = repository.create("preview", {})
    recorded = repository.append(first.state.job_id, [ev.JobClaimed(worker_id="w1")], first.state, actor="w1").recorded
    assert [r.version for r in first.recorded] == [1]
    assert recorded[0].version == 2
    assert recorded[0].position > second.recorded[0].position > first.recorded[0].position
    stream = repository.store.read_stream(first.state.job_id)
    assert [(r.version, r.type, r.actor) for r in stream] == [(1, "job.created", "api"), (2, "job.claimed", "w1")]
    assert stream[0].event == ev.JobCreated(job_type="ingest", params={"storageKey": "k", "n": 1.5, "ok": True, "none": None})
    assert stream[0].recorded_at == dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert [r.position for r in repository.store.read_all(1)] == sorted(r.position for r in repository.store.read_all(1))
    assert len(repository.store.read_all(second.recorded[0].position)) == 2
    assert repository.store.head_position() == recorded[0].position
    assert [r.position for r in repository.store.iter_all(page_size=1)] == [r.position for r in repository.store.read_all()]


def test_several_events_in_one_append_get_consecutive_versions(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    events = [ev.JobClaimed(worker_id="w"), ev.JobStageChanged(stage="probing"), ev.JobProgress(percent=7)]
    recorded = repository.append(created.state.job_id, events, created.state, actor="w").recorded
    assert [r.version for r in recorded] == [2, 3, 4]
    assert [r.position for r in recorded] == sorted(r.position for r in recorded)
    assert repository.get(created.state.job_id).progress == 7


def test_read_stream_bounds(store: EventStore) -> None:
    recorded = store.append("j1", [ev.JobCreated(job_type="ingest"), ev.JobCancelRequested()], 0, actor="api")
    assert [r.version for r in store.read_stream("j1", from_version=2)] == [2]
    assert [r.version for r in store.read_stream("j1", to_position=recorded[0].position)] == [1]
    assert store.read_stream("nope") == []


# -- concurrency errors --------------------------------------------------------------------


def test_stale_expected_version_raises_concurrency_error_and_writes_nothing(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w1")], created.state, actor="w1")
    before = count(repository.store.backend)
    with pytest.raises(errors.ConcurrencyError) as info:
        repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w2")], created.state, actor="w2")
    assert info.value.expected_version == 1
    assert count(repository.store.backend) == before
    assert repository.get(created.state.job_id).worker_id == "w1"


def test_gap_and_repeat_of_versions_are_refused_by_the_database(store: EventStore) -> None:
    store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    with pytest.raises(errors.ConcurrencyError):
        store.append("j1", [ev.JobHeartbeat()], 5, actor="w")  # the previous hash is missing: no version 5
    raw = (
        "INSERT INTO events (position, key_id, chain, job_id, version, type, data, actor, recorded_at)"
        " VALUES ((SELECT position + 1 FROM log_head), 'raw', 'raw', 'j1', ?, 'job.heartbeat', '{}', 'w', 'x')"
    )
    with pytest.raises(ConstraintViolation, match="version conflict"):
        store.backend.execute_batch([Statement(raw, (6,))])  # a gap: the trigger refuses it
    with pytest.raises(ConstraintViolation, match="version conflict|UNIQUE constraint failed: events.job_id, events.version"):
        store.backend.execute_batch([Statement(raw, (1,))])
    with pytest.raises(errors.ConcurrencyError):
        store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")  # version 1 again
    assert count(store.backend) == 1


def test_a_failing_statement_rolls_back_the_whole_batch(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    job_id = created.state.job_id
    with pytest.raises(ConstraintViolation):
        repository.store.append(
            job_id,
            [ev.JobClaimed(worker_id="w")],
            1,
            actor="w",
            extra=[Statement("INSERT INTO jobs (job_id) VALUES (?)", (job_id,))],
        )
    assert count(repository.store.backend) == 1
    assert repository.get(job_id).status == "pending"
    row = repository.store.backend.query("SELECT status, last_version, last_position, created_position FROM jobs")
    assert row == [("pending", 1, created.recorded[0].position, created.recorded[0].position)]


def test_idempotency_key_is_unique_per_owner(repository: JobRepository) -> None:
    repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    repository.create("ingest", {}, owner="bob", idempotency_key="k1")
    with pytest.raises(errors.DuplicateIdempotencyKey):
        repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    assert count(repository.store.backend) == 2


def test_concurrent_appenders_never_both_win(open_backend: Callable[[], SQLBackend]) -> None:
    first = open_backend()
    first.migrate(TABLES.migrations)
    created = JobRepository(EventStore(first), projections=TABLES.projections).create("ingest", {})
    repositories = [JobRepository(EventStore(open_backend()), projections=TABLES.projections) for _ in range(4)]  # separate connections
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(name: str, repository: JobRepository) -> None:
        barrier.wait()
        try:
            repository.append(created.state.job_id, [ev.JobClaimed(worker_id=name)], created.state, actor=name)
            wins.append(name)
        except errors.ConcurrencyError:
            pass

    threads = [threading.Thread(target=claim, args=(f"w{i}", repositories[i % 4])) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert [r.type for r in repositories[0].store.read_stream(created.state.job_id)] == ["job.created", "job.claimed"]


# -- append-only ---------------------------------------------------------------------------


@pytest.mark.parametrize("sql", ["UPDATE events SET actor = 'mallory'", "DELETE FROM events"])
def test_events_are_append_only_for_any_statement_sent(store: EventStore, sql: str) -> None:
    store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    with pytest.raises(ConstraintViolation, match="events are append-only"):
        store.backend.execute_batch([Statement(sql)])
    assert store.read_stream("j1")[0].actor == "api"


def test_a_raw_connection_cannot_change_events_either(store: EventStore) -> None:
    store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    backend: Any = store.backend
    if hasattr(backend, "url"):  # libSQL: plain client statements, outside EventStore and the backend
        import libsql_client

        with libsql_client.create_client_sync(backend.url) as client:
            for sql in ("UPDATE events SET data = '{}'", "DELETE FROM events WHERE job_id = 'j1'"):
                with pytest.raises(libsql_client.LibsqlError, match="append-only"):
                    client.execute(sql)
    else:
        conn = sqlite3.connect(backend.path)
        for sql in ("UPDATE events SET data = '{}'", "DELETE FROM events WHERE job_id = 'j1'"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        conn.close()
    assert count(store.backend) == 1


# -- the fold ------------------------------------------------------------------------------


def test_illegal_transition_is_refused_before_writing(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    done = repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w")], created.state, actor="w")
    done = repository.append(created.state.job_id, [ev.JobCompleted(result={"k": [1, 2]})], done.state, actor="w")
    before = count(repository.store.backend)
    with pytest.raises(errors.IllegalTransition):
        repository.append(created.state.job_id, [ev.JobProgress(percent=3)], done.state, actor="w")
    assert count(repository.store.backend) == before
    state = repository.get(created.state.job_id)
    assert (state.status, state.result) == ("complete", {"k": [1, 2]})


def test_cancel_of_a_pending_job_and_the_fold_of_its_stream(repository: JobRepository) -> None:
    from jobtape.projections import state as job_state

    created = repository.create("ingest", {})
    repository.append(created.state.job_id, [ev.JobCancelRequested(reason="user")], created.state, actor="api")
    stored = repository.get(created.state.job_id)
    assert stored.status == "cancelled"
    assert job_state.fold(repository.store.read_stream(created.state.job_id)) == stored


# -- queue position and claims -------------------------------------------------------------


def test_queue_position_counts_pending_jobs_created_before(repository: JobRepository) -> None:
    jobs = [repository.create("ingest", {}).state for _ in range(4)]
    assert [repository.queue_position(j.job_id) for j in jobs] == [1, 2, 3, 4]
    repository.append(jobs[0].job_id, [ev.JobClaimed(worker_id="w")], jobs[0], actor="w")
    repository.append(jobs[2].job_id, [ev.JobCancelRequested()], jobs[2], actor="api")
    assert [repository.queue_position(j.job_id) for j in jobs] == [None, 1, None, 2]
    assert repository.queue_position("unknown") is None


def test_writers_appending_at_once_build_on_the_head_read_in_their_write_turn(open_backend: Callable[[], SQLBackend]) -> None:
    """Stores on separate connections (as separate processes) appending at once: each store's batch is
    built on the log's head read inside the batch's own write transaction, so after a store's first
    meeting with another writer (it builds from the head it built last until then) no batch of it is
    refused as a chain conflict and built again; the keyed chain verifies clean."""
    from jobtape.audit import logcheck

    first = open_backend()
    first.migrate(TABLES.migrations)
    stores = [EventStore(open_backend()) for _ in range(3)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def lifecycles(store: EventStore) -> None:
        repository = JobRepository(store, projections=TABLES.projections)
        barrier.wait()
        try:
            for _ in range(8):
                state = repository.create("ingest", {}).state
                for event in (ev.JobClaimed(worker_id="w:1:1"), ev.JobProgress(percent=50), ev.JobCompleted(result={})):
                    state = repository.append(state.job_id, [event], state, actor="w:1:1").state
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=lifecycles, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(store.chain_retries <= 1 for store in stores), [store.chain_retries for store in stores]
    report = logcheck.verify_store(EventStore(first))
    assert (report.events_checked, report.violations) == (3 * 8 * 4, [])


def test_claims_are_exclusive_across_workers(open_backend: Callable[[], SQLBackend]) -> None:
    from jobtape.config import Settings
    from jobtape.defaults import worker as Worker
    from jobtape.storage import MemoryStorage

    first = open_backend()
    first.migrate(TABLES.migrations)
    job_ids = [JobRepository(EventStore(first), projections=TABLES.projections).create("ingest", {}).state.job_id for _ in range(12)]
    settings = Settings(concurrency=2, poll_interval_s=0.01)
    workers = [
        Worker(
            JobRepository(EventStore(open_backend()), projections=TABLES.projections),
            MemoryStorage(),
            settings,
            handlers={"ingest": lambda context, storage, settings: {"by": context.worker_id}},
            worker_id=f"w{n}",
        )
        for n in range(3)
    ]
    threads = [threading.Thread(target=w.run, kwargs={"until_idle": True}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(j for w in workers for j in w.finished) == sorted(job_ids)
    repository = JobRepository(EventStore(first), projections=TABLES.projections)
    for job_id in job_ids:
        assert [r.type for r in repository.store.read_stream(job_id)] == ["job.created", "job.claimed", "job.completed"]
        state = repository.get(job_id)
        assert state.result == {"by": state.worker_id}


# -- rebuild -------------------------------------------------------------------------------


def test_rebuild_finds_and_repairs_drift(repository: JobRepository) -> None:
    created = repository.create("ingest", {}, idempotency_key="k")
    claimed = repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w"), ev.JobProgress(percent=5)], created.state, actor="w")
    repository.create("preview", {})
    report = rebuild_module.rebuild(repository.store, apply_changes=False, tables=TABLES)
    assert (report.jobs_rebuilt, report.events_read, report.differences) == (2, 4, [])
    repository.store.backend.execute_batch([Statement("UPDATE jobs SET progress = 99 WHERE job_id = ?", (created.state.job_id,))])
    report = rebuild_module.rebuild(repository.store, tables=TABLES, compare=True)
    assert [(d.job_id, d.column) for d in report.differences] == [(created.state.job_id, "progress")]
    assert repository.get(created.state.job_id) == claimed.state
    assert rebuild_module.rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
    tables = {row[0] for row in repository.store.backend.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert rebuild_module.REBUILD_TABLE not in tables


# -- hash chain ----------------------------------------------------------------------------


def test_every_event_carries_a_hash_chained_to_the_previous_one(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    job_id = created.state.job_id
    state = repository.append(job_id, [ev.JobClaimed(worker_id="w"), ev.JobStageChanged(stage="a")], created.state, actor="w").state
    repository.store._last_hash.clear()  # force the read path for the previous hash
    repository.append(job_id, [ev.JobProgress(percent=4)], state, actor="w")
    rows = repository.store.backend.query(
        "SELECT version, type, data, actor, recorded_at, hash FROM events WHERE job_id = ? ORDER BY version", [job_id]
    )
    previous = hashing.genesis_hash(job_id)
    for version, type_, data, actor, recorded_at, stored in rows:
        previous = hashing.event_hash(previous, job_id, version, type_, data, actor, recorded_at)
        assert stored == previous
    assert len(rows) == 4


# -- schema --------------------------------------------------------------------------------


def _schema(query: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, Any]:
    objects = query(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE 'libsql_%' AND name NOT LIKE '_litestream%' ORDER BY name"
    )
    described: dict[str, Any] = {}
    for type_, name, table, sql in objects:
        if type_ == "table":
            described[name] = [row[1:] for row in query(f'PRAGMA table_info("{name}")')]
        else:
            described[name] = (type_, table, " ".join((sql or "").split()))
    return described


def test_migrations_give_the_same_schema_as_sqlite_and_are_idempotent(backend: SQLBackend) -> None:
    conn = sqlite3.connect(":memory:")
    import sqlite_utils

    schema.migrate(sqlite_utils.Database(conn), TABLES.migrations)
    assert _schema(lambda sql: backend.query(sql)) == _schema(lambda sql: conn.execute(sql).fetchall())
    assert backend.migrate(TABLES.migrations) == []
    assert [row[0] for row in backend.query("SELECT name FROM _jobtape_migrations ORDER BY name")] == [
        migration.name for migration in TABLES.migrations
    ]


def test_migrations_apply_incrementally(open_backend: Callable[[], SQLBackend], monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_backend()
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    if hasattr(backend, "url"):
        assert backend.migrate() == ["0001_events", "0002_jobs"]  # the engine's (patched) list by default
    else:  # the SQLite backend reads the default list inside schema.migrate
        import sqlite_utils

        with sqlite3.connect(backend.path) as conn:  # type: ignore[attr-defined]
            assert schema.migrate(sqlite_utils.Database(conn), schema.MIGRATIONS[:2]) == ["0001_events", "0002_jobs"]
    monkeypatch.undo()
    assert backend.migrate(TABLES.migrations) == [migration.name for migration in TABLES.migrations[2:]]
    assert "hash" in [row[1] for row in backend.query("PRAGMA table_info(events)")]


def test_ddl_turns_add_column_into_alter_table() -> None:
    statements = ddl.migration_statements(schema.MIGRATIONS, 2)
    assert statements == ['ALTER TABLE "events" ADD COLUMN "hash" TEXT', 'ALTER TABLE "jobs" ADD COLUMN "not_before" TEXT']


def test_ddl_refuses_a_table_rebuild() -> None:
    import sqlite_utils

    def rebuild_jobs(db: sqlite_utils.Database) -> None:
        db["jobs"].transform(types={"progress": float})  # type: ignore[union-attr]

    with pytest.raises(ValueError, match="rebuilds table 'jobs'"):
        ddl.migration_statements([*schema.MIGRATIONS, ("0099_progress_real", rebuild_jobs)], len(schema.MIGRATIONS))


def test_the_queue_counts_migration_fills_the_pending_jobs_of_an_existing_log(open_backend: Callable[[], SQLBackend]) -> None:
    """``0010_queue_counts``'s data statement runs on both backends (libSQL gets the DDL, then the fill)."""
    from jobtape.projections import queue, registry

    backend = open_backend()
    before = tuple(m for m in TABLES.migrations if m.name != "0010_queue_counts")
    backend.migrate(before)
    older = tuple(p for p in TABLES.projections if p.table != queue.TABLE)  # what the code before 0010 wrote
    old = JobRepository(EventStore(backend), projections=older)
    jobs = [old.create("ingest", {}).state for _ in range(7)]
    old.append(jobs[1].job_id, [ev.JobClaimed(worker_id="w")], jobs[1], actor="w")
    old.append(jobs[4].job_id, [ev.JobCancelRequested()], jobs[4], actor="api")

    assert backend.migrate(TABLES.migrations) == ["0010_queue_counts"]
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    assert [repository.queue_position(j.job_id) for j in jobs] == [1, None, 2, 3, None, 4, 5]
    assert registry.QUEUE in TABLES.projections
