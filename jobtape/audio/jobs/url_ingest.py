"""The ``downloading`` stage of a URL or YouTube ingest: check the URL again, run yt-dlp, find the file.

The API checked the URL before creating the job; DNS may have changed since, so the
worker re-resolves and re-checks it (:func:`jobtape.audio.sources.check_source_url`) right before
the download, with its own ``AudioSettings.allow_private_urls``; unless that allows private
addresses, yt-dlp runs through :mod:`jobtape.audio.ytdlp_guard`, which applies the same
policy to every host yt-dlp resolves (redirects, embedded URLs). yt-dlp runs as a child
process through :meth:`JobContext.run_child` (``job.child_started``/``job.child_exited``;
a cancel terminates it and the workdir with its partial files is removed), limited to
``AudioSettings.max_download_bytes`` (yt-dlp's ``--max-filesize`` on the Content-Length, and the
bytes actually received, checked on every progress line) and to ``AudioSettings.timeout_ingest_s``
seconds. The rest of the ingest is the upload job handler's
(:func:`jobtape.audio.jobs.ingest.normalize_to_asset`).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

from jobtape.app import JobContext
from jobtape.audio import errors as audio_errors
from jobtape.audio import media, sources, ytdlp
from jobtape.audio.errors import MediaError
from jobtape.audio.settings import AudioSettings

__all__ = ["DOWNLOAD_DIR", "Downloaded", "download_source"]

#: Folder (in the job's workdir) that receives the download and yt-dlp's temporary files.
DOWNLOAD_DIR = "download"


@dataclasses.dataclass(frozen=True)
class Downloaded:
    """A finished download.

    Attributes:
        path: the media file in the job's workdir.
        source: the result's ``source`` object: ``{type, url, title, durationSec, extractor}``
            as yt-dlp reports them (``title``/``durationSec`` may be ``None``; seconds).
    """

    path: Path
    source: dict[str, Any]


def download_source(context: JobContext, settings: AudioSettings) -> Downloaded:
    """Stage ``downloading``: fetch the job's ``params.url`` with yt-dlp into the workdir.

    Job params (from the API): ``{"sourceType": "url" | "youtube", "url": ..., "rightsAttested": true}``.

    Returns:
        The downloaded file and where it came from.

    Raises:
        MediaError: the URL is refused now (retryable only if DNS failed), the URL
            answered 404, has no media, is larger than ``max_download_bytes``, took longer than
            ``timeout_ingest_s``, or a network error (retryable) - the message says which.
        CancelRequested: a cancel arrived; yt-dlp is terminated.
    """
    source_type = context.params.get("sourceType", "url")
    url = str(context.params.get("url", ""))
    context.stage("downloading")
    try:
        sources.check_source_url(url, source_type, allow_private=settings.allow_private_urls, allowed_networks=settings.private_networks)
    except audio_errors.SourceUrlRefused as exc:
        raise MediaError(f"the URL was refused: {exc.message}", retryable=exc.reason == "unresolvable") from exc

    output_dir = context.workdir / DOWNLOAD_DIR
    output_dir.mkdir(exist_ok=True)
    info_path = context.workdir / "download-info.jsonl"
    limit = settings.max_download_bytes
    argv = ytdlp.download_argv(
        url,
        output_dir,
        info_path,
        ffmpeg=media.ffmpeg_executable(),
        max_bytes=limit,
        guard=not settings.allow_private_urls,
        allowed_networks=settings.allowed_private_networks,
    )
    stdout_tail: collections.deque[str] = collections.deque(maxlen=20)

    def on_line(line: str) -> None:
        progress = ytdlp.parse_progress(line)
        if progress is None:
            if line:
                stdout_tail.append(line)
            return
        if progress.downloaded_bytes > limit or (progress.total_bytes or 0) > limit:
            raise MediaError(_too_large(max(progress.downloaded_bytes, progress.total_bytes or 0), limit))
        if progress.percent is not None:
            context.progress(progress.percent)

    outcome = context.run_child(argv, on_line=on_line, name="download", timeout_s=settings.timeout_ingest_s)
    if outcome.timed_out:
        raise MediaError(
            f"the download took longer than {settings.timeout_ingest_s:g} s and was stopped",
            media.stderr_tail(outcome.stderr),
        )
    if outcome.returncode != 0:
        message, retryable = ytdlp.describe_failure(outcome.returncode, outcome.stderr)
        raise MediaError(message, media.stderr_tail(outcome.stderr), retryable=retryable)
    skipped = ytdlp.skipped_as_too_large(stdout_tail)
    if skipped is not None:
        raise MediaError(_too_large(*skipped))
    info = ytdlp.parse_info_lines(info_path.read_text(errors="replace")) if info_path.exists() else None
    path = Path(str(info.get("filepath", ""))) if info else None
    if info is None or path is None or not path.is_file() or output_dir.resolve() not in path.resolve().parents:
        raise MediaError(
            "yt-dlp finished without producing a media file", media.stderr_tail("\n".join(stdout_tail) + "\n" + outcome.stderr)
        )
    size = path.stat().st_size
    if size > limit:
        raise MediaError(_too_large(size, limit))
    duration = info.get("duration")
    return Downloaded(
        path,
        {
            "type": source_type,
            "url": url,
            "title": info.get("title"),
            "durationSec": round(float(duration), 3) if isinstance(duration, int | float) else None,
            "extractor": info.get("extractor"),
        },
    )


def _too_large(size: int, limit: int) -> str:
    return f"the media is larger than the download limit: {size} bytes > {limit} bytes (raise JOBTAPE_MAX_DOWNLOAD_BYTES to allow it)"
