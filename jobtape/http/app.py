"""The Litestar application: routes, injected backends, error handlers, OpenAPI at ``/schema``.

Routes::

    GET  /health                            liveness
    POST /api/audio/ingest                  multipart upload or JSON URL -> 202 pending ingest job
    POST /api/storage/upload                presigned PUT URL + key for a direct upload (S3/R2)
    GET  /api/audio/jobs/{jobId}            poll
    POST /api/audio/jobs/{jobId}/cancel     request cancellation
    GET  /api/audio/jobs/{jobId}/events     the job's event stream (?asOf= for a past moment)
    GET  /api/audio/jobs/{jobId}/stream     the job's live progress as Server-Sent Events
    POST /api/jobs                          {"type", "params"} -> 202 pending job of a registered job type
    GET  /api/jobs/{jobId}                  the same poll, cancel, events and stream routes as
    POST /api/jobs/{jobId}/cancel             /api/audio/jobs/..., for a job of any type
    GET  /api/jobs/{jobId}/events
    GET  /api/jobs/{jobId}/stream
    POST /api/audio/edit/preview            recipe -> 202 preview job (complete at once on a cache hit)
    POST /api/audio/edit/save               recipe -> 202 save job (a new asset)
    GET  /api/audio/edit/preview/{jobId}/audio  the preview MP3 (Range) or {downloadUrl}
    GET  /api/storage/download              local: a signed link's bytes (Range); S3: ?key= -> {downloadUrl}
    GET  /schema                            the API docs page (Swagger UI, served from the swagger-ui-py package)
    GET  /schema/openapi.json               the OpenAPI document

The application holds no global state: the repository, storage and settings passed to
:func:`create_app` are injected into the handlers as ``repository``, ``storage`` and
``settings``; the job types ``POST /api/jobs`` accepts are passed as ``job_types``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from jobtape import __version__
from jobtape.config import Settings
from jobtape.http import auth as http_auth
from jobtape.http import creation, downloads, jobs, schemas, spool, stream, submit, upload
from jobtape.http import errors as http_errors
from jobtape.jobtypes import DownloadableKeys, JobTypeSpec
from jobtape.projections import keys
from jobtape.projections.repository import JobRepository
from jobtape.storage import Storage, signing

__all__ = ["DESCRIPTION", "UI_ASSETS_PATH", "create_app", "health", "swagger_ui_assets"]

#: The OpenAPI document's description of the engine's job API (an app's own description comes first).
DESCRIPTION = (
    "Jobs recorded in an append-only event log. POST /api/jobs creates a job of a registered job type; "
    "GET /api/jobs/{jobId} polls it, and its /cancel, /events and /stream routes cancel it, list its events "
    'and follow it live (Server-Sent Events). Every error body is {"error": "..."}.'
)

#: Where the API docs page's JavaScript and CSS are served (no CDN: the page works offline).
UI_ASSETS_PATH = "/schema-assets"

LifespanHook = Callable[[], Any]


@get("/health", sync_to_thread=False, summary="Liveness", tags=["health"], opt={http_auth.EXCLUDE_FROM_AUTH: True})
def health() -> schemas.Health:
    """Answer ``{"status": "ok"}`` while the process serves requests."""
    return schemas.Health()


def swagger_ui_assets() -> Path:
    """The folder of Swagger UI's built files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ...)
    shipped by the ``swagger-ui-py`` package."""
    return Path(importlib.util.find_spec("swagger_ui").origin).parent / "static"  # type: ignore[union-attr, arg-type]


def _docs_page() -> SwaggerRenderPlugin:
    """The /schema page: Swagger UI with its assets from :data:`UI_ASSETS_PATH`, nothing from a CDN."""
    return SwaggerRenderPlugin(
        js_url=f"{UI_ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{UI_ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{UI_ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{UI_ASSETS_PATH}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )


def _provide(value: object) -> Provide:
    def dependency() -> Any:
        return value

    return Provide(dependency, use_cache=True, sync_to_thread=False)


def create_app(
    repository: JobRepository,
    storage: Storage,
    settings: Settings,
    *,
    routes: Sequence[Any] = (),
    dependencies: Mapping[str, Any] | None = None,
    on_startup: Sequence[LifespanHook] = (),
    on_shutdown: Sequence[LifespanHook] = (),
    debug: bool = False,
    job_types: Mapping[str, JobTypeSpec] | None = None,
    description: str | None = None,
    key_lookup: http_auth.KeyLookup | None = None,
) -> Litestar:
    """Build the HTTP API.

    Args:
        repository: the job repository every route reads and appends through.
        storage: where uploads are stored (keys ``ingest-uploads/<jobId>.<ext>``).
        settings: limits (``max_upload_bytes``, ``max_concurrent_uploads``, the upload idle
            timeout and minimum rate) and ``data_dir``: uploads are spooled to
            ``data_dir/upload-tmp``, which the app sweeps of files no live process owns at
            start-up and every ``upload_sweep_interval_s`` (:mod:`jobtape.http.spool`).
        routes: more route handlers, served after the engine's job routes: a package's
            (:meth:`jobtape.App.routes_for`; the default app's are the audio routes).
        dependencies: more named dependencies for those routes (:attr:`jobtape.App.dependencies`).
        on_startup: callables (sync or async, no arguments) run when the server starts,
            e.g. starting an embedded worker.
        on_shutdown: callables run when the server stops.
        debug: Litestar debug mode (tracebacks in the log for every error).
        job_types: the registered job types by name (``App.job_types``); ``POST /api/jobs``
            accepts those registered with ``http_submit=True`` and documents their params
            schemas (:mod:`jobtape.http.submit`). Default: none.
        description: the app's description for the OpenAPI document (:attr:`jobtape.App.description`),
            placed before the engine's :data:`DESCRIPTION`; ``None``: the engine's alone.
        key_lookup: finds an API key by its bearer token in ``--auth required`` mode; ``None``
            (default): :func:`jobtape.projections.keys.lookup` on ``repository``.

    Who may call what (``settings.auth_mode``, the JWT settings, ``rate_limit``,
    ``cors_origins``) is :mod:`jobtape.http.auth`'s: an authentication middleware on every
    route but ``/health`` and the docs, a scope guard, a per-principal rate limit on the
    submit routes, and CORS for the configured origins.

    Returns:
        The ASGI application.

    Raises:
        ValueError: the JWT settings cannot make a verifier (a short secret, a bad key file).
    """
    spool_folder = spool.SpoolFolder(settings.data_dir / spool.UPLOAD_TEMP_DIR)
    upload_slots = upload.UploadSlots(settings.max_concurrent_uploads)
    types = dict(job_types or {})
    poll_sources = jobs.PollSources(repository, storage, settings.download_url_ttl_s)
    submit_sources = creation.SubmitSources(repository, storage, settings, spool_folder, upload_slots)
    lookup = key_lookup if key_lookup is not None else functools.partial(keys.lookup, repository)
    authenticator = http_auth.Authenticator.from_settings(settings, lookup)
    middleware: list[Any] = [http_auth.auth_middleware(authenticator)]
    rule = settings.rate_limit_rule
    if rule is not None:
        middleware.append(http_auth.rate_limit_config(rule).middleware)
    app = Litestar(
        route_handlers=[
            health,
            jobs.poll_route(poll_sources),
            jobs.cancel_job,
            jobs.list_job_events,
            stream.stream_job,
            submit.submit_route(types),
            *routes,
            downloads.download_route(storage),
            create_static_files_router(UI_ASSETS_PATH, [swagger_ui_assets()], include_in_schema=False, name="schema-assets"),
        ],
        dependencies={
            "downloadable_keys": _provide(DownloadableKeys()),  # an app's registered prefixes replace it
            **{name: _provide(value) for name, value in (dependencies or {}).items()},
            "repository": _provide(repository),
            "storage": _provide(storage),
            "settings": _provide(settings),
            "poll_sources": _provide(poll_sources),
            "spool_folder": _provide(spool_folder),
            "upload_slots": _provide(upload_slots),
            "submit_sources": _provide(submit_sources),
        },
        exception_handlers=http_errors.exception_handlers(),  # type: ignore[arg-type]
        middleware=middleware,
        cors_config=_cors(settings.cors_origins),
        openapi_config=OpenAPIConfig(
            title="jobtape",
            version=__version__,
            description=f"{description}\n\n{DESCRIPTION}" if description else DESCRIPTION,
            path="/schema",
            render_plugins=[_docs_page()],
        ),
        request_max_body_size=settings.max_upload_bytes + upload.FORM_OVERHEAD_BYTES,
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        lifespan=[lambda _app: spool.sweeping(spool_folder, settings.upload_sweep_interval_s)],
        debug=debug,
    )
    app.state[creation.SUBMIT_SOURCES_STATE] = submit_sources  # for a create route's fast path (the audio ingest's)
    # Litestar builds components.schemas from the types its handlers name, replacing the
    # config's; the params schemas come from msgspec, so they join the built document.
    extra = submit.components(submit.submittable(types))
    if extra:
        document = app.openapi_schema
        document.components.schemas = {**(document.components.schemas or {}), **extra}
    if settings.auth_mode != "off":
        signs_links = getattr(storage, "signer", None) is not None
        http_auth.document_security(
            app.openapi_schema,
            bearer=settings.auth_mode == "required",
            rate_limited=rule is not None,
            link_paths=[signing.DOWNLOAD_PATH] if signs_links else [],
        )
    return app


#: Request headers a browser may send cross-origin (CORS preflight), and response headers it may read.
_CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Client-Id", "Last-Event-ID", "Range"]
_CORS_EXPOSE_HEADERS = ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy", "Content-Range"]


def _cors(origins: Sequence[str]) -> CORSConfig | None:
    """CORS for the configured web origins (``JOBTAPE_CORS_ORIGINS``); ``None`` (no CORS headers) without any."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=_CORS_ALLOW_HEADERS,
        expose_headers=_CORS_EXPOSE_HEADERS,
        allow_credentials=False,  # bearer tokens, not cookies
        max_age=600,
    )
