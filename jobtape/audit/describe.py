"""Short human-readable text for events and times, shared by the CLI's tables (pure)."""

from __future__ import annotations

import datetime as dt
from pathlib import PurePath

from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev

__all__ = ["details", "duration", "first_line", "key_details", "short", "time_ms"]


def time_ms(at: dt.datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm`` in UTC (milliseconds, truncated)."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:
    """Seconds as ``0.412s``, ``4m07.3s`` or ``2h05m``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.3f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def short(value: object, limit: int = 40) -> str:
    """``str(value)`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(text: str) -> str:
    """The first line of a (multi-line) message, at most 120 characters; ``(no message)`` if blank."""
    return short(text.strip().splitlines()[0], 120) if text.strip() else "(no message)"


def details(event: ev.Event) -> str:
    """The key fields of an event in a few words, e.g. ``stage measuring``, ``pid 4242 exit 0``."""
    match event:
        case ev.JobCreated(job_type=job_type, owner=owner, params=params):
            shown = " ".join(f"{k}={short(v)}" for k, v in params.items() if isinstance(v, str | int | float | bool))
            return f"{job_type} by {owner}" + (f": {shown}" if shown else "")
        case ev.JobClaimed(attempt=attempt):
            return f"attempt {attempt}"
        case ev.JobStageChanged(stage=stage):
            return f"stage {stage}"
        case ev.JobProgress(percent=percent):
            return f"{percent}%"
        case ev.JobHeartbeat(lease_expires_at=lease):
            return f"lease until {time_ms(lease)}" if lease else ""
        case ev.JobCancelRequested(reason=reason):
            return reason or ""
        case ev.JobChildStarted(pid=pid, argv=argv):
            return f"pid {pid} {PurePath(argv[0]).name if argv else ''}".rstrip()
        case ev.JobChildExited(pid=pid, exit_status=status):
            return f"pid {pid} exit {status}"
        case ev.JobCompleted(result=result):
            return f"result: {', '.join(result)}" if result else "result: (empty)"
        case ev.JobFailed(error=error, retryable=retryable):
            return first_line(error) + (" (retryable)" if retryable else "")
        case ev.JobRetryScheduled(error=error, attempt=attempt, not_before=not_before):
            return f"attempt {attempt}: {first_line(error)}" + (f"; not before {time_ms(not_before)}" if not_before else "")
        case ev.JobLeaseExpired(worker_id=worker_id, attempt=attempt, not_before=not_before):
            return f"{worker_id} attempt {attempt}" + (f"; not before {time_ms(not_before)}" if not_before else "")
        case ev.JobReleased(worker_id=worker_id, reason=reason):
            return f"by {worker_id}: {reason}"
        case ev.JobBlobsDeleted(keys=keys, reason=reason):
            return f"removed {', '.join(keys)}" + (f": {reason}" if reason else "")
    return ""


def key_details(event: kev.KeyEvent) -> str:
    """The key fields of an API-key event, never its token hash, e.g. ``owner alice scopes jobs:read name ci``."""
    match event:
        case kev.KeyCreated(owner=owner, scopes=scopes, name=name):
            return f"owner {owner} scopes {','.join(scopes)}" + (f" name {short(name)}" if name else "")
        case kev.KeyRevoked():
            return "revoked"
    return ""  # pragma: no cover - the union is exhaustive
