"""Downloads: signed links on polls, the signed download route, and serving a blob with Range.

- :func:`download_url_for` gives a complete job's poll its ``downloadUrl``: the key its
  ``job.completed`` declares as its download (:func:`jobtape.projections.state.download_key`,
  for any job type; a handler names it with ``JobContext.set_download``) through
  :meth:`Storage.signed_url`, only for a file that is stored: not one recorded as removed
  (``job.blobs_deleted``), and not one storage lacks (``Storage.exists``). Any failure to make a link leaves it out and is logged: the
  poll itself never fails for it (seed 001).
- ``GET /api/storage/download`` depends on the storage backend:

  - local (a storage with a ``signer``): ``?key=&expires=&signature=`` serves the bytes
    after checking the HMAC-SHA256 signature and deadline (:mod:`jobtape.storage.signing`);
    forged, altered or expired links get 403, a link without ``expires``/``signature`` 400.
    ``HEAD`` answers the same headers without the body.
  - object storage (S3/R2, no ``signer``): ``?key=`` answers JSON ``{"downloadUrl": ...}``,
    a presigned GET of the object valid for ``Settings.download_url_ttl_s`` (7 days by
    default), not a redirect, so browsers need no CORS rule for the API (seed 004: "JSON
    response for download route in R2 mode (not redirect, avoids CORS)"). Only keys under
    the prefixes the app registers (:meth:`jobtape.App.downloadable`, the dependency
    ``downloadable_keys``; the audio app's are ``assets/`` and ``previews/``, never the
    uploads) are signed; any other key gets 403, a missing object 404. Where the app
    registered an owner lookup for the prefix (the audio app does), a key of another owner's
    output is a 404 too (``admin`` excepted, issue 11); without one, a key is a capability
    like a job id. The bucket enforces the expiry.
- :func:`serve_blob` streams a blob with its Content-Type and HTTP Range support (RFC 9110
  §14: ``Accept-Ranges: bytes``; one range -> 206 + ``Content-Range``; unsatisfiable -> 416).
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Annotated, Any

import anyio.to_thread
from litestar import HttpMethod, Request, get, route
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Response, Stream

from jobtape import clock, errors
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.http import auth as http_auth
from jobtape.http import openapi, ranges, schemas
from jobtape.jobtypes import DownloadableKeys
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage import signing
from jobtape.storage.base import Storage, validate_key

__all__ = [
    "content_type_for",
    "download",
    "download_link",
    "download_route",
    "download_url_for",
    "serve_blob",
]

logger = logging.getLogger(__name__)

_TYPES = {".mp3": "audio/mpeg", ".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg", ".m4a": "audio/mp4"}


def content_type_for(key: str) -> str:
    """The Content-Type of a blob by its key's extension (``.mp3`` -> ``audio/mpeg``; unknown -> octet-stream)."""
    suffix = "." + key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    return _TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


def download_url_for(state: job_state.JobState, storage: Storage, expires_in_s: int) -> str | None:
    """A signed URL of a complete job's output, or ``None`` (not complete, no key, the file is
    gone, or signing failed).

    A link is never handed out for a file that is not there: a key the job's log records as
    removed gets none without any I/O, and otherwise ``storage.exists`` is asked (a ``stat``
    on local storage, a HEAD on S3). The check runs only for complete jobs with an output,
    i.e. once or twice per job rather than on every progress poll, and it is what makes a log
    imported without its files (or a preview served from a cache entry whose render was
    archived) answer honestly; its cost is measured in docs/jobs.md. Never raises: a failure
    is logged and yields ``None`` (seed 001).
    """
    key = job_state.download_key(state)  # None unless complete, declared and not recorded as removed
    if key is None:
        return None
    try:
        if not storage.exists(key):
            return None
        return storage.signed_url(key, expires_in_s)
    except Exception:  # a link is optional; the poll must answer
        logger.warning("could not make a download URL for job %s (key %r)", state.job_id, key, exc_info=True)
        return None


