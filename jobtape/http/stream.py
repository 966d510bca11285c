"""``GET /api/audio/jobs/{jobId}/stream`` (and ``/api/jobs/{jobId}/stream``): a job's live progress as Server-Sent Events.

The stream follows the event log, not the process: it polls the store for the job's
events after the last version it sent (every :data:`POLL_INTERVAL_S`), so it shows the
work of a worker in another process or on another host. Messages::

    event: state     id: <version>    data: the poll body (JobView, downloadUrl included) folded from the log, first
    event: event     id: <version>    data: one recorded event (EventView), as appended
    : keepalive                       a comment every KEEPALIVE_S seconds without events

Every ``id`` is a version of the job's stream (the state's is the version of the last event
folded into it), so a client that reconnects with the ``Last-Event-ID`` header (WHATWG
HTML, "Server-sent events", which ``EventSource`` sends by itself) resumes after that
version: it gets the events recorded since, and no ``state`` message, since it has seen
everything the state would tell it. Without the header a stream starts with the state.

The response ends after the terminal event (completed, failed, cancelled, or the cancel
of a pending job); for a job that has finished already, right after the state. A
reconnect whose ``Last-Event-ID`` is the finished job's last version is answered
``204 No Content``, which tells ``EventSource`` to stop reconnecting (same spec). When the
client goes away, Litestar cancels the generator at its next await and the polling stops.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from jobtape import errors
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.http import auth as http_auth
from jobtape.http import jobs, openapi, schemas
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = ["KEEPALIVE_S", "POLL_INTERVAL_S", "follow_job", "parse_last_event_id", "stream_job"]

#: Seconds between two reads of the log while the job runs.
POLL_INTERVAL_S = 0.2
#: Seconds without events after which a keepalive comment is sent (keeps proxies from closing).
KEEPALIVE_S = 15.0

_ENCODER = msgspec.json.Encoder()
# 18 digits stay below SQLite's 64-bit integers; no stream gets anywhere near that long.
_VERSION = re.compile(r"[0-9]{1,18}")
_LAST_EVENT_ID_HELP = (
    "Last-Event-ID must be the id of the last message received from this stream: a version number (1 to 18 digits, like 12)"
)

LastEventIdHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        description="Resume after this version (the `id` of the last message received), as EventSource "
        "sends it on a reconnect: only the later events follow, without the initial state. Digits only; "
        "empty means none.",
        required=False,
        schema_extra={**openapi.OPTIONAL_STRING, "pattern": r"^[0-9]{0,18}$"},  # checked by parse_last_event_id
    ),
]


def parse_last_event_id(text: str | None) -> int | None:
    """Parse the ``Last-Event-ID`` header into the version to resume after.

    Args:
        text: the header's value; ``None`` or empty means none (browsers do not send an
            empty last event ID, WHATWG HTML "Server-sent events").

    Returns:
        The version (0 or more) or ``None`` to start with the job's state.

    Raises:
        ClientException: 400, the value is not a version number.
    """
    if not text:
        return None
    if not _VERSION.fullmatch(text):
        raise ClientException(detail=f"{_LAST_EVENT_ID_HELP}; got {text[:40]!r}")
    return int(text)


def _message(kind: str, version: int, body: msgspec.Struct) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=kind, id=version, data=_ENCODER.encode(body).decode())


async def follow_job(
    repository: JobRepository,
    recorded: list[ev.RecordedEvent],
    *,
    last_event_id: int | None = None,
    poll_interval_s: float = POLL_INTERVAL_S,
    body: Callable[[job_state.JobState, int | None], schemas.JobView] = jobs.to_job_view,
    redact: bool = False,
) -> AsyncIterator[ServerSentEventMessage]:
    """Yield the job's messages until its terminal event; each message's id is a version.

    Without ``last_event_id``: the state folded from ``recorded``, then each newly appended
    event. With it: the events of ``recorded`` after that version, then each newly appended
    event (no state: the client has it).

    Args:
        repository: the job log (its store is read in a worker thread).
        recorded: the job's events read so far (non-empty, version order).
        last_event_id: the version the client received last (``Last-Event-ID``), or ``None``.
        poll_interval_s: seconds between two reads of the log.
        body: the ``state`` message's body from a state and its queue position: the
            poll's (:func:`jobtape.http.jobs.poll_body`, with ``downloadUrl``).
        redact: send the events as an owner sees them (:func:`jobtape.http.jobs.to_event_view`).

    Raises:
        errors.IllegalTransition: the stored stream breaks the state rules.
    """
    state = job_state.fold(recorded)
    assert state is not None
    job_id = state.job_id
    if last_event_id is None:
        pending = state.status == "pending"
        place = await anyio.to_thread.run_sync(repository.queue_position, job_id) if pending else None
        yield _message("state", state.version, body(state, place))
    else:
        for item in recorded:
            if item.version > last_event_id:
                yield _message("event", item.version, jobs.to_event_view(item, redact=redact))
    quiet_since = time.monotonic()
    while not state.finished:
        await anyio.sleep(poll_interval_s)
        read_new = functools.partial(repository.store.read_stream, job_id, from_version=state.version + 1)
        new = await anyio.to_thread.run_sync(read_new)
        for item in new:
            state = job_state.apply(state, item.event, job_id=item.job_id, version=item.version, recorded_at=item.recorded_at)
            yield _message("event", item.version, jobs.to_event_view(item, redact=redact))
            quiet_since = time.monotonic()
        if time.monotonic() - quiet_since >= KEEPALIVE_S:
            yield ServerSentEventMessage(comment="keepalive")
            quiet_since = time.monotonic()


@get(
    ["/api/audio/jobs/{jobId:str}/stream", "/api/jobs/{jobId:str}/stream"],
    operation_id=openapi.operation_id("stream_job"),
    media_type="text/event-stream",
    summary="Follow a job live (Server-Sent Events)",
    description="text/event-stream: first `event: state` (the poll body), then one `event: event` per appended "
    "event (the events route's entries), closing after the terminal event; every `id` is a version of the job's "
    "stream. With `Last-Event-ID` (an EventSource reconnect) only the events after that version, without the "
    "state; 204 once that was the finished job's last event. Follows the log, so it works with workers in "
    "other processes.",
    responses={
        204: ResponseSpec(
            None, description="Last-Event-ID is the finished job's last version: nothing more will come (EventSource stops reconnecting)"
        ),
        400: openapi.error("jobId is not 32 lowercase hexadecimal characters, or Last-Event-ID is not a version number"),
        409: openapi.error("Last-Event-ID is past this job's latest version (the log was restored or imported): reconnect without it"),
        404: openapi.error("No job has this id"),
        **openapi.STORE_READ_ERRORS,
    },
    tags=["jobs"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_READ},
)
async def stream_job(
    request: Request[Any, Any, Any],
    jobId: jobs.JobIdPath,
    repository: NamedDependency[JobRepository],
    storage: NamedDependency[Storage],
    settings: NamedDependency[Settings],
    last_event_id: LastEventIdHeader = None,
) -> Response[Any]:
    """Open the job's event stream, or resume it after ``Last-Event-ID``.

    Raises:
        ClientException: 400, malformed job id, or a ``Last-Event-ID`` that is not a version.
        HTTPException: 409, a ``Last-Event-ID`` past the job's latest version.
        errors.JobNotFound: 404, before the stream starts (also for another owner's job, unless ``admin``).
    """
    principal = http_auth.principal_of(request)
    resume_after = parse_last_event_id(last_event_id)
    recorded = await anyio.to_thread.run_sync(repository.store.read_stream, jobs.check_job_id(jobId))
    if not recorded:
        raise errors.JobNotFound(jobId)
    http_auth.require_visible(principal, jobs.owner_of_stream(recorded), errors.JobNotFound(jobId))
    if resume_after is not None:
        latest = recorded[-1].version
        if resume_after > latest:
            raise HTTPException(
                status_code=409,
                detail=f"Last-Event-ID {resume_after} is past this job's latest version {latest}; "
                "reconnect without Last-Event-ID to start from the job's current state",
            )
        current = job_state.fold(recorded)
        if resume_after == latest and current is not None and current.finished:
            return Response(content=None, status_code=204, media_type=MediaType.TEXT)
    return ServerSentEvent(
        follow_job(
            repository,
            recorded,
            last_event_id=resume_after,
            body=lambda state, place: jobs.poll_body(state, place, storage, settings.download_url_ttl_s),
            redact=not principal.is_admin,
        ),
        headers={"Cache-Control": "no-store"},
    )
