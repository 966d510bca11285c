"""Edit routes: preview and save a recipe, fetch a preview's audio.

``POST /api/audio/edit/preview`` and ``POST /api/audio/edit/save`` read the recipe body
themselves (:mod:`jobtape.audio.http.recipe_body`: every recipe problem is a 422 naming the
field), validate the recipe against its asset, read from the ``assets`` projection (storage is only asked
whether the asset's file still exists: 410 Gone when it does not), and create a job; no media work happens in the request. A preview whose recipe hash is in the
``previews`` projection is created already complete (``job.created`` + ``job.completed``
in one append, result ``cacheHit: true``). Two misses of one recipe create two jobs; the
later one looks in the cache again when it starts (:func:`jobtape.audio.jobs.edits.preview`),
so only two renders at the very same moment both run ffmpeg; the cache is only an
optimisation, so that race costs work, not correctness.

The owner is the request's principal's (:mod:`jobtape.http.auth`; with ``--auth off`` the
``X-Client-Id`` header, default ``anonymous``): only its own assets can be edited (another
owner's asset is answered like a missing one, 404, unless ``admin``), and it scopes the
active-job quota (429) and the ``Idempotency-Key`` header: a client that retries a POST
with the key it sent before gets 200 with the job that key created, not a second job (a
second save would render a second asset); the same key for another job type or another
recipe is a 422. The rules are :mod:`jobtape.http.creation`'s, shared by every create route.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio.to_thread
from litestar import HttpMethod, Request, Response, get, post, route
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec

from jobtape import errors
from jobtape.audio import errors as audio_errors
from jobtape.audio import recipes
from jobtape.audio.http import recipe_body
from jobtape.audio.http import schemas as audio_schemas
from jobtape.audio.projections import assets, previews
from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.http import auth as http_auth
from jobtape.http import creation, downloads, jobs, openapi, schemas
from jobtape.http.creation import ClientId, IdempotencyKey, owner_of
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage

__all__ = [
    "ClientId",
    "IdempotencyKey",
    "create_edit_job",
    "owner_of",
    "preview_audio",
    "preview_audio_link",
    "preview_audio_route",
    "preview_edit",
    "save_edit",
]

_error = openapi.error


_RESPONSES = {
    200: ResponseSpec(audio_schemas.IngestResponse, description="Idempotent replay: the job this Idempotency-Key created"),
    202: ResponseSpec(audio_schemas.IngestResponse, description="The job (status 'complete' for a cached preview)"),
    400: _error("The body is not JSON at all"),
    404: _error('{"error": "Asset not found"}'),
    410: _error("The asset's file is no longer stored (removed on record, or missing from storage); nothing is created"),
    413: _error("The body is larger than 16 KiB"),
    422: _error(
        "The body is not a recipe (not an object, an unknown or missing field, a wrong type) or a field is "
        "out of range for the asset; the message names the field and what to send. Or the "
        "Idempotency-Key was used before for another request"
    ),
    429: _error("The owner has the maximum number of active jobs; see Retry-After"),
    **openapi.STORE_ERRORS,
}


def create_edit_job(
    repository: JobRepository,
    settings: Settings,
    job_type: ev.JobType,
    recipe: recipes.Recipe,
    principal: auth.Principal,
    idempotency_key: str | None = None,
    storage: Storage | None = None,
) -> tuple[str, str, bool]:
    """Validate ``recipe`` against its asset and create the ``preview`` or ``save`` job (blocking).

    The asset's file must be stored: an asset whose removal is recorded (``assets.removed_at``)
    is refused without touching storage, and otherwise ``storage.exists`` is asked once (one
    ``stat`` locally, one HEAD on S3: small next to the job it saves from certain failure), so a
    log imported without its files answers 410 rather than queueing a job bound to fail. A
    cached preview whose MP3 is missing is rendered again rather than served from the cache.

    Args:
        principal: the caller: the job's owner and actor; it must own the asset (or hold ``admin``).
        idempotency_key: the client's ``Idempotency-Key`` (stripped; ``None`` for none).
            When the owner created a job with it before, that job is answered instead.
        storage: the blob storage the file checks ask; ``None`` skips them (only the
            recorded removal is checked).

    Returns:
        ``(job_id, status, created)``; ``status`` is ``complete`` for a preview cache hit,
        else ``pending`` for a new job; ``created`` is ``False`` for an idempotent replay
        (then ``status`` is the earlier job's current status).

    Raises:
        audio_errors.AssetNotFound: no such asset in the projection, or another owner's (404).
        audio_errors.InvalidRecipe: a field is out of range (422, names the field).
        errors.IdempotencyKeyReused: the key named another job type or recipe (422).
        errors.QuotaExceeded: the owner is at ``settings.max_active_jobs`` (429); nothing appended.
    """
    asset = assets.select_asset(repository.store, recipe.asset_id)
    if asset is None:
        raise audio_errors.AssetNotFound(recipe.asset_id)
    http_auth.require_visible(principal, asset.owner, audio_errors.AssetNotFound(recipe.asset_id))
    if asset.removed_at is not None:
        raise audio_errors.AssetFileGone(asset.asset_id, removed=True)
    if storage is not None and not storage.exists(asset.storage_key):
        raise audio_errors.AssetFileGone(asset.asset_id, removed=False)
    canonical = recipes.validate(recipe, asset.duration_sec)
    recipe_hash = recipes.recipe_hash(canonical)
    params: dict[str, object] = {"recipe": canonical.to_json_dict(), "recipeHash": recipe_hash, "sourceKey": asset.storage_key}
    extra: list[ev.Event] = []
    if job_type == "preview":
        cached = previews.select_preview(repository.store, recipe_hash)
        if cached is not None and (storage is None or storage.exists(cached.preview_key)):
            # links to the rendering job's MP3, owns nothing
            extra.append(
                ev.JobCompleted(result=previews.cache_hit_result(cached, recipe_hash, canonical.asset_id), download_key=cached.preview_key)
            )
    return creation.create_or_replay(
        repository,
        job_type,
        params,
        owner=principal.owner,
        actor=principal.actor,
        idempotency_key=idempotency_key,
        same_request=lambda earlier, _: earlier.get("recipeHash") == recipe_hash,
        extra_events=extra,
        max_active_jobs=settings.max_active_jobs,
    )


async def _create(
    job_type: ev.JobType,
    request: Request[Any, Any, Any],
    repository: JobRepository,
    settings: Settings,
    storage: Storage,
    idempotency_key: str | None,
) -> Response[audio_schemas.IngestResponse]:
    principal = http_auth.principal_of(request)
    recipe = await recipe_body.read_recipe(request)
    create = functools.partial(
        create_edit_job, repository, settings, job_type, recipe, principal, creation.key_of(idempotency_key), storage
    )
    job_id, status, created = await anyio.to_thread.run_sync(create)
    return creation.answer(audio_schemas.IngestResponse.for_job(job_id, status), created)


@post(
    "/api/audio/edit/preview",
    status_code=202,
    operation_class=recipe_body.RecipeOperation,
    summary="Render a preview of an edit recipe",
    description="Creates a 'preview' job rendering the recipe as a 128 kbps MP3 (previews/{recipeHash}.mp3). "
    "When that recipe was rendered before, the job is created already complete (status 'complete').",
    responses=_RESPONSES,
    tags=["edit"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_SUBMIT},
)
async def preview_edit(
    request: Request[Any, Any, Any],
    repository: NamedDependency[JobRepository],
    settings: NamedDependency[Settings],
    storage: NamedDependency[Storage],
    client_id: ClientId = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[audio_schemas.IngestResponse]:
    """Create a preview job (or a complete one from the cache).

    Raises:
        HTTPException: 400 (not JSON) or 413 (too large), from :func:`recipe_body.read_recipe`.
        audio_errors.InvalidRecipe: the body is not a recipe, or a field is out of range (422).
        audio_errors.AssetNotFound, audio_errors.AssetFileGone, errors.IdempotencyKeyReused, errors.QuotaExceeded: see
            :func:`create_edit_job`.
    """
    return await _create("preview", request, repository, settings, storage, idempotency_key)


@post(
    "/api/audio/edit/save",
    status_code=202,
    operation_class=recipe_body.RecipeOperation,
    summary="Save an edit recipe as a new asset",
    description="Creates a 'save' job rendering the recipe at full quality (FLAC 48 kHz) as a new asset; "
    "its result carries the new assetId and preparedKey.",
    responses=_RESPONSES,
    tags=["edit"],
    opt={http_auth.SCOPE_OPT: auth.JOBS_SUBMIT},
)
async def save_edit(
    request: Request[Any, Any, Any],
    repository: NamedDependency[JobRepository],
    settings: NamedDependency[Settings],
    storage: NamedDependency[Storage],
    client_id: ClientId = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[audio_schemas.IngestResponse]:
    """Create a save job.

    Raises:
        HTTPException: 400 (not JSON) or 413 (too large), from :func:`recipe_body.read_recipe`.
        audio_errors.InvalidRecipe: the body is not a recipe, or a field is out of range (422).
        audio_errors.AssetNotFound, audio_errors.AssetFileGone, errors.IdempotencyKeyReused, errors.QuotaExceeded: see
            :func:`create_edit_job`.
    """
    return await _create("save", request, repository, settings, storage, idempotency_key)


async def _preview_key(repository: JobRepository, job_id: str, principal: auth.Principal) -> str:
    """The storage key of a complete preview job's MP3.

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404 (also another owner's job, unless ``principal`` holds ``admin``).
        NotFoundException: 404, the job is not a preview or has no preview yet.
        HTTPException: 410, the preview's file was removed on record (``job.blobs_deleted``).
    """
    state = await anyio.to_thread.run_sync(repository.get, jobs.check_job_id(job_id))
    http_auth.require_visible(principal, state.owner, errors.JobNotFound(job_id))
    key = (state.result or {}).get("previewKey") if state.status == "complete" else None
    if state.job_type != "preview" or not isinstance(key, str):
        what = "is not a preview job" if state.job_type != "preview" else f"has no preview yet (status {state.status})"
        raise NotFoundException(detail=f"job {job_id} {what}; poll /api/audio/jobs/{job_id} until it is complete")
    if key in state.removed_keys:
        raise HTTPException(
            status_code=410, detail=f"job {job_id}'s preview file was removed (see its events); request the preview again to render it"
        )
    return key


_PREVIEW_AUDIO_PATH = "/api/audio/edit/preview/{jobId:str}/audio"
_PREVIEW_ERRORS = {
    400: _error("jobId is not 32 lowercase hexadecimal characters"),
    404: _error("No such preview job, or it has no preview yet, or its file is missing from storage"),
    410: _error("The preview's file was removed (job.blobs_deleted); request the preview again"),
    **openapi.STORE_READ_ERRORS,
}


@route(
    _PREVIEW_AUDIO_PATH,
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="A preview's audio",
    description="The MP3 bytes (HTTP Range supported, 206/416); HEAD answers the same headers without the body. "
    "404 while the job has no preview.",
    responses={
        200: ResponseSpec(bytes, media_type="audio/mpeg", description="The MP3 (Content-Length, Accept-Ranges)"),
        206: ResponseSpec(bytes, media_type="audio/mpeg", description="The requested range (Content-Range)"),
        416: _error("The Range is outside the file"),
        **_PREVIEW_ERRORS,
    },
    tags=["edit"],
    name="preview-audio-local",
    opt={http_auth.SCOPE_OPT: auth.JOBS_READ},
)
async def preview_audio(
    request: Request[Any, Any, Any],
    jobId: jobs.JobIdPath,
    repository: NamedDependency[JobRepository],
    storage: NamedDependency[Storage],
) -> Response[Any]:
    """Serve the preview's MP3 from storage that has local files (headers only for HEAD).

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404.
        NotFoundException: 404, the job is not a preview or has no preview yet.
        errors.BlobNotFound: 404, storage lacks the preview's file.
        HTTPException: 410, the preview's file was removed on record.
    """
    return await downloads.serve_blob(request, storage, await _preview_key(repository, jobId, http_auth.principal_of(request)))


@get(
    _PREVIEW_AUDIO_PATH,
    summary="A preview's audio",
    description="JSON {downloadUrl}: a signed URL of the MP3 in the object store. 404 while the job has no preview.",
    responses=_PREVIEW_ERRORS,
    tags=["edit"],
    name="preview-audio-link",
    opt={http_auth.SCOPE_OPT: auth.JOBS_READ},
)
async def preview_audio_link(
    request: Request[Any, Any, Any],
    jobId: jobs.JobIdPath,
    repository: NamedDependency[JobRepository],
    storage: NamedDependency[Storage],
    settings: NamedDependency[Settings],
) -> schemas.PreviewLink:
    """Answer a signed URL of the preview's MP3 in the object store.

    Raises:
        ClientException: 400, malformed job id.
        errors.JobNotFound: 404.
        NotFoundException: 404, the job is not a preview or has no preview yet.
        errors.BlobNotFound: 404, the object store lacks the preview's file.
        HTTPException: 410, the preview's file was removed on record.
    """
    key = await _preview_key(repository, jobId, http_auth.principal_of(request))
    await anyio.to_thread.run_sync(storage.size, key)  # BlobNotFound -> 404 rather than a URL that 404s later
    url = await anyio.to_thread.run_sync(storage.signed_url, key, settings.download_url_ttl_s)
    if url is None:  # pragma: no cover - every backend either has local paths or signs
        raise NotFoundException(detail="this storage backend can neither serve nor sign the preview")
    return schemas.PreviewLink(download_url=url)


def preview_audio_route(storage: Storage) -> Any:
    """The preview-audio route for ``storage``: bytes from local files, else a signed link (object storage)."""
    local = type(storage).local_path is not Storage.local_path
    return preview_audio if local else preview_audio_link
