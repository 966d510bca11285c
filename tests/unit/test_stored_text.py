"""The stored time of an event is byte for byte what it was before the msgspec fast path (issue 12, helper "append5").

The hash chain covers the stored ``data`` and ``recorded_at`` text, so an old log verifies
only if an event is stored exactly as before: :func:`jobtape.clock.format_uncached` (one
msgspec encode where it gives the text) against the %-format of the fields, written out
here as it was, and a stored row's text and hash.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import freezegun
import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import clock
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore

__all__: list[str] = []


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

EVENTS: list[ev.Event] = [  # unicode, nested data, a datetime field, a float, left-out fields
    ev.JobCreated(job_type="ingest", params={"title": "Für Élise – 夜曲 🎹", "n": [1, 2.5, None, True]}, owner="ünïcode"),
    ev.JobClaimed(worker_id="host:1:1", attempt=3, lease_expires_at=AT, lease_ttl_s=30.5),
    ev.JobStageChanged(stage="décodage"),
    ev.JobProgress(percent=100),
    ev.JobCompleted(result={"a": 1}, owned_keys=["assets/a.flac"]),
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
        store.append(job_id, [EVENTS[0]], 0, actor="api", recorded_at=at)
        later: list[Any] = EVENTS[1:]
        store.append(job_id, later, 1, actor="wörker", recorded_at=at)
        rows = store.read_stored(job_id=job_id)
        previous = hashing.genesis_hash(job_id)
        for row, event in zip(rows, EVENTS, strict=True):
            assert (row.type, row.data) == ev.encode_event(event)
            assert row.recorded_at == _previous_format(at)
            previous = hashing.event_hash(previous, job_id, row.version, row.type, ev.encode_event(event)[1], row.actor, row.recorded_at)
            assert row.hash == previous
    finally:
        store.close()
