"""The one exception hierarchy of jobtape.

Errors are grouped by what a caller catches, as httpx groups its errors: catch
:class:`StoreError` to wait out the event store, :class:`ConflictError` to re-read the job
and decide again, :class:`RequestError` to tell a caller what to fix, :class:`JobError`
for a job's own failure, :class:`StorageError` for the blob storage; catch
:class:`JobtapeError` for all of them. Hierarchy (HTTP status in brackets)::

    JobtapeError [500]
    ├── StoreError [503]        the event store cannot serve the call now, or what it holds is unreadable
    │   ├── StoreUnavailable    the event store cannot be reached now; retry after a pause
    │   │   └── StoreBusy       the event store is locked by another writer past the busy timeout
    │   ├── StoreFull [507]     the disk under the event store or storage is full
    │   ├── StoreAuthRejected   the event store refused the credentials; retrying cannot help
    │   └── MalformedEvent [500] a stored event cannot be decoded (names its position)
    ├── ConflictError [409]     a guarded write was refused: nothing was written
    │   ├── ConcurrencyError    the stream moved on since the version the caller read
    │   ├── IllegalTransition   the fold refuses an event in the job's current state
    │   ├── DuplicateIdempotencyKey a job with this (owner, idempotency key) exists already
    │   └── ConstraintViolation any other constraint or trigger of the schema refused a batch
    ├── RequestError [422]      bad input from a caller: the message says what to fix
    │   ├── JobNotFound [404]   no stream for that job id
    │   ├── IdempotencyKeyReused an idempotency key sent again with another request
    │   ├── QuotaExceeded [429] the owner has as many active jobs as allowed; retry later
    │   ├── InvalidParams       a job's params do not fit its type's params schema (names the field)
    │   ├── UnknownJobType      a job type no app registered, or not submittable (names the registered ones)
    │   ├── InvalidSignature [403] a signed download link is forged, altered or expired
    │   ├── InvalidTimeSpec     a time given by a user is neither ISO 8601 nor relative (``-10m``)
    │   ├── InvalidExport       an export file is malformed, gapped or tampered (names the line)
    │   ├── KeyNotFound [404]   no API key with that id (``jobtape keys revoke``)
    │   ├── UnknownScope        a scope name that is not one of the valid ones (names them)
    │   ├── Unauthenticated [401] no valid credential: no token, or an unknown, revoked or expired one
    │   ├── Forbidden [403]     the caller's token lacks the scope the operation needs
    │   ├── RequestRejected     (client) the server refused a request with a 4xx of no class of its own
    │   └── (jobtape.audio.errors: AssetNotFound [404], AssetFileGone [410], InvalidRecipe, SourceUrlRefused)
    ├── JobError [500]          a job's own outcome, raised inside a worker
    │   └── JobFailed           a job handler failed its job on purpose (``retryable`` or not)
    │       └── (jobtape.audio.errors.MediaError: ffmpeg / yt-dlp failed; carries the tail of stderr)
    ├── StorageError [503]      a blob storage operation failed (``retryable`` when it may pass)
    │   ├── InvalidStorageKey [400] a key that is absolute, contains ``..`` or empty segments
    │   └── BlobNotFound [404]  no blob under that key
    ├── JobTypeAlreadyRegistered an app registers a job type name twice (a programming error)
    ├── ServerError             (client) the server failed with a 5xx of no class of its own
    ├── ServerUnreachable       (client) the server could not be reached at all
    └── WaitTimedOut            (client) ``Client.wait`` passed its deadline; also a ``TimeoutError``

    JobInterrupted (a BaseException, not a JobtapeError: see below)
    ├── CancelRequested, JobLost, TimedOut, Released    (jobtape.worker.context)

The classes marked *(client)* are raised by :class:`jobtape.Client` only (they stand for an
HTTP answer, or for none); the client raises the other classes too, rebuilt from the
server's answer (:mod:`jobtape.client`), with :attr:`JobtapeError.status_code` set.

**HTTP status.** Each class declares the status the HTTP API answers it with, as the class
attribute :attr:`JobtapeError.http_status` (and, optionally, :attr:`JobtapeError.http_message`,
a fixed message sent instead of the error's own). :func:`jobtape.http.errors.status_for`
takes both from the first class along the error's MRO that declares ``http_status``, so a
class without one answers its group's status (the groups declare theirs), and a package's
error gets its 4xx by subclassing a group and declaring it, with no change to the engine::

    class OutOfStock(jobtape.errors.RequestError):   # bad input: 422, unless it declares another status
        http_status = 409                             # the API answers 409 {"error": <the error's message>}

The control flow of a running job is :class:`JobInterrupted`: the worker raises it inside
a job handler (at ``ctx.check_cancelled()``, ``ctx.stage()``, ``ctx.run_child()``...) to
stop the handler on a cancel, a lost lease, a timeout or a shutdown. It derives from
``BaseException``, like :class:`asyncio.CancelledError` since Python 3.8 (bpo-32528) and
``KeyboardInterrupt``, so neither ``except JobtapeError`` nor the ``except Exception`` a
handler writes around its own work can swallow a cancel by accident: it reaches the
worker, which records the outcome. A handler that must clean up uses ``finally``.

The class docstring is the default message.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BlobNotFound",
    "ConcurrencyError",
    "ConflictError",
    "ConstraintViolation",
    "DuplicateIdempotencyKey",
    "Forbidden",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "InvalidExport",
    "InvalidParams",
    "InvalidSignature",
    "InvalidStorageKey",
    "InvalidTimeSpec",
    "JobError",
    "JobFailed",
    "JobInterrupted",
    "JobNotFound",
    "JobTypeAlreadyRegistered",
    "JobtapeError",
    "KeyNotFound",
    "LogKeyError",
    "MalformedEvent",
    "QuotaExceeded",
    "RequestError",
    "RequestRejected",
    "ServerError",
    "ServerUnreachable",
    "StorageError",
    "StoreAuthRejected",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "Unauthenticated",
    "UnknownJobType",
    "UnknownScope",
    "WaitTimedOut",
]


class JobtapeError(Exception):
    """A jobtape error.

    Attributes:
        http_status: (class attribute) the HTTP status the API answers this error with; a
            class that does not declare it answers its nearest ancestor's (see the module
            docstring). 500 here; each group declares its own.
        http_message: (class attribute) a fixed message the API sends instead of the
            error's own (e.g. ``"Job not found"``, without the id), or ``None`` for the
            error's own. Read from the class that declares ``http_status``, so declare them
            together.
        status_code: the HTTP status of the answer this error was rebuilt from, when
            :class:`jobtape.Client` raised it; ``None`` for an error raised in this process
            or when no answer came (:class:`ServerUnreachable`, :class:`WaitTimedOut`).
    """

    http_status: ClassVar[int] = 500
    http_message: ClassVar[str | None] = None
    status_code: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check a declared ``http_status`` when the class is defined, not when a request fails.

        Raises:
            TypeError: ``http_status`` is not an int from 400 to 599 (an error is never a 2xx or 3xx);
                an :class:`http.HTTPStatus` member is an int.
        """
        super().__init_subclass__(**kwargs)
        status = vars(cls).get("http_status")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599):
            raise TypeError(f"{cls.__qualname__}.http_status must be an HTTP error status (an int from 400 to 599), not {status!r}")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__class__.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class StoreError(JobtapeError):
    """The event store cannot serve the call.

    The group of the store's own failures: it cannot be reached or is locked
    (:class:`StoreUnavailable`, wait and retry), its disk is full, it refused the
    credentials, or an event it holds cannot be decoded. Not the caller's input.
    """

    http_status = 503


