"""The one exception hierarchy of jobtape.

Errors are grouped by what a caller catches, as httpx groups its errors: catch
:class:`StoreError` to wait out the event store, :class:`ConflictError` to re-read the job
and decide again, :class:`RequestError` to tell a caller what to fix, :class:`JobError`
for a job's own failure, :class:`StorageError` for the blob storage; catch
:class:`JobtapeError` for all of them. Hierarchy::

    JobtapeError
    ├── StoreError              the event store cannot serve the call now, or what it holds is unreadable
    │   ├── StoreUnavailable    the event store cannot be reached now; retry after a pause (503)
    │   │   └── StoreBusy       the event store is locked by another writer past the busy timeout
    │   ├── StoreFull           the disk under the event store or storage is full (507)
    │   ├── StoreAuthRejected   the event store refused the credentials; retrying cannot help
    │   └── MalformedEvent      a stored event cannot be decoded (names its position)
    ├── ConflictError           a guarded write was refused: nothing was written (409)
    │   ├── ConcurrencyError    the stream moved on since the version the caller read
    │   ├── IllegalTransition   the fold refuses an event in the job's current state
    │   ├── DuplicateIdempotencyKey a job with this (owner, idempotency key) exists already
    │   └── ConstraintViolation any other constraint or trigger of the schema refused a batch
    ├── RequestError            bad input from a caller: the message says what to fix (4xx)
    │   ├── JobNotFound         no stream for that job id (404)
    │   ├── AssetNotFound       no asset with that id in the ``assets`` projection (404)
    │   ├── AssetFileGone       the asset exists on record but its file was removed or is missing (410)
    │   ├── IdempotencyKeyReused an idempotency key sent again with another request (422)
    │   ├── QuotaExceeded       the owner has as many active jobs as allowed; retry later (429)
    │   ├── InvalidParams       a job's params do not fit its type's params schema (names the field)
    │   ├── UnknownJobType      a job type no app registered (names the registered ones)
    │   ├── InvalidRecipe       an edit recipe field is out of range for its asset (names the field)
    │   ├── SourceUrlRefused    a URL to ingest is malformed, not http(s), or points inside the network
    │   ├── InvalidSignature    a signed download link is forged, altered or expired (403)
    │   ├── InvalidTimeSpec     a time given by a user is neither ISO 8601 nor relative (``-10m``)
    │   └── InvalidExport       an export file is malformed, gapped or tampered (names the line)
    ├── JobError                a job's own outcome, raised inside a worker
    │   ├── JobFailed           a job handler failed its job on purpose (``retryable`` or not)
    │   └── MediaError          ffmpeg / yt-dlp failed; carries the tail of stderr
    ├── StorageError            a blob storage operation failed (``retryable`` when it may pass)
    │   ├── InvalidStorageKey   a key that is absolute, contains ``..`` or empty segments
    │   └── BlobNotFound        no blob under that key
    └── JobTypeAlreadyRegistered an app registers a job type name twice (a programming error)

    JobInterrupted (a BaseException, not a JobtapeError: see below)
    ├── CancelRequested, JobLost, TimedOut, Released    (jobtape.worker.context)

The control flow of a running job is :class:`JobInterrupted`: the worker raises it inside
a job handler (at ``ctx.check_cancelled()``, ``ctx.stage()``, ``ctx.run_child()``...) to
stop the handler on a cancel, a lost lease, a timeout or a shutdown. It derives from
``BaseException``, like :class:`asyncio.CancelledError` since Python 3.8 (bpo-32528) and
``KeyboardInterrupt``, so neither ``except JobtapeError`` nor the ``except Exception`` a
handler writes around its own work can swallow a cancel by accident: it reaches the
worker, which records the outcome. A handler that must clean up uses ``finally``.

Only ``jobtape.http`` maps these to HTTP status codes, in one table (the groups have rows,
so a new member gets its group's status until it has its own).
The class docstring is the default message.
"""

from __future__ import annotations

__all__ = [
    "AssetFileGone",
    "AssetNotFound",
    "BlobNotFound",
    "ConcurrencyError",
    "ConflictError",
    "ConstraintViolation",
    "DuplicateIdempotencyKey",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "InvalidExport",
    "InvalidParams",
    "InvalidRecipe",
    "InvalidSignature",
    "InvalidStorageKey",
    "InvalidTimeSpec",
    "JobError",
    "JobFailed",
    "JobInterrupted",
    "JobNotFound",
    "JobTypeAlreadyRegistered",
    "JobtapeError",
    "MalformedEvent",
    "MediaError",
    "QuotaExceeded",
    "RequestError",
    "SourceUrlRefused",
    "StorageError",
    "StoreAuthRejected",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "UnknownJobType",
]


class JobtapeError(Exception):
    """A jobtape error."""

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


class ConflictError(JobtapeError):
    """A guarded write was refused; nothing was written.

    The guards live in the SQL of the write (the version check, the fold's rules, the
    UNIQUE indexes, the schema's triggers). A caller re-reads the job and decides again,
    or reports the conflict (HTTP 409).
    """


class RequestError(JobtapeError):
    """The request is not valid: its message says what to fix.

    Bad input from a caller (an HTTP client, a CLI user, a script calling
    :meth:`jobtape.App.submit`); a request refused with one appended nothing.
    """


class JobError(JobtapeError):
    """A job's own outcome, raised inside a worker while it runs the job's handler."""


