"""Worker policies as pure functions: backoff, the reaper's decision, retries, timeouts, heartbeats.

Nothing here reads the clock, the log or the process table: every function takes the
job's folded state, ``now`` (an aware UTC datetime) and the settings, and returns a
number, a flag or the events to append. The worker (:mod:`jobtape.worker.runner`) and
the reaper (:mod:`jobtape.worker.reaper`) do the I/O; the fold
(:mod:`jobtape.projections.state`) still decides whether the events are legal.

Rules (docs/worker.md explains them with a real takeover):

- **Backoff**: "equal jitter" exponential backoff (AWS Architecture Blog, "Exponential
  Backoff And Jitter", 2015): the ceiling ``min(cap, base * 2 ** (attempt - 1))`` seconds,
  of which half is fixed and half random, so retries of jobs that failed together spread out.
- **Attempts**: ``max_attempts`` is the TOTAL number of attempts of a job, the first one
  included (3 = the first run and at most 2 more); every claim starts the next attempt
  (``JobState.attempt`` 1, 2, 3...). A job type's own ``max_attempts``
  (:class:`TypeLimits`, ``app.job_type(max_attempts=...)``) overrides the setting
  (``JOBTAPE_MAX_ATTEMPTS``, ``--max-attempts``) for the worker's failures and the
  reaper's lease expiries alike (:func:`type_settings`).
- **Reaper**: a job whose lease expired goes back to pending with a backoff ``not_before``,
  or fails if that was attempt ``max_attempts`` (default 3); a job whose cancel was
  requested is confirmed cancelled instead.
- **Retry**: a retryable failure follows the same path; a non-retryable one fails at once.
- **Timeout**: a job running longer than its type's timeout (seed 004: the reaper's
  10-minute default, now per type) is failed with ``timed out after N s``.
- **Heartbeat**: due once the worker has appended nothing for the job for a third of the
  lease TTL (so two can be lost before the lease expires).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

__all__ = [
    "Random",
    "TypeLimits",
    "backoff_s",
    "failure_events",
    "heartbeat_due",
    "job_timeout_s",
    "parse_worker_id",
    "reap_events",
    "timed_out",
    "timeout_error",
]


class Random(Protocol):
    """A source of uniform floats in [0, 1): ``random.Random`` (seed it in tests)."""

    def random(self) -> float:
        """Return the next float in [0, 1)."""
        ...


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: Random) -> float:
    """Seconds to wait before the next attempt after ``attempt`` failed (equal jitter).

    Args:
        attempt: the attempt that just ended (1 for the first).
        base_s: the ceiling after the first attempt, in seconds.
        cap_s: the largest ceiling, in seconds.
        rng: the jitter source.

    Returns:
        A delay in ``[ceiling / 2, ceiling)`` where ``ceiling = min(cap_s, base_s * 2 ** (attempt - 1))``.
    """
    ceiling = min(cap_s, base_s * 2.0 ** max(0, min(attempt - 1, 62)))
    return ceiling / 2 + rng.random() * ceiling / 2


def _not_before(state: job_state.JobState, now: dt.datetime, settings: Settings, rng: Random) -> dt.datetime:
    delay = backoff_s(state.attempt, base_s=settings.backoff_base_s, cap_s=settings.backoff_cap_s, rng=rng)
    return now + dt.timedelta(seconds=delay)


def reap_events(
    state: job_state.JobState,
    now: dt.datetime,
    settings: Settings,
    rng: Random,
    *,
    exited: Iterable[tuple[int, int | None]] = (),
    holder_gone: bool = False,
) -> list[ev.Event]:
    """What a reaper appends for a job whose worker lost it; ``[]`` when the job is not to be reaped.

    A job is reaped when it is held (``processing``, or ``cancelled`` but not finished,
    i.e. cancelling) and either its lease expired (``lease_expires_at < now``) or
    ``holder_gone`` (the orphan sweep saw the holding worker's process dead on this host).
    A job without a lease is never reaped on expiry.

    Args:
        state: the job's folded state (the append must be guarded by ``state.version``).
        now: the current UTC time.
        settings: ``max_attempts``, ``backoff_base_s``, ``backoff_cap_s``.
        rng: jitter source for the backoff.
        exited: ``(pid, exit_status)`` of children the caller just killed (orphan sweep);
            they get a ``job.child_exited`` after the ``job.lease_expired``.
        holder_gone: reap now, whatever the lease says.

    Returns:
        ``job.lease_expired`` (back to pending; ``not_before`` from :func:`backoff_s`), the
        ``job.child_exited`` events, then ``job.cancelled`` if a cancel was requested, or
        ``job.failed`` if this was attempt ``max_attempts`` (``not_before`` is then ``None``).
    """
    if state.finished or state.status not in ("processing", "cancelled") or state.worker_id is None:
        return []
    expired = state.lease_expires_at is not None and state.lease_expires_at < now
    if not (expired or holder_gone):
        return []
    exhausted = state.attempt >= settings.max_attempts
    not_before = None if state.cancel_requested or exhausted else _not_before(state, now, settings, rng)
    result: list[ev.Event] = [
        ev.JobLeaseExpired(
            worker_id=state.worker_id,
            attempt=state.attempt,
            not_before=not_before,
            orphaned_pids=list(state.running_children),
        )
    ]
    known = {*state.running_children, *state.orphaned_children}
    result += [ev.JobChildExited(pid=pid, exit_status=status) for pid, status in exited if pid in known]
    cause = "its process is gone" if holder_gone and not expired else "its lease expired"
    if state.cancel_requested:
        result.append(ev.JobCancelled())
    elif exhausted:
        result.append(
            ev.JobFailed(
                error=f"worker {state.worker_id} lost the job ({cause}) on attempt {state.attempt} of"
                f" {settings.max_attempts}; giving up after {settings.max_attempts} attempts",
                retryable=False,
            )
        )
    return result


def failure_events(
    state: job_state.JobState, error: str, *, retryable: bool, now: dt.datetime, settings: Settings, rng: Random
) -> list[ev.Event]:
    """What the worker appends when a job's pipeline failed with ``error``.

    Args:
        state: the job's state (the worker's current attempt).
        error: the readable failure message.
        retryable: the failure is transient (``MediaError.retryable``: a network error
            during a download, the store briefly unreachable).
        now: the current UTC time.
        settings: ``max_attempts`` and the backoff settings.
        rng: jitter source.

    Returns:
        ``[job.retry_scheduled]`` with a backoff ``not_before`` for a retryable failure
        before attempt ``max_attempts``; otherwise ``[job.failed]`` (a retryable error that
        ran out of attempts says so in its message).
    """
    if not retryable:
        return [ev.JobFailed(error=error, retryable=False)]
    if state.attempt < settings.max_attempts:
        return [ev.JobRetryScheduled(error=error, attempt=state.attempt, not_before=_not_before(state, now, settings, rng))]
    return [ev.JobFailed(error=f"{error} (gave up after {state.attempt} attempts)", retryable=True)]


class TypeLimits(NamedTuple):
    """A job type's own limits, overriding the settings' (``None``: the settings decide).

    Attributes:
        timeout_s: seconds a job of the type may run from its claim.
        max_attempts: the total number of attempts of a job of the type, the first included
            (a retryable failure or a lease expiry on the last one fails the job).
    """

    timeout_s: float | None = None
    max_attempts: int | None = None


def type_settings(settings: Settings, limits: TypeLimits | None) -> Settings:
    """The settings a job type's attempts are counted against: ``settings`` with the type's own
    ``max_attempts`` (total attempts, the first included) when ``limits`` has one."""
    if limits is None or limits.max_attempts is None or limits.max_attempts == settings.max_attempts:
        return settings
    return dataclasses.replace(settings, max_attempts=limits.max_attempts)


def job_timeout_s(job_type: str, settings: Settings, limits: TypeLimits | None = None) -> float:
    """The timeout of a job type in seconds: its own (``limits``), else ``timeout_ingest_s``,
    ``timeout_preview_s`` or ``timeout_save_s``; other types get the longest of the three.
    """
    if limits is not None and limits.timeout_s is not None:
        return limits.timeout_s
    timeouts = {"ingest": settings.timeout_ingest_s, "preview": settings.timeout_preview_s, "save": settings.timeout_save_s}
    return timeouts.get(job_type, max(timeouts.values()))


def timed_out(claimed_at: dt.datetime, now: dt.datetime, timeout_s: float) -> bool:
    """``True`` once ``timeout_s`` seconds have passed since the claim (both UTC datetimes)."""
    return (now - claimed_at).total_seconds() >= timeout_s


def timeout_error(timeout_s: float) -> str:
    """The error of a timed-out job: ``timed out after 600 s``."""
    return f"timed out after {timeout_s:g} s"


def heartbeat_due(last_append_at: dt.datetime, now: dt.datetime, lease_ttl_s: float) -> bool:
    """``True`` when the worker appended nothing for the job for at least ``lease_ttl_s / 3`` seconds.

    Args:
        last_append_at: UTC time of the job's latest event (``JobState.updated_at``).
        now: the current UTC time.
        lease_ttl_s: the lease length in seconds.
    """
    return (now - last_append_at).total_seconds() >= lease_ttl_s / 3


def parse_worker_id(worker_id: str) -> tuple[str, int] | None:
    """Split a worker id ``host:pid:n`` into ``(host, pid)``; ``None`` if it has another shape.

    The host part may itself contain ``:`` (a ``JOBTAPE_HOST_ID`` override); pid and n are
    the last two fields.
    """
    parts = worker_id.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1])
