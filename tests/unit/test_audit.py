"""The pure audit modules: user times, the log's invariants, percentiles, the export checks, timelines."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

from jobtape import clock, errors
from jobtape.audit import asof, exchange, stats, timeline, timeparse, verify
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.eventlog.stored import StoredEvent, to_recorded

NOW = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)
JOB = "a" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-10m", NOW - dt.timedelta(minutes=10)),
        ("-2h", NOW - dt.timedelta(hours=2)),
        ("-1d", NOW - dt.timedelta(days=1)),
        ("-1.5h", NOW - dt.timedelta(minutes=90)),
        ("now", NOW),
        ("2026-01-01T10:00:00Z", dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)),
        ("2026-01-01T10:00:00+02:00", dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC)),
        ("2026-01-01 10:00", dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)),
        ("2026-01-01", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_parse_time_accepts_iso_8601_and_relative_times(text: str, expected: dt.datetime) -> None:
    assert timeparse.parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "-10", "-10x", "10m", "2026-13-01"])
def test_parse_time_refuses_other_text_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(errors.InvalidTimeSpec) as caught:
        timeparse.parse_time(text, NOW)
    assert "ISO 8601" in caught.value.message and "-10m" in caught.value.message


def test_durations_and_positions() -> None:
    assert timeparse.parse_duration("30d") == dt.timedelta(days=30)
    assert timeparse.parse_duration("2w") == dt.timedelta(weeks=2)
    assert timeparse.parse_position_or_time("1200", NOW) == 1200
    assert timeparse.parse_position_or_time("-1h", NOW) == NOW - dt.timedelta(hours=1)
    with pytest.raises(errors.InvalidTimeSpec, match="30d"):
        timeparse.parse_duration("thirty days")


@pytest.mark.parametrize(
    "text",
    [
        "-99999999d",
        "-100000s",
        "-" + "9" * 400 + "s",
        "-1e400d",  # past MAX_AMOUNT, or inf as a float
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",  # outside datetime once in UTC
    ],
)
def test_times_out_of_range_are_refused_naming_the_range(text: str) -> None:
    with pytest.raises(errors.InvalidTimeSpec) as caught:
        timeparse.parse_time(text, NOW)
    message = caught.value.message
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z" in message and "99999.999999w" in message
    assert len(message) < 400  # the text is quoted shortened


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-99999w", NOW - dt.timedelta(weeks=99999)),
        ("0001-01-01", dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
    ],
)
def test_the_edges_of_the_range_are_accepted(text: str, expected: dt.datetime) -> None:
    assert timeparse.parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["100000d", "99999999999d", "1e400s"])
def test_durations_out_of_range_are_refused_naming_the_range(text: str) -> None:
    with pytest.raises(errors.InvalidTimeSpec, match="a number below 100000 and a unit"):
        timeparse.parse_duration(text)


def test_positions_past_sqlite_integers_are_refused() -> None:
    assert timeparse.parse_position_or_time(str(timeparse.MAX_POSITION), NOW) == 2**63 - 1
    with pytest.raises(errors.InvalidTimeSpec, match="from 0 to 9223372036854775807"):
        timeparse.parse_position_or_time(str(2**63), NOW)


def test_the_relative_pattern_accepts_only_texts_in_range() -> None:
    import re

    pattern = re.compile(timeparse.RELATIVE_PATTERN)
    for text in ("now", "-1s", "-99999.999999w", "-0.5h"):
        assert pattern.fullmatch(text) and timeparse.parse_time(text, NOW)
    for text in ("-100000s", "-1e4d", "10m", "-10 m"):
        assert not pattern.fullmatch(text)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (stats.percentile(values, 50), stats.percentile(values, 95), stats.percentile(values, 100)) == (10, 19, 20)
    assert stats.percentile([3.0], 95) == 3.0
    with pytest.raises(ValueError):
        stats.percentile([], 50)


class Log:
    """Builds stored events with a correct hash chain (as EventStore.append writes them)."""

    def __init__(self) -> None:
        self.rows: list[StoredEvent] = []
        self.last: dict[str, tuple[int, str]] = {}
        self.at = NOW

    def add(self, event: ev.Event, job_id: str = JOB, *, version: int | None = None, actor: str = "w:1:1") -> StoredEvent:
        last_version, previous = self.last.get(job_id, (0, hashing.genesis_hash(job_id)))
        version = version if version is not None else last_version + 1
        type_, data = ev.encode_event(event)
        self.at += dt.timedelta(seconds=1)
        stamp = clock.format_timestamp(self.at)
        digest = hashing.event_hash(previous, job_id, version, type_, data, actor, stamp)
        row = StoredEvent(
            position=len(self.rows) + 1, job_id=job_id, version=version, type=type_, data=data, actor=actor, recorded_at=stamp, hash=digest
        )
        self.rows.append(row)
        self.last[job_id] = (version, digest)
        return row


def ingest(log: Log, job_id: str = JOB, *, exit_child: bool = True) -> None:
    for event in (
        ev.JobCreated(job_type="ingest"),
        ev.JobClaimed(worker_id="w:1:1"),
        ev.JobStageChanged(stage="probing"),
        ev.JobChildStarted(pid=7, argv=["/bin/ffmpeg"]),
        ev.JobStageChanged(stage="measuring"),
    ):
        log.add(event, job_id)
    if exit_child:
        log.add(ev.JobChildExited(pid=7, exit_status=0), job_id)
    log.add(ev.JobCompleted(result={"ok": True}), job_id)


def rules(log: Log) -> list[tuple[int, str]]:
    return [(v.position, v.rule) for v in verify.verify(log.rows).violations]


def test_a_sound_log_has_no_violations() -> None:
    log = Log()
    ingest(log)
    ingest(log, "b" * 32)
    report = verify.verify(log.rows)
    assert (report.events_checked, report.jobs_checked, report.violations) == (14, 2, [])


def test_an_edited_event_is_named_by_its_position_alone() -> None:
    log = Log()
    ingest(log)
    edited = log.rows[2]
    log.rows[2] = msgspec.structs.replace(edited, data=edited.data.replace("probing", "fetching"))
    assert rules(log) == [(3, "hash")]


def test_an_edit_that_also_rewrites_the_hash_breaks_the_next_link() -> None:
    log = Log()
    ingest(log)
    row = log.rows[2]
    data = row.data.replace("probing", "fetching")
    forged = hashing.event_hash(log.rows[1].hash or "", row.job_id, row.version, row.type, data, row.actor, row.recorded_at)
    log.rows[2] = msgspec.structs.replace(row, data=data, hash=forged)
    assert rules(log) == [(4, "hash")]


def test_a_version_gap_is_named() -> None:
    log = Log()
    log.add(ev.JobCreated(job_type="ingest"))
    log.add(ev.JobClaimed(worker_id="w:1:1"), version=3)
    assert (2, "version_gap") in rules(log)


def test_events_after_the_terminal_one_and_a_second_terminal_are_named() -> None:
    log = Log()
    ingest(log)
    log.add(ev.JobProgress(percent=5))
    log.add(ev.JobFailed(error="late"))
    assert rules(log) == [(8, "after_terminal"), (9, "second_terminal")]


def test_a_pending_cancel_is_the_terminal_event() -> None:
    log = Log()
    log.add(ev.JobCreated(job_type="ingest"))
    log.add(ev.JobCancelRequested())
    log.add(ev.JobCancelled())
    assert rules(log) == [(3, "second_terminal")]


def test_a_child_without_exit_is_named_once_the_job_is_terminal_unless_listed_as_orphaned() -> None:
    log = Log()
    for event in (
        ev.JobCreated(job_type="ingest"),
        ev.JobClaimed(worker_id="w:1:1"),
        ev.JobChildStarted(pid=7, argv=["ffmpeg"]),
        ev.JobLeaseExpired(worker_id="w:1:1", attempt=1),  # the reaper did not list pid 7
        ev.JobClaimed(worker_id="w:2:1", attempt=2),
    ):
        log.add(event)
    assert rules(log) == []  # not finished: nothing to account for yet
    log.add(ev.JobCompleted())
    assert rules(log) == [(3, "child_unexited")]

    orphaned = Log()
    for event in (
        ev.JobCreated(job_type="ingest"),
        ev.JobClaimed(worker_id="w:1:1"),
        ev.JobChildStarted(pid=7, argv=["ffmpeg"]),
        ev.JobLeaseExpired(worker_id="w:1:1", attempt=1, orphaned_pids=[7]),
        ev.JobClaimed(worker_id="w:2:1", attempt=2),
        ev.JobCompleted(),
    ):
        orphaned.add(event)
    assert rules(orphaned) == []


def test_the_fold_refusing_an_event_and_a_malformed_event_are_named() -> None:
    log = Log()
    log.add(ev.JobCreated(job_type="ingest"))
    log.add(ev.JobProgress(percent=5))  # never claimed
    row = log.add(ev.JobHeartbeat())
    log.rows[-1] = msgspec.structs.replace(row, type="job.unknown")
    assert [r[1] for r in rules(log)] == ["fold", "hash", "malformed"]


def test_check_export_names_the_bad_line() -> None:
    log = Log()
    ingest(log)
    lines = [exchange.encode_line(row) for row in log.rows]
    assert exchange.check_export([*lines, ""]) == log.rows

    edited = json.loads(lines[3])
    edited["data"] = edited["data"].replace("ffmpeg", "sh")
    with pytest.raises(errors.InvalidExport, match="^line 4: the hash .* was changed"):
        exchange.check_export([*lines[:3], json.dumps(edited), *lines[4:]])
    with pytest.raises(errors.InvalidExport, match="^line 3: job a{32} jumps from version 2 to version 4"):
        exchange.check_export([*lines[:2], *lines[3:]])
    with pytest.raises(errors.InvalidExport, match="^line 1: job a{32} starts at version 2"):
        exchange.check_export(lines[1:])
    with pytest.raises(errors.InvalidExport, match="^line 2: not an export line"):
        exchange.check_export([lines[0], "{not json"])


def test_timeline_splits_a_job_into_attempts_stages_and_children() -> None:
    log = Log()
    for event in (
        ev.JobCreated(job_type="ingest"),
        ev.JobClaimed(worker_id="w:1:1"),
        ev.JobStageChanged(stage="probing"),
        ev.JobChildStarted(pid=7, argv=["/opt/ffmpeg", "-i"]),
        ev.JobLeaseExpired(worker_id="w:1:1", attempt=1, orphaned_pids=[7]),
        ev.JobClaimed(worker_id="w:2:1", attempt=2),
        ev.JobStageChanged(stage="probing"),
        ev.JobCompleted(result={}),
    ):
        log.add(event, actor="w:2:1" if "w:2:1" in repr(event) or isinstance(event, ev.JobCompleted) else "w:1:1")
    summary = timeline.summarize([to_recorded(row) for row in log.rows])

    assert [(a.attempt, a.worker_id, a.outcome, a.duration_s) for a in summary.attempts] == [
        (1, "w:1:1", "lease_expired", 3.0),
        (2, "w:2:1", "completed", 2.0),
    ]
    assert [(s.stage, s.attempt, s.duration_s) for s in summary.stages] == [
        ("queued", 0, 1.0),
        ("claimed", 1, 1.0),
        ("probing", 1, 2.0),
        ("queued", 0, 1.0),
        ("claimed", 2, 1.0),
        ("probing", 2, 1.0),
    ]
    assert [(c.pid, c.program, c.stage, c.orphaned) for c in summary.children] == [(7, "ffmpeg", "probing", True)]
    assert (summary.status, summary.total_s) == ("complete", 7.0)
    computed = stats.compute([summary, summary])
    assert [(s.job_type, s.status, s.jobs) for s in computed.statuses] == [("ingest", "complete", 2)]
    assert [(d.stage, d.count, d.max_s) for d in computed.durations] == [
        ("queued", 4, 1.0),
        ("claimed", 4, 1.0),
        ("probing", 4, 2.0),
        (stats.TOTAL, 2, 7.0),
    ]


def test_jobs_as_of_gives_queue_positions_of_the_pending_jobs() -> None:
    log = Log()
    for job_id in ("c" * 32, "d" * 32, "e" * 32):
        log.add(ev.JobCreated(job_type="ingest"), job_id)
    log.add(ev.JobClaimed(worker_id="w:1:1"), "c" * 32)
    recorded = [to_recorded(row) for row in log.rows]

    then = asof.jobs_as_of(recorded, recorded[2].recorded_at)
    later = asof.jobs_as_of(recorded, recorded[3].recorded_at)

    assert [j.queue_position for j in then] == [1, 2, 3]
    assert [(j.state.status, j.queue_position) for j in later] == [("processing", None), ("pending", 1), ("pending", 2)]
    assert asof.jobs_as_of(recorded, NOW) == []
