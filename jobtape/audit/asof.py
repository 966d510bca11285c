"""Job states as they were at a moment: the fold over each stream's events up to a time (pure).

A stream's events are taken in version order up to the first one recorded after the
time (so a clock that stepped back on one host cannot put a gap into the fold). Queue
positions follow the live projection's rule (:func:`jobtape.projections.queue.queue_position`):
1 + the number of jobs pending at that moment with a smaller created position.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state

__all__ = ["JobAsOf", "jobs_as_of", "state_as_of", "stream_as_of"]


def stream_as_of(recorded: Sequence[ev.RecordedEvent], at: dt.datetime) -> list[ev.RecordedEvent]:
    """The prefix of one stream (version order) recorded at or before ``at`` (aware UTC)."""
    prefix = []
    for item in recorded:
        if item.recorded_at > at:
            break
        prefix.append(item)
    return prefix


def state_as_of(recorded: Sequence[ev.RecordedEvent], at: dt.datetime) -> job_state.JobState | None:
    """The job's state folded from its events up to ``at``; ``None`` if it did not exist yet.

    Raises:
        errors.IllegalTransition: the stored stream breaks the state rules.
    """
    return job_state.fold(stream_as_of(recorded, at))


class JobAsOf(msgspec.Struct, frozen=True, kw_only=True):
    """One job at a moment.

    Attributes:
        state: the folded state.
        created_position: the global position of its ``job.created``.
        queue_position: 1-based place among the jobs pending then; ``None`` unless pending.
    """

    state: job_state.JobState
    created_position: int
    queue_position: int | None = None


def jobs_as_of(recorded: Iterable[ev.RecordedEvent], at: dt.datetime) -> list[JobAsOf]:
    """Fold every stream up to ``at``.

    Args:
        recorded: the whole log in position order (e.g. :meth:`EventStore.iter_all`).
        at: the moment, aware UTC.

    Returns:
        The jobs that existed at ``at``, ordered by created position.

    Raises:
        errors.IllegalTransition: a stored stream breaks the state rules; the reason names
            the position.
    """
    states: dict[str, job_state.JobState] = {}
    created: dict[str, int] = {}
    cut: set[str] = set()
    for item in recorded:
        if item.job_id in cut:
            continue
        if item.recorded_at > at:
            cut.add(item.job_id)
            continue
        try:
            states[item.job_id] = job_state.apply(
                states.get(item.job_id), item.event, job_id=item.job_id, version=item.version, recorded_at=item.recorded_at
            )
        except errors.IllegalTransition as exc:
            raise errors.IllegalTransition(
                exc.job_id, exc.status, exc.event_type, f"{exc.reason} (stored event at position {item.position})"
            ) from exc
        created.setdefault(item.job_id, item.position)
    ordered = sorted(states, key=created.__getitem__)
    pending = [job_id for job_id in ordered if states[job_id].status == "pending"]
    places = {job_id: n for n, job_id in enumerate(pending, start=1)}
    return [JobAsOf(state=states[job_id], created_position=created[job_id], queue_position=places.get(job_id)) for job_id in ordered]
