"""The ingest route: stream an uploaded file to storage, or take a URL, then create an ``ingest`` job.

No media work happens in the request: the route stores the bytes as they arrive and
appends ``job.created``; a worker does the rest. Order matters for the worker: the blob
exists before the job that names it. Any failure after the blob was stored deletes it, so
a rejected request leaves neither an event nor a blob behind.

A JSON body (``{"sourceType": "url" | "youtube", "url": ..., "rightsAttested": true}``)
names a URL instead: it is checked (:mod:`jobtape.audio.http.url_source`, SSRF guard included)
and the job is created with the URL in its params; the worker downloads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar._multipart import parse_content_header  # what Request.content_type parses with
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send

from jobtape import errors
from jobtape.audio.http import direct_upload, url_source
from jobtape.audio.http import schemas as audio_schemas
from jobtape.audio.settings import AudioSettings
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.http import auth as http_auth
from jobtape.http import creation, openapi, spool, upload
from jobtape.projections.repository import JobRepository, new_job_id
from jobtape.storage import Storage

__all__ = ["FORM_OVERHEAD_BYTES", "extension_for", "ingest", "ingest_route", "same_ingest_request", "upload_key"]

logger = logging.getLogger(__name__)

#: Room for multipart boundaries and part headers on top of ``max_upload_bytes``, in bytes (the engine's).
FORM_OVERHEAD_BYTES = upload.FORM_OVERHEAD_BYTES
#: Folder (under ``Settings.data_dir``) holding uploads while they arrive (see :mod:`jobtape.http.spool`).
UPLOAD_TEMP_DIR = spool.UPLOAD_TEMP_DIR

_EXTENSIONS = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "video/ogg": "ogv",
}
_ALNUM_SUFFIX = re.compile(r"[a-z0-9]{1,16}")


def extension_for(filename: str | None, content_type: str) -> str:
    """Pick the stored file's extension.

    Args:
        filename: the client's file name, or ``None``.
        content_type: the part's media type, lowercase without parameters.

    Returns:
        The file name's suffix lowercased if it is 1-16 ASCII letters/digits
        (``"Talk.MP3"`` -> ``"mp3"``); else one known for the content type
        (``audio/mpeg`` -> ``"mp3"``, or the subtype itself if alphanumeric); else ``"bin"``.
    """
    if filename and "." in filename.strip("."):
        suffix = filename.rsplit(".", 1)[1].lower()
        if _ALNUM_SUFFIX.fullmatch(suffix):
            return suffix
    known = _EXTENSIONS.get(content_type)
    if known:
        return known
    subtype = content_type.partition("/")[2]
    if content_type.startswith(("audio/", "video/")) and _ALNUM_SUFFIX.fullmatch(subtype):
        return subtype
    return "bin"


def upload_key(job_id: str, extension: str) -> str:
    """The storage key of an uploaded original: ``ingest-uploads/<job_id>.<extension>``.

    One flat folder (issue 12): no folder per job to create, and later remove. Jobs created
    before keep the key their ``job.created`` names (``ingest-uploads/<job_id>/original.<extension>``);
    nothing derives the key from the job id, so both layouts are read alike.
    """
    return f"ingest-uploads/{job_id}.{extension}"


_UPLOAD_BODY = RequestBody(
    required=True,
    description=f"A form with one 'file' field ({upload.ACCEPTED_TYPES_TEXT}), or a JSON body naming a URL"
    " (or YouTube address) for the worker to download.",
    content={
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file"],
                properties={"file": Schema(type=OpenAPIType.STRING, format="binary")},  # type: ignore[arg-type]
            )
        ),
        "application/json": OpenAPIMediaType(schema=url_source.json_body_schema()),
    },
)


@dataclasses.dataclass
class _IngestOperation(Operation):
    """Documents the multipart and JSON bodies the handler reads itself (Litestar would otherwise buffer them)."""

    def __post_init__(self) -> None:
        self.request_body = _UPLOAD_BODY


_error = openapi.error
#: The longest ``X-Client-Id`` the handler accepts (:data:`jobtape.http.creation.ClientId`; longer: 400).
_CLIENT_ID_MAX_LENGTH = 200
_ENCODER = msgspec.json.Encoder()


def ingest_route(audio_settings: AudioSettings, *, fast_path: bool = True) -> HTTPRouteHandler:
    """The ``POST /api/audio/ingest`` route handler, using ``audio_settings`` (URL checks).

    The settings are closed over rather than injected: the handler's one dependency is
    ``submit_sources`` (:class:`jobtape.http.creation.SubmitSources`), so Litestar resolves it
    without a per-request task group.

    Args:
        audio_settings: the URL checks' settings.
        fast_path: put the route's fast path (:data:`jobtape.http.jobs.FastPath`) in its
            ``opt`` (default): the authentication middleware has the common multipart upload
            stored and answered without Litestar's per-request handler work; ``False``: the
            handler answers every request (the reference of the fast path's test).
    """

    async def fast(scope: Scope, receive: Receive, send: Send, principal: auth.Principal) -> bool:
        """The common multipart upload (no ``Idempotency-Key``, a ``Content-Length`` within the limit) stored and answered on ``send``.

        The same work as the handler's (:func:`_ingest_upload`) and the same answer bytes
        (``tests/integration/test_ingest_fast_path.py``), without Litestar's ``Request``, kwargs
        and signature models and ``Response`` (issue 12, ``bench/submit.py``). Anything else
        (a JSON body, another or no media type, no boundary, an ``Idempotency-Key``, a
        ``Content-Length`` missing or past the limit, an ``X-Client-Id`` longer than the
        handler accepts, a server with a rate limit, whose middleware runs after this one)
        returns ``False`` before a byte of the body is read, and the handler answers it. Once
        the body is read, an error is raised as the handler would raise it and the app's
        exception handlers answer it.
        """
        sources: creation.SubmitSources | None = scope["app"].state.get(creation.SUBMIT_SOURCES_STATE)
        if scope.get("method") != "POST" or sources is None or sources.settings.rate_limit_rule is not None:
            return False
        content_type = content_length = client_id = None
        for raw_name, value in scope["headers"]:
            name = raw_name.lower()  # as Litestar's Headers: names in any case
            if name == b"content-type":
                content_type = value if content_type is None else content_type  # the first, as Request.headers.get
            elif name == b"content-length":
                content_length = value if content_length is None else content_length
            elif name == b"idempotency-key":
                return False
            elif name == b"x-client-id":
                if client_id is not None:  # repeated: the handler reads (and checks) the first; let it answer
                    return False
                client_id = value
        if content_type is None or content_length is None or not content_length.isdigit():
            return False
        if client_id is not None and len(client_id.decode("latin-1")) > _CLIENT_ID_MAX_LENGTH:
            return False
        media_type, options = parse_content_header(content_type.decode("latin-1"))
        boundary = options.get("boundary", "")
        length = int(content_length)
        if media_type != "multipart/form-data" or not boundary or length > sources.settings.max_upload_bytes + FORM_OVERHEAD_BYTES:
            return False
        created_id, status, created = await _ingest_upload(_body_of(receive), boundary, length, sources, principal, None)
        body = _ENCODER.encode(audio_schemas.IngestResponse.for_job(created_id, status))
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 202 if created else 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True

    @post(
        "/api/audio/ingest",
        status_code=202,
        operation_class=_IngestOperation,
        summary="Upload audio or video, or name a URL, to ingest",
        description="Stores the file (multipart) or checks the URL (JSON) and creates a pending 'ingest' job; "
        "downloading and processing happen in a worker. A URL must be http(s) and resolve to public addresses "
        "(unless the server runs with --allow-private-urls). "
        "Repeating an Idempotency-Key for the same X-Client-Id with the same source (the same file bytes, URL or "
        "storage key) answers 200 with the job created before; the same key with another source is a 422.",
        responses={
            200: ResponseSpec(audio_schemas.IngestResponse, description="Idempotent replay: the job this key created"),
            400: _error("Malformed form or JSON, or no 'file' field"),
            408: _error("The upload stalled (no bytes for the idle timeout) or arrived below the minimum rate; the connection is closed"),
            409: _error("Idempotency-Key conflict"),
            413: _error("The file is larger than the upload limit, or the JSON body is too large"),
            415: _error("Neither multipart/form-data nor JSON, or the file is not audio/video"),
            422: _error(
                "The file is empty; or the JSON body is invalid, rightsAttested is not true, the URL is not "
                "http(s), not a YouTube address for sourceType youtube, or resolves to a non-public address; "
                "or the Idempotency-Key was used before for another source"
            ),
            429: _error("The owner has the maximum number of active jobs; see Retry-After"),
            503: _error(
                "The server receives as many uploads as it allows at once (Retry-After says when to retry), or the event store is unavailable"
            ),
            507: _error("The server's disk is full; nothing was kept"),
        },
        tags=["ingest"],
        opt={http_auth.SCOPE_OPT: auth.JOBS_SUBMIT, http_auth.FAST_PATH_OPT: fast if fast_path else None},
    )
    async def ingest_upload(
        request: Request[Any, Any, Any],
        submit_sources: NamedDependency[creation.SubmitSources],
        client_id: creation.ClientId = None,
        idempotency_key: creation.IdempotencyKey = None,
    ) -> Response[audio_schemas.IngestResponse]:
        """Ingest an upload or a URL; see :func:`ingest` (``X-Client-Id`` is read by the principal, :mod:`jobtape.http.auth`)."""
        del client_id  # declared for the OpenAPI document
        return await ingest(request, submit_sources, audio_settings, idempotency_key)

    return ingest_upload


async def ingest(
    request: Request[Any, Any, Any],
    sources: creation.SubmitSources,
    audio_settings: AudioSettings,
    idempotency_key: str | None,
) -> Response[audio_schemas.IngestResponse]:
    """Stream the upload into storage (or check the JSON body's URL) and create the ``ingest`` job.

    An upload holds one of ``upload_slots`` while its body arrives and is stored; when all
    are held the answer is 503 with ``Retry-After`` before any body byte is read.

    Raises:
        HTTPException: 400/408/413/415/422 for bad input (see :mod:`jobtape.http.upload` and
            :mod:`jobtape.audio.http.url_source`), 503 when every upload slot is held.
        errors.StoreFull: the disk filled up while the upload was spooled or stored (507).
        audio_errors.SourceUrlRefused: a URL that may not be fetched (422).
        errors.JobtapeError: storage or event-log failures, mapped by :mod:`jobtape.http.errors`.
    """
    repository, storage, settings = sources.repository, sources.storage, sources.settings
    principal = http_auth.principal_of(request)
    owner = principal.owner
    key_text = creation.key_of(idempotency_key)
    media_type = request.content_type[0]
    if media_type == "application/json" or media_type.endswith("+json"):
        if request.content_length is not None and request.content_length <= url_source.MAX_JSON_BYTES:
            body = await request.body()  # cached: url_source reads it again through request.stream()
            if direct_upload.is_storage_source(body):  # a file the client PUT to a presigned URL
                storage_params = await anyio.to_thread.run_sync(direct_upload.storage_source_params, body, storage, settings, owner)
                return _answer(
                    await _create_job(
                        repository,
                        storage,
                        storage_params,
                        principal,
                        key_text,
                        new_job_id(),
                        blob_key=None,
                        max_active_jobs=settings.max_active_jobs,
                    )
                )
        url_params = await url_source.read_url_params(request, audio_settings)
        return _answer(
            await _create_job(
                repository, storage, url_params, principal, key_text, new_job_id(), blob_key=None, max_active_jobs=settings.max_active_jobs
            )
        )
    boundary = _multipart_boundary(request)
    return _answer(await _ingest_upload(request.stream(), boundary, request.content_length, sources, principal, key_text))


async def _body_of(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks from the ASGI ``receive``, as ``Request.stream`` yields them.

    Raises:
        upload.ClientDisconnected: the client went away before the body was complete.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise upload.ClientDisconnected("client disconnected prematurely")
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def _answer(outcome: tuple[str, str, bool]) -> Response[audio_schemas.IngestResponse]:
    """The route's answer to ``(job_id, status, created)``: 202, or 200 for an idempotent replay."""
    created_id, status, created = outcome
    return creation.answer(audio_schemas.IngestResponse.for_job(created_id, status), created)


async def _ingest_upload(
    chunks: AsyncIterator[bytes],
    boundary: str,
    content_length: int | None,
    sources: creation.SubmitSources,
    principal: auth.Principal,
    key_text: str | None,
) -> tuple[str, str, bool]:
    """Store the multipart body ``chunks``' file and create its ``ingest`` job: ``(job_id, status, created)``.

    Raises:
        HTTPException: 400/408/413/415/422 for bad input (see :mod:`jobtape.http.upload`),
            503 when every upload slot is held.
        errors.StoreFull: the disk filled up while the upload was spooled or stored (507).
        errors.JobtapeError: storage or event-log failures, mapped by :mod:`jobtape.http.errors`.
    """
    repository, storage, settings, spool_folder, upload_slots = sources
    owner = principal.owner
    limit = settings.max_upload_bytes
    if content_length is not None and content_length > limit + FORM_OVERHEAD_BYTES:
        raise HTTPException(status_code=413, detail=f"the upload is larger than the limit of {limit} bytes")
    job_id = new_job_id()
    with upload_slots.hold():
        # Cheap early refusal before receiving the file; the guard in the create batch decides.
        if repository.local_reads:  # an index range bounded by the quota, on a local file: inline
            repository.check_quota_early(owner, settings.max_active_jobs)
        else:
            await anyio.to_thread.run_sync(repository.check_quota_early, owner, settings.max_active_jobs)
        async with _received(chunks, boundary, settings, spool_folder) as spooled:
            key = upload_key(job_id, extension_for(spooled.filename, spooled.content_type))
            params: dict[str, object] = {
                "sourceType": "upload",
                "storageKey": key,
                "originalFilename": spooled.filename,
                "contentType": spooled.content_type,
                "sizeBytes": spooled.size_bytes,
                "sha256": spooled.sha256,
            }
            return await _create_job(
                repository,
                storage,
                params,
                principal,
                key_text,
                job_id,
                blob_key=key,
                max_active_jobs=settings.max_active_jobs,
                received=spooled,
            )


async def _create_job(
    repository: JobRepository,
    storage: Storage,
    params: dict[str, Any],
    principal: auth.Principal,
    key_text: str | None,
    job_id: str,
    *,
    blob_key: str | None,
    max_active_jobs: int | None = None,
    received: upload.SpooledUpload | None = None,
) -> tuple[str, str, bool]:
    """Append ``job.created``: ``(job_id, status, created)``, ``created`` false for the job an idempotent replay names.

    With ``received`` (an upload), its file first becomes the blob ``blob_key``, in the same worker-thread
    hop as the append, written once: a small file from memory (:meth:`Storage.put_new`),
    a spooled one given to storage (:meth:`Storage.move_file`: on local storage a rename). When the append fails (or is a replay, or the
    owner's quota refuses it: 429), the just-stored upload ``blob_key`` is deleted.

    Raises:
        errors.StoreFull: the storage's disk is full; nothing is kept.
    """
    create = functools.partial(
        creation.create_or_replay,
        repository,
        "ingest",
        params,
        owner=principal.owner,
        actor=principal.actor,
        idempotency_key=key_text,
        same_request=same_ingest_request,
        differs="another source",
        job_id=job_id,
        max_active_jobs=max_active_jobs,
        owned_keys=[blob_key] if blob_key is not None else None,  # the upload is this job's; a direct upload is not
    )

    def store_and_create() -> tuple[str, str, bool]:
        if received is not None and blob_key is not None:
            try:
                if received.data is not None:
                    storage.put_new(blob_key, received.data)  # a fresh job id's key: written in place, no rename
                else:
                    assert received.path is not None
                    storage.move_file(blob_key, received.path)
            except errors.StorageError as exc:
                if upload.is_disk_full(exc):
                    raise errors.StoreFull("the disk that stores uploads is full") from exc
                raise
        return create()

    try:
        created_id, status, created = await anyio.to_thread.run_sync(store_and_create)
    except BaseException:
        if blob_key is not None:
            await _delete_quietly(storage, blob_key)
        raise
    if not created and blob_key is not None:
        await _delete_quietly(storage, blob_key)
    return created_id, status, created


@contextlib.asynccontextmanager
async def _received(
    chunks: AsyncIterator[bytes],
    boundary: str,
    settings: Settings,
    spool_folder: spool.SpoolFolder,
) -> AsyncIterator[upload.SpooledUpload]:
    """Spool the form's ``file`` field; yield the spooled upload, removed at exit unless given to storage.

    Raises:
        HTTPException: 400/408/413/415/422 for bad input, 400 for a client that went away
            mid-body; nothing is stored then.
        errors.StoreFull: the spool's disk is full; nothing is kept.
    """
    limit = settings.max_upload_bytes
    try:
        async with upload.spool_upload(
            chunks,
            boundary,
            field="file",
            max_bytes=limit,
            spool_folder=spool_folder,
            idle_timeout_s=settings.upload_idle_timeout_s or None,
            min_rate_bytes_s=settings.upload_min_rate_bytes_s,
        ) as spooled:
            yield spooled
    except RequestEntityTooLarge:
        raise HTTPException(status_code=413, detail=f"the upload is larger than the limit of {limit} bytes") from None
    except upload.ClientDisconnected:
        logger.info("a client closed the connection in the middle of its upload; its spool file was removed")
        raise HTTPException(status_code=400, detail="the connection closed before the upload was complete") from None


def _multipart_boundary(request: Request[Any, Any, Any]) -> str:
    media_type, options = request.content_type
    if media_type != "multipart/form-data":
        shown = repr(media_type) if media_type else "missing"
        raise HTTPException(
            status_code=415,
            detail=f"Content-Type {shown} is not supported; send multipart/form-data with a 'file' field, or JSON naming a URL",
        )
    boundary = options.get("boundary", "")
    if not boundary:
        raise ClientException(detail="the multipart/form-data Content-Type has no boundary parameter")
    return boundary


#: What identifies an ingest request, per source type: a replay must repeat these.
_REQUEST_FIELDS = {"upload": ("sha256",), "url": ("url",), "youtube": ("url",), "storage": ("storageKey",)}


def same_ingest_request(earlier: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether ``params`` repeat the request that created a job with ``earlier`` params.

    The same source type and the same source: the file's SHA-256 for an upload (its
    storage key and file name may differ), the URL, or the storage key. A field the earlier
    job does not have (a job created before it was recorded) is not compared.
    """
    source = earlier.get("sourceType")
    if source != params.get("sourceType"):
        return False
    fields = _REQUEST_FIELDS.get(str(source), ())
    return all(earlier[name] == params.get(name) for name in fields if name in earlier)


async def _delete_quietly(storage: Storage, key: str) -> None:
    """Delete a just-stored blob, even while the request is being cancelled.

    A failing delete is logged, not raised, so the error that caused it is the one reported.
    """
    with anyio.CancelScope(shield=True):
        try:
            await anyio.to_thread.run_sync(storage.delete, key)
        except Exception:
            logger.exception("could not delete the blob %r of a rejected upload", key)