class ConflictError(JobtapeError):
    """A guarded write was refused; nothing was written.

    The guards live in the SQL of the write (the version check, the fold's rules, the
    UNIQUE indexes, the schema's triggers). A caller re-reads the job and decides again,
    or reports the conflict (HTTP 409).
    """

    http_status = 409


class RequestError(JobtapeError):
    """The request is not valid: its message says what to fix.

    Bad input from a caller (an HTTP client, a CLI user, a script calling
    :meth:`jobtape.App.submit`); a request refused with one appended nothing.
    """

    http_status = 422


class JobError(JobtapeError):
    """A job's own outcome, raised inside a worker while it runs the job's handler."""

    http_status = 500


class JobInterrupted(BaseException):
    """Control flow: the running job must stop (a cancel, a lost lease, a timeout, a shutdown).

    A ``BaseException``, not a :class:`JobtapeError`, so that an ``except Exception`` or
    ``except JobtapeError`` in a job handler does not swallow it (see the module
    docstring). Its subclasses are in :mod:`jobtape.worker.context`.
    """


class ConcurrencyError(ConflictError):
    """The job's stream moved on since the expected version (optimistic concurrency)."""

    http_status = 409
    http_message = "the job changed while this request ran; send the request again"

    def __init__(self, job_id: str, expected_version: int, message: str | None = None) -> None:
        self.job_id = job_id
        self.expected_version = expected_version
        super().__init__(message or f"stream {job_id} is no longer at version {expected_version}: another writer appended first")


