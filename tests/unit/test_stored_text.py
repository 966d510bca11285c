"""The stored text of an event is byte for byte what it was before the msgspec fast paths (issue 12, helper "append5").

The hash chain covers the stored ``data`` and ``recorded_at`` text, so an old log verifies
only if an event encodes exactly as before: :func:`jobtape.eventlog.events.encode_event`
(one encode of the struct, cut) against the encoding of :func:`~jobtape.eventlog.events.event_fields`,
and :func:`jobtape.clock.format_uncached` (one msgspec encode where it gives the text)
against the %-format of the fields, both written out here as they were.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import freezegun
import msgspec
import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import clock
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore

__all__: list[str] = []

_ENCODER = msgspec.json.Encoder()


def _previous_encoding(event: ev.Event) -> tuple[str, str]:
    """``encode_event`` before the fast path: the tag, and the encoded :func:`event_fields` dict."""
    return ev.event_type(event), _ENCODER.encode(ev.event_fields(event)).decode()


def _previous_format(value: dt.datetime) -> str:
    """``clock.format_uncached`` before the fast path: the %-format of the UTC fields."""
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(dt.UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - the previous implementation, verbatim
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


AT = dt.datetime(2026, 12, 1, 23, 5, 7, 123456, tzinfo=dt.UTC)

EVENTS: list[ev.Event] = [
    ev.JobCreated(job_type="ingest"),
    ev.JobCreated(job_type="ingest", params={"title": "Für Élise – 夜曲 🎹", "n": [1, 2.5, None, True]}, owner="ünïcode"),
    ev.JobCreated(job_type="preview", idempotency_key='k\u2028\x00"\\', owned_keys=["ingest-uploads/ä.wav"]),
    ev.JobCreated(job_type="save", owned_keys=[]),
    ev.JobClaimed(worker_id="host:1:1"),
    ev.JobClaimed(worker_id="host:1:1", attempt=3, lease_expires_at=AT, lease_ttl_s=30.5),
    ev.JobClaimed(worker_id="w", lease_expires_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), lease_ttl_s=1e-7),
    ev.JobStageChanged(stage="décodage"),
    ev.JobProgress(percent=0),
    ev.JobProgress(percent=100),
    ev.JobHeartbeat(lease_expires_at=AT),
    ev.JobCancelRequested(reason="用户取消"),
    ev.JobChildStarted(pid=123, argv=["ffmpeg", "-i", "/tmp/ñ.wav"], host_id="h", started_at_ticks=42),
    ev.JobChildExited(pid=123, exit_status=-9),
    ev.JobCancelled(),
    ev.JobCompleted(result={}),
    ev.JobCompleted(result={"assetId": "a", "durationSec": 1.0 / 3, "nested": {"ö": ["x"]}}),
    ev.JobCompleted(result={"a": 1}, owned_keys=["assets/a.flac"]),
    ev.JobCompleted(result={"a": 1}, owned_keys=["assets/a.flac"], download_key="previews/p.mp3"),
    ev.JobCompleted(result={"a": 1}, download_key="previews/p.mp3"),  # a left-out field before a kept one
    ev.JobCompleted(result={"a": 1}, owned_keys=[], download_key=None),
    ev.JobCompleted(result={"a": 1}, owned_keys=[], download_key=""),
    ev.JobCompleted(result={"a": 1}, owned_keys=["k"], download_key=""),
    ev.JobFailed(error="ffmpeg: ошибка", retryable=True),
    ev.JobLeaseExpired(worker_id="w", attempt=2, not_before=AT, orphaned_pids=[1, 2]),
    ev.JobReleased(worker_id="w", reason="shutdown", orphaned_pids=[]),
    ev.JobRetryScheduled(error="e", attempt=1, not_before=AT),
    ev.JobBlobsDeleted(keys=["assets/a.flac"], reason="archive"),
]

TIMES = [
    AT,
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),  # no microseconds: msgspec leaves the fraction out
    dt.datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC),  # trailing zeros
    dt.datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 2, 3, 4, 5, 7),  # naive: taken as UTC
    dt.datetime(2026, 6, 30, 23, 30, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # converted to UTC
    dt.datetime(2026, 3, 1, 0, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(0))),  # offset 0, not dt.UTC
    dt.datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=zoneinfo.ZoneInfo("Europe/London")),  # offset 0 in winter
    dt.datetime(2026, 7, 1, 12, 0, 0, 5, tzinfo=zoneinfo.ZoneInfo("Europe/London")),  # +01:00 in summer
    dt.datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
    dt.datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_an_event_encodes_to_the_previous_text(event: ev.Event) -> None:
    assert ev.encode_event(event) == _previous_encoding(event)


def test_every_event_type_is_covered() -> None:
    assert {type(event) for event in EVENTS} == set(ev.EVENT_TYPES.values())


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_a_timestamp_formats_to_the_previous_text(value: dt.datetime) -> None:
    assert clock.format_uncached(value) == _previous_format(value)


def test_a_frozen_clock_formats_to_the_previous_text() -> None:
    with freezegun.freeze_time("2026-02-03 04:05:06.000789"):
        now = dt.datetime.now(dt.UTC)  # freezegun's class, which msgspec does not encode
        assert clock.format_uncached(now) == _previous_format(now) == "2026-02-03T04:05:06.000789Z"
        assert clock.format_uncached(clock.utcnow()) == "2026-02-03T04:05:06.000789Z"


@pytest.mark.parametrize("at", TIMES[:4] + TIMES[5:6], ids=str)
def test_the_stored_row_is_the_previous_text_and_its_hash_chains(tmp_path: Path, at: dt.datetime) -> None:
    backend = SQLiteBackend(tmp_path / "log.db")
    backend.migrate(TABLES.migrations)
    store = EventStore(backend, keys=LogKeys.from_secret(b"s" * 40))
    try:
        job_id = "c" * 32
        store.append(job_id, [EVENTS[1]], 0, actor="api", recorded_at=at)
        later: list[Any] = [EVENTS[5], EVENTS[7], EVENTS[9], EVENTS[17]]
        store.append(job_id, later, 1, actor="wörker", recorded_at=at)
        rows = store.read_stored(job_id=job_id)
        previous = hashing.genesis_hash(job_id)
        for row, event in zip(rows, [EVENTS[1], *later], strict=True):
            assert (row.type, row.data) == _previous_encoding(event)
            assert row.recorded_at == _previous_format(at)
            previous = hashing.event_hash(previous, job_id, row.version, row.type, _previous_encoding(event)[1], row.actor, row.recorded_at)
            assert row.hash == previous
    finally:
        store.close()
