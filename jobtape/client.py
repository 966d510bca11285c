"""The HTTP client of a jobtape server: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio or trio), on httpx.

::

    import jobtape

    with jobtape.Client("http://127.0.0.1:8000", client_id="alice") as client:
        job_id = client.submit("sum", {"a": 2, "b": 3}, idempotency_key="order-17")
        view = client.wait(job_id, timeout_s=60)        # follows the job's SSE stream
        print(view.status, view.result)                 # complete {'sum': 5}

They speak the generic job routes of ``jobtape serve`` (any app given with ``--app``)::

    POST /api/jobs                      {"type", "params"} -> 202 {"success": true, "data": {"jobId", "status"}}
    GET  /api/jobs/{jobId}              the poll body (:class:`JobView`); ?asOf= for the past
    POST /api/jobs/{jobId}/cancel       200, or 409 once the job is finished
    GET  /api/jobs/{jobId}/events       {"jobId", "events": [...]} (:class:`EventView`); ?asOf=
    GET  /api/jobs/{jobId}/stream       Server-Sent Events, resumed with Last-Event-ID

One implementation builds the requests and decodes the answers (:class:`_Calls`,
:class:`_Follow`); the two classes only do the I/O, so they cannot drift apart. The SSE
lines are parsed by ``httpx-sse``.

Errors are the classes of :mod:`jobtape.errors` the server raised, rebuilt from the status
code and the server's message (``{"error": ...}``, which the exception carries verbatim):

========  =====================================================================================
status    raised
========  =====================================================================================
401       :class:`~jobtape.errors.Unauthenticated` (no valid ``token``)
403       :class:`~jobtape.errors.Forbidden` (the token lacks the scope)
404       :class:`~jobtape.errors.JobNotFound` (on a job's routes; also another owner's job)
409       :class:`~jobtape.errors.IllegalTransition` (cancel of a finished job; ``status`` is set),
          :class:`~jobtape.errors.DuplicateIdempotencyKey` (submit),
          :class:`~jobtape.errors.ConflictError` (anything else: re-read the job and decide again)
422       :class:`~jobtape.errors.UnknownJobType` (submit; ``registered``: the types the server accepts),
          :class:`~jobtape.errors.InvalidParams`, :class:`~jobtape.errors.IdempotencyKeyReused`
          (submit; told apart by the message, matched with the formats of the classes themselves),
          :class:`~jobtape.errors.InvalidTimeSpec` (``as_of``)
429       :class:`~jobtape.errors.QuotaExceeded` (``retry_after_s`` from ``Retry-After``)
503       :class:`~jobtape.errors.StoreUnavailable` (``retry_after_s`` from ``Retry-After``;
          ``in_doubt`` for a submit: the job may or may not have been created)
507       :class:`~jobtape.errors.StoreFull`
other 4xx :class:`~jobtape.errors.RequestRejected` (a :class:`~jobtape.errors.RequestError`)
other 5xx :class:`~jobtape.errors.ServerError`
========  =====================================================================================

The server could not be reached at all: :class:`~jobtape.errors.ServerUnreachable`.
:meth:`Client.wait` past its deadline: :class:`~jobtape.errors.WaitTimedOut` (also a
:class:`TimeoutError`). These four client-side classes are in :mod:`jobtape.errors`, so
``except jobtape.errors.ServerUnreachable`` works, and importable from this module too
(``jobtape.client.ServerUnreachable``). Every error the client raises is a
:class:`~jobtape.errors.JobtapeError` whose :attr:`~jobtape.errors.JobtapeError.status_code`
is the answer's HTTP status (``None`` for the last two: no answer).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent

from jobtape import errors

__all__ = [
    "AsyncClient",
    "Client",
    "EventView",
    "JobView",
    "RequestRejected",
    "ServerError",
    "ServerUnreachable",
    "WaitTimedOut",
    "raise_for_response",
]

#: Seconds a request may take by default (connect, read, write each).
DEFAULT_TIMEOUT_S = 30.0
#: Longest pause, in seconds, between two attempts to reconnect a dropped stream.
MAX_RECONNECT_PAUSE_S = 2.0

_T = TypeVar("_T")


class JobView(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """The poll body of a job, as the server sends it (``GET /api/jobs/{jobId}``; the SSE ``state`` message).

    The decoding side of :class:`jobtape.http.schemas.JobView` (a test keeps the two in step);
    unknown fields a newer server adds are ignored.

    Attributes:
        job_id: 32 lowercase hex digits.
        type: the job type's name.
        status: ``pending``, ``processing``, ``complete``, ``failed`` or ``cancelled``.
        progress: 0-100 percent within the current stage.
        stage: the stage name (``cancelling`` while a cancel awaits the worker), or ``None``.
        queue_position: 1-based place among pending jobs while ``pending``, else ``None``.
        not_before: while ``pending`` after a retry or a lost lease, the UTC time before
            which no worker claims it (the backoff), else ``None``.
        result: the handler's result once ``complete``, else ``None``.
        error: the failure message once ``failed``, else ``None``.
        created_at: UTC time of the job's first event.
        updated_at: UTC time of the job's latest event.
        download_url: a time-limited URL of the job's output file, when it has one.
    """

    job_id: str
    type: str
    status: str
    progress: int
    stage: str | None
    queue_position: int | None
    not_before: dt.datetime | None
    result: dict[str, Any] | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    download_url: str | None = None

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to the job.

        ``complete``, ``failed`` and ``cancelled`` are final, except a ``cancelled`` job in
        stage ``cancelling``: its worker has not yet confirmed that its children are gone
        (the fold's rule, :mod:`jobtape.projections.state`).
        """
        if self.status == "cancelled":
            return self.stage != "cancelling"
        return self.status in ("complete", "failed")


