"""Direct uploads to the bucket: a presigned PUT URL, then an ingest that names the stored key.

Large files need not pass through the API: the client asks ``POST /api/storage/upload``
for a presigned PUT URL (1 hour by default) and a storage key, PUTs the file straight to
the object store, then posts ``{"sourceType": "storage", "storageKey": <key>}`` to
``/api/audio/ingest``. Only keys this route hands out
(``direct-uploads/<owner tag>/<id>/original.<ext>``) are accepted by ingest, only from the
owner they were handed to (the owner tag: the first 16 hex digits of the SHA-256 of the
owner; docs/security.md, "Status rules"), and only once the object exists. A key handed to
another owner is answered exactly like a key never handed out, so keys leak nothing and
nobody can ingest, or make the API delete, another owner's upload.

Backends without upload URLs (the local filesystem) answer 501: clients send the file as
multipart to the ingest route instead.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import JSONBody

from jobtape import errors
from jobtape.audio.http import ingest
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.http import auth as http_auth
from jobtape.http import openapi
from jobtape.storage import Storage

__all__ = [
    "DIRECT_UPLOAD_PREFIX",
    "DirectUploadRequest",
    "DirectUploadTicket",
    "is_storage_source",
    "owner_tag",
    "request_upload",
    "request_upload_unavailable",
    "storage_source_params",
    "upload_route",
]

#: Folder of keys handed out for direct uploads.
DIRECT_UPLOAD_PREFIX = "direct-uploads/"
_KEY_PATTERN = re.compile(r"direct-uploads/(?P<owner_tag>[0-9a-f]{16})/[0-9a-f]{32}/original\.[a-z0-9]{1,16}")
_NOT_HANDED_OUT = "storageKey must be a key handed out to you by POST /api/storage/upload"


def owner_tag(owner: str) -> str:
    """The owner's part of a direct-upload key: the first 16 hex digits of SHA-256 of ``owner`` (UTF-8).

    Not a secret: it binds a key to the owner it was handed to, and ingest compares it with
    the caller's owner. The key's random part (128 bits) is what a caller cannot guess.
    """
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


class _Wire(msgspec.Struct, rename="camel", kw_only=True):
    pass


class DirectUploadRequest(_Wire):
    """What the client is about to upload (used for the key's extension only)."""

    filename: Annotated[str, msgspec.Meta(max_length=1024, description="The file's name, e.g. talk.mp3")] | None = None
    content_type: Annotated[str, msgspec.Meta(max_length=200, description="The file's media type")] = "application/octet-stream"


class DirectUploadTicket(_Wire):
    """Where to PUT the file, and the key to pass to ``/api/audio/ingest`` afterwards."""

    upload_url: str
    storage_key: str
    expires_in_sec: int
    method: str = "PUT"


class _StorageSource(_Wire):
    source_type: str
    storage_key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    original_filename: str | None = None


@post(
    "/api/storage/upload",
    status_code=200,
    summary="Get a presigned URL to upload a file straight to the bucket",
    description="Answers a presigned PUT URL (valid for the configured upload TTL, 1 hour by default) and the "
    'storage key; after the PUT, POST {"sourceType": "storage", "storageKey": ...} to /api/audio/ingest.',
    responses={
        400: openapi.error("The body is not a JSON object of filename and contentType"),
        503: openapi.error("The object store cannot be reached; retry later"),
    },
    tags=["ingest"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_SUBMIT},
)
async def request_upload(
    request: Request[Any, Any, Any],
    data: JSONBody[DirectUploadRequest],
    storage: NamedDependency[Storage],
    settings: NamedDependency[Settings],
) -> DirectUploadTicket:
    """Hand out a fresh ``direct-uploads/<owner tag>/<id>/`` key, bound to the caller's owner, and a presigned PUT URL for it.

    Raises:
        HTTPException: 501 when the storage backend cannot issue upload URLs.
    """
    extension = ingest.extension_for(data.filename, data.content_type.split(";")[0].strip().lower())
    key = f"{DIRECT_UPLOAD_PREFIX}{owner_tag(http_auth.principal_of(request).owner)}/{uuid.uuid4().hex}/original.{extension}"
    url = await anyio.to_thread.run_sync(storage.upload_url, key, settings.upload_url_ttl_s)
    if url is None:
        raise HTTPException(
            status_code=501,
            detail="this server stores files locally and cannot issue upload URLs; "
            "send the file as multipart/form-data to /api/audio/ingest",
        )
    return DirectUploadTicket(upload_url=url, storage_key=key, expires_in_sec=settings.upload_url_ttl_s)


@post(
    "/api/storage/upload",
    status_code=501,
    include_in_schema=False,
    name="request-upload-unavailable",
)
async def request_upload_unavailable() -> Response[Any]:
    """Local storage: answer 501 naming the multipart upload instead (the route is not in the OpenAPI document)."""
    raise HTTPException(
        status_code=501,
        detail="this server stores files locally and cannot issue upload URLs; send the file as multipart/form-data to /api/audio/ingest",
    )


def upload_route(storage: Storage) -> Any:
    """The direct-upload route for ``storage``: :func:`request_upload` when it issues upload URLs
    (object storage), else :func:`request_upload_unavailable` (501, left out of the OpenAPI document:
    the document lists only what this server offers)."""
    return request_upload if type(storage).upload_url is not Storage.upload_url else request_upload_unavailable


def is_storage_source(body: bytes) -> bool:
    """Whether a JSON ingest body names ``"sourceType": "storage"`` (else it is for another source)."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(decoded, dict) and decoded.get("sourceType") == "storage"


def storage_source_params(body: bytes, storage: Storage, settings: Settings, owner: str) -> dict[str, Any]:
    """Check a ``{"sourceType": "storage", "storageKey": ...}`` body from ``owner``; return the ingest job's params.

    Blocking (it asks the storage for the object's size): call it in a worker thread.

    Returns:
        ``{"sourceType": "storage", "storageKey", "originalFilename", "sizeBytes"}``.

    Raises:
        HTTPException: 400 for malformed JSON; 422 for a key this API did not hand out to
            ``owner`` (another owner's key gets the same answer), an object that was not
            uploaded (yet) or is empty; 413 for one over the upload limit (then deleted).
    """
    try:
        source = msgspec.json.decode(body, type=_StorageSource)
    except msgspec.ValidationError as exc:
        raise HTTPException(status_code=422, detail=f"invalid storage ingest body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(status_code=400, detail=f"malformed JSON body: {exc}") from exc
    key = source.storage_key
    matched = _KEY_PATTERN.fullmatch(key)
    if matched is None or matched["owner_tag"] != owner_tag(owner):
        raise HTTPException(status_code=422, detail=_NOT_HANDED_OUT)
    try:
        size = storage.size(key)
    except errors.BlobNotFound:
        raise HTTPException(status_code=422, detail="nothing was uploaded under storageKey; PUT the file to its uploadUrl first") from None
    if size == 0 or size > settings.max_upload_bytes:
        storage.delete(key)
        raise HTTPException(
            status_code=422 if size == 0 else 413,
            detail="the uploaded file is empty"
            if size == 0
            else f"the uploaded file is larger than the limit of {settings.max_upload_bytes} bytes; it was deleted",
        )
    return {"sourceType": "storage", "storageKey": key, "originalFilename": source.original_filename, "sizeBytes": size}