async def serve_blob(request: Request[Any, Any, Any], storage: Storage, key: str) -> Response[Any]:
    """Stream the blob under ``key``, honouring a single-range ``Range`` header; headers only for HEAD.

    A ``HEAD`` request gets the very headers a ``GET`` would (status, ``Content-Length``,
    ``Accept-Ranges``, ``Content-Type``, ``Content-Range``) and no body (RFC 9110 §9.3.2).

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
    status_code, start, end = 200, 0, None
    if isinstance(wanted, ranges.ByteRange):
        status_code, start, end = 206, wanted.start, wanted.end
        headers["Content-Range"] = ranges.content_range(wanted, size)
    headers["Content-Length"] = str(wanted.length if isinstance(wanted, ranges.ByteRange) else size)
    if request.method == "HEAD":
        return Response(content=b"", status_code=status_code, media_type=media_type, headers=headers)
    chunks = await anyio.to_thread.run_sync(lambda: storage.open_stream(key, start=start, end=end))
    return Stream(chunks, status_code=status_code, media_type=media_type, headers=headers)


_DESCRIPTION_LOCAL = (
    "Serves the file a poll's signed downloadUrl names (key, expires, signature), with HTTP Range "
    "(one range: 206 with Content-Range; 416 when unsatisfiable); a forged, altered or expired "
    "link gets 403. HEAD answers the same headers without the body."
)
_DESCRIPTION_OBJECT = (
    "?key= of a prepared asset or preview answers JSON {downloadUrl}, a presigned GET of the "
    "object store valid for the configured download TTL (7 days by default)."
)
_KEY_DESCRIPTION = "The storage key"
#: A key the object-storage route may sign: a prepared asset's or a preview's (no ``.``/``..`` segments).
_OUTPUT_KEY_PATTERN = r"^(assets|previews)/[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"


@route(
    signing.DOWNLOAD_PATH,
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="Download a file",
    description=_DESCRIPTION_LOCAL,
    responses={
        200: ResponseSpec(bytes, media_type="audio/*", description="The file (Content-Length, Accept-Ranges)"),
        206: ResponseSpec(bytes, media_type="audio/*", description="The requested range (Content-Range)"),
        400: openapi.error("key, expires or signature is missing or malformed"),
        403: openapi.error("The signature is not valid or the link expired"),
        404: openapi.error("No such file"),
        416: openapi.error("The Range is outside the file"),
        503: openapi.error("The storage failed; retry later"),
    },
    tags=["downloads"],
    name="download-local",
    opt={http_auth.SIGNED_LINK_OPT: True},  # the signature authorises it (a capability): jobtape.http.auth
)
async def download(
    request: Request[Any, Any, Any],
    storage: NamedDependency[Storage],
    key: Annotated[str, QueryParameter(name="key", description=_KEY_DESCRIPTION, min_length=1, max_length=1024)],
    # Required in the document; checked here, so that a link without them gets the message below.
    expires: Annotated[
        str | None,
        QueryParameter(
            name="expires",
            description="Deadline, Unix seconds",
            required=True,
            schema_extra={**openapi.OPTIONAL_STRING, "pattern": r"^[0-9]{1,12}$"},
        ),
    ] = None,
    signature: Annotated[
        str | None,
        QueryParameter(
            name="signature",
            description="HMAC-SHA256, 64 lowercase hex digits",
            required=True,
            schema_extra={**openapi.OPTIONAL_STRING, "pattern": r"^[0-9a-f]{64}$"},
        ),
    ] = None,
) -> Response[Any]:
    """Local storage: check the link's signature and deadline, then stream the file (headers only for HEAD).

    Raises:
        errors.InvalidSignature: 403.
        errors.BlobNotFound: 404.
        HTTPException: 400 without ``expires``/``signature``; 416 for an unsatisfiable range.
    """
    signer: signing.URLSigner | None = getattr(storage, "signer", None)
    if signer is None:  # pragma: no cover - create_app registers this route for signing storages only
        raise HTTPException(status_code=404, detail="this storage backend does not sign download links")
    if not expires or not signature:
        raise HTTPException(
            status_code=400, detail="a download link needs key, expires and signature; use the downloadUrl of a poll of the complete job"
        )
    signer.verify(key, expires, signature, clock.utcnow().timestamp())
    return await serve_blob(request, storage, key)


@get(
    signing.DOWNLOAD_PATH,
    summary="Get a download link",
    description=_DESCRIPTION_OBJECT,
    responses={
        400: openapi.error("key is missing or not a valid storage key"),
        403: openapi.error("The key is not a prepared asset or preview"),
        404: openapi.error("No such file"),
        503: openapi.error("The object store cannot be reached; retry later"),
    },
    tags=["downloads"],
    name="download-link",
    opt={http_auth.SCOPE_OPT: auth.JOBS_READ},
)
async def download_link(
    request: Request[Any, Any, Any],
    repository: NamedDependency[JobRepository],
    storage: NamedDependency[Storage],
    settings: NamedDependency[Settings],
    downloadable_keys: NamedDependency[DownloadableKeys],
    key: Annotated[
        str,
        QueryParameter(
            name="key",
            description="The storage key of a prepared asset or preview",
            min_length=1,
            max_length=1024,
            # documented; checked below (403 naming the prefixes, 400 for a bad key)
            schema_extra={"pattern": _OUTPUT_KEY_PATTERN},
        ),
    ],
) -> Response[schemas.PreviewLink]:
    """Object storage: answer ``{"downloadUrl": <presigned GET>}`` for a prepared asset or preview.

    Raises:
        errors.InvalidStorageKey: 400, ``key`` is not a valid key.
        errors.BlobNotFound: 404.
        errors.StorageError: 503, the object store cannot be reached.
        HTTPException: 403 for a key outside ``downloadable_keys`` (:meth:`jobtape.App.downloadable`).
    """
    if not downloadable_keys.allows(key):
        allowed = " or ".join(downloadable_keys.prefixes) or "none registered"
        raise HTTPException(
            status_code=403, detail=f"only {downloadable_keys.what} can be downloaded by key (keys starting with {allowed}); got {key!r}"
        )
    owner_of = downloadable_keys.owner_lookup(validate_key(key))  # a malformed key is a 400 before any lookup
    if owner_of is not None:  # another owner's output is answered like a missing file (issue 11)
        owner = await anyio.to_thread.run_sync(owner_of, repository.store, key)
        if owner is None:
            raise errors.BlobNotFound(key)
        http_auth.require_visible(http_auth.principal_of(request), owner, errors.BlobNotFound(key))
    await anyio.to_thread.run_sync(storage.size, key)  # BlobNotFound -> 404 rather than a URL that 404s later
    url = await anyio.to_thread.run_sync(storage.signed_url, key, settings.download_url_ttl_s)
    if url is None:
        raise HTTPException(status_code=404, detail="this storage backend can neither serve nor sign downloads")
    return Response(schemas.PreviewLink(download_url=url), headers={"Cache-Control": "private, no-store"})


def download_route(storage: Storage) -> Any:
    """The download route for ``storage``: :func:`download` (signed links, bytes) when it signs
    links itself (local storage), else :func:`download_link` (a presigned URL of the object store)."""
    return download if getattr(storage, "signer", None) is not None else download_link
