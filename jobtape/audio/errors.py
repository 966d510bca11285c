"""The audio package's errors, under the engine's groups (:mod:`jobtape.errors`).

Each declares the HTTP status the API answers it with (``http_status``, read by
:mod:`jobtape.http.errors` along the MRO), so the engine knows none of them::

    RequestError (422)
    ├── AssetNotFound [404]     no asset with that id in the ``assets`` projection ("Asset not found")
    ├── AssetFileGone [410]     the asset exists on record but its file was removed or is missing
    ├── InvalidRecipe [422]     an edit recipe field is out of range for its asset (names the field)
    └── SourceUrlRefused [422]  a URL to ingest is malformed, not http(s), or points inside the network
    JobFailed (a JobError, 500)
    └── MediaError              ffmpeg / yt-dlp failed; carries the tail of stderr (raised in workers only)
"""

from __future__ import annotations

from jobtape.errors import JobFailed, RequestError

__all__ = ["AssetFileGone", "AssetNotFound", "InvalidRecipe", "MediaError", "SourceUrlRefused"]


class AssetNotFound(RequestError):
    """Asset not found.

    The API answers 404 ``{"error": "Asset not found"}`` (without the id, as the seed routes always did).

    Attributes:
        asset_id: the asset asked for.
    """

    http_status = 404
    http_message = "Asset not found"

    def __init__(self, asset_id: str) -> None:
        self.asset_id = asset_id
        super().__init__(f"Asset not found: {asset_id}")


class AssetFileGone(RequestError):
    """The asset's file is no longer stored.

    The API answers 410 Gone (RFC 9110, section 15.5.11): the asset is on record, its file is not.

    Attributes:
        asset_id: the asset.
        removed: ``True`` when its removal is recorded (``job.blobs_deleted``), ``False``
            when storage simply lacks it (e.g. a log imported without its files).
    """

    http_status = 410

    def __init__(self, asset_id: str, *, removed: bool) -> None:
        self.asset_id = asset_id
        self.removed = removed
        why = "it was removed (see its ingest or save job's events)" if removed else "storage does not have it"
        super().__init__(f"the asset's file is no longer stored: asset {asset_id}: {why}; ingest the recording again to edit it")


class InvalidRecipe(RequestError):
    """An edit recipe is not valid for its asset (422, naming the field).

    Attributes:
        field: the offending field in camelCase (``endSec``, ``fadeInSec``...).
    """

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class SourceUrlRefused(RequestError):
    """A URL source may not be fetched (422).

    Attributes:
        url: the URL as given.
        reason: a code for callers that act on it: ``"malformed"``, ``"scheme"``,
            ``"credentials"``, ``"not_youtube"``, ``"private_address"`` (server-side request
            forgery guard) or ``"unresolvable"`` (DNS gave no address; may be transient).
    """

    http_status = 422

    def __init__(self, url: str, reason: str, message: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(message)


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