class IllegalTransition(ConflictError):
    """The fold refuses this event in the job's current state."""

    def __init__(self, job_id: str, status: str, event_type: str, reason: str) -> None:
        self.job_id = job_id
        self.status = status
        self.event_type = event_type
        self.reason = reason
        super().__init__(f"job {job_id}: {event_type} is not allowed while {status}: {reason}")


class MalformedEvent(StoreError):
    """A stored event cannot be decoded."""

    http_status = 500

    def __init__(self, position: int, event_type: str, detail: str) -> None:
        self.position = position
        self.event_type = event_type
        super().__init__(f"event at position {position} ({event_type!r}) cannot be decoded: {detail}")


class JobNotFound(RequestError):
    """Job not found."""

    http_status = 404
    http_message = "Job not found"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"Job not found: {job_id}")


class DuplicateIdempotencyKey(ConflictError):
    """A job with this owner and idempotency key exists already."""

    def __init__(self, owner: str, idempotency_key: str) -> None:
        self.owner = owner
        self.idempotency_key = idempotency_key
        super().__init__(f"owner {owner!r} already created a job with idempotency key {idempotency_key!r}")


class ConstraintViolation(ConflictError):
    """A constraint or trigger of the schema refused a batch; nothing of it was written.

    Raised by an event-store backend (:class:`jobtape.eventlog.store.SQLBackend`).
    ``detail`` is the database's message (e.g. ``UNIQUE constraint failed: events.job_id,
    events.version`` or a trigger's ``RAISE`` text), which is also the error's message; the
    store translates the ones it knows into a narrower error (:class:`ConcurrencyError`,
    :class:`DuplicateIdempotencyKey`, :class:`QuotaExceeded`).

    Attributes:
        detail: the database's message.
    """

    http_status = 409
    http_message = "a guard of the event log refused this change; nothing was written; read the job and retry"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class IdempotencyKeyReused(RequestError):
    """An idempotency key sent again with another request (another job type or payload).

    The IETF draft *The Idempotency-Key HTTP Header Field* (draft-ietf-httpapi-idempotency-key-header,
    section 2.7) answers this with 422: the key must name one request only.
    """

    def __init__(self, idempotency_key: str, job_type: str, job_id: str, what: str = "another request") -> None:
        self.idempotency_key = idempotency_key
        article = "an" if job_type[:1] in ("a", "e", "i", "o", "u") else "a"
        super().__init__(
            f"Idempotency-Key {idempotency_key!r} was already used for {article} {job_type} job ({job_id}) of {what}; "
            "send a new key for a new request, or repeat the first request unchanged"
        )


