"""Riding out an event-store outage: back off, then find out whether an in-doubt append landed.

A networked store (libSQL) raises :class:`jobtape.errors.StoreUnavailable` when it cannot
be reached. For a read that only means "try later". For a write it may mean "written, but
the answer was lost" (``in_doubt``). Retrying blindly would be safe from duplicates (the
version guard refuses the second copy) but would misreport the first: the retry fails its
guard and the worker would think another actor took the job. So after an in-doubt append
the worker waits for the store, reads the stream past the version it appended on, and
decides: the events it sent are there (written by it) -> adopt the new state; the stream
is still at the old version -> not written, append again; anything else -> another actor
moved the stream, and the normal guarded append reports that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository

__all__ = ["Backoff", "resolve_in_doubt"]

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff delays: ``first_s``, doubled on every :meth:`next`, capped at ``cap_s``.

    Args:
        first_s: the first delay, in seconds.
        cap_s: the largest delay, in seconds.
    """

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self._next_s = first_s

    def next(self) -> float:
        """The delay to wait now, in seconds; the following one is twice as long (up to the cap)."""
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        """Start again at ``first_s`` (call after a success)."""
        self._next_s = self.first_s


def resolve_in_doubt(
    repository: JobRepository,
    job_id: str,
    before: job_state.JobState,
    events: Sequence[ev.Event],
    actor: str,
    *,
    stop: threading.Event | None = None,
    max_wait_s: float = 300.0,
) -> job_state.JobState | None:
    """Wait for the store, then tell whether an append of ``events`` on ``before`` was written.

    Args:
        repository: the job repository.
        job_id: the stream appended to.
        before: the state the append was guarded by.
        events: the events that were sent.
        actor: who sent them (the worker id).
        stop: if set while waiting, give up (raises the last ``StoreUnavailable``).
        max_wait_s: longest wait for the store, in seconds.

    Returns:
        The job's current state if the events were written by this append; ``None`` if they
        were not (the caller may append them again; its guard catches any other writer).

    Raises:
        errors.StoreUnavailable: the store stayed unreachable for ``max_wait_s`` (or ``stop`` was set).
    """
    backoff = Backoff()
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            current = repository.load(job_id)
            if current is None or current.version != before.version + len(events):
                return None
            written = repository.store.read_stream(job_id, from_version=before.version + 1)
            mine = [r.event for r in written if r.actor == actor] == list(events)
            return current if mine and len(written) == len(events) else None
        except errors.StoreUnavailable as exc:
            delay = backoff.next()
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            log.warning("job %s: %s; checking the in-doubt append again in %.1f s", job_id, exc.message, delay)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
