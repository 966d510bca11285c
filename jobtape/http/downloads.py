"""Downloads: signed links on polls, the signed download route, and serving a blob with Range.

- :func:`download_url_for` gives a complete job's poll its ``downloadUrl`` (the result's
  ``previewKey`` or ``preparedKey`` through :meth:`Storage.signed_url`). Any failure to make
  a link leaves it out and is logged: the poll itself never fails for it (seed 001).
- ``GET /api/storage/download?key=&expires=&signature=`` serves a blob of the local backend
  after checking the HMAC-SHA256 signature and deadline (:mod:`jobtape.storage.signing`);
  forged, altered or expired links get 403.
- :func:`serve_blob` streams a blob with its Content-Type and HTTP Range support (RFC 9110
  §14: ``Accept-Ranges: bytes``; one range -> 206 + ``Content-Range``; unsatisfiable -> 416).
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Annotated, Any

import anyio.to_thread
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Response, Stream

from jobtape import clock
from jobtape.http import ranges, schemas
from jobtape.projections import state as job_state
from jobtape.storage import signing
from jobtape.storage.base import Storage

__all__ = ["RESULT_KEYS", "content_type_for", "download", "download_url_for", "serve_blob"]

logger = logging.getLogger(__name__)

#: Result fields that hold a storage key a client may download, in order of preference.
RESULT_KEYS = ("previewKey", "preparedKey")
_TYPES = {".mp3": "audio/mpeg", ".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg", ".m4a": "audio/mp4"}


def content_type_for(key: str) -> str:
    """The Content-Type of a blob by its key's extension (``.mp3`` -> ``audio/mpeg``; unknown -> octet-stream)."""
    suffix = "." + key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    return _TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


def download_url_for(state: job_state.JobState, storage: Storage, expires_in_s: int) -> str | None:
    """A signed URL of a complete job's output, or ``None`` (not complete, no key, or signing failed).

    Never raises: a failure is logged and yields ``None`` (seed 001).
    """
    if state.status != "complete" or not state.result:
        return None
    key = next((state.result[name] for name in RESULT_KEYS if isinstance(state.result.get(name), str)), None)
    if key is None:
        return None
    try:
        return storage.signed_url(key, expires_in_s)
    except Exception:  # a link is optional; the poll must answer
        logger.warning("could not make a download URL for job %s (key %r)", state.job_id, key, exc_info=True)
        return None


async def serve_blob(request: Request[Any, Any, Any], storage: Storage, key: str) -> Response[Any]:
    """Stream the blob under ``key``, honouring a single-range ``Range`` header.

    Raises:
        errors.BlobNotFound: 404, nothing is stored under ``key``.
        HTTPException: 416 for an unsatisfiable range (with ``Content-Range: bytes */size``).
    """
    size = await anyio.to_thread.run_sync(storage.size, key)
    wanted = ranges.parse_range(request.headers.get("range"), size)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0"}
    if wanted is ranges.UNSATISFIABLE:
        raise HTTPException(
            status_code=416,
            detail=f"the range {request.headers.get('range')!r} is outside the file's {size} bytes",
            headers={**headers, "Content-Range": ranges.content_range(None, size)},
        )
    media_type = content_type_for(key)
    if wanted is None:
        chunks = await anyio.to_thread.run_sync(storage.open_stream, key)
        return Stream(chunks, status_code=200, media_type=media_type, headers={**headers, "Content-Length": str(size)})
    assert isinstance(wanted, ranges.ByteRange)
    chunks = await anyio.to_thread.run_sync(lambda: storage.open_stream(key, start=wanted.start, end=wanted.end))
    headers.update({"Content-Range": ranges.content_range(wanted, size), "Content-Length": str(wanted.length)})
    return Stream(chunks, status_code=206, media_type=media_type, headers=headers)


@get(
    signing.DOWNLOAD_PATH,
    summary="Download a file by signed link",
    description="Serves the file a poll's downloadUrl names (local storage). Supports HTTP Range "
    "(one range: 206 with Content-Range; 416 when unsatisfiable). A forged, altered or expired link gets 403.",
    responses={
        403: ResponseSpec(schemas.ErrorBody, description="The signature is not valid or the link expired"),
        404: ResponseSpec(schemas.ErrorBody, description="No such file, or this storage backend serves its own links"),
        416: ResponseSpec(schemas.ErrorBody, description="The Range is outside the file"),
    },
    tags=["downloads"],
)
async def download(
    request: Request[Any, Any, Any],
    storage: NamedDependency[Storage],
    key: Annotated[str, QueryParameter(name="key", description="The storage key", min_length=1, max_length=1024)],
    expires: Annotated[str, QueryParameter(name="expires", description="Deadline, Unix seconds")],
    signature: Annotated[str, QueryParameter(name="signature", description="HMAC-SHA256, hex")],
) -> Response[Any]:
    """Check the link's signature and deadline, then stream the file.

    Raises:
        errors.InvalidSignature: 403.
        errors.BlobNotFound: 404.
        HTTPException: 404 when the storage has no signer (an object store signs its own
            links); 416 for an unsatisfiable range.
    """
    signer: signing.URLSigner | None = getattr(storage, "signer", None)
    if signer is None:
        raise HTTPException(status_code=404, detail="this storage backend serves downloads from its own signed URLs")
    signer.verify(key, expires, signature, clock.utcnow().timestamp())
    return await serve_blob(request, storage, key)

