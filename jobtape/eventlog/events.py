"""Job event types: frozen, tagged msgspec Structs in one union (pure; no I/O).

Every job action is one of these events, appended to the job's stream. The ``type``
column of the ``events`` table holds the tag (``job.created`` ...), the ``data`` column
the struct's fields as JSON (without the tag).

Schema evolution (msgspec rules): a new field must have a default; never change the type
of a field. Real changes get an explicit upcaster in :func:`decode_event`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, cast

import msgspec

from jobtape import errors

__all__ = [
    "EVENT_TYPES",
    "JOB_TYPE_PATTERN",
    "Event",
    "JobBlobsDeleted",
    "JobCancelRequested",
    "JobCancelled",
    "JobChildExited",
    "JobChildStarted",
    "JobClaimed",
    "JobCompleted",
    "JobCreated",
    "JobFailed",
    "JobHeartbeat",
    "JobLeaseExpired",
    "JobProgress",
    "JobReleased",
    "JobRetryScheduled",
    "JobStageChanged",
    "JobType",
    "RecordedEvent",
    "decode_event",
    "encode_event",
    "event_fields",
    "event_type",
]

#: A job type's name, as stored in the log forever: a lowercase letter, then up to 63
#: lowercase letters, digits, ``_``, ``.`` or ``-``. The audio jobs are ``ingest``,
#: ``preview`` and ``save``; any other name decodes too, so a job of a type this program
#: does not run stays readable by every tool (a worker claims only the types it runs).
JobType = str
JOB_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class _Base(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    pass


class JobCreated(_Base, frozen=True, tag="job.created"):
    """A job was submitted.

    Attributes:
        job_type: the job type's name (:data:`JOB_TYPE_PATTERN`), e.g. ``ingest``,
            ``preview`` or ``save``.
        params: job parameters, e.g. ``{"sourceType": "upload", "storageKey": "...",
            "originalFilename": "a.mp3"}`` for an upload ingest.
        owner: the client that submitted it (``X-Client-Id``; ``anonymous`` by default).
        idempotency_key: optional client-chosen key; unique per owner.
        owned_keys: storage keys the creator wrote for this job and hands to it (e.g. an
            upload ingest's ``ingest-uploads/<jobId>.mp3``): the job owns them, its
            ``job.blobs_deleted`` may remove them, and failed-upload retention removes them
            when the job finishes failed or cancelled. ``None`` (omitted from the stored
            JSON, like an empty list): none declared; see
            :func:`jobtape.projections.legacy.legacy_inputs` for logs written before the
            field existed.
    """

    job_type: JobType
    params: dict[str, Any] = {}
    owner: str = "anonymous"
    idempotency_key: str | None = None
    owned_keys: list[str] | None = None

    def __post_init__(self) -> None:
        """Refuse a job type name the log could not keep (checked when made and when decoded).

        Raises:
            ValueError: ``job_type`` does not match :data:`JOB_TYPE_PATTERN`.
        """
        if not isinstance(self.job_type, str) or JOB_TYPE_PATTERN.fullmatch(self.job_type) is None:
            raise ValueError(f"job type {self.job_type!r} is not a lowercase name (a-z, 0-9, '_', '.', '-'; at most 64)")


class JobClaimed(_Base, frozen=True, tag="job.claimed"):
    """A worker took the job.

    Attributes:
        worker_id: the claiming worker (``host:pid:n``).
        attempt: 1 for the first claim, +1 for each retry.
        lease_expires_at: UTC time after which the claim may be taken over (``None``: no lease).
        lease_ttl_s: the lease's length in seconds; every later event of the worker renews
            the lease to its own time + ``lease_ttl_s``.
    """

    worker_id: str
    attempt: int = 1
    lease_expires_at: dt.datetime | None = None
    lease_ttl_s: float | None = None


class JobStageChanged(_Base, frozen=True, tag="job.stage_changed"):
    """The running job entered a stage (``decoding``, ``measuring``, ``normalizing``, ...)."""

    stage: str


class JobProgress(_Base, frozen=True, tag="job.progress"):
    """Progress within the current stage, ``percent`` in 0-100."""

    percent: int


class JobHeartbeat(_Base, frozen=True, tag="job.heartbeat"):
    """The worker is alive and still holds the job; ``lease_expires_at`` is the new expiry (UTC)."""

    lease_expires_at: dt.datetime | None = None


class JobLeaseExpired(_Base, frozen=True, tag="job.lease_expired"):
    """A reaper found the worker's lease expired and took the job back.

    The job returns to pending (the next claim is attempt + 1), not to be claimed before
    ``not_before`` (UTC; exponential backoff with jitter).

    Attributes:
        worker_id: the worker whose lease expired.
        attempt: the attempt that ended.
        not_before: earliest UTC time of the next claim (``None``: at once).
        orphaned_pids: children the log still showed running; the crashed worker's host
            kills them when a worker starts there again (see docs/worker.md).
    """

    worker_id: str
    attempt: int
    not_before: dt.datetime | None = None
    orphaned_pids: list[int] = []


class JobReleased(_Base, frozen=True, tag="job.released"):
    """The worker gave the job back (graceful shutdown) without using an attempt.

    ``orphaned_pids`` as in :class:`JobLeaseExpired` (empty when the worker killed its children).
    """

    worker_id: str
    reason: str = "shutdown"
    orphaned_pids: list[int] = []


class JobRetryScheduled(_Base, frozen=True, tag="job.retry_scheduled"):
    """A retryable failure: the job returns to pending, not to be claimed before ``not_before`` (UTC)."""

    error: str
    attempt: int
    not_before: dt.datetime | None = None


class JobCancelRequested(_Base, frozen=True, tag="job.cancel_requested"):
    """Someone asked to cancel the job (``requested_by`` is the actor, ``reason`` free text)."""

    reason: str | None = None


class JobChildStarted(_Base, frozen=True, tag="job.child_started"):
    """The worker started a child process.

    Attributes:
        pid: process id on ``host_id``.
        argv: the command line.
        host_id: the host the child runs on.
        started_at_ticks: process start time from ``/proc/PID/stat`` (clock ticks since boot),
            so a reused pid is never mistaken for this child.
    """

    pid: int
    argv: list[str]
    host_id: str = ""
    started_at_ticks: int | None = None


class JobChildExited(_Base, frozen=True, tag="job.child_exited"):
    """A child process is gone: ``exit_status`` is its return code (negative: killed by that signal)."""

    pid: int
    exit_status: int | None = None


class JobCancelled(_Base, frozen=True, tag="job.cancelled"):
    """The worker confirmed the cancellation: its children are dead and partial output removed."""


class JobCompleted(_Base, frozen=True, tag="job.completed"):
    """The job finished; ``result`` is the job type's result object (camelCase keys).

    Attributes:
        result: the handler's result.
        owned_keys: the outputs the job owns from now on (the keys its handler declared with
            ``JobContext.output_written``); only its ``job.blobs_deleted`` may remove them.
        download_key: the one key a poll links to (``downloadUrl``), owned or not (a
            preview cache hit links to the rendering job's MP3 and owns nothing).

    ``None`` (omitted from the stored JSON, like an empty list) declares nothing; see
    :mod:`jobtape.projections.legacy` for logs written before these fields existed.
    """

    result: dict[str, Any] = {}
    owned_keys: list[str] | None = None
    download_key: str | None = None


class JobFailed(_Base, frozen=True, tag="job.failed"):
    """The job failed with a readable ``error``; ``retryable`` marks transient failures."""

    error: str
    retryable: bool = False


class JobBlobsDeleted(_Base, frozen=True, tag="job.blobs_deleted"):
    """Blobs the finished job named are removed from storage, and why.

    Appended BEFORE the blobs are deleted (:mod:`jobtape.blobs`): after a crash in between
    the event names keys that may still exist, and a re-run deletes them again (deleting a
    missing key is a no-op). The only event allowed after a terminal one; the job's status,
    result and ``updated_at`` stay as they were.

    Attributes:
        keys: the storage keys removed (each one the job owns: the ``owned_keys`` of its
            ``job.created`` and ``job.completed``; see :func:`jobtape.projections.state.owned_keys`).
        reason: why, e.g. ``failed-upload retention (24h)`` or ``archive 33ef...``.
    """

    keys: list[str]
    reason: str = ""


Event = (
    JobCreated
    | JobClaimed
    | JobStageChanged
    | JobProgress
    | JobHeartbeat
    | JobCancelRequested
    | JobChildStarted
    | JobChildExited
    | JobCancelled
    | JobCompleted
    | JobFailed
    | JobLeaseExpired
    | JobReleased
    | JobRetryScheduled
    | JobBlobsDeleted
)

#: tag -> struct class, for every event type.
EVENT_TYPES: dict[str, type[_Base]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        JobCreated,
        JobClaimed,
        JobStageChanged,
        JobProgress,
        JobHeartbeat,
        JobCancelRequested,
        JobChildStarted,
        JobChildExited,
        JobCancelled,
        JobCompleted,
        JobFailed,
        JobLeaseExpired,
        JobReleased,
        JobRetryScheduled,
        JobBlobsDeleted,
    )
}

_ENCODER = msgspec.json.Encoder()
_DECODERS = {tag: msgspec.json.Decoder(cls) for tag, cls in EVENT_TYPES.items()}


def event_type(event: Event) -> str:
    """Return the tag of an event, e.g. ``"job.created"``."""
    return event.__struct_config__.tag  # type: ignore[return-value]


#: Fields added after events were first stored: left out of the stored JSON (and the events
#: route) when ``None`` or empty, so an event that declares nothing encodes exactly as it did
#: before the field existed (the same ``data``, hence the same hash).
_OMITTED_WHEN_EMPTY = frozenset({"owned_keys", "download_key"})


def event_fields(event: Event) -> dict[str, Any]:
    """The event's fields without its tag, as stored: the fields of :data:`_OMITTED_WHEN_EMPTY`
    are left out when ``None`` or empty."""
    return {name: value for name, value in msgspec.structs.asdict(event).items() if not (name in _OMITTED_WHEN_EMPTY and not value)}


def encode_event(event: Event) -> tuple[str, str]:
    """Encode an event for storage.

    Returns:
        ``(type, data)``: the tag and the fields as a JSON text (without the tag; see
        :func:`event_fields`).
    """
    return event_type(event), _ENCODER.encode(event_fields(event)).decode()


def decode_event(position: int, type_: str, data: str | bytes) -> Event:
    """Decode a stored event.

    Args:
        position: the event's global position (only used in the error).
        type_: the ``type`` column.
        data: the ``data`` column (JSON object).

    Raises:
        errors.MalformedEvent: unknown type or data that does not match the type's schema,
            naming the position.
    """
    decoder = _DECODERS.get(type_)
    if decoder is None:
        raise errors.MalformedEvent(position, type_, "unknown event type")
    try:
        return cast(Event, decoder.decode(data))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MalformedEvent(position, type_, str(exc)) from exc


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored in the log.

    Attributes:
        position: global position (1, 2, 3 ... across all jobs; gaps possible after a
            rolled-back append).
        job_id: the stream.
        version: the event's version within its stream (1, 2, 3 ... gapless).
        event: the decoded event.
        actor: who appended it: ``api``, a worker id, ``cli``.
        recorded_at: UTC time of the append, microsecond precision.
    """

    position: int
    job_id: str
    version: int
    event: Event
    actor: str
    recorded_at: dt.datetime

    @property
    def type(self) -> str:
        """The event's tag, e.g. ``job.progress``."""
        return event_type(self.event)