class EventView(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """One recorded event of a job (``GET /api/jobs/{jobId}/events``; the SSE ``event`` message).

    Attributes:
        position: global position in the log (increasing, gaps possible).
        version: 1-based version within the job's stream (gapless).
        type: the event tag, e.g. ``job.created``, ``job.child_started``.
        data: the event's fields as stored (snake_case keys, timestamps as ISO 8601 text).
        actor: who appended it: ``api``, a worker id, ``cli``, ``app``.
        recorded_at: UTC time of the append.
    """

    position: int
    version: int
    type: str
    data: dict[str, Any]
    actor: str
    recorded_at: dt.datetime


class _EventList(msgspec.Struct, rename="camel"):
    job_id: str
    events: list[EventView]


class _Accepted(msgspec.Struct, rename="camel"):
    job_id: str
    status: str


class _Envelope(msgspec.Struct):
    data: _Accepted
    success: bool = True


class _ErrorBody(msgspec.Struct):
    error: str
    status: str | None = None


# The client's own classes live in the tree (jobtape.errors), so ``except jobtape.errors.ServerUnreachable``
# works; they stay importable from here, where they are raised.
ServerUnreachable = errors.ServerUnreachable
RequestRejected = errors.RequestRejected
ServerError = errors.ServerError
WaitTimedOut = errors.WaitTimedOut


def _rebuilt(cls: type[errors.JobtapeError], message: str, status_code: int | None, **attributes: Any) -> errors.JobtapeError:
    """An instance of ``cls`` carrying the server's ``message`` verbatim (the classes' own messages are formatted anew)."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for name, value in {**attributes, "status_code": status_code}.items():
        setattr(exc, name, value)
    return exc


_PLACEHOLDER = "JOBTAPE-PLACEHOLDER"


def _prefix(made: errors.JobtapeError) -> str:
    """The fixed start of a class's message, from an instance built with :data:`_PLACEHOLDER` as its first argument."""
    return made.message.split(_PLACEHOLDER)[0]


# The route the client submits to; the server's errors.UnknownJobType names it in its message.
_SUBMIT_ROUTE = "POST /api/jobs"


def _pattern(made: errors.JobtapeError) -> re.Pattern[str]:
    """A regex matching the messages of ``made``'s class, from an instance built with :data:`_PLACEHOLDER` arguments.

    Each placeholder (with the quotes ``repr`` put around it) becomes a group, so the message
    format lives in the class alone.
    """
    parts = re.split(f"{re.escape(repr(_PLACEHOLDER))}|{re.escape(_PLACEHOLDER)}", made.message)
    return re.compile("(.*)".join(re.escape(part) for part in parts) + r"\Z", re.DOTALL)


# The start of each 422 message the submit route may answer, taken from the classes themselves.
_INVALID_PARAMS = _prefix(errors.InvalidParams(_PLACEHOLDER, ""))
_KEY_REUSED = _prefix(errors.IdempotencyKeyReused(_PLACEHOLDER, "a", "x"))
# POST /api/jobs refuses a type it does not accept with errors.UnknownJobType(route=_SUBMIT_ROUTE): "type 'x' is
# not a job type this server accepts at POST /api/jobs; send one of: a, b"; groups: the type, the accepted ones.
_UNKNOWN_TYPE = _pattern(errors.UnknownJobType(_PLACEHOLDER, [_PLACEHOLDER], route=_SUBMIT_ROUTE))
_NONE_ACCEPTED = errors.UnknownJobType("x", [], route=_SUBMIT_ROUTE).message.rsplit(": ", 1)[1]
_MAX_ACTIVE = re.compile(r"already has (\d+) active")


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a request was about, for rebuilding the server's error as the right class."""

    operation: str  # submit, get, cancel, events, stream
    job_id: str | None = None
    job_type: str | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    as_of: str | None = None


def _retry_after(response: httpx.Response, default: int) -> int:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else default


def raise_for_response(response: httpx.Response, context: _Context) -> None:
    """Raise the error a non-2xx answer stands for (the table in this module's docstring).

    Args:
        response: an answer whose body was read.
        context: the request's operation and arguments.

    Raises:
        errors.JobtapeError: the class for the status and operation, carrying the server's message.
    """
    status = response.status_code
    if status < 400:
        return
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
        message, terminal_status = body.error, body.status
    except msgspec.DecodeError:
        message, terminal_status = f"HTTP {status}: {response.text[:200] or response.reason_phrase}", None
    job_id = context.job_id or ""
    if status == 401:
        raise _rebuilt(errors.Unauthenticated, message, status)
    if status == 403:
        raise _rebuilt(errors.Forbidden, message, status)
    if status == 404 and context.job_id is not None and context.operation != "submit" and not message.startswith("no route"):
        raise _rebuilt(errors.JobNotFound, message, status, job_id=job_id)
    if status == 409:
        if context.operation == "cancel" and terminal_status is not None:
            raise _rebuilt(
                errors.IllegalTransition,
                message,
                status,
                job_id=job_id,
                status=terminal_status,
                event_type="job.cancel_requested",
                reason=message,
            )
        if context.operation == "submit" and context.idempotency_key is not None:
            raise _rebuilt(errors.DuplicateIdempotencyKey, message, status, owner=context.owner, idempotency_key=context.idempotency_key)
        raise _rebuilt(errors.ConflictError, message, status)
    if status == 422:
        unknown = _UNKNOWN_TYPE.match(message) if context.operation == "submit" else None
        if unknown is not None:
            accepted = unknown.group(2)
            registered = [] if accepted in ("", _NONE_ACCEPTED) else accepted.split(", ")
            raise _rebuilt(errors.UnknownJobType, message, status, job_type=context.job_type, registered=registered)
        if context.operation == "submit" and message.startswith(_KEY_REUSED):
            raise _rebuilt(errors.IdempotencyKeyReused, message, status, idempotency_key=context.idempotency_key)
        if context.operation == "submit" and message.startswith(_INVALID_PARAMS):
            detail = message.split(": ", 1)[1] if ": " in message else message
            raise _rebuilt(errors.InvalidParams, message, status, job_type=context.job_type, detail=detail)
        if context.as_of is not None:
            raise _rebuilt(errors.InvalidTimeSpec, message, status, text=context.as_of, reason=message)
    if status == 429:
        found = _MAX_ACTIVE.search(message)
        raise _rebuilt(
            errors.QuotaExceeded,
            message,
            status,
            owner=context.owner,
            max_active_jobs=int(found.group(1)) if found else None,
            retry_after_s=_retry_after(response, 10),
        )
    if status == 503:
        raise _rebuilt(
            errors.StoreUnavailable, message, status, retry_after_s=_retry_after(response, 2), in_doubt=context.operation == "submit"
        )
    if status == 507:
        raise _rebuilt(errors.StoreFull, message, status)
    raise _rebuilt(RequestRejected if status < 500 else ServerError, message, status)


def _decode(response: httpx.Response, context: _Context, type_: type[_T]) -> _T:
    raise_for_response(response, context)
    try:
        return msgspec.json.decode(response.content, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _rebuilt(
            ServerError, f"the server's answer to {context.operation} is not what a jobtape server sends: {exc}", response.status_code
        ) from exc


@dataclasses.dataclass(frozen=True)
class _Call(Generic[_T]):
    """One request and how to decode its answer (both pure: no I/O)."""

    method: str
    path: str
    context: _Context
    decode: Callable[[httpx.Response], _T]
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


def _as_of_text(as_of: str | dt.datetime | None) -> str | None:
    if isinstance(as_of, dt.datetime):
        if as_of.tzinfo is None:
            raise ValueError("as_of must be an aware datetime (UTC or with an offset)")
        return as_of.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return as_of


class _Calls:
    """The requests of each method and the decoding of their answers, shared by both clients."""

    def __init__(self, client_id: str | None, token: str | None = None) -> None:
        self.client_id = client_id
        self.token = token

    def submit(self, job_type: str, params: Any, idempotency_key: str | None) -> _Call[str]:
        body = {"type": job_type, "params": msgspec.to_builtins(params)}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        context = _Context("submit", job_type=job_type, owner=self.client_id or "anonymous", idempotency_key=idempotency_key)
        return _Call("POST", "/api/jobs", context, lambda r: _decode(r, context, _Envelope).data.job_id, json=body, headers=headers)

    def get(self, job_id: str, as_of: str | dt.datetime | None) -> _Call[JobView]:
        text = _as_of_text(as_of)
        context = _Context("get", job_id=job_id, as_of=text)
        return _Call(
            "GET",
            f"/api/jobs/{job_id}",
            context,
            lambda r: _decode(r, context, JobView),
            params={"asOf": text} if text is not None else None,
        )

    def cancel(self, job_id: str) -> _Call[None]:
        context = _Context("cancel", job_id=job_id)
        return _Call("POST", f"/api/jobs/{job_id}/cancel", context, lambda r: raise_for_response(r, context))

    def events(self, job_id: str, as_of: str | dt.datetime | None) -> _Call[list[EventView]]:
        text = _as_of_text(as_of)
        context = _Context("events", job_id=job_id, as_of=text)
        return _Call(
            "GET",
            f"/api/jobs/{job_id}/events",
            context,
            lambda r: _decode(r, context, _EventList).events,
            params={"asOf": text} if text is not None else None,
        )

    def headers(self) -> dict[str, str]:
        headers = {"X-Client-Id": self.client_id} if self.client_id is not None else {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


class _Follow:
    """The state of one :meth:`Client.wait`: the deadline, the last event id seen, the reconnect pauses.

    The stream's answer closes after the job's terminal event; the wait then reads the poll
    body. A connection that drops, or a stream that closes early, is resumed with
    ``Last-Event-ID`` (the version of the last message received), as ``EventSource`` does.
    """

    def __init__(self, job_id: str, timeout_s: float, request_timeout_s: float) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.last_event_id: str | None = None
        self.connected_once = False
        self.failures = 0
        self.context = _Context("stream", job_id=job_id)
        self.path = f"/api/jobs/{job_id}/stream"

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check_deadline(self, detail: str = "") -> None:
        if self.remaining_s() <= 0:
            raise WaitTimedOut(self.job_id, self.timeout_s, detail)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def timeout(self) -> httpx.Timeout:
        # The read timeout is the time left: the server sends a keepalive every 15 s, so a
        # quiet stream times out only at the deadline.
        remaining = max(self.remaining_s(), 0.001)
        return httpx.Timeout(min(self.request_timeout_s, remaining), read=remaining)

    def opened(self, response: httpx.Response) -> bool:
        """Check the stream's answer (body read when not 2xx); ``False``: nothing more will come (204)."""
        if response.status_code == 409 and self.last_event_id is not None:
            self.last_event_id = None  # the log was restored or imported: start again from the state
            return False
        raise_for_response(response, self.context)
        self.connected_once = True
        self.failures = 0
        return response.status_code != 204

    def received(self, message: ServerSentEvent) -> None:
        if message.id:
            self.last_event_id = message.id
        self.check_deadline()

    def dropped(self, exc: BaseException | None) -> float:
        """The connection failed or broke (``exc``, an httpx transport error); return the pause before reconnecting, in seconds.

        Raises:
            WaitTimedOut: the deadline passed (a request cut short by it is a timeout, not a failure).
            ServerUnreachable: the very first connection failed before the deadline.
        """
        if isinstance(exc, httpx.TimeoutException):
            self.check_deadline()
        if not self.connected_once:
            raise ServerUnreachable(f"cannot reach the jobtape server to follow job {self.job_id}: {exc!r}") from exc
        self.check_deadline(f" (the connection failed: {exc!r})")
        pause = 0.0 if self.failures == 0 else min(0.1 * 2 ** (self.failures - 1), MAX_RECONNECT_PAUSE_S)
        self.failures += 1
        return max(0.0, min(pause, self.remaining_s()))

    def finished(self, view: JobView) -> bool:
        if view.finished:
            return True
        self.check_deadline(f" (it is {view.status})")
        return False


def _transport_error(exc: httpx.TransportError, call: _Call[Any]) -> ServerUnreachable:
    return ServerUnreachable(f"cannot reach the jobtape server for {call.context.operation} ({call.method} {call.path}): {exc!r}")


class Client:
    """A blocking client of a jobtape server's generic job routes.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        client_id: sent as ``X-Client-Id``: the owner of the jobs it submits (quotas and
            idempotency keys are per owner) on a server with ``--auth off``; ``None``: the
            server's ``anonymous``. A server with ``--auth required`` ignores it.
        token: sent as ``Authorization: Bearer <token>``: an API key (``jtk_...``) or a JWT,
            for a server with ``--auth required``; the owner is the token's. ``None``: none.
        timeout_s: seconds each request may take to connect, send and answer (not
            :meth:`wait`, which has its own limit).
        transport: an httpx transport (e.g. ``httpx.HTTPTransport(retries=2)``); ``None``: httpx's default.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._calls = _Calls(client_id, token)
        self._timeout_s = timeout_s
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport, headers=self._calls.headers())

    def _send(self, call: _Call[_T]) -> _T:
        try:
            response = self._http.request(call.method, call.path, json=call.json, params=call.params, headers=call.headers)
        except httpx.TransportError as exc:
            raise _transport_error(exc, call) from exc
        return call.decode(response)

    def submit(self, job_type: str, params: Any, *, idempotency_key: str | None = None) -> str:
        """Create a job (``POST /api/jobs``) and return its id.

        Args:
            job_type: the registered job type's name (as in :meth:`jobtape.App.submit`).
            params: its params: a dict or a msgspec Struct (sent as a JSON object).
            idempotency_key: sent as ``Idempotency-Key``: the same key and body again
                answers the job created the first time instead of a new one.

        Returns:
            The job's id (32 lowercase hex digits).

        Raises:
            errors.UnknownJobType: no such type on the server (the message lists its types).
            errors.InvalidParams: the params do not fit the type (the message names the field).
            errors.IdempotencyKeyReused: the key was used before for another request.
            errors.QuotaExceeded: too many active jobs for this ``client_id``.
            errors.StoreUnavailable: the server's store is down (``in_doubt``: retry with the same key).
            ServerUnreachable: no answer.
        """
        return self._send(self._calls.submit(job_type, params, idempotency_key))

    def get(self, job_id: str, *, as_of: str | dt.datetime | None = None) -> JobView:
        """Poll a job (``GET /api/jobs/{jobId}``).

        Args:
            job_id: the job.
            as_of: the job as it was then: an aware datetime, ISO 8601 text, or a relative
                time like ``-10m``.

        Raises:
            errors.JobNotFound: no such job (or not yet at ``as_of``).
            errors.InvalidTimeSpec: ``as_of`` is not a time.
            RequestRejected: the job id is not 32 hex digits.
        """
        return self._send(self._calls.get(job_id, as_of))

    def cancel(self, job_id: str) -> None:
        """Cancel a job (``POST /api/jobs/{jobId}/cancel``).

        A pending job is cancelled at once; a running one shows ``cancelled`` in stage
        ``cancelling`` until its worker has stopped it (wait for it with :meth:`wait`).

        Raises:
            errors.JobNotFound: no such job.
            errors.IllegalTransition: it is finished already (its ``status`` is the job's).
        """
        self._send(self._calls.cancel(job_id))

    def events(self, job_id: str, *, as_of: str | dt.datetime | None = None) -> list[EventView]:
        """A job's recorded events in version order (``GET /api/jobs/{jobId}/events``).

        Raises:
            errors.JobNotFound: no such job.
            errors.InvalidTimeSpec: ``as_of`` is not a time.
        """
        return self._send(self._calls.events(job_id, as_of))

    def wait(self, job_id: str, timeout_s: float) -> JobView:
        """Follow the job's SSE stream until it finishes and return its final poll body.

        A dropped connection is resumed with ``Last-Event-ID`` until the deadline.

        Args:
            job_id: the job.
            timeout_s: seconds to wait at most.

        Returns:
            The poll body of the finished job (``complete``, ``failed`` or ``cancelled``).

        Raises:
            WaitTimedOut: not finished after ``timeout_s`` (the job goes on).
            errors.JobNotFound: no such job.
            ServerUnreachable: the server could not be reached in the first place.
        """
        follow = _Follow(job_id, timeout_s, self._timeout_s)
        while True:
            follow.check_deadline()
            try:
                with self._http.stream("GET", follow.path, headers=follow.headers(), timeout=follow.timeout()) as response:
                    if response.status_code >= 300:
                        response.read()
                    if follow.opened(response):
                        for message in EventSource(response).iter_sse():
                            follow.received(message)
                view = self.get(job_id)
            except httpx.TransportError as exc:
                time.sleep(follow.dropped(exc))
                continue
            except ServerUnreachable as exc:  # the poll after the stream ended
                time.sleep(follow.dropped(exc.__cause__))
                continue
            if follow.finished(view):
                return view

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncClient:
    """The async twin of :class:`Client` (asyncio or trio, as httpx): the same methods, awaited, the same errors.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        client_id: sent as ``X-Client-Id`` (the jobs' owner with ``--auth off``); ``None``: ``anonymous``.
        token: sent as ``Authorization: Bearer <token>`` (an API key or a JWT); see :class:`Client`.
        timeout_s: seconds each request may take (not :meth:`wait`).
        transport: an httpx async transport; ``None``: httpx's default.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._calls = _Calls(client_id, token)
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport, headers=self._calls.headers())

    async def _send(self, call: _Call[_T]) -> _T:
        try:
            response = await self._http.request(call.method, call.path, json=call.json, params=call.params, headers=call.headers)
        except httpx.TransportError as exc:
            raise _transport_error(exc, call) from exc
        return call.decode(response)

    async def submit(self, job_type: str, params: Any, *, idempotency_key: str | None = None) -> str:
        """Create a job and return its id; see :meth:`Client.submit`."""
        return await self._send(self._calls.submit(job_type, params, idempotency_key))

    async def get(self, job_id: str, *, as_of: str | dt.datetime | None = None) -> JobView:
        """Poll a job; see :meth:`Client.get`."""
        return await self._send(self._calls.get(job_id, as_of))

    async def cancel(self, job_id: str) -> None:
        """Cancel a job; see :meth:`Client.cancel`."""
        await self._send(self._calls.cancel(job_id))

    async def events(self, job_id: str, *, as_of: str | dt.datetime | None = None) -> list[EventView]:
        """A job's recorded events; see :meth:`Client.events`."""
        return await self._send(self._calls.events(job_id, as_of))

    async def wait(self, job_id: str, timeout_s: float) -> JobView:
        """Follow the job's SSE stream until it finishes; see :meth:`Client.wait`."""
        follow = _Follow(job_id, timeout_s, self._timeout_s)
        while True:
            follow.check_deadline()
            try:
                async with self._http.stream("GET", follow.path, headers=follow.headers(), timeout=follow.timeout()) as response:
                    if response.status_code >= 300:
                        await response.aread()
                    if follow.opened(response):
                        async for message in EventSource(response).aiter_sse():
                            follow.received(message)
                view = await self.get(job_id)
            except httpx.TransportError as exc:
                await anyio.sleep(follow.dropped(exc))
                continue
            except ServerUnreachable as exc:  # the poll after the stream ended
                await anyio.sleep(follow.dropped(exc.__cause__))
                continue
            if follow.finished(view):
                return view

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
