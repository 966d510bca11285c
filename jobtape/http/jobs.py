"""Routes on one job: poll its state, request its cancellation, list its events.

Each is served on two paths, ``/api/audio/jobs/{jobId}/...`` (the seed's) and the generic
``/api/jobs/{jobId}/...``: one handler, so the same answers for a job of any type.

The cancel and events handlers are synchronous (the event store is synchronous SQLite) and
run in a worker thread; the poll reads its one row inline (see :func:`poll_route`). Their
dependencies are injected by :func:`jobtape.http.app.create_app`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send

from jobtape import errors
from jobtape.audit import timeparse
from jobtape.auth import principal as auth
from jobtape.auth import redaction
from jobtape.eventlog import events as ev
from jobtape.http import auth as http_auth
from jobtape.http import downloads, history, openapi, schemas
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = [
    "FAST_PATH_OPT",
    "AsOfQuery",
    "FastPath",
    "JobIdPath",
    "PollSources",
    "cancel_job",
    "check_job_id",
    "list_job_events",
    "owner_of_stream",
    "poll_body",
    "poll_route",
    "to_event_view",
    "to_job_view",
]

_JOB_ID = re.compile(openapi.JOB_ID_PATTERN)
#: The ``{jobId}`` path parameter (see :data:`openapi.JobIdPath`).
JobIdPath = openapi.JobIdPath
#: The ``asOf`` query parameter: an RFC 3339 date-time, ``now`` or a relative time (``-10m``).
AsOfQuery = Annotated[
    str | None,
    QueryParameter(
        name="asOf",
        description=history.AS_OF_DESCRIPTION,
        min_length=1,
        max_length=64,
        schema_extra={**openapi.OPTIONAL_STRING, "anyOf": [{"format": "date-time"}, {"pattern": timeparse.RELATIVE_PATTERN}]},
    ),
]

_BAD_ID = openapi.error("jobId is not 32 lowercase hexadecimal characters, or asOf is empty or too long")
_NOT_FOUND = openapi.error("No job has this id")
_BAD_AS_OF = openapi.error("asOf is neither a date-time nor a relative time like -10m, or is out of range")
_NO_STORE = CacheControlHeader(no_store=True)
#: The route ``opt`` key of a route's :data:`FastPath` (:class:`jobtape.http.auth.AuthMiddleware` calls it).
FAST_PATH_OPT = http_auth.FAST_PATH_OPT
#: ``fast(scope, receive, send, principal) -> answered``: answer a request straight on the ASGI ``send``
#: (``True``), or leave it to the route's handler (``False``: nothing was sent and nothing received).
FastPath = Callable[[Scope, Receive, Send, auth.Principal], Awaitable[bool]]
_ENCODER = msgspec.json.Encoder()
#: The poll's answer headers, in the order and spelling Litestar sends them (``cache_control``, then the media type).
_POLL_HEADERS = ((b"cache-control", _NO_STORE.to_header().encode("latin-1")), (b"content-type", b"application/json"))


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is 32 lowercase hex digits.

    Raises:
        ClientException: 400 ``jobId must be 32 hexadecimal characters``.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ClientException(detail="jobId must be 32 hexadecimal characters")
    return job_id


def to_job_view(state: job_state.JobState, queue_position: int | None) -> schemas.JobView:
    """Build the poll body from a job's state and its queue position (``None`` unless pending)."""
    return schemas.JobView(
        job_id=state.job_id,
        type=state.job_type,
        status=state.status,
        progress=state.progress,
        stage=state.stage,
        queue_position=queue_position if state.status == "pending" else None,
        not_before=state.not_before if state.status == "pending" else None,
        result=state.result,
        error=state.error,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


def poll_body(state: job_state.JobState, queue_position: int | None, storage: Storage, download_url_ttl_s: int) -> schemas.JobView:
    """The poll's body: :func:`to_job_view` plus, for a complete job with an output, its signed ``downloadUrl``.

    The SSE ``state`` message sends the same body (:mod:`jobtape.http.stream`).

    Args:
        state: the job's state.
        queue_position: its place among pending jobs (``None`` unless pending).
        storage: signs the link (:func:`downloads.download_url_for`; a failure only leaves it out).
        download_url_ttl_s: seconds the link stays valid.
    """
    view = to_job_view(state, queue_position)
    url = downloads.download_url_for(state, storage, download_url_ttl_s)
    return msgspec.structs.replace(view, download_url=url) if url is not None else view


def to_event_view(recorded: ev.RecordedEvent, *, redact: bool = False) -> schemas.EventView:
    """Build one entry of the events route; ``data`` is the event's fields as JSON builtins.

    Args:
        recorded: the event.
        redact: show it as an owner sees it, without server paths, host ids, pids or argv
            (:func:`jobtape.auth.redaction.redact`); ``False`` for ``admin``.
    """
    data: dict[str, Any] = msgspec.to_builtins(ev.event_fields(recorded.event))
    actor = recorded.actor
    if redact:
        data, actor = redaction.redact(recorded.type, data, actor)
    return schemas.EventView(
        position=recorded.position,
        version=recorded.version,
        type=recorded.type,
        data=data,
        actor=actor,
        recorded_at=recorded.recorded_at,
    )


def owner_of_stream(recorded: list[ev.RecordedEvent]) -> str:
    """The owner of a job from its events (non-empty, version order): its ``job.created``'s ``owner``."""
    first = recorded[0].event
    return first.owner if isinstance(first, ev.JobCreated) else "anonymous"


class PollSources(NamedTuple):
    """What a poll reads: :func:`poll_route` closes over it (an app's routes may take it as the dependency ``poll_sources``).

    Attributes:
        repository: the jobs' states.
        storage: signs a complete job's ``downloadUrl``.
        download_url_ttl_s: seconds a ``downloadUrl`` stays valid (``Settings.download_url_ttl_s``).
    """

    repository: JobRepository
    storage: Storage
    download_url_ttl_s: int


def poll_route(sources: PollSources, *, fast_path: bool = True) -> HTTPRouteHandler:
    """The poll route (:func:`get_job`'s handler) reading through ``sources``.

    The handler closes over ``sources`` rather than having them injected: Litestar resolves a
    dependency per request (its kwargs model and an exit stack), which the poll need not pay
    (issue 12, ``bench/poll.py``). ``poll_sources`` stays a dependency for an app's routes.

    Args:
        sources: what the poll reads.
        fast_path: put the route's :data:`FastPath` in its ``opt`` (default): the
            authentication middleware answers the common poll itself, the same bytes as the
            handler, without Litestar's per-request handler work; ``False``: the handler
            answers every poll (the reference of the fast path's test).
    """
    repository, storage, ttl_s = sources.repository, sources.storage, sources.download_url_ttl_s

    async def fast(scope: Scope, receive: Receive, send: Send, principal: auth.Principal) -> bool:
        """The common poll (no ``asOf``, a local read, a visible job, a local or no link) answered on ``send``.

        Litestar's per-request work for a handler (a ``Request``, its kwargs model and
        signature model, a ``Response`` and its headers) is about a fifth of a poll's CPU
        (issue 12, ``bench/poll.py``); this answers the same status, headers and body bytes
        (``tests/integration/test_poll_fast_path.py``) without it. Anything else (a query
        string, a malformed, missing or another owner's id, a store error, a remote backend,
        object storage) returns ``False`` before sending, and the handler below answers it as
        before (errors through the app's exception handlers). Middleware outside the
        authentication middleware (CORS) still wraps the answer; the app sets no response
        hooks or app-wide response headers, which the fast path would skip.
        """
        if scope.get("method") != "GET" or scope["query_string"] or not repository.local_reads:
            return False
        job_id = scope["path_params"].get("jobId")
        if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
            return False
        try:
            state, position = repository.get_with_position(job_id)
        except Exception:  # noqa: BLE001 - the handler reads again and answers the error
            return False
        if not principal.may_see(state.owner) or not (storage.local_files or job_state.download_key(state) is None):
            return False
        body = _ENCODER.encode(poll_body(state, position, storage, ttl_s))
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_POLL_HEADERS, (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    @get(
        ["/api/audio/jobs/{jobId:str}", "/api/jobs/{jobId:str}"],
        operation_id=openapi.operation_id("get_job"),
        cache_control=_NO_STORE,
        summary="Poll a job",
        description="Status, stage, progress (0-100 within the stage), queue position while pending, "
        "and the result or error once finished; with asOf, as folded from the events recorded up to then.",
        responses={400: _BAD_ID, 404: _NOT_FOUND, 422: _BAD_AS_OF, **openapi.STORE_READ_ERRORS},
        tags=["jobs"],
        opt={http_auth.SCOPE_OPT: auth.JOBS_READ, FAST_PATH_OPT: fast if fast_path else None},
    )
    async def get_job(request: Request[Any, Any, Any], jobId: JobIdPath, as_of: AsOfQuery = None) -> schemas.JobView:
        """Return the job's current state, or its state at ``asOf``.

        A complete job whose result holds a storage key gets ``downloadUrl`` (seed 001), valid
        ``settings.download_url_ttl_s`` seconds; a failure to sign only leaves it out.

        The current state is read inline on the event loop, without a hop to a worker thread
        (issue 12, measured by ``bench/poll.py``): the ``jobs`` row and, for a pending job, its
        queue position from a few ``queue_counts`` rows, all by primary key and in ONE
        statement (:meth:`JobRepository.get_with_position`), on an idle connection of the
        SQLite backend's pool (:class:`jobtape.eventlog.sqlite.SQLiteBackend`, whose
        ``local_reads`` is true; a connection is opened only when none is idle), in WAL mode,
        where a reader never waits for a writer.
        So is the ``downloadUrl`` of a complete job on local storage (``Storage.local_files``:
        ``storage.exists`` is a ``stat``, the signature an HMAC). What may block longer runs in a
        worker thread: ``asOf`` (it folds the job's events, and the whole log for a queue
        position then), and the ``downloadUrl`` on object storage (a HEAD request).
        A remote backend (libSQL/sqld: each read is an HTTP request) keeps every read in a thread.

        A job of another owner is a 404 like a missing one, unless the principal holds ``admin``
        (:func:`jobtape.http.auth.require_visible`), so only its owner gets its ``downloadUrl``.

        Raises:
            ClientException: 400, malformed job id.
            errors.JobNotFound: 404 (also when the job did not exist yet at ``asOf``, or is another owner's).
            errors.InvalidTimeSpec: 422, ``asOf`` is not a time.
        """
        job_id = check_job_id(jobId)
        principal = http_auth.principal_of(request)
        if as_of is not None:
            at = history.parse_as_of(as_of)
            state, position = await anyio.to_thread.run_sync(history.state_as_of, repository.store, job_id, at)
            http_auth.require_visible(principal, state.owner, errors.JobNotFound(job_id))
            return await anyio.to_thread.run_sync(poll_body, state, position, storage, ttl_s)
        if not repository.local_reads:
            return await anyio.to_thread.run_sync(_poll_now, repository, job_id, storage, ttl_s, principal)
        state, position = repository.get_with_position(job_id)
        http_auth.require_visible(principal, state.owner, errors.JobNotFound(job_id))
        if storage.local_files or job_state.download_key(state) is None:
            return poll_body(state, position, storage, ttl_s)  # a stat and an HMAC at most
        return await anyio.to_thread.run_sync(poll_body, state, position, storage, ttl_s)

    return get_job


def _poll_now(repository: JobRepository, job_id: str, storage: Storage, ttl_s: int, principal: auth.Principal) -> schemas.JobView:
    state, position = repository.get_with_position(job_id)
    http_auth.require_visible(principal, state.owner, errors.JobNotFound(job_id))
    return poll_body(state, position, storage, ttl_s)


class _AlreadyTerminalError(Exception):
    """Carries the status out of ``decide`` when the freshly loaded job cannot be cancelled."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@post(
    ["/api/audio/jobs/{jobId:str}/cancel", "/api/jobs/{jobId:str}/cancel"],
    operation_id=openapi.operation_id("cancel_job"),
    sync_to_thread=True,
    status_code=200,
    summary="Cancel a job",
    description="A pending job is cancelled at once; a processing one shows status 'cancelled' with "
    "stage 'cancelling' until its worker confirms its child processes are gone.",
    responses={
        400: _BAD_ID,
        404: _NOT_FOUND,
        409: ResponseSpec(schemas.TerminalConflict, description="The job is complete, failed or cancelled already"),
        **openapi.STORE_ERRORS,
    },
    tags=["jobs"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_CANCEL},
)
def cancel_job(request: Request[Any, Any, Any], jobId: JobIdPath, repository: NamedDependency[JobRepository]) -> schemas.CancelAccepted:
    """Append ``job.cancel_requested`` unless the job is in a terminal state.

    The terminal-state check runs inside ``decide`` on the state loaded for that very
    append, so a concurrent change is retried by :meth:`JobRepository.execute` rather
    than decided on a stale read. The event's actor is the principal's (``key:<id>``,
    ``jwt:<sub>``, ``proxy:<owner>``; ``api`` with ``--auth off``).

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404 (also for another owner's job, unless ``admin``).
        HTTPException: 409 ``{"error": "Job already in terminal state", "status": ...}``.
    """
    check_job_id(jobId)
    principal = http_auth.principal_of(request)

    def decide(current: job_state.JobState | None) -> list[ev.Event]:
        if current is None:
            raise errors.JobNotFound(jobId)
        http_auth.require_visible(principal, current.owner, errors.JobNotFound(jobId))
        if current.status in job_state.TERMINAL_STATUSES:
            raise _AlreadyTerminalError(current.status)
        return [ev.JobCancelRequested(reason="requested through the HTTP API")]

    try:
        repository.execute(jobId, decide, actor=principal.actor)
    except _AlreadyTerminalError as exc:
        raise HTTPException(status_code=409, detail="Job already in terminal state", extra={"status": exc.status}) from None
    return schemas.CancelAccepted(job_id=jobId)


@get(
    ["/api/audio/jobs/{jobId:str}/events", "/api/jobs/{jobId:str}/events"],
    operation_id=openapi.operation_id("list_job_events"),
    sync_to_thread=True,
    cache_control=_NO_STORE,
    summary="List a job's events",
    description="Every event of the job's stream in version order, as recorded; with asOf, those recorded up to then.",
    responses={400: _BAD_ID, 404: _NOT_FOUND, 422: _BAD_AS_OF, **openapi.STORE_READ_ERRORS},
    tags=["jobs"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_READ},
)
def list_job_events(
    request: Request[Any, Any, Any], jobId: JobIdPath, repository: NamedDependency[JobRepository], as_of: AsOfQuery = None
) -> schemas.EventList:
    """Return the job's events in version order (up to ``asOf`` if given).

    An owner sees them without server paths, host ids, pids or argv
    (:mod:`jobtape.auth.redaction`); ``admin`` sees them as recorded.

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404 (the stream is empty, started after ``asOf``, or is another owner's job).
        errors.InvalidTimeSpec: 422, ``asOf`` is not a time.
    """
    principal = http_auth.principal_of(request)
    if as_of is not None:
        at = history.parse_as_of(as_of)
        recorded = history.events_as_of(repository.store, check_job_id(jobId), at)
    else:
        recorded = repository.store.read_stream(check_job_id(jobId))
        if not recorded:
            raise errors.JobNotFound(jobId)
    http_auth.require_visible(principal, owner_of_stream(recorded), errors.JobNotFound(jobId))
    redact = not principal.is_admin
    return schemas.EventList(job_id=jobId, events=[to_event_view(item, redact=redact) for item in recorded])
