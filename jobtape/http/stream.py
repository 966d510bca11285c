"""``GET /api/audio/jobs/{jobId}/stream``: a job's live progress as Server-Sent Events.

The stream follows the event log, not the process: it polls the store for the job's
events after the last version it sent (every :data:`POLL_INTERVAL_S`), so it shows the
work of a worker in another process or on another host. Messages::

    event: state     id: <position>   data: the poll body (JobView) folded from the log, first
    event: event     id: <position>   data: one recorded event (EventView), as appended
    : keepalive                       a comment every KEEPALIVE_S seconds without events

The response ends after the terminal event (completed, failed, cancelled, or the cancel
of a pending job); for a job that has finished already, right after the state. When the
client goes away, Litestar cancels the generator at its next await and the polling stops.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio.to_thread
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import ServerSentEvent, ServerSentEventMessage

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.http import jobs, schemas
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository

__all__ = ["KEEPALIVE_S", "POLL_INTERVAL_S", "follow_job", "stream_job"]

#: Seconds between two reads of the log while the job runs.
POLL_INTERVAL_S = 0.2
#: Seconds without events after which a keepalive comment is sent (keeps proxies from closing).
KEEPALIVE_S = 15.0

_ENCODER = msgspec.json.Encoder()


def _message(kind: str, position: int, body: msgspec.Struct) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=kind, id=position, data=_ENCODER.encode(body).decode())


async def follow_job(
    repository: JobRepository, recorded: list[ev.RecordedEvent], *, poll_interval_s: float = POLL_INTERVAL_S
) -> AsyncIterator[ServerSentEventMessage]:
    """Yield the job's state, then each newly appended event, until the terminal event.

    Args:
        repository: the job log (its store is read in a worker thread).
        recorded: the job's events read so far (non-empty, version order).
        poll_interval_s: seconds between two reads of the log.

    Raises:
        errors.IllegalTransition: the stored stream breaks the state rules.
    """
    state = job_state.fold(recorded)
    assert state is not None
    place = await anyio.to_thread.run_sync(repository.queue_position, state.job_id) if state.status == "pending" else None
    yield _message("state", recorded[-1].position, jobs.to_job_view(state, place))
    job_id, quiet_since = state.job_id, time.monotonic()
    while not state.finished:
        await anyio.sleep(poll_interval_s)
        after = state.version
        new = await anyio.to_thread.run_sync(lambda: repository.store.read_stream(job_id, from_version=after + 1))
        for item in new:
            state = job_state.apply(state, item.event, job_id=item.job_id, version=item.version,
                                    recorded_at=item.recorded_at)
            yield _message("event", item.position, jobs.to_event_view(item))
            quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield ServerSentEventMessage(comment="keepalive")
            quiet_since = time.monotonic()


@get(
    "/api/audio/jobs/{job_id:str}/stream",
    summary="Follow a job live (Server-Sent Events)",
    description="text/event-stream: first `event: state` (the poll body), then one `event: event` per appended "
    "event (the events route's entries), closing after the terminal event. Follows the log, so it works with "
    "workers in other processes.",
    responses={400: ResponseSpec(schemas.ErrorBody, description="jobId is not 32 lowercase hexadecimal characters"),
               404: ResponseSpec(schemas.ErrorBody, description="No job has this id")},
    tags=["jobs"],
)
async def stream_job(job_id: jobs.JobIdPath, repository: NamedDependency[JobRepository]) -> ServerSentEvent:
    """Open the job's event stream.

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404, before the stream starts.
    """
    recorded = await anyio.to_thread.run_sync(repository.store.read_stream, jobs.check_job_id(job_id))
    if not recorded:
        raise errors.JobNotFound(job_id)
    return ServerSentEvent(follow_job(repository, recorded), headers={"Cache-Control": "no-store"})
