"""The event store and the jobs projection on a real SQLite file."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from freezegun import freeze_time
from polling import wait_for  # type: ignore[import-not-found]

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections.repository import JobRepository


def count(store: EventStore, sql: str = "SELECT COUNT(*) FROM events") -> int:
    return int(store.backend.query(sql)[0][0])


@freeze_time("2026-11-23 12:00:00.123456")
def test_append_records_versions_positions_actor_and_time(repository: JobRepository) -> None:
    first = repository.create("ingest", {"storageKey": "k"}, actor="api")
    second = repository.create("preview", {})
    recorded = repository.append(first.state.job_id, [ev.JobClaimed(worker_id="w1")], first.state, actor="w1").recorded
    assert [r.version for r in first.recorded] == [1]
    assert recorded[0].version == 2
    assert recorded[0].position > second.recorded[0].position > first.recorded[0].position
    stream = repository.store.read_stream(first.state.job_id)
    assert [(r.version, r.type, r.actor) for r in stream] == [(1, "job.created", "api"), (2, "job.claimed", "w1")]
    assert stream[0].recorded_at == dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert [r.position for r in repository.store.read_all(1)] == sorted(r.position for r in repository.store.read_all(1))
    assert len(repository.store.read_all(second.recorded[0].position)) == 2
    assert repository.store.head_position() == recorded[0].position


def test_stale_expected_version_raises_concurrency_error_and_writes_nothing(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w1")], created.state, actor="w1")
    before = count(repository.store)
    with pytest.raises(errors.ConcurrencyError) as info:
        repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w2")], created.state, actor="w2")
    assert info.value.expected_version == 1
    assert count(repository.store) == before
    assert repository.load(created.state.job_id).worker_id == "w1"  # type: ignore[union-attr]


@pytest.mark.raw_log
def test_gap_in_versions_is_refused_by_the_database(store: EventStore) -> None:
    store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    with pytest.raises(errors.ConcurrencyError):
        store.append("j1", [ev.JobHeartbeat()], 5, actor="w")  # would write version 6 after 1
    with pytest.raises(errors.ConcurrencyError):
        store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")  # version 1 again


@pytest.mark.raw_log
def test_events_are_append_only(store: EventStore) -> None:
    store.append("j1", [ev.JobCreated(job_type="ingest")], 0, actor="api")
    conn = sqlite3.connect(Path(store.backend.path))  # type: ignore[attr-defined]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    conn.close()
    assert store.read_stream("j1")[0].actor == "api"


def test_projection_row_is_written_in_the_same_batch(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    job_id = created.state.job_id
    # A batch that fails after the event insert leaves neither the event nor the row change.
    with pytest.raises(Exception):
        repository.store.append(
            job_id,
            [ev.JobClaimed(worker_id="w")],
            1,
            actor="w",
            extra=[Statement("INSERT INTO jobs (job_id) VALUES (?)", (job_id,))],
        )
    assert count(repository.store) == 1
    assert repository.load(job_id).status == "pending"  # type: ignore[union-attr]
    row = repository.store.backend.query("SELECT status, last_version, last_position, created_position FROM jobs")
    assert row == [("pending", 1, created.recorded[0].position, created.recorded[0].position)]


def test_illegal_transition_is_refused_before_writing(repository: JobRepository) -> None:
    created = repository.create("ingest", {})
    done = repository.append(created.state.job_id, [ev.JobClaimed(worker_id="w")], created.state, actor="w")
    done = repository.append(created.state.job_id, [ev.JobCompleted(result={})], done.state, actor="w")
    before = count(repository.store)
    with pytest.raises(errors.IllegalTransition):
        repository.append(created.state.job_id, [ev.JobProgress(percent=3)], done.state, actor="w")
    assert count(repository.store) == before


def test_queue_position_counts_pending_jobs_created_before(repository: JobRepository) -> None:
    jobs = [repository.create("ingest", {}).state for _ in range(4)]
    assert [repository.queue_position(j.job_id) for j in jobs] == [1, 2, 3, 4]
    repository.append(jobs[0].job_id, [ev.JobClaimed(worker_id="w")], jobs[0], actor="w")
    repository.append(jobs[2].job_id, [ev.JobCancelRequested()], jobs[2], actor="api")
    assert [repository.queue_position(j.job_id) for j in jobs] == [None, 1, None, 2]
    plan = " ".join(
        str(r)
        for r in repository.store.backend.query(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND created_position < 5"
        )
    )
    assert "jobs_status_created" in plan


def test_idempotency_key_is_unique_per_owner(repository: JobRepository) -> None:
    repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    repository.create("ingest", {}, owner="bob", idempotency_key="k1")
    with pytest.raises(errors.DuplicateIdempotencyKey):
        repository.create("ingest", {}, owner="alice", idempotency_key="k1")
    assert count(repository.store) == 2


@pytest.mark.raw_log
def test_malformed_stored_event_names_its_position(store: EventStore) -> None:
    store.backend.execute_batch(
        [
            Statement(
                "INSERT INTO events (position, key_id, chain, job_id, version, type, data, actor, recorded_at) VALUES ((SELECT position + 1 FROM log_head), 'raw', 'raw', 'j', 1, 'job.progress', '{\"percent\": []}', 'x', '2026-01-01T00:00:00.000000Z')"
            )
        ]
    )
    with pytest.raises(errors.MalformedEvent, match="position 1"):
        store.read_stream("j")
    with pytest.raises(errors.MalformedEvent, match="position 1"):
        store.read_all()


def test_concurrent_appenders_never_both_win(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "race.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    created = repository.create("ingest", {})
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(name: str) -> None:
        barrier.wait()
        try:
            repository.append(created.state.job_id, [ev.JobClaimed(worker_id=name)], created.state, actor=name)
            wins.append(name)
        except errors.ConcurrencyError:
            pass

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert [r.type for r in repository.store.read_stream(created.state.job_id)] == ["job.created", "job.claimed"]
    backend.close()


def test_every_event_carries_a_hash_chained_to_the_previous_one(repository: JobRepository) -> None:
    from jobtape.eventlog import hashing

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


def test_group_commit_keeps_each_batch_atomic_under_concurrency(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "group.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    contested = [repository.create("ingest", {}).state for _ in range(20)]
    barrier = threading.Barrier(12)
    claims: list[tuple[str, str]] = []
    own_jobs: list[str] = []

    def writer(name: str) -> None:
        barrier.wait()
        for state in contested:  # every writer races for every contested job
            try:
                repository.append(state.job_id, [ev.JobClaimed(worker_id=name)], state, actor=name)
                claims.append((state.job_id, name))
            except errors.ConcurrencyError:
                pass
        for _ in range(10):  # and runs its own jobs to completion
            job = repository.create("ingest", {}, actor=name).state
            job = repository.append(job.job_id, [ev.JobClaimed(worker_id=name)], job, actor=name).state
            job = repository.append(job.job_id, [ev.JobProgress(percent=50)], job, actor=name).state
            repository.append(job.job_id, [ev.JobCompleted(result={})], job, actor=name)
            own_jobs.append(job.job_id)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(job for job, _ in claims) == sorted(s.job_id for s in contested)  # each claimed once
    for job_id, name in claims:
        assert repository.get(job_id).worker_id == name
    for job_id in own_jobs:
        assert [r.type for r in repository.store.read_stream(job_id)] == ["job.created", "job.claimed", "job.progress", "job.completed"]
        row = backend.query("SELECT last_position, last_version FROM jobs WHERE job_id = ?", [job_id])[0]
        assert row == (repository.store.read_stream(job_id)[-1].position, 4)
    assert backend.batches_committed > backend.transactions  # some transactions held several batches
    backend.close()


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_synchronous_mode_is_applied_to_every_connection(tmp_path: Path, mode: str, level: int) -> None:
    backend = SQLiteBackend(tmp_path / "sync.db", synchronous=mode)
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(backend.query("PRAGMA synchronous")[0][0]))
    thread.start()
    thread.join()
    assert [backend.query("PRAGMA synchronous")[0][0], *seen] == [level, level]
    backend.close()
    with pytest.raises(ValueError, match="FULL, NORMAL"):
        SQLiteBackend(tmp_path / "bad.db", synchronous="OFF")


def test_settings_default_to_a_durable_log() -> None:
    from jobtape.config import Settings

    assert Settings().sqlite_synchronous == "FULL"
    assert Settings.from_env({"JOBTAPE_SQLITE_SYNCHRONOUS": "normal"}).sqlite_synchronous == "NORMAL"
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        Settings.from_env({"JOBTAPE_SQLITE_SYNCHRONOUS": "off"})


class _TurnHolder:
    """Another process that takes ``<path>-writer``'s flock (the write turn) and keeps it until :meth:`release`.

    Returns once the process holds it. ``process`` is the ``Popen`` (to kill it instead).
    """

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import fcntl, sys\n"
                    f"fd = open({str(path) + '-writer'!r}, 'r+')\n"
                    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                    "print('held', flush=True)\n"
                    "sys.stdin.readline()\n"
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        """Let the turn go and wait for the process to end."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(timeout=30)


