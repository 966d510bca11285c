"""The JSON bodies of the HTTP API: msgspec Structs whose fields go out in camelCase.

Every Struct here is a wire shape only; handlers build them from
:class:`jobtape.projections.state.JobState` and :class:`jobtape.eventlog.events.RecordedEvent`.
Timestamps are aware UTC datetimes, encoded as ISO 8601 with a ``Z`` suffix
(``2026-01-02T03:04:05.123456Z``; msgspec drops a zero fraction).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

__all__ = [
    "CancelAccepted",
    "ErrorBody",
    "EventList",
    "EventView",
    "Health",
    "JobAccepted",
    "JobAcceptedData",
    "JobView",
    "PreviewLink",
    "TerminalConflict",
]


class _Wire(msgspec.Struct, rename="camel", kw_only=True):
    pass


class ErrorBody(_Wire):
    """Every error response: ``{"error": "<what went wrong and what to fix>"}``."""

    error: str


class TerminalConflict(_Wire):
    """409 from the cancel route: the job is ``complete``, ``failed`` or ``cancelled`` already (``status``);
    a conflict with a concurrent change has no ``status``."""

    error: str
    status: str | None = None


class JobAcceptedData(_Wire):
    """The job a create request created (202) or, on an idempotent replay, the one it created before (200).

    Attributes:
        job_id: 32 lowercase hex digits.
        status: the job's status (``pending``; ``complete`` for a job created complete).
    """

    job_id: str
    status: str


class JobAccepted(_Wire, kw_only=True):
    """The answer of ``POST /api/jobs``: ``{"success": true, "data": {"jobId": ..., "status": ...}}``.

    The audio create routes answer the same JSON under their own names
    (:class:`jobtape.audio.http.schemas.IngestResponse`).
    """

    success: bool = True
    data: JobAcceptedData


class JobView(_Wire, omit_defaults=True):
    """What a poll returns (seed 002), without an envelope.

    Attributes:
        job_id: 32 lowercase hex digits.
        type: the job type's name (``ingest``, ``preview``, ``save``, or a type an app registered).
        status: ``pending``, ``processing``, ``complete``, ``failed`` or ``cancelled``.
        progress: 0-100 percent within the current stage; 0 with a stage means indeterminate.
        stage: the stage name (``cancelling`` while a cancel awaits the worker), or ``None``.
        queue_position: 1-based place among pending jobs while ``pending``, else ``None``.
        not_before: while ``pending`` after a retry (``job.retry_scheduled``) or a lost lease
            (``job.lease_expired``), the UTC time before which no worker claims the job (the
            backoff); ``None`` otherwise. It may be past: the job then waits for a free worker.
        result: the job type's result object once ``complete``, else ``None``.
        error: the failure message once ``failed``, else ``None``.
        created_at: UTC time of the job's first event.
        updated_at: UTC time of the job's latest event.
        download_url: once ``complete``, a time-limited URL of the file the job's
            ``job.completed`` declares as its download (``download_key``, named by the
            handler with ``JobContext.set_download``; for an audio job its ``previewKey`` or
            ``preparedKey``; seed 001), for any job type; absent otherwise, when that file is
            recorded as removed or not stored, or when no link could be made (the poll never
            fails for it).
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


class PreviewLink(_Wire):
    """The preview audio route's answer when storage serves the file itself (S3): a signed URL."""

    download_url: str


class CancelAccepted(_Wire):
    """200 from the cancel route: the request is recorded; a running job stops at the worker's next check."""

    job_id: str
    status: Literal["cancelled"] = "cancelled"
    message: str = "Job cancellation requested"


class EventView(_Wire):
    """One recorded event of a job.

    Attributes:
        position: global position in the log (increasing, gaps possible).
        version: 1-based version within the job's stream (gapless).
        type: the event tag, e.g. ``job.created``.
        data: the event's fields as stored (snake_case keys, timestamps as ISO 8601 text).
        actor: who appended it: ``api``, a worker id, ``cli``.
        recorded_at: UTC time of the append.
    """

    position: int
    version: int
    type: str
    data: dict[str, Any]
    actor: str
    recorded_at: dt.datetime


class EventList(_Wire):
    """A job's events in version order."""

    job_id: str
    events: list[EventView]


class Health(_Wire):
    """Liveness: ``{"status": "ok"}``."""

    status: Literal["ok"] = "ok"
