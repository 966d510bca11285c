"""The fold against the state rules: examples, then a hypothesis state machine."""

from __future__ import annotations

import datetime as dt

import pytest
from folding import T0, run  # type: ignore[import-not-found]  # tests/ is on sys.path
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

CREATED = ev.JobCreated(job_type="ingest")
CLAIMED = ev.JobClaimed(worker_id="w1")


def test_happy_path() -> None:
    state = run(
        CREATED,
        CLAIMED,
        ev.JobStageChanged(stage="measuring"),
        ev.JobProgress(percent=40),
        ev.JobChildStarted(pid=5, argv=["ffmpeg"]),
        ev.JobChildExited(pid=5, exit_status=0),
        ev.JobCompleted(result={"assetId": "a"}),
    )
    assert (state.status, state.finished, state.progress, state.result) == ("complete", True, 100, {"assetId": "a"})
    assert state.created_at == T0 + dt.timedelta(seconds=1)
    assert state.updated_at == T0 + dt.timedelta(seconds=7)
    assert state.version == 7


def test_a_cache_hit_completes_at_creation() -> None:
    state = run(CREATED, ev.JobCompleted(result={"previewKey": "p"}))
    assert (state.status, state.finished, state.attempt) == ("complete", True, 0)


def test_cancel_of_pending_job_ends_it_at_once() -> None:
    state = run(CREATED, ev.JobCancelRequested())
    assert (state.status, state.finished, state.stage) == ("cancelled", True, None)


def test_cancel_of_running_job_shows_cancelling_until_confirmed() -> None:
    state = run(CREATED, CLAIMED, ev.JobChildStarted(pid=5, argv=["ffmpeg"]), ev.JobCancelRequested())
    assert (state.status, state.stage, state.finished) == ("cancelled", "cancelling", False)
    with pytest.raises(errors.IllegalTransition, match="have not exited"):
        run(CREATED, CLAIMED, ev.JobChildStarted(pid=5, argv=["ffmpeg"]), ev.JobCancelRequested(), ev.JobCancelled())
    state = run(
        CREATED,
        CLAIMED,
        ev.JobChildStarted(pid=5, argv=["ffmpeg"]),
        ev.JobCancelRequested(),
        ev.JobChildExited(pid=5, exit_status=-15),
        ev.JobCancelled(),
    )
    assert (state.status, state.stage, state.finished) == ("cancelled", None, True)


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ((CREATED, CLAIMED, ev.JobCompleted(), ev.JobProgress(percent=5)), "terminal"),
        ((CREATED, CLAIMED, ev.JobClaimed(worker_id="w2", attempt=2)), "only a pending job"),
        ((CREATED, ev.JobClaimed(worker_id="w2", attempt=2)), "does not follow attempt"),
        ((CREATED, CLAIMED, ev.JobLeaseExpired(worker_id="w2", attempt=1)), "does not hold"),
        ((CREATED, CLAIMED, ev.JobCancelRequested(), ev.JobCompleted()), "cancellation was requested"),
        ((CREATED, ev.JobProgress(percent=5)), "not been claimed"),
        ((CREATED, ev.JobCancelRequested(), ev.JobCompleted()), "terminal"),
        ((CREATED, CLAIMED, ev.JobReleased(worker_id="w1"), ev.JobCompleted()), "not been claimed"),
        ((ev.JobProgress(percent=5),), "does not exist"),
        ((CREATED, CREATED), "exists already"),
        ((CREATED, CLAIMED, ev.JobProgress(percent=101)), "outside 0-100"),
        ((CREATED, CLAIMED, ev.JobCancelled()), "no cancellation"),
        ((CREATED, CLAIMED, ev.JobChildExited(pid=9)), "no running child"),
        ((CREATED, ev.JobCancelRequested(), ev.JobCancelRequested()), "terminal"),
    ],
)
def test_illegal_transitions_are_refused(events: tuple[ev.Event, ...], reason: str) -> None:
    with pytest.raises(errors.IllegalTransition, match=reason):
        run(*events)


