from __future__ import annotations

import datetime as dt

import pytest

from jobtape import errors
from jobtape.eventlog import events as ev


def test_every_event_type_round_trips() -> None:
    samples = [
        ev.JobCreated(job_type="ingest", params={"storageKey": "k"}, owner="o", idempotency_key="i"),
        ev.JobClaimed(worker_id="w", attempt=2, lease_expires_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ev.JobStageChanged(stage="measuring"),
        ev.JobProgress(percent=42),
        ev.JobHeartbeat(),
        ev.JobCancelRequested(reason="user"),
        ev.JobChildStarted(pid=12, argv=["ffmpeg", "-i", "x"], host_id="h", started_at_ticks=99),
        ev.JobChildExited(pid=12, exit_status=-15),
        ev.JobCancelled(),
        ev.JobCompleted(result={"assetId": "a"}),
        ev.JobFailed(error="boom", retryable=True),
        ev.JobLeaseExpired(worker_id="w", attempt=1, not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), orphaned_pids=[3]),
        ev.JobReleased(worker_id="w"),
        ev.JobRetryScheduled(error="net", attempt=1),
        ev.JobBlobsDeleted(keys=["ingest-uploads/x/original.mp3"], reason="failed-upload retention"),
    ]
    assert {ev.event_type(e) for e in samples} == set(ev.EVENT_TYPES)
    for event in samples:
        type_, data = ev.encode_event(event)
        assert '"type"' not in data
        assert ev.decode_event(1, type_, data) == event


def test_unknown_type_names_the_position() -> None:
    with pytest.raises(errors.MalformedEvent, match="position 17") as info:
        ev.decode_event(17, "job.exploded", "{}")
    assert info.value.position == 17


def test_malformed_data_names_the_position_and_field() -> None:
    with pytest.raises(errors.MalformedEvent, match=r"position 5.*percent"):
        ev.decode_event(5, "job.progress", '{"percent": "half"}')
    with pytest.raises(errors.MalformedEvent, match="position 6"):
        ev.decode_event(6, "job.failed", "not json")