class InvalidTimeSpec(RequestError):
    """A time given by a user is neither ISO 8601 nor a relative time like ``-10m``."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r} is not a time: {reason}")


class InvalidExport(RequestError):
    """An export file cannot be imported: malformed, gapped, or its hashes do not match.

    Attributes:
        line: the 1-based line of the file that is wrong.
        reason: what is wrong with it.
    """

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


class KeyNotFound(RequestError):
    """API key not found."""

    http_status = 404
    http_message = "API key not found"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no API key with id {key_id!r} (`jobtape keys list` shows the ids)")


class UnknownScope(RequestError):
    """A scope name is not valid.

    Attributes:
        unknown: the names given that are not scopes (empty when none was given at all).
        valid: every valid scope (:data:`jobtape.auth.tokens.SCOPES`).
    """

    def __init__(self, unknown: list[str], valid: tuple[str, ...]) -> None:
        self.unknown = unknown
        self.valid = valid
        given = f"unknown scope {', '.join(repr(name) for name in unknown)}" if unknown else "no scope given"
        super().__init__(f"{given}; the scopes are {', '.join(valid)} (comma-separated)")


class QuotaExceeded(RequestError):
    """Too many active jobs for this owner; wait for one to finish.

    Attributes:
        owner: the client id (``X-Client-Id``).
        max_active_jobs: the limit of pending + processing jobs per owner.
        retry_after_s: a suggested pause before retrying, in seconds (``Retry-After``).
    """

    http_status = 429

    def __init__(self, owner: str, max_active_jobs: int, *, retry_after_s: int = 10) -> None:
        self.owner = owner
        self.max_active_jobs = max_active_jobs
        self.retry_after_s = retry_after_s
        super().__init__(
            f"owner {owner!r} already has {max_active_jobs} active (pending or processing) jobs, the limit;"
            f" wait for one to finish or cancel one, then retry in {retry_after_s} s"
        )


class InvalidSignature(RequestError):
    """The download link is not valid."""

    http_status = 403


class StoreUnavailable(StoreError):
    """The event store cannot be reached; retry after a pause.

    Raised by a networked backend (libSQL) when a connection fails or a request times
    out. A write that raised it may or may not have been committed (``in_doubt``); the
    version guard keeps a retried append from being written twice.

    Attributes:
        retry_after_s: a suggested pause before retrying, in seconds.
        in_doubt: ``True`` if a write was sent and its outcome is unknown.
    """

    def __init__(self, detail: str, *, retry_after_s: int = 2, in_doubt: bool = False) -> None:
        self.retry_after_s = retry_after_s
        self.in_doubt = in_doubt
        super().__init__(f"the event store is unavailable: {detail}; retry in {retry_after_s} s")


class StoreBusy(StoreUnavailable):
    """The event store stayed locked by another writer past the busy timeout; retry after a pause.

    Translated at the SQLite backend from ``sqlite3.OperationalError`` "database is locked"
    / "database is busy" (SQLITE_BUSY, SQLITE_LOCKED) once SQLite's busy timeout (10 s) has
    passed, and at the libSQL backend from sqld's SQLITE_BUSY / SQLITE_LOCKED once its own
    busy wait (``busy_timeout_s``, 10 s) has passed. Nothing of the failed batch was
    written (``in_doubt`` is ``False``).
    """

    http_status = 503
    http_message = "the event store is busy; retry shortly"

    def __init__(self, detail: str = "the database is locked by another writer", *, retry_after_s: int = 1) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)


class StoreFull(StoreError):
    """There is no room left on the disk that holds the event store or the stored files.

    Translated from SQLite's SQLITE_FULL ("database or disk is full") and from ``OSError``
    ``ENOSPC``/``EDQUOT`` while a blob or upload is written. Nothing of the failed write was
    kept. The API answers 507 Insufficient Storage (RFC 4918, section 11.5).
    """

    http_status = 507
    http_message = "the server has no room to store this; retry later"

    def __init__(self, detail: str = "no space left on the server's disk") -> None:
        super().__init__(f"the server has no room to store this: {detail}; free disk space, then retry")


class LogKeyError(StoreError):
    """The log key is missing or does not fit the log: appends and keyed records cannot be made.

    Raised when a store opened without a log key (``JOBTAPE_LOG_KEY`` unset and
    ``data_dir/log-key`` unreadable) is asked to append, and when the keyed upgrade of an
    existing log (docs/audit.md, "Upgrade") refuses because the log's sha256 chains do not
    verify. The message says what to fix.
    """

    http_status = 503
    http_message = "the event log cannot be written: its log key is missing or does not fit; see the server log"


class StoreAuthRejected(StoreError):
    """The event store refused the credentials: check TURSO_AUTH_TOKEN.

    Raised by a networked backend (libSQL) when the server answers HTTP 401/403 (a refused
    WebSocket handshake or Hrana-over-HTTP request) or a Hrana ``hello_error`` with an
    ``AUTH_*`` code (sqld's JWT check; Hrana spec, ``hello``/``hello_error`` messages).
    Unlike :class:`StoreUnavailable` it is not an outage: retrying with the same token
    cannot help, so start-up (:mod:`jobtape.startup`) does not retry it.

    Attributes:
        detail: the server's answer, e.g. ``"AUTH_JWT_INVALID: Authentication failed: The JWT is invalid"``.
    """

    http_status = 503
    http_message = "the event store refused this server's credentials; the server log has the details"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the event store refused the credentials: check TURSO_AUTH_TOKEN (the server answered: {detail})")


class StorageError(JobtapeError):
    """A storage operation failed.

    Attributes:
        retryable: the failure may pass by itself (the bucket could not be reached, timed
            out, or answered 5xx/SlowDown); a worker then retries the job with backoff
            instead of failing it. ``False`` for refusals (access denied, no such bucket,
            a bad key, a missing blob).
    """

    http_status = 503

    def __init__(self, message: str | None = None, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InvalidStorageKey(StorageError):
    """The storage key is not valid."""

    http_status = 400

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid storage key {key!r}: {reason}")


class BlobNotFound(StorageError):
    """No blob is stored under this key."""

    http_status = 404

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no blob stored under key {key!r}")


class JobFailed(JobError):
    """The job failed.

    Raised by a job type's handler (:meth:`jobtape.App.job_type`) to fail its job with a
    message for the client (it is recorded in ``job.failed`` and served by the poll). A
    ``retryable`` failure is retried with backoff until the type's ``max_attempts``
    (:func:`jobtape.worker.policy.failure_events`); any other exception a handler raises
    fails the job at once as an internal error, logged with its traceback.

    Attributes:
        retryable: whether trying again may succeed (a network error, say).
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class JobTypeAlreadyRegistered(JobtapeError):
    """An app already has a job type of that name (or alias).

    Attributes:
        job_type: the name registered twice.
    """

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type
        super().__init__(f"job type {job_type!r} is registered already")


class UnknownJobType(RequestError):
    """No job type of that name is registered.

    Raised by :meth:`jobtape.App.submit` for a name no job type of the app has, and by
    ``POST /api/jobs`` for a name that is not one of the types it accepts (registered
    with ``http_submit=True``); the route's message names the route, the client
    (:class:`jobtape.Client`) rebuilds the error from it.

    Args:
        job_type: the name asked for.
        registered: the names that may be asked for, sorted.
        route: the HTTP route that refused the name (``"POST /api/jobs"``), or ``None``
            when no HTTP request was involved; it words the message: ``type 'x' is not a
            job type this server accepts at POST /api/jobs; send one of: a, b`` (the name
            cut to :data:`SHOWN_NAME_CHARS` characters), else ``unknown job type 'x';
            registered: a, b``.

    Attributes:
        job_type: the name asked for.
        registered: the names that may be asked for, sorted (for the route, those it accepts).
    """

    #: How much of an unknown name a message repeats, in characters (a route echoes no megabyte).
    SHOWN_NAME_CHARS: ClassVar[int] = 80

    def __init__(self, job_type: str, registered: list[str], *, route: str | None = None) -> None:
        self.job_type = job_type
        self.registered = registered
        if route is None:
            super().__init__(f"unknown job type {job_type!r}; registered: {', '.join(registered) or 'none'}")
            return
        accepted = ", ".join(registered) or "none (this server runs no app with job types submittable over HTTP)"
        super().__init__(
            f"type {job_type[: self.SHOWN_NAME_CHARS]!r} is not a job type this server accepts at {route}; send one of: {accepted}"
        )


class InvalidParams(RequestError):
    """A job's params do not fit its type's params schema.

    Attributes:
        job_type: the job type.
        detail: msgspec's description, naming the field (e.g. ``Expected `int`, got `str` - at `$.a```).
    """

    def __init__(self, job_type: str, detail: str) -> None:
        self.job_type = job_type
        self.detail = detail
        super().__init__(f"invalid params for job type {job_type!r}: {detail}")


class Unauthenticated(RequestError):
    """The request carries no valid credential; send ``Authorization: Bearer <API key or JWT>``.

    The server's answer is 401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3) when
    ``--auth required`` (or ``trusted-proxy``) finds no token, or an unknown, revoked or
    expired one (issue 11; :mod:`jobtape.http.auth`). :class:`jobtape.Client` raises it for a 401.
    """

    http_status = 401


class Forbidden(RequestError):
    """The caller's token lacks the scope this operation needs (the message names it).

    The server's answer is 403 (issue 11: ``jobs:submit``, ``jobs:read``, ``jobs:cancel``,
    ``admin``). :class:`jobtape.Client` raises it for a 403 (a forged download link's 403 is
    :class:`InvalidSignature` on the server; the client does not follow download links).
    """

    http_status = 403


class RequestRejected(RequestError):
    """The server refused the request with a 4xx that has no class of its own (400, 413, ...).

    Raised by :class:`jobtape.Client` (also importable as ``jobtape.client.RequestRejected``);
    its message is the server's, :attr:`status_code` the answer's status.
    """


class ServerError(JobtapeError):
    """The server failed with a 5xx that has no class of its own (500, 502, ...); its log has the details.

    Raised by :class:`jobtape.Client` (also ``jobtape.client.ServerError``); :attr:`status_code`
    is the answer's status.
    """


class ServerUnreachable(JobtapeError):
    """The jobtape server could not be reached (connection refused, DNS, a timeout, a broken connection).

    Raised by :class:`jobtape.Client` (also ``jobtape.client.ServerUnreachable``);
    :attr:`status_code` is ``None`` (no answer).
    """


class WaitTimedOut(JobtapeError, TimeoutError):
    """:meth:`jobtape.Client.wait` gave up: the job had not finished when its ``timeout_s`` ran out.

    The job goes on; wait again, or cancel it. Also a :class:`TimeoutError`; also
    ``jobtape.client.WaitTimedOut``. :attr:`status_code` is ``None``.

    Attributes:
        job_id: the job.
        timeout_s: the wait's limit, in seconds.
    """

    def __init__(self, job_id: str, timeout_s: float, detail: str = "") -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        super().__init__(f"job {job_id} did not finish within {timeout_s:g} s{detail}; it goes on: wait again or cancel it")
