"""yt-dlp as a child process: the command line, its progress and info lines, its failures.

Pure functions, like :mod:`jobtape.audio.media` for ffmpeg; the download step that runs
them is :mod:`jobtape.audio.jobs.url_ingest`. yt-dlp runs as ``python -m yt_dlp`` (never
imported here), so a cancel terminates it like ffmpeg; when private URLs are not allowed,
as ``python -m jobtape.audio.ytdlp_guard`` (the same yt-dlp, with every host it resolves
checked against the SSRF policy, redirects and embedded URLs included).

The command line makes yt-dlp's output machine-readable:

- ``--newline --progress --progress-template "download:jobtape-progress {json}"`` prints one
  stdout line per progress update with ``downloaded_bytes``, ``total_bytes``,
  ``total_bytes_estimate``, ``fragment_index``/``fragment_count`` (HLS/DASH) and ``status``;
- ``--print-to-file "after_move:{json}" FILE`` writes one JSON line per finished file with
  ``title``, ``duration`` (seconds), ``extractor``, ``filepath``, ``webpage_url``;
- errors go to stderr as ``ERROR: ...`` lines; a file over ``--max-filesize`` is skipped
  with exit status 0 and a ``File is larger than max-filesize`` line on stdout (yt-dlp can
  only check that against a Content-Length, so :class:`DownloadProgress` lets the caller
  enforce the limit on the bytes actually received too).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jobtape.audio import sources

__all__ = [
    "INFO_FIELDS",
    "PROGRESS_PREFIX",
    "DownloadProgress",
    "describe_failure",
    "download_argv",
    "parse_info_lines",
    "parse_progress",
    "skipped_as_too_large",
]

#: Start of the progress lines our template prints.
PROGRESS_PREFIX = "jobtape-progress "
#: Fields of yt-dlp's info dict written to the info file once the file is in place.
INFO_FIELDS = ("title", "duration", "extractor", "extractor_key", "filepath", "webpage_url", "filesize")
_PROGRESS_FIELDS = "downloaded_bytes,total_bytes,total_bytes_estimate,fragment_index,fragment_count,status"
_TOO_LARGE = re.compile(r"File is larger than max-filesize \((\d+) bytes > (\d+) bytes\)")
_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})(?::\s*([^(\n]*))?")
_NETWORK_MARKERS = (
    "Connection refused",
    "Connection reset",
    "timed out",
    "Read timed out",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "No route to host",
    "IncompleteRead",
    "RemoteDisconnected",
    "SSL: ",
)


def download_argv(
    url: str,
    output_dir: Path,
    info_path: Path,
    *,
    ffmpeg: str,
    max_bytes: int,
    socket_timeout_s: float = 30.0,
    guard: bool = True,
    allowed_networks: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The yt-dlp command line that downloads ``url`` into ``output_dir`` as ``media.<ext>``.

    Best audio only where the site offers separate audio (``-f bestaudio/best``), one item
    even for a playlist URL, no user or system config files, no cache, retries kept short.

    Args:
        url: an http(s) URL already checked by :func:`jobtape.audio.sources.check_source_url`.
        output_dir: folder for the file and yt-dlp's temporary ``.part``/fragment files.
        info_path: absolute path of the info file (see the module docstring).
        ffmpeg: the ffmpeg executable yt-dlp uses to merge/fix up (HLS) files.
        max_bytes: ``--max-filesize``, in bytes.
        socket_timeout_s: seconds a connection may stay silent before yt-dlp gives up.
        guard: run it through :mod:`jobtape.audio.ytdlp_guard` (refuse non-public
            addresses); ``False`` when ``Settings.allow_private_urls`` is on.
        allowed_networks: CIDRs the guard lets through (``Settings.allowed_private_networks``),
            passed as its own ``--allow-network`` options before yt-dlp's.
        python: the interpreter that runs ``-m yt_dlp``.

    Returns:
        The argv list.
    """
    info_template = "%(.{" + ",".join(INFO_FIELDS) + "})j"
    runner = ["-m", "jobtape.audio.ytdlp_guard", *(arg for net in allowed_networks for arg in ("--allow-network", net))]
    return [
        python, *(runner if guard else ["-m", "yt_dlp"]),
        "--ignore-config", "--no-playlist", "--no-cache-dir", "--no-mtime",
        "--newline", "--progress",
        "--progress-template", f"download:{PROGRESS_PREFIX}%(progress.{{{_PROGRESS_FIELDS}}})j",
        "--print-to-file", f"after_move:{info_template}", str(info_path),
        "-f", "bestaudio/best",
        "--max-filesize", str(max_bytes),
        "--socket-timeout", f"{socket_timeout_s:g}",
        "--retries", "2", "--fragment-retries", "2",
        "--ffmpeg-location", ffmpeg,
        "--paths", f"home:{output_dir}", "--paths", f"temp:{output_dir}",
        "-o", "media.%(ext)s",
        "--", url,
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DownloadProgress:
    """One progress line.

    Attributes:
        downloaded_bytes: bytes received so far (all fragments so far, for HLS/DASH).
        total_bytes: the size from Content-Length, or ``None``.
        total_bytes_estimate: yt-dlp's estimate for fragmented downloads, or ``None``.
        fragment_index: 1-based fragment being fetched, or ``None``.
        fragment_count: fragments in the playlist, or ``None``.
        status: ``"downloading"``, ``"finished"`` or ``"error"``.
    """

    downloaded_bytes: int
    total_bytes: int | None = None
    total_bytes_estimate: float | None = None
    fragment_index: int | None = None
    fragment_count: int | None = None
    status: str = "downloading"

    @property
    def percent(self) -> int | None:
        """0-100 percent downloaded: by bytes of a known size, else by fragments, else by the
        estimate; ``100`` once finished; ``None`` when nothing tells."""
        if self.status == "finished":
            return 100
        if self.total_bytes:
            fraction = self.downloaded_bytes / self.total_bytes
        elif self.fragment_count:
            fraction = (self.fragment_index or 0) / self.fragment_count
        elif self.total_bytes_estimate:
            fraction = self.downloaded_bytes / self.total_bytes_estimate
        else:
            return None
        return max(0, min(99, int(fraction * 100)))


def parse_progress(line: str) -> DownloadProgress | None:
    """Parse one stdout line; ``None`` when it is not one of our progress lines (or is garbled)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        data = json.loads(line[len(PROGRESS_PREFIX) :])
        return DownloadProgress(
            downloaded_bytes=int(data.get("downloaded_bytes") or 0),
            total_bytes=int(data["total_bytes"]) if data.get("total_bytes") else None,
            total_bytes_estimate=float(data["total_bytes_estimate"]) if data.get("total_bytes_estimate") else None,
            fragment_index=int(data["fragment_index"]) if data.get("fragment_index") else None,
            fragment_count=int(data["fragment_count"]) if data.get("fragment_count") else None,
            status=str(data.get("status") or "downloading"),
        )
    except (ValueError, TypeError, AttributeError):
        return None


def parse_info_lines(text: str) -> dict[str, Any] | None:
    """The last JSON object of the info file (one per finished file), or ``None`` if there is none."""
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def skipped_as_too_large(stdout_lines: Iterable[str]) -> tuple[int, int] | None:
    """``(size, limit)`` in bytes if yt-dlp skipped the file for ``--max-filesize``, else ``None``."""
    for line in stdout_lines:
        match = _TOO_LARGE.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def describe_failure(returncode: int, stderr: str) -> tuple[str, bool]:
    """A readable message for a failed yt-dlp run, and whether a retry may help.

    Network errors (connection refused/reset, timeouts, DNS, HTTP 5xx and 429) are
    retryable; a 4xx, a page without media, an unavailable video are not.

    Args:
        returncode: yt-dlp's exit status (non-zero).
        stderr: its stderr text.

    Returns:
        ``(message, retryable)``.
    """
    if sources.REFUSED_MARKER in stderr:  # wherever it appears: a redirect's or a fragment's refusal too
        refused = stderr[stderr.rindex(sources.REFUSED_MARKER) + len(sources.REFUSED_MARKER) :]
        return f"the download was refused: it led to a non-public address ({refused.split(')')[0].strip()})", False
    lines = stderr.splitlines()
    errors_seen = []
    for number, line in enumerate(lines):
        if line.startswith("ERROR:"):
            text = line[len("ERROR:") :].strip()
            if not text:  # yt-dlp sometimes puts the message on the next line
                text = next((later.strip() for later in lines[number + 1 :] if later.strip()), "")
            errors_seen.append(text)
    detail = next((text for text in reversed(errors_seen) if text), f"yt-dlp exited with status {returncode}")
    http = _HTTP_ERROR.search(detail)
    if http:
        code = int(http.group(1))
        reason = (http.group(2) or "").strip()
        shown = f"HTTP {code}" + (f" {reason}" if reason else "")
        if code == 404:
            return f"the URL answered {shown}: there is nothing to download there; check the URL", False
        if code == 429 or code >= 500:
            return f"the site answered {shown}; try again later", True
        return f"the site refused the download with {shown}", False
    if "Unsupported URL" in detail or "No video formats found" in detail or "Requested format is not available" in detail:
        return "no audio or video found at the URL (yt-dlp found no media on that page)", False
    if any(marker in detail for marker in _NETWORK_MARKERS):
        return f"network error while downloading: {detail}", True
    return f"the download failed: {detail}", False
