"""The worker's pure policies on frozen time: backoff, lease expiry and the reaper, retries, timeouts, heartbeats."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from jobtape import clock
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.worker import policy

SETTINGS = Settings(lease_ttl_s=30.0, max_attempts=3, backoff_base_s=2.0, backoff_cap_s=60.0)


@pytest.fixture
def frozen() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time("2026-03-01 12:00:00", ignore=["_pytest"]) as factory:  # keep --durations real
        yield factory


class Log:
    """A job's events folded one append at a time, each recorded at the (frozen) clock's time."""

    def __init__(self) -> None:
        self.state: job_state.JobState | None = None

    def append(self, *events: ev.Event) -> job_state.JobState:
        at = clock.utcnow()
        for event in events:
            version = self.state.version + 1 if self.state else 1
            self.state = job_state.apply(self.state, event, job_id="j1", version=version, recorded_at=at)
        assert self.state is not None
        return self.state


def claimed(attempt: int = 1, worker_id: str = "host-a:4242:1", ttl: float = 30.0) -> Log:
    log = Log()
    log.append(ev.JobCreated(job_type="ingest"))
    for n in range(1, attempt):
        log.append(ev.JobClaimed(worker_id=worker_id, attempt=n, lease_ttl_s=ttl))
        log.append(ev.JobRetryScheduled(error="flaky", attempt=n))
    log.append(ev.JobClaimed(worker_id=worker_id, attempt=attempt, lease_ttl_s=ttl))
    return log


def rng() -> random.Random:
    return random.Random(7)


def types(events: Sequence[ev.Event]) -> list[str]:
    return [ev.event_type(e) for e in events]


# -- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (40, 60.0)])
def test_backoff_doubles_per_attempt_up_to_the_cap_with_half_of_it_jittered(attempt: int, ceiling: float) -> None:
    source = rng()
    delays = [policy.backoff_s(attempt, base_s=2.0, cap_s=60.0, rng=source) for _ in range(200)]
    assert all(ceiling / 2 <= d < ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # the jitter spreads retries out


def test_backoff_with_a_zero_base_is_zero() -> None:
    assert policy.backoff_s(3, base_s=0.0, cap_s=60.0, rng=rng()) == 0.0


# -- lease expiry and the reaper --------------------------------------------------------------


def test_a_claim_carries_a_lease_that_every_event_of_the_worker_renews(frozen: FrozenDateTimeFactory) -> None:
    log = claimed()
    assert log.state and log.state.lease_expires_at == clock.utcnow() + dt.timedelta(seconds=30)
    frozen.tick(20)
    state = log.append(ev.JobStageChanged(stage="measuring"))
    assert state.lease_expires_at == clock.utcnow() + dt.timedelta(seconds=30)
    frozen.tick(25)
    assert policy.reap_events(state, clock.utcnow(), SETTINGS, rng()) == []  # 25 s after the renewal


def test_the_reaper_takes_back_an_expired_lease_with_a_backoff(frozen: FrozenDateTimeFactory) -> None:
    log = claimed()
    state = log.append(ev.JobChildStarted(pid=777, argv=["ffmpeg"], host_id="host-a", started_at_ticks=5))
    frozen.tick(30)
    assert policy.reap_events(state, clock.utcnow(), SETTINGS, rng()) == []  # expiry is not < now yet
    frozen.tick(0.001)
    now = clock.utcnow()
    events = policy.reap_events(state, now, SETTINGS, rng())
    assert types(events) == ["job.lease_expired"]
    expired = events[0]
    assert isinstance(expired, ev.JobLeaseExpired)
    assert (expired.worker_id, expired.attempt, expired.orphaned_pids) == ("host-a:4242:1", 1, [777])
    assert expired.not_before is not None and 1.0 <= (expired.not_before - now).total_seconds() < 2.0
    after = log.append(*events)  # the fold accepts the decision
    assert (after.status, after.orphaned_children, after.not_before) == ("pending", (777,), expired.not_before)


def test_a_claim_before_not_before_is_refused_by_the_fold(frozen: FrozenDateTimeFactory) -> None:
    log = claimed()
    frozen.tick(31)
    log.append(*policy.reap_events(log.state, clock.utcnow(), SETTINGS, rng()))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="backed off"):
        log.append(ev.JobClaimed(worker_id="host-b:1:1", attempt=2, lease_ttl_s=30))
    frozen.tick(2)
    assert log.append(ev.JobClaimed(worker_id="host-b:1:1", attempt=2, lease_ttl_s=30)).status == "processing"


def test_the_reaper_fails_the_job_after_max_attempts(frozen: FrozenDateTimeFactory) -> None:
    log = claimed(attempt=3)
    frozen.tick(31)
    events = policy.reap_events(log.state, clock.utcnow(), SETTINGS, rng())  # type: ignore[arg-type]
    assert types(events) == ["job.lease_expired", "job.failed"]
    assert events[0].not_before is None  # type: ignore[union-attr]
    state = log.append(*events)
    assert (state.status, state.finished) == ("failed", True)
    assert state.error == ("worker host-a:4242:1 lost the job (its lease expired) on attempt 3 of 3; giving up after 3 attempts")


def test_the_reaper_confirms_a_cancel_requested_while_the_worker_was_gone(frozen: FrozenDateTimeFactory) -> None:
    log = claimed()
    log.append(ev.JobChildStarted(pid=777, argv=["ffmpeg"], host_id="host-a", started_at_ticks=5))
    frozen.tick(10)
    state = log.append(ev.JobCancelRequested(reason="user"))
    frozen.tick(25)  # the cancel request does not renew the lease
    events = policy.reap_events(state, clock.utcnow(), SETTINGS, rng(), exited=[(777, -15)])
    assert types(events) == ["job.lease_expired", "job.child_exited", "job.cancelled"]
    final = log.append(*events)
    assert (final.status, final.finished, final.orphaned_children) == ("cancelled", True, ())


def test_a_gone_holder_is_reaped_before_its_lease_expires(frozen: FrozenDateTimeFactory) -> None:
    state = claimed().append(ev.JobStageChanged(stage="probing"))
    assert policy.reap_events(state, clock.utcnow(), SETTINGS, rng()) == []
    events = policy.reap_events(state, clock.utcnow(), SETTINGS, rng(), holder_gone=True)
    assert types(events) == ["job.lease_expired"]


@pytest.mark.parametrize("status_events", [[], [ev.JobCompleted()]], ids=["pending", "complete"])
def test_unheld_jobs_are_never_reaped(frozen: FrozenDateTimeFactory, status_events: list[ev.Event]) -> None:
    log = Log()
    log.append(ev.JobCreated(job_type="ingest"))
    if status_events:
        log.append(ev.JobClaimed(worker_id="w:1:1", lease_ttl_s=1), *status_events)
    frozen.tick(3600)
    assert policy.reap_events(log.state, clock.utcnow(), SETTINGS, rng(), holder_gone=True) == []  # type: ignore[arg-type]


def test_a_claim_without_a_lease_is_not_reaped_on_time(frozen: FrozenDateTimeFactory) -> None:
    log = Log()
    log.append(ev.JobCreated(job_type="ingest"))
    state = log.append(ev.JobClaimed(worker_id="w:1:1"))
    frozen.tick(3600)
    assert policy.reap_events(state, clock.utcnow(), SETTINGS, rng()) == []


# -- retries -----------------------------------------------------------------------------------


def test_a_retryable_failure_is_retried_with_backoff_until_max_attempts(frozen: FrozenDateTimeFactory) -> None:
    log = claimed()
    for attempt in (1, 2):
        events = policy.failure_events(
            log.state,
            "network reset",
            retryable=True,
            now=clock.utcnow(),  # type: ignore[arg-type]
            settings=SETTINGS,
            rng=rng(),
        )
        assert types(events) == ["job.retry_scheduled"]
        state = log.append(*events)
        assert state.status == "pending" and state.last_error == "network reset"
        assert state.not_before and 2 ** (attempt - 1) <= (state.not_before - clock.utcnow()).total_seconds() < 2**attempt
        frozen.tick(2**attempt)
        log.append(ev.JobClaimed(worker_id="w:1:1", attempt=attempt + 1, lease_ttl_s=30))
    events = policy.failure_events(
        log.state,
        "network reset",
        retryable=True,
        now=clock.utcnow(),  # type: ignore[arg-type]
        settings=SETTINGS,
        rng=rng(),
    )
    assert types(events) == ["job.failed"]
    assert log.append(*events).error == "network reset (gave up after 3 attempts)"


def test_a_non_retryable_failure_fails_at_once(frozen: FrozenDateTimeFactory) -> None:
    events = policy.failure_events(
        claimed().state,
        "corrupt media",
        retryable=False,
        now=clock.utcnow(),  # type: ignore[arg-type]
        settings=SETTINGS,
        rng=rng(),
    )
    assert events == [ev.JobFailed(error="corrupt media", retryable=False)]


# -- timeouts and heartbeats -------------------------------------------------------------------


def test_timeouts_are_per_job_type_and_count_from_the_claim(frozen: FrozenDateTimeFactory) -> None:
    from jobtape.audio.settings import AudioSettings
    from jobtape.defaults import default_app

    settings = Settings()
    limits = default_app(settings, AudioSettings()).limits()  # the audio types register their own timeouts
    assert [policy.job_timeout_s(t, settings, limits.get(t)) for t in ("ingest", "preview", "save", "sum")] == [
        600.0,
        120.0,
        600.0,
        600.0,
    ]  # a type without its own: JOBTAPE_JOB_TIMEOUT
    assert policy.job_timeout_s("sum", Settings(job_timeout_s=5.0)) == 5.0
    claimed_at = clock.utcnow()
    frozen.tick(119.9)
    assert not policy.timed_out(claimed_at, clock.utcnow(), policy.job_timeout_s("preview", settings, limits["preview"]))
    frozen.tick(0.1)
    assert policy.timed_out(claimed_at, clock.utcnow(), policy.job_timeout_s("preview", settings, limits["preview"]))
    assert policy.timeout_error(120.0) == "timed out after 120 s"


def test_a_heartbeat_is_due_after_a_third_of_the_ttl_without_an_append(frozen: FrozenDateTimeFactory) -> None:
    last = clock.utcnow()
    frozen.tick(9.99)
    assert not policy.heartbeat_due(last, clock.utcnow(), 30.0)
    frozen.tick(0.01)
    assert policy.heartbeat_due(last, clock.utcnow(), 30.0)


@pytest.mark.parametrize(
    ("worker_id", "parsed"),
    [
        ("host-a:4242:1", ("host-a", 4242)),
        ("rack:7:host:99:3", ("rack:7:host", 99)),
        ("worker-7", None),
        ("host:abc:1", None),
    ],
)
def test_worker_ids_name_their_host_and_pid(worker_id: str, parsed: tuple[str, int] | None) -> None:
    assert policy.parse_worker_id(worker_id) == parsed


def test_a_types_max_attempts_replaces_the_settings_total_attempts() -> None:
    assert policy.type_settings(SETTINGS, None) is SETTINGS
    assert policy.type_settings(SETTINGS, policy.TypeLimits(timeout_s=5.0)) is SETTINGS
    own = policy.type_settings(SETTINGS, policy.TypeLimits(max_attempts=1))
    assert (own.max_attempts, own.backoff_base_s) == (1, SETTINGS.backoff_base_s)
