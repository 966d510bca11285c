"""Command-line options of the worker's lease, retry, timeout and shutdown settings.

Shared by ``jobtape worker`` and ``jobtape serve`` (whose embedded workers use them), so
both take the same flags and environment variables. Each flag's value (flag, then its
``JOBTAPE_*`` variable, then the default of :class:`jobtape.config.Settings` or, for the
audio jobs' timeouts and ffmpeg pace, :class:`jobtape.audio.settings.AudioSettings`) reaches
the command as one ``worker_settings`` keyword: ``{field: value}``
(:func:`jobtape.cli.audit.split_values` parts them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from jobtape.audio.settings import AudioSettings
from jobtape.cli import types
from jobtape.config import Settings

__all__ = ["OPTIONS", "worker_settings_options"]


def _option(flag: str, field: str, kind: Any, env: str, help_text: str) -> Callable[[Callable[..., Any]], Any]:
    default = getattr(AudioSettings if field in AudioSettings.fields() else Settings, field)
    return click.option(
        flag, field, type=kind, default=default, envvar=env, show_envvar=True, show_default=default is not None, help=help_text
    )


_SECONDS = types.Seconds(0.0, types.DAY_S)

#: (flag, Settings field, click type, environment variable, help text).
OPTIONS = (
    (
        "--lease-ttl",
        "lease_ttl_s",
        types.Seconds(0.3, types.DAY_S),
        "JOBTAPE_LEASE_TTL",
        (
            "Lease of a claimed job, in seconds: renewed by every event of the worker, a heartbeat after a third of it"
            " without one; a reaper takes back a job whose lease expired."
        ),
    ),
    (
        "--grace",
        "shutdown_grace_s",
        _SECONDS,
        "JOBTAPE_SHUTDOWN_GRACE",
        (
            "On SIGTERM/SIGINT, seconds running jobs may take to finish before their children are terminated and the"
            " jobs released (a second signal: 0)."
        ),
    ),
    (
        "--max-attempts",
        "max_attempts",
        click.IntRange(min=1),
        "JOBTAPE_MAX_ATTEMPTS",
        (
            "Total attempts per job, the first included (3: the first run and at most 2 more); a retryable failure or"
            " a lease expiry on the last one fails the job. A job type's own max_attempts overrides it."
        ),
    ),
    (
        "--backoff-base",
        "backoff_base_s",
        _SECONDS,
        "JOBTAPE_BACKOFF_BASE",
        "Retry backoff after the first attempt, in seconds (doubling per attempt, with jitter).",
    ),
    ("--backoff-cap", "backoff_cap_s", _SECONDS, "JOBTAPE_BACKOFF_CAP", "Largest retry backoff, in seconds."),
    (
        "--timeout-ingest",
        "timeout_ingest_s",
        types.Seconds(0.1, 7 * types.DAY_S),
        "JOBTAPE_TIMEOUT_INGEST",
        "Seconds an ingest job may run from its claim before it fails with 'timed out after N s'.",
    ),
    (
        "--timeout-preview",
        "timeout_preview_s",
        types.Seconds(0.1, 7 * types.DAY_S),
        "JOBTAPE_TIMEOUT_PREVIEW",
        "Seconds a preview job may run from its claim.",
    ),
    (
        "--timeout-save",
        "timeout_save_s",
        types.Seconds(0.1, 7 * types.DAY_S),
        "JOBTAPE_TIMEOUT_SAVE",
        "Seconds a save job may run from its claim.",
    ),
    (
        "--host-id",
        "host_id",
        str,
        "JOBTAPE_HOST_ID",
        ("This host's id in worker ids and child records (the orphan sweep kills only this host's children); the hostname by default."),
    ),
    (
        "--failed-upload-retention",
        "failed_upload_retention_s",
        types.Seconds(0.0, 366 * types.DAY_S),
        "JOBTAPE_FAILED_UPLOAD_RETENTION",
        (
            "Seconds the upload of a failed or cancelled ingest is kept after the job ended; then a worker removes it"
            " and records job.blobs_deleted (0: at the next sweep)."
        ),
    ),
    (
        "--orphan-upload-grace",
        "orphan_upload_grace_s",
        types.Seconds(0.0, 366 * types.DAY_S),
        "JOBTAPE_ORPHAN_UPLOAD_GRACE",
        (
            "Seconds an upload no job refers to (a process killed between its write and job.created) is kept;"
            " then a worker deletes it (0: never)."
        ),
    ),
    (
        "--ffmpeg-readrate",
        "ffmpeg_readrate",
        types.Seconds(0.01, 1000.0),
        "JOBTAPE_FFMPEG_READRATE",
        "Read ffmpeg's input at most this many times real time; as fast as it can by default.",
    ),
)


def worker_settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the :data:`OPTIONS` to a click command function; it receives them as ``worker_settings``.

    Apply it below ``@cli.command()`` (and below other option decorators).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {field: kwargs.pop(field) for _, field, *_ in OPTIONS}
        values["allowed_private_networks"] = kwargs.pop("allowed_private_networks") or None  # none given: the env's
        return command(*args, worker_settings={k: v for k, v in values.items() if v is not None}, **kwargs)

    wrapper = click.option(
        "--allow-private-network",
        "allowed_private_networks",
        multiple=True,
        metavar="CIDR",
        help="A non-public network URL ingests may fetch from, e.g. an internal media server's 10.1.2.0/24"
        " (repeatable; env JOBTAPE_ALLOWED_PRIVATE_NETWORKS, comma-separated). Every other non-public address"
        " stays refused; cloud metadata addresses always are. None by default.",
    )(wrapper)
    for flag, field, kind, env, help_text in reversed(OPTIONS):
        wrapper = _option(flag, field, kind, env, help_text)(wrapper)
    return wrapper