def test_version_must_follow() -> None:
    state = run(CREATED)
    with pytest.raises(errors.IllegalTransition, match="does not follow"):
        job_state.apply(state, CLAIMED, job_id="j", version=3, recorded_at=T0)


LATER = T0 + dt.timedelta(hours=1)
EVENTS = st.one_of(
    st.just(ev.JobCreated(job_type="ingest")),
    st.builds(ev.JobClaimed, worker_id=st.sampled_from(["w1", "w2"]), attempt=st.integers(1, 3), lease_ttl_s=st.sampled_from([None, 30.0])),
    st.builds(ev.JobStageChanged, stage=st.sampled_from(["measuring", "normalizing"])),
    st.builds(ev.JobProgress, percent=st.integers(-5, 105)),
    st.builds(ev.JobHeartbeat),
    st.builds(ev.JobCancelRequested),
    st.builds(ev.JobChildStarted, pid=st.integers(1, 3), argv=st.just(["ffmpeg"])),
    st.builds(ev.JobChildExited, pid=st.integers(1, 3), exit_status=st.integers(-15, 1)),
    st.builds(ev.JobCancelled),
    st.builds(ev.JobCompleted),
    st.builds(ev.JobFailed, error=st.just("boom")),
    st.builds(
        ev.JobLeaseExpired,
        worker_id=st.sampled_from(["w1", "w2"]),
        attempt=st.integers(1, 3),
        not_before=st.sampled_from([None, T0, LATER]),
    ),
    st.builds(ev.JobReleased, worker_id=st.sampled_from(["w1", "w2"])),
    st.builds(ev.JobRetryScheduled, error=st.just("net"), attempt=st.integers(1, 3), not_before=st.sampled_from([None, LATER])),
)


