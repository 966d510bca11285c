"""Folding a list of events into a job's state, for the pure tests of the fold (tests/ is on sys.path)."""

from __future__ import annotations

import datetime as dt

from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

#: The time of version 0; version N is recorded N seconds later.
T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def run(*events: ev.Event) -> job_state.JobState:
    """Fold ``events`` as versions 1, 2, ... of stream ``j``, recorded a second apart from :data:`T0`."""
    state = None
    for version, event in enumerate(events, start=1):
        state = job_state.apply(state, event, job_id="j", version=version, recorded_at=T0 + dt.timedelta(seconds=version))
    assert state is not None
    return state
