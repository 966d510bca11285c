"""Rebuilding the jobs projection from the log: exact by default, reports and repairs drift."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev
from jobtape.eventlog import stored
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import jobs
from jobtape.projections import rebuild as rebuild_module
from jobtape.projections import state as job_state
from jobtape.projections.jobs import COLUMNS
from jobtape.projections.rebuild import RowDifference, rebuild
from jobtape.projections.repository import JobRepository

__all__: list[str] = []

LEASE = dt.datetime(2026, 11, 23, 12, 5, 0, 123456, tzinfo=dt.UTC)


@pytest.fixture
def repository(tmp_path: Any) -> Iterator[JobRepository]:
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    yield repository
    backend.close()


def _run(repository: JobRepository, *events: ev.Event, job_id: str | None = None, key: str | None = None) -> str:
    result = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}, job_id=job_id, idempotency_key=key)
    state = result.state
    for event in events:
        state = repository.append(state.job_id, [event], state, actor="worker-1").state
    return state.job_id


def _jobs_in_every_state(repository: JobRepository) -> dict[str, str]:
    claimed = ev.JobClaimed(worker_id="worker-1", lease_expires_at=LEASE)
    return {
        "pending": _run(repository, key="k1"),
        "processing": _run(
            repository,
            claimed,
            ev.JobStageChanged(stage="measuring"),
            ev.JobProgress(percent=40),
            ev.JobChildStarted(pid=41, argv=["/usr/bin/ffmpeg", "-i", "x"]),
            ev.JobHeartbeat(lease_expires_at=LEASE),
        ),
        "complete": _run(repository, claimed, ev.JobProgress(percent=90), ev.JobCompleted(result={"preparedKey": "p/a.flac"})),
        "failed": _run(repository, claimed, ev.JobFailed(error="ffmpeg exited with 1")),
        "cancelled": _run(repository, ev.JobCancelRequested(reason="user")),
        "cancelling": _run(repository, claimed, ev.JobChildStarted(pid=7, argv=["ffmpeg"]), ev.JobCancelRequested()),
    }


def _tables(repository: JobRepository) -> set[str]:
    return {row[0] for row in repository.store.backend.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_rebuild_of_an_exact_projection_finds_no_difference(repository: JobRepository) -> None:
    _jobs_in_every_state(repository)
    before = repository.store.backend.query("SELECT * FROM jobs ORDER BY job_id")
    seen: list[tuple[int, int]] = []

    report = rebuild(repository.store, apply_changes=False, progress=lambda done, total: seen.append((done, total)), tables=TABLES)

    assert report.differences == []
    assert (report.jobs_rebuilt, report.events_read, report.applied) == (6, 20, False)
    assert seen[-1] == (20, 20)
    assert repository.store.backend.query("SELECT * FROM jobs ORDER BY job_id") == before
    assert "jobs_rebuild" not in _tables(repository)


def test_verify_reports_a_tampered_column_and_apply_repairs_it(repository: JobRepository) -> None:
    jobs = _jobs_in_every_state(repository)
    backend = repository.store.backend
    backend.execute_batch([Statement("UPDATE jobs SET progress = 77, stage = 'bogus' WHERE job_id = ?", (jobs["processing"],))])

    report = rebuild(repository.store, apply_changes=False, tables=TABLES)

    assert report.differences == [
        RowDifference(jobs["processing"], "stage", "bogus", "measuring"),
        RowDifference(jobs["processing"], "progress", 77, 40),
    ]
    assert backend.query("SELECT progress FROM jobs WHERE job_id = ?", [jobs["processing"]]) == [(77,)]

    applied = rebuild(repository.store, tables=TABLES, compare=True)

    assert applied.applied and len(applied.differences) == 2
    assert rebuild(repository.store, tables=TABLES).compared is False  # a plain rebuild does not compare
    assert backend.query("SELECT progress, stage FROM jobs WHERE job_id = ?", [jobs["processing"]]) == [(40, "measuring")]
    assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
    assert "jobs_rebuild" not in _tables(repository)


def test_a_row_missing_on_either_side_is_a_whole_row_difference(repository: JobRepository) -> None:
    jobs = _jobs_in_every_state(repository)
    backend = repository.store.backend
    stray = {"job_id": "f" * 32, "status": "pending"}
    copied = [{"job_id": "?", "idempotency_key": "NULL"}.get(column, column) for column in COLUMNS]
    backend.execute_batch(
        [
            Statement("DELETE FROM jobs WHERE job_id = ?", (jobs["failed"],)),
            Statement(
                f"INSERT INTO jobs ({', '.join(COLUMNS)}) SELECT {', '.join(copied)} FROM jobs WHERE job_id = ?",
                (stray["job_id"], jobs["pending"]),
            ),
        ]
    )

    report = rebuild(repository.store, apply_changes=False, tables=TABLES)

    assert [(d.job_id, d.column) for d in report.differences] == sorted([(jobs["failed"], "*"), (stray["job_id"], "*")])
    by_job = {d.job_id: d for d in report.differences}
    assert by_job[jobs["failed"]].live is None and by_job[jobs["failed"]].rebuilt["status"] == "failed"
    assert by_job[stray["job_id"]].rebuilt is None and by_job[stray["job_id"]].live["status"] == "pending"

    rebuild(repository.store, tables=TABLES)
    assert {row[0] for row in backend.query("SELECT job_id FROM jobs")} == set(jobs.values())


def _rows_with_rowid(backend: Any, table: str) -> dict[Any, tuple[Any, ...]]:
    return {row[1]: row for row in backend.query(f"SELECT rowid, * FROM {table}")}


def test_the_swap_rewrites_only_the_rows_that_differ_and_ends_with_the_rebuilt_rows(repository: JobRepository) -> None:
    jobs = _jobs_in_every_state(repository)
    more = _run(repository, key="k2")  # a second pending job: queue_counts holds a block of two
    done = {"assetId": "a1", "preparedKey": "p/a1.flac", "durationSec": 1.5}
    _run(repository, ev.JobClaimed(worker_id="worker-1", lease_expires_at=LEASE), ev.JobCompleted(result=done))  # an assets row
    backend = repository.store.backend
    exact = {table: backend.query(f"SELECT * FROM {table} ORDER BY 1") for table in ("jobs", "queue_counts", "assets")}
    assert exact["queue_counts"] and exact["assets"]
    before = _rows_with_rowid(backend, "jobs")
    stray = "f" * 32
    copied = [{"job_id": "?", "idempotency_key": "NULL"}.get(column, column) for column in COLUMNS]
    backend.execute_batch(
        [
            # the pending job's idempotency key moved to another job (UNIQUE (owner, idempotency_key)):
            # the swap must remove the drifted row before it inserts the rebuilt one
            Statement("UPDATE jobs SET idempotency_key = NULL WHERE job_id = ?", (jobs["pending"],)),
            Statement("UPDATE jobs SET idempotency_key = 'k1' WHERE job_id = ?", (jobs["failed"],)),
            Statement("UPDATE jobs SET error = '' WHERE job_id = ?", (jobs["complete"],)),  # NULL -> ''
            Statement("DELETE FROM jobs WHERE job_id = ?", (jobs["cancelled"],)),
            Statement(
                f"INSERT INTO jobs ({', '.join(COLUMNS)}) SELECT {', '.join(copied)} FROM jobs WHERE job_id = ?",
                (stray, more),
            ),
            Statement("UPDATE queue_counts SET pending = pending + 5 WHERE node = (SELECT MIN(node) FROM queue_counts)"),
            Statement("INSERT INTO queue_counts (node, pending) VALUES (999999, 1)"),
            Statement("DELETE FROM assets"),
        ]
    )

    rebuild(repository.store, tables=TABLES)

    for table, rows in exact.items():
        assert backend.query(f"SELECT * FROM {table} ORDER BY 1") == rows, table
    after = _rows_with_rowid(backend, "jobs")
    rewritten = {jobs["pending"], jobs["failed"], jobs["complete"], jobs["cancelled"]}
    for job_id, row in after.items():  # a row with the rebuilt values already is not written again
        assert (row[0] == before[job_id][0]) is (job_id not in rewritten), job_id
    assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []


def test_rebuild_of_an_empty_log_is_empty(repository: JobRepository) -> None:
    report = rebuild(repository.store, tables=TABLES)
    assert (report.jobs_rebuilt, report.events_read, report.differences) == (0, 0, [])


def _insert_raw(repository: JobRepository, job_id: str, version: int, type_: str, data: str) -> int:
    rows = repository.store.backend.execute_batch(
        [
            Statement(
                "INSERT INTO events (position, key_id, chain, job_id, version, type, data, actor, recorded_at)"
                " VALUES ((SELECT position + 1 FROM log_head), 'raw', 'raw', ?, ?, ?, ?, 'test', '2026-11-23T12:00:00.000000Z') RETURNING position",
                (job_id, version, type_, data),
            )
        ]
    )
    return int(rows[0][0][0])


def test_a_stream_that_breaks_the_fold_is_an_error_naming_job_and_position(repository: JobRepository) -> None:
    _jobs_in_every_state(repository)
    position = _insert_raw(repository, "b" * 32, 1, "job.progress", '{"percent": 5}')
    before = repository.store.backend.query("SELECT * FROM jobs ORDER BY job_id")

    with pytest.raises(errors.IllegalTransition, match=rf"job {'b' * 32}: .*position {position}, version 1"):
        rebuild(repository.store, tables=TABLES)

    assert repository.store.backend.query("SELECT * FROM jobs ORDER BY job_id") == before
    assert "jobs_rebuild" not in _tables(repository)


def test_a_malformed_event_is_an_error_naming_position_and_job(repository: JobRepository) -> None:
    job_id = _run(repository)
    position = _insert_raw(repository, job_id, 2, "job.progress", '{"percent": "lots"}')

    with pytest.raises(errors.MalformedEvent, match=rf"position {position} .*job {job_id}") as caught:
        rebuild(repository.store, apply_changes=False, tables=TABLES)

    assert caught.value.position == position
    assert "jobs_rebuild" not in _tables(repository)


def test_an_append_during_the_fold_is_folded_before_the_comparison(repository: JobRepository) -> None:
    jobs = _jobs_in_every_state(repository)
    pending = repository.get(jobs["pending"])
    appended: list[str] = []

    def append_once(done: int, total: int) -> None:
        if not appended:
            appended.append(repository.append(pending.job_id, [ev.JobClaimed(worker_id="w2")], pending, actor="w2").state.status)

    report = rebuild(repository.store, progress=append_once, tables=TABLES)

    assert appended == ["processing"]
    assert (report.differences, report.events_read) == ([], 21)
    assert repository.get(jobs["pending"]).status == "processing"


class _AppendBeforeSwap(SQLiteBackend):
    """Appends one event through ``repository`` just before the first swap batch runs."""

    repository: JobRepository
    job_id: str
    fired = False

    def execute_batch(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        if not self.fired and any("_jobtape_rebuild_guard" in s.sql for s in statements):
            self.fired = True
            current = self.repository.get(self.job_id)
            self.repository.append(current.job_id, [ev.JobClaimed(worker_id="w3")], current, actor="w3")
        return super().execute_batch(statements)


def test_an_append_between_comparison_and_swap_aborts_the_swap_and_is_caught_up(tmp_path: Any) -> None:
    backend = _AppendBeforeSwap(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    backend.repository = repository
    backend.job_id = _run(repository)
    try:
        report = rebuild(repository.store, tables=TABLES)
        assert backend.fired and report.events_read == 2
        assert repository.get(backend.job_id).status == "processing"
        assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
    finally:
        backend.close()


def test_scratch_table_left_by_a_crashed_run_is_replaced(repository: JobRepository) -> None:
    _run(repository)
    repository.store.backend.execute_batch([Statement(f"CREATE TABLE {rebuild_module.REBUILD_TABLE} (x)")])
    assert rebuild(repository.store, tables=TABLES).jobs_rebuilt == 1


def test_a_state_snapshot_written_before_a_field_was_added_is_no_difference(repository: JobRepository) -> None:
    # A log written by an older jobtape: its snapshots lack fields added since (with defaults),
    # e.g. removed_keys / blobs_removed_at of job.blobs_deleted. They mean the same state.
    jobs = _jobs_in_every_state(repository)
    backend = repository.store.backend
    backend.execute_batch([Statement("UPDATE jobs SET state = json_remove(state, '$.removed_keys', '$.blobs_removed_at')")])
    assert backend.query("SELECT COUNT(*) FROM jobs WHERE json_extract(state, '$.removed_keys') IS NOT NULL") == [(0,)]
    assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
    # ...but a snapshot that says something else is still a difference.
    backend.execute_batch([Statement("UPDATE jobs SET state = json_set(state, '$.attempt', 9) WHERE job_id = ?", (jobs["processing"],))])
    assert [(d.job_id, d.column) for d in rebuild(repository.store, apply_changes=False, tables=TABLES).differences] == [
        (jobs["processing"], "state")
    ]


def test_the_upsert_parameters_are_the_row_values_in_column_order() -> None:
    """``jobs.upsert`` writes its parameters out by hand (speed); they must be :func:`jobs.row_values` in COLUMNS order."""
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    states = [
        job_state.JobState(job_id="a" * 32, job_type="ingest", created_at=at, updated_at=at),
        job_state.JobState(
            job_id="b" * 32,
            job_type="ingest",
            owner="o",
            params={"sourceType": "upload", "storageKey": "ingest-uploads/b/a.wav"},
            idempotency_key="k",
            status="failed",
            stage="s",
            progress=40,
            attempt=2,
            worker_id="w",
            lease_expires_at=at,
            result={"x": 1},
            error="boom",
            cancel_requested=True,
            finished=True,
            orphaned_children=(4, 5),
            not_before=at,
            created_at=at,
            updated_at=at + dt.timedelta(seconds=3),
            version=7,
            removed_keys=("k1",),
            blobs_removed_at=at,
            declared_inputs=("in/1", "in/2"),
        ),
    ]
    for state in states:
        values = jobs.row_values(state)
        expected: list[object] = []
        for column in jobs.COLUMNS:
            if column == "created_position":
                expected.append(state.job_id)
            elif column == "last_position":
                expected += [state.job_id, state.version]
            else:
                expected.append(values[column])
        assert jobs.upsert(state, "jobs_rebuild").params == tuple(expected)
        # with the positions given (a rebuild's fold read them): the same values, the positions in their columns
        given = [{"created_position": 11, "last_position": 99}.get(column, values.get(column)) for column in jobs.COLUMNS]
        statement = jobs.upsert_at(state, "jobs_rebuild", 11, 99)
        assert statement.params == tuple(given) and "SELECT" not in statement.sql


def test_the_page_decoding_is_the_one_decoding_of_every_row(repository: JobRepository) -> None:
    """``stored.any_recorded_from_rows`` (a rebuild's read) writes the common case out: it must decode
    every row exactly as ``any_recorded_from_row`` does, and refuse the same rows with the same error."""
    _jobs_in_every_state(repository)
    rows = [tuple(row) for row in repository.store.backend.query(f"SELECT {stored.RECORDED_COLUMNS} FROM events ORDER BY position")]
    job_id, key_stream = "c" * 32, kev.key_stream("k" * 16)
    key_type, key_data = kev.encode_key_event(
        kev.KeyCreated(key_id="k" * 16, owner="o", scopes=["jobs:read"], name="n", token_hash="h" * 64)
    )
    rows += [
        (900, key_stream, 1, key_type, key_data, "admin", "2026-01-02T03:04:05.000006Z"),  # a key stream's
        (901, job_id, 2, "job.progress", b'{"percent": 30}', "w", "2026-01-02T03:04:05.000006Z"),  # data as bytes
        (902, job_id, 3, "job.progress", '{"percent": 31}', "w", "2026-01-02T03:04:05.000006+00:00"),  # not the stored form
        (903, job_id, 4, "job.progress", '{"percent": 32}', "w", "2026-01-02T04:04:05.000006+01:00"),  # another zone
        (904, job_id, 5, "job.progress", '{"percent": 33}', "w", "2026-01-02T03:04:05.000006"),  # naive
    ]
    one_by_one = [stored.any_recorded_from_row((*row, None, None, None)) for row in rows]
    assert stored.any_recorded_from_rows(rows) == one_by_one
    assert [type(item.recorded_at) for item in stored.any_recorded_from_rows(rows)] == [type(item.recorded_at) for item in one_by_one]
    refused = [
        (905, job_id, 6, "job.progress", '{"percent": "lots"}', "w", "2026-01-02T03:04:05.000006Z"),
        (906, job_id, 6, "job.nonsense", "{}", "w", "2026-01-02T03:04:05.000006Z"),
        (907, job_id, 6, "job.progress", '{"percent": 3', "w", "2026-01-02T03:04:05.000006Z"),
        (908, job_id, 6, "job.progress", '{"percent": 3}', "w", "2026-13-02T03:04:05.000006Z"),
        (909, job_id, 6, "job.progress", '{"percent": 3}', "w", "yesterday at noon, roughly..Z"),
        (910, key_stream, 2, "key.revoked", '{"nonsense": 1}', "w", "2026-01-02T03:04:05.000006Z"),
    ]
    for row in refused:
        with pytest.raises(errors.MalformedEvent) as expected:
            stored.any_recorded_from_row((*row, None, None, None))
        with pytest.raises(errors.MalformedEvent) as found:
            stored.any_recorded_from_rows([rows[0], row])
        assert (found.value.position, found.value.event_type, found.value.message) == (
            expected.value.position,
            expected.value.event_type,
            expected.value.message,
        )