class FoldMachine(RuleBasedStateMachine):
    """Feeds random events to the fold; a simple model of the rules checks every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.state: job_state.JobState | None = None
        self.accepted: list[ev.Event] = []
        self.children: list[int] = []
        self.orphans: list[int] = []
        self.cancelled_while_pending = False

    def expected_legal(self, event: ev.Event) -> bool:
        s = self.state
        if s is None:
            return isinstance(event, ev.JobCreated)
        if s.finished or isinstance(event, ev.JobCreated):
            return False
        cancelling = s.cancel_requested
        running = s.status != "pending"
        holder = s.worker_id
        match event:
            case ev.JobClaimed(attempt=attempt):
                return s.status == "pending" and attempt == s.attempt + 1 and (s.not_before is None or s.not_before <= T0)
            case ev.JobStageChanged():
                return running and not cancelling
            case ev.JobChildStarted(pid=pid):
                return running and not cancelling and pid not in self.children
            case ev.JobProgress(percent=p):
                return running and not cancelling and 0 <= p <= 100
            case ev.JobHeartbeat():
                return running
            case ev.JobChildExited(pid=pid):
                return (running and pid in self.children) or pid in self.orphans
            case ev.JobCancelRequested():
                return not cancelling
            case ev.JobCancelled():
                return cancelling and not self.children
            case ev.JobCompleted():
                at_creation = s.status == "pending" and s.version == 1
                return (running or at_creation) and not cancelling and not self.children
            case ev.JobFailed():
                return not cancelling and not self.children
            case ev.JobLeaseExpired(worker_id=w, attempt=attempt):
                return running and holder == w and attempt == s.attempt
            case ev.JobReleased(worker_id=w):
                return running and holder == w and not cancelling
            case ev.JobRetryScheduled(attempt=attempt):
                return running and not cancelling and attempt == s.attempt and not self.children
        return False

    @rule(event=EVENTS)
    def append(self, event: ev.Event) -> None:
        legal = self.expected_legal(event)
        before = self.state
        try:
            new = job_state.apply(self.state, event, job_id="j", version=len(self.accepted) + 1, recorded_at=T0)
        except errors.IllegalTransition:
            assert not legal, f"refused a legal {event!r} in {self.state!r}"
            return
        assert legal, f"accepted an illegal {event!r} in {self.state!r}"
        self.state = new
        self.accepted.append(event)
        match event:
            case ev.JobChildStarted(pid=pid):
                self.children.append(pid)
            case ev.JobChildExited(pid=pid):
                (self.children if pid in self.children else self.orphans).remove(pid)
            case ev.JobLeaseExpired() | ev.JobReleased() | ev.JobRetryScheduled():
                self.orphans += self.children
                self.children = []
            case ev.JobCancelRequested() if before is not None and before.status == "pending":
                self.cancelled_while_pending = True

    @invariant()
    def rules_hold(self) -> None:
        s = self.state
        if s is None:
            return
        assert s.version == len(self.accepted)
        assert sorted(s.running_children) == sorted(self.children)
        assert sorted(s.orphaned_children) == sorted(self.orphans)
        assert 0 <= s.progress <= 100
        if s.finished:
            assert s.status in job_state.TERMINAL_STATUSES
        if s.status == "complete":
            assert isinstance(self.accepted[-1], ev.JobCompleted)
            assert not any(isinstance(e, ev.JobCancelRequested) for e in self.accepted)
        if s.status == "cancelled":
            assert s.cancel_requested
            assert s.finished == (isinstance(self.accepted[-1], ev.JobCancelled) or self.cancelled_while_pending)
        if s.status == "processing":
            assert s.worker_id is not None and s.attempt >= 1
            if s.lease_ttl_s is not None:
                assert s.lease_expires_at == T0 + dt.timedelta(seconds=s.lease_ttl_s)
        if s.status == "pending":
            assert s.worker_id is None and s.running_children == ()
        terminal_events = [e for e in self.accepted if isinstance(e, (ev.JobCompleted, ev.JobFailed, ev.JobCancelled))]
        assert len(terminal_events) <= 1


TestFoldMachine = FoldMachine.TestCase
TestFoldMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_lease_is_renewed_by_every_worker_event_and_expiry_returns_to_pending() -> None:
    state = run(
        CREATED,
        ev.JobClaimed(worker_id="w1", lease_ttl_s=30.0),
        ev.JobStageChanged(stage="measuring"),
        ev.JobChildStarted(pid=7, argv=["ffmpeg"]),
    )
    assert state.lease_expires_at == T0 + dt.timedelta(seconds=4 + 30)
    later = T0 + dt.timedelta(minutes=5)
    state = job_state.apply(
        state,
        ev.JobLeaseExpired(worker_id="w1", attempt=1, not_before=later),
        job_id="j",
        version=5,
        recorded_at=T0 + dt.timedelta(seconds=40),
    )
    assert (state.status, state.worker_id, state.running_children, state.orphaned_children) == ("pending", None, (), (7,))
    with pytest.raises(errors.IllegalTransition, match="backed off"):
        job_state.apply(state, ev.JobClaimed(worker_id="w2", attempt=2), job_id="j", version=6, recorded_at=T0)
    state = job_state.apply(state, ev.JobClaimed(worker_id="w2", attempt=2), job_id="j", version=6, recorded_at=later)
    state = job_state.apply(state, ev.JobChildExited(pid=7, exit_status=-9), job_id="j", version=7, recorded_at=later)
    assert state.orphaned_children == () and state.status == "processing"


def test_release_does_not_use_an_attempt() -> None:
    state = run(CREATED, CLAIMED, ev.JobReleased(worker_id="w1"))
    assert (state.status, state.attempt) == ("pending", 0)
    state = job_state.apply(state, ev.JobClaimed(worker_id="w2", attempt=1), job_id="j", version=4, recorded_at=T0)
    assert state.attempt == 1