class JobInterrupted(BaseException):
    """Control flow: the running job must stop (a cancel, a lost lease, a timeout, a shutdown).

    A ``BaseException``, not a :class:`JobtapeError`, so that an ``except Exception`` or
    ``except JobtapeError`` in a job handler does not swallow it (see the module
    docstring). Its subclasses are in :mod:`jobtape.worker.context`.
    """


class ConcurrencyError(ConflictError):
    """The job's stream moved on since the expected version (optimistic concurrency)."""

    def __init__(self, job_id: str, expected_version: int, message: str | None = None) -> None:
        self.job_id = job_id
        self.expected_version = expected_version
        super().__init__(
            message
            or f"stream {job_id} is no longer at version {expected_version}: another writer appended first"
        )


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

    def __init__(self, position: int, event_type: str, detail: str) -> None:
        self.position = position
        self.event_type = event_type
        super().__init__(f"event at position {position} ({event_type!r}) cannot be decoded: {detail}")


class JobNotFound(RequestError):
    """Job not found."""

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


class QuotaExceeded(RequestError):
    """Too many active jobs for this owner; wait for one to finish.

    Attributes:
        owner: the client id (``X-Client-Id``).
        max_active_jobs: the limit of pending + processing jobs per owner.
        retry_after_s: a suggested pause before retrying, in seconds (``Retry-After``).
    """

    def __init__(self, owner: str, max_active_jobs: int, *, retry_after_s: int = 10) -> None:
        self.owner = owner
        self.max_active_jobs = max_active_jobs
        self.retry_after_s = retry_after_s
        super().__init__(
            f"owner {owner!r} already has {max_active_jobs} active (pending or processing) jobs, the limit;"
            f" wait for one to finish or cancel one, then retry in {retry_after_s} s"
        )


class AssetNotFound(RequestError):
    """Asset not found."""

    def __init__(self, asset_id: str) -> None:
        self.asset_id = asset_id
        super().__init__(f"Asset not found: {asset_id}")


class AssetFileGone(RequestError):
    """The asset's file is no longer stored.

    Attributes:
        asset_id: the asset.
        removed: ``True`` when its removal is recorded (``job.blobs_deleted``), ``False``
            when storage simply lacks it (e.g. a log imported without its files).
    """

    def __init__(self, asset_id: str, *, removed: bool) -> None:
        self.asset_id = asset_id
        self.removed = removed
        why = "it was removed (see its ingest or save job's events)" if removed else "storage does not have it"
        super().__init__(f"the asset's file is no longer stored: asset {asset_id}: {why}; "
                         "ingest the recording again to edit it")


class InvalidRecipe(RequestError):
    """An edit recipe is not valid for its asset.

    Attributes:
        field: the offending field in camelCase (``endSec``, ``fadeInSec``...).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class InvalidSignature(RequestError):
    """The download link is not valid."""


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
    / "database is busy" (SQLITE_BUSY, SQLITE_LOCKED). Nothing of the failed batch was
    written (``in_doubt`` is ``False``).
    """

    def __init__(self, detail: str = "the database is locked by another writer", *, retry_after_s: int = 1) -> None:
        super().__init__(detail, retry_after_s=retry_after_s)


class StoreFull(StoreError):
    """There is no room left on the disk that holds the event store or the stored files.

    Translated from SQLite's SQLITE_FULL ("database or disk is full") and from ``OSError``
    ``ENOSPC``/``EDQUOT`` while a blob or upload is written. Nothing of the failed write was
    kept. The API answers 507 Insufficient Storage (RFC 4918, section 11.5).
    """

    def __init__(self, detail: str = "no space left on the server's disk") -> None:
        super().__init__(f"the server has no room to store this: {detail}; free disk space, then retry")


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

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the event store refused the credentials: check TURSO_AUTH_TOKEN (the server answered: {detail})")


class SourceUrlRefused(RequestError):
    """A URL source may not be fetched.

    Attributes:
        url: the URL as given.
        reason: a code for callers that act on it: ``"malformed"``, ``"scheme"``,
            ``"credentials"``, ``"not_youtube"``, ``"private_address"`` (server-side request
            forgery guard) or ``"unresolvable"`` (DNS gave no address; may be transient).
    """

    def __init__(self, url: str, reason: str, message: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(message)


class StorageError(JobtapeError):
    """A storage operation failed.

    Attributes:
        retryable: the failure may pass by itself (the bucket could not be reached, timed
            out, or answered 5xx/SlowDown); a worker then retries the job with backoff
            instead of failing it. ``False`` for refusals (access denied, no such bucket,
            a bad key, a missing blob).
    """

    def __init__(self, message: str | None = None, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InvalidStorageKey(StorageError):
    """The storage key is not valid."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid storage key {key!r}: {reason}")


class BlobNotFound(StorageError):
    """No blob is stored under this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no blob stored under key {key!r}")


class MediaError(JobError):
    """A media tool (ffmpeg, yt-dlp) failed."""

    def __init__(self, message: str, stderr_tail: str = "", retryable: bool = False) -> None:
        self.stderr_tail = stderr_tail
        self.retryable = retryable
        super().__init__(message + (f"\n--- stderr (tail) ---\n{stderr_tail}" if stderr_tail else ""))


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

    Attributes:
        job_type: the name asked for.
        registered: the names that are registered, sorted.
    """

    def __init__(self, job_type: str, registered: list[str]) -> None:
        self.job_type = job_type
        self.registered = registered
        super().__init__(f"unknown job type {job_type!r}; registered: {', '.join(registered) or 'none'}")


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