def _create_in_thread(repository: JobRepository) -> tuple[threading.Thread, list[BaseException | None]]:
    """Start a thread that creates one job; its outcome (``None``, or what it raised) is appended to the list returned."""
    outcome: list[BaseException | None] = []

    def create() -> None:
        try:
            repository.create("ingest", {})
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    return thread, outcome


def test_batches_queued_while_another_process_writes_join_one_commit_built_on_its_head(tmp_path: Path) -> None:
    """The write turn (``<db>-writer``'s flock): while another writer holds it, this process's
    appends queue; when it lets go they are built in one transaction on the head that writer
    left, so none is refused by the chain guard and all share one commit."""

    path = tmp_path / "turn.db"
    backend = SQLiteBackend(path)
    backend.migrate(TABLES.migrations)
    store = EventStore(backend)
    repository = JobRepository(store, projections=TABLES.projections)
    jobs = [repository.create("ingest", {}).state for _ in range(5)]
    other = EventStore(SQLiteBackend(path))  # another writer moves the head: this store's head is stale
    other.append("o" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="other")
    repository.create("ingest", {})  # the one refused batch: this store learns another writer appends
    assert store.chain_retries == 1
    other.append("p" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="other")  # the head moves again

    holder = _TurnHolder(path)  # another process takes the write turn and appends while holding it
    transactions = backend.transactions
    threads = [
        threading.Thread(target=repository.append, args=(job.job_id, [ev.JobClaimed(worker_id="w")], job), kwargs={"actor": "w"})
        for job in jobs
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(backend._queue) == len(jobs), timeout_s=30, what="the appends queued behind the write turn")
    assert backend.transactions == transactions  # nothing committed while the other process holds the turn
    holder.release()
    for thread in threads:
        thread.join()
    assert backend.transactions == transactions + 1  # one commit for the five claims
    assert store.chain_retries == 1  # built in the turn on the head the other writer left: none refused
    assert [repository.get(job.job_id).status for job in jobs] == ["processing"] * 5
    other.close()
    store.close()


