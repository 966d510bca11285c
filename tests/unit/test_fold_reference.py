"""The fold (a dispatch table, issue 12) against the reference fold it replaced: same states, same refusals."""

from __future__ import annotations

import datetime as dt

import reference_fold  # type: ignore[import-not-found]  # tests/ is on sys.path
from folding import T0  # type: ignore[import-not-found]
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

LATER = T0 + dt.timedelta(seconds=30)
_TIMES = st.sampled_from([None, T0, LATER, T0 + dt.timedelta(hours=1)])
_KEYS = st.lists(st.sampled_from(["in/a", "out/b", "out/c", "other"]), max_size=3)

EVENTS = st.one_of(
    st.builds(ev.JobCreated, job_type=st.just("ingest"), owned_keys=st.sampled_from([None, ["in/a"]])),
    st.builds(
        ev.JobClaimed,
        worker_id=st.sampled_from(["w1", "w2"]),
        attempt=st.integers(1, 2),
        lease_expires_at=_TIMES,
        lease_ttl_s=st.sampled_from([None, 30.0]),
    ),
    st.builds(ev.JobStageChanged, stage=st.sampled_from(["measuring", "normalizing"])),
    st.builds(ev.JobProgress, percent=st.sampled_from([-1, 0, 40, 100, 101])),
    st.builds(ev.JobHeartbeat, lease_expires_at=_TIMES),
    st.builds(ev.JobCancelRequested),
    st.builds(ev.JobChildStarted, pid=st.integers(1, 3), argv=st.just(["ffmpeg"])),
    st.builds(ev.JobChildExited, pid=st.integers(1, 3), exit_status=st.integers(-15, 1)),
    st.builds(ev.JobCancelled),
    st.builds(
        ev.JobCompleted,
        owned_keys=st.sampled_from([None, [], ["out/b"], ["out/b", "out/c"]]),
        download_key=st.sampled_from([None, "", "out/b"]),
    ),
    st.builds(ev.JobFailed, error=st.just("boom")),
    st.builds(ev.JobLeaseExpired, worker_id=st.sampled_from(["w1", "w2"]), attempt=st.integers(1, 2), not_before=_TIMES),
    st.builds(ev.JobReleased, worker_id=st.sampled_from(["w1", "w2"])),
    st.builds(ev.JobRetryScheduled, error=st.just("net"), attempt=st.integers(1, 2), not_before=_TIMES),
    st.builds(ev.JobBlobsDeleted, keys=_KEYS),
)
#: Each step: an event, how many seconds after the previous one it is recorded, and a version skew (mostly 0).
STEPS = st.lists(st.tuples(EVENTS, st.integers(0, 40), st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, -1, 1])), max_size=40)


def _outcome(apply: object, state: job_state.JobState | None, event: ev.Event, version: int, at: dt.datetime) -> object:
    try:
        return apply(state, event, job_id="j", version=version, recorded_at=at)  # type: ignore[operator]
    except errors.IllegalTransition as exc:
        return ("refused", exc.job_id, exc.status, exc.event_type, exc.reason)


@settings(max_examples=3000, deadline=None)
@given(STEPS)
def test_the_fold_decides_every_event_as_the_reference_fold(steps: list[tuple[ev.Event, int, int]]) -> None:
    """Fold generated sequences (legal and illegal events, wrong versions) with both; a refused event is skipped."""
    state: job_state.JobState | None = job_state.apply(None, ev.JobCreated(job_type="ingest"), job_id="j", version=1, recorded_at=T0)
    at = T0
    for event, seconds, skew in steps:
        at += dt.timedelta(seconds=seconds)
        version = (state.version if state is not None else 0) + 1 + skew
        expected = _outcome(reference_fold.apply, state, event, version, at)
        got = _outcome(job_state.apply, state, event, version, at)
        assert got == expected
        if isinstance(got, job_state.JobState):
            state = got


def test_every_event_type_has_a_transition() -> None:
    assert set(job_state._TRANSITIONS) == set(ev.EVENT_TYPES.values())
