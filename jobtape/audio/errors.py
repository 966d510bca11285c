"""The audio package's errors."""

from __future__ import annotations

from jobtape.errors import JobFailed

__all__ = ["MediaError"]


class MediaError(JobFailed):
    """A media tool (ffmpeg, yt-dlp) failed, or the input is not usable media.

    A :class:`jobtape.errors.JobFailed`: the worker fails the job with this message (and
    retries it with backoff when ``retryable``), like any handler's failure.

    Attributes:
        stderr_tail: the tool's last lines of stderr (also appended to the message).
        retryable: whether trying again may succeed (a network error while downloading).
    """

    def __init__(self, message: str, stderr_tail: str = "", retryable: bool = False) -> None:
        self.stderr_tail = stderr_tail
        super().__init__(message + (f"\n--- stderr (tail) ---\n{stderr_tail}" if stderr_tail else ""), retryable=retryable)