def _store_with_turn_file(path: Path, busy_timeout_s: float) -> tuple[SQLiteBackend, EventStore, JobRepository]:
    """A migrated SQLite log at ``path`` with one job created (so ``<path>-writer`` exists)."""
    backend = SQLiteBackend(path, busy_timeout_s=busy_timeout_s)
    backend.migrate(TABLES.migrations)
    store = EventStore(backend)
    repository = JobRepository(store, projections=TABLES.projections)
    repository.create("ingest", {})  # the turn's lock file exists
    return backend, store, repository


def test_a_write_turn_held_by_a_wedged_process_is_waited_for_only_the_busy_timeout(tmp_path: Path) -> None:
    """A process that takes ``<db>-writer``'s flock and never lets go (wedged) does not block
    this process's writers forever: an append waits ``busy_timeout_s``, then raises
    ``StoreBusy`` naming the lock file and what to do; once the holder is gone, appends pass."""
    path = tmp_path / "wedged.db"
    _, store, repository = _store_with_turn_file(path, busy_timeout_s=0.3)
    holder = _TurnHolder(path)
    try:
        thread, outcome = _create_in_thread(repository)
        thread.join(timeout=20)  # a deadline, not a pause: the append returns after ~0.3 s
        assert not thread.is_alive(), "the append still waits for the wedged process's lock"
        assert len(outcome) == 1 and isinstance(outcome[0], errors.StoreBusy), outcome
        assert f"{path}-writer" in outcome[0].message and "fuser" in outcome[0].message
        assert count(store, "SELECT COUNT(*) FROM jobs") == 1  # nothing of the refused create was written
    finally:
        holder.process.kill()
        holder.process.wait(timeout=30)
    repository.create("ingest", {})  # the holder is gone: the turn is free again
    assert count(store, "SELECT COUNT(*) FROM jobs") == 2
    store.close()


def test_a_turn_waited_for_past_the_timeout_keeps_one_waiting_thread_and_is_handed_on_or_let_go(tmp_path: Path) -> None:
    """The bounded wait (``_TurnTaker``) blocks one thread in ``flock``: callers that time out
    while the holder keeps the lock start no second one; the next caller gets the lock the
    moment the holder lets go; and a lock it takes once every caller has gone is let go, so
    another process can take it."""
    path = tmp_path / "turns.db"
    backend, store, repository = _store_with_turn_file(path, busy_timeout_s=0.2)

    def turn_threads() -> int:
        return sum(thread.name == "jobtape-write-turn" for thread in threading.enumerate())

    holder = _TurnHolder(path)
    for _ in range(3):  # three appends time out: one waiting thread between them
        with pytest.raises(errors.StoreBusy):
            repository.create("ingest", {})
        assert turn_threads() == 1
    backend.busy_timeout_s = 30.0  # this one waits for the holder
    thread, outcome = _create_in_thread(repository)
    wait_for(lambda: backend._turn_taker is not None and backend._turn_taker._wanted, 30, "the append waiting for the turn")
    holder.release()  # the waiting thread takes the lock for the append
    thread.join(timeout=30)
    assert outcome == [None]
    assert count(store, "SELECT COUNT(*) FROM jobs") == 2
    assert turn_threads() == 0

    backend.busy_timeout_s = 0.2
    holder = _TurnHolder(path)
    with pytest.raises(errors.StoreBusy):  # gives up: nobody waits when the holder lets go
        repository.create("ingest", {})
    holder.release()
    wait_for(lambda: turn_threads() == 0, 30, "the waiting thread letting the lock it took go")
    _TurnHolder(path).release()  # another process can take the turn: it was not kept
    repository.create("ingest", {})
    assert count(store, "SELECT COUNT(*) FROM jobs") == 3
    store.close()
