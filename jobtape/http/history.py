"""The ``asOf`` query parameter of the job routes: a job's state and events as they were at a time.

``asOf`` is ISO 8601 (``2026-01-02T14:02:00Z``; no offset means UTC) or relative to now
(``-10m``, ``-2h``, ``-1d``); see :mod:`jobtape.audit.timeparse`. The state is the pure
fold over the job's events recorded up to that time (:mod:`jobtape.audit.asof`).
"""

from __future__ import annotations

import datetime as dt

from jobtape import clock, errors
from jobtape.audit import asof, timeparse
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import EventStore
from jobtape.projections import state as job_state

__all__ = ["AS_OF_DESCRIPTION", "events_as_of", "parse_as_of", "state_as_of"]

#: OpenAPI description of the ``asOf`` query parameter.
AS_OF_DESCRIPTION = (
    "Answer as the job was at this time: an RFC 3339 / ISO 8601 date-time from 0001-01-01T00:00:00Z "
    "to 9999-12-31T23:59:59Z (2026-01-02T14:02:00Z; no offset means UTC), 'now', or relative to now "
    "with less than 100000 units back (-10m, -2h, -1d, -1.5w; units s, m, h, d, w). Omitted: now. "
    "Anything else, or out of range: 422."
)


def parse_as_of(text: str) -> dt.datetime:
    """Parse the ``asOf`` parameter to aware UTC.

    Raises:
        errors.InvalidTimeSpec: not a time (answered 422; the message names ``asOf`` and the accepted forms).
    """
    try:
        return timeparse.parse_time(text, clock.utcnow())
    except errors.InvalidTimeSpec as exc:
        raise errors.InvalidTimeSpec(f"asOf={timeparse.shown(text)}", exc.reason) from exc


def events_as_of(store: EventStore, job_id: str, at: dt.datetime) -> list[ev.RecordedEvent]:
    """The job's events recorded up to ``at``, in version order.

    Raises:
        errors.JobNotFound: the job did not exist at ``at`` (or at all).
    """
    recorded = asof.stream_as_of(store.read_stream(job_id), at)
    if not recorded:
        raise errors.JobNotFound(job_id)
    return recorded


def state_as_of(store: EventStore, job_id: str, at: dt.datetime) -> tuple[job_state.JobState, int | None]:
    """The job's state at ``at`` and its queue position then (``None`` unless pending).

    The queue position folds every job up to ``at``, so it costs a read of the whole log;
    it is only computed for a job that was pending then.

    Raises:
        errors.JobNotFound: the job did not exist at ``at``.
        errors.IllegalTransition: the stored stream breaks the state rules.
    """
    state = job_state.fold(events_as_of(store, job_id, at))
    assert state is not None
    if state.status != "pending":
        return state, None
    place = next((j.queue_position for j in asof.jobs_as_of(store.iter_all(), at) if j.state.job_id == job_id), None)
    return state, place
