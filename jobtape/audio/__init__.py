"""The audio jobs as a package on the engine's public API: ingest, edit preview, save.

:func:`register` adds them to a :class:`jobtape.App` the way a user adds a job type: the
three job types (``@app.job_type``), the ``/api/audio/...`` and ``/api/storage/upload``
routes, the ``assets`` and ``previews`` projections with their migrations, and the
:class:`~jobtape.audio.settings.AudioSettings` the routes read (``audio_settings``). The
default app (``jobtape serve`` / ``worker`` / ``demo`` without ``--app``,
:func:`jobtape.defaults.default_app`) is an App with this package registered; a user app
may register it too::

    import jobtape, jobtape.audio

    app = jobtape.App()
    jobtape.audio.register(app)

Layout: pure builders and rules (:mod:`.media`, :mod:`.render`, :mod:`.ytdlp`,
:mod:`.loudness`, :mod:`.recipes`, :mod:`.sources`); job handlers (:mod:`.jobs`); routes
(:mod:`.http`); projections and migrations (:mod:`.projections`); :mod:`.settings`; :mod:`.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtape.app import App, JobContext
    from jobtape.audio.settings import AudioSettings

__all__ = ["DESCRIPTION", "JOB_TYPES", "register"]

#: The job types :func:`register` adds.
JOB_TYPES = ("ingest", "preview", "save")
#: The default app's description in the OpenAPI document (:attr:`jobtape.App.description`).
DESCRIPTION = (
    "Long audio jobs (ingest, edit preview, save) recorded in an append-only event log: upload a recording or "
    "name a URL (POST /api/audio/ingest), render a preview of an edit recipe and save it as a new asset "
    "(/api/audio/edit/...), and follow each job at /api/audio/jobs/{jobId}."
)


def register(app: App, settings: AudioSettings | None = None) -> AudioSettings:
    """Register the audio jobs, their routes, projections and migrations on ``app``.

    Args:
        app: the app; register before its log is opened.
        settings: the audio settings; ``None`` reads them from the environment
            (:meth:`AudioSettings.from_env`: ``JOBTAPE_TIMEOUT_INGEST``, ``JOBTAPE_FFMPEG_READRATE``, ...).

    Returns:
        The audio settings in effect.

    Raises:
        errors.JobTypeAlreadyRegistered: the app has an ``ingest``, ``preview`` or ``save`` type already.
        ValueError: the audio tables or migrations are registered already.
    """
    from jobtape.audio.http import direct_upload, edits, ingest
    from jobtape.audio.jobs import edits as edit_jobs
    from jobtape.audio.jobs import ingest as ingest_job
    from jobtape.audio.projections import assets, previews, tables
    from jobtape.audio.settings import AudioSettings

    audio = settings or AudioSettings.from_env()
    for migration in tables.MIGRATIONS:
        app.migration(migration.name, migration.step, replaces=migration.replaces)
    for projection in tables.PROJECTIONS:
        app.projection(projection)

    @app.job_type("ingest", timeout_s=audio.timeout_ingest_s, params=dict, http_submit=False)
    def ingest_handler(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return ingest_job.ingest(ctx, ctx.storage, audio)

    @app.job_type("preview", timeout_s=audio.timeout_preview_s, params=dict, http_submit=False)
    def preview_handler(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return edit_jobs.preview(ctx, ctx.storage, audio)

    @app.job_type("save", timeout_s=audio.timeout_save_s, params=dict, http_submit=False)
    def save_handler(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return edit_jobs.save(ctx, ctx.storage, audio)

    app.provide("audio_settings", audio)
    # assets/<assetId>/prepared.flac and previews/<recipeHash>.mp3; never ingest-uploads/ or direct-uploads/
    app.downloadable("assets/", what="prepared assets and previews", owner_of=assets.owner_of_key)
    app.downloadable("previews/", owner_of=previews.owner_of_key)
    app.route(ingest.ingest_route(audio))
    app.route(direct_upload.upload_route, for_storage=True)
    app.route(edits.preview_edit)
    app.route(edits.save_edit)
    app.route(edits.preview_audio_route, for_storage=True)
    return audio
