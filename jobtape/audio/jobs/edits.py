"""The edit job handlers: render a recipe as a preview (MP3) or save it as a new asset (FLAC).

Job params (written by ``jobtape.audio.http.edits``)::

    {"recipe": {<canonical recipe, camelCase>}, "recipeHash": "<sha256 hex>",
     "sourceKey": "assets/<assetId>/prepared.flac"}

Stages (``job.stage_changed``; progress 0-100 within the stage where ffmpeg reports it):

- preview: ``fetching`` → ``measuring`` (only with ``targetLufs``) → ``rendering``
  (128 kbps MP3) → ``storing`` (``previews/{recipeHash}.mp3``).
  Result ``{previewKey, recipeHash, durationSec, assetId, cacheHit: false}``. A preview
  job whose recipe another job rendered after this one was created (the same preview
  requested twice while the first was queued) finds it in the ``previews`` projection when
  it starts, renders nothing, and completes with ``cacheHit: true, renderedByJobId``, as
  a cache hit at the API does.
- save: ``fetching`` → ``measuring`` (only with ``targetLufs``) → ``rendering`` (FLAC
  48 kHz) → ``analyzing`` (loudness of the result) → ``storing``
  (``assets/{newAssetId}/prepared.flac``). Result ``{assetId, preparedKey, durationSec,
  sampleRate, channels, outputLoudness, recipe, recipeHash, sourceAssetId}`` (with
  ``targetLufs``, plus ``targetMissedByLu`` and ``loudnessNote`` when the output is more
  than 1 LU off it: :func:`jobtape.audio.loudness.target_report`); the ``assets``
  projection adds the new asset in the completion's batch.

Every ffmpeg run goes through :meth:`JobContext.run_child`, so cancellation kills it and
the log records ``child_started`` / ``child_exited``, as for ingest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobtape import errors
from jobtape.app import JobContext
from jobtape.audio import loudness, media, render
from jobtape.audio.errors import MediaError
from jobtape.audio.jobs import steps
from jobtape.audio.projections import previews
from jobtape.audio.recipes import CanonicalRecipe
from jobtape.audio.settings import AudioSettings
from jobtape.storage.base import Storage

__all__ = ["preview", "preview_key", "save"]


def preview_key(recipe_hash: str) -> str:
    """The storage key of a recipe's preview: ``previews/{recipeHash}.mp3``."""
    return f"previews/{recipe_hash}.mp3"


def _fetch(context: JobContext, storage: Storage, key: str) -> Path:
    try:
        return steps.fetch(context, storage, key, "source.flac")
    except errors.BlobNotFound as exc:
        raise MediaError(f"the source asset's audio is missing from storage: {exc.key}") from exc


def _render(
    context: JobContext,
    source: Path,
    output: Path,
    recipe: CanonicalRecipe,
    output_format: render.OutputFormat,
    settings: AudioSettings,
) -> media.LoudnormMeasurement | None:
    """Stages ``measuring`` (with targetLufs) and ``rendering``; returns loudnorm's output JSON, if any."""
    measured = None
    if recipe.target_lufs is not None:
        context.stage("measuring")
        measured = media.parse_loudnorm_json(
            steps.ffmpeg_pass(context, render.measure_argv(source, recipe, settings.target_true_peak_db), recipe.length_sec, "measure")
        )
    context.stage("rendering")
    argv = render.render_argv(source, output, recipe, output_format, measured, settings.target_true_peak_db)
    stderr = steps.ffmpeg_pass(context, argv, recipe.length_sec, "render")
    if measured is None or measured.silent:
        return None
    return media.parse_loudnorm_json(stderr)


def _params(context: JobContext) -> tuple[CanonicalRecipe, str, str]:
    params = context.params
    try:
        return CanonicalRecipe.from_json_dict(params["recipe"]), str(params["recipeHash"]), str(params["sourceKey"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MediaError(f"the job's params are not an edit recipe: {exc!r}") from exc


def preview(context: JobContext, storage: Storage, settings: AudioSettings) -> dict[str, Any]:
    """Render a 128 kbps MP3 preview of the recipe; see the module docstring.

    Raises:
        MediaError: the source is missing or ffmpeg failed (the job fails).
    """
    recipe, recipe_hash, source_key = _params(context)
    cached = previews.select_preview(context.repository.store, recipe_hash)
    if cached is not None and storage.exists(cached.preview_key):  # rendered since this job was created
        context.set_download(cached.preview_key)  # the rendering job's: linked, not owned
        return previews.cache_hit_result(cached, recipe_hash, recipe.asset_id)
    source = _fetch(context, storage, source_key)
    output = context.workdir / "preview.mp3"
    _render(context, source, output, recipe, "mp3", settings)
    info = steps.probe(context, output, "probe-output")
    context.stage("storing")
    key = preview_key(recipe_hash)
    if not storage.exists(key):  # a concurrent render of the same recipe may own it already
        context.output_written(key)
    context.set_download(key, owned=True)  # a render owns its recipe's MP3 (the previews row points here)
    storage.put_file(key, output)
    return {
        "previewKey": key,
        "recipeHash": recipe_hash,
        "durationSec": round(info.duration_sec, 3),
        "assetId": recipe.asset_id,
        "cacheHit": False,
    }


def save(context: JobContext, storage: Storage, settings: AudioSettings) -> dict[str, Any]:
    """Render the recipe as FLAC 48 kHz and store it as a new asset; see the module docstring.

    Raises:
        MediaError: the source is missing or ffmpeg failed (the job fails).
    """
    recipe, recipe_hash, source_key = _params(context)
    source = _fetch(context, storage, source_key)
    output = context.workdir / "prepared.flac"
    applied = _render(context, source, output, recipe, "flac", settings)
    info = steps.probe(context, output, "probe-output")
    if applied is not None:
        output_loudness = steps.loudness_summary(applied, "output")
    else:
        context.stage("analyzing")
        target = media.Target(integrated_lufs=settings.target_lufs, true_peak_db=settings.target_true_peak_db)
        output_loudness = steps.loudness_summary(
            media.parse_loudnorm_json(
                steps.ffmpeg_pass(context, media.loudnorm_measure_argv(output, target), info.duration_sec, "analyze")
            ),
            "input",
        )
    asset_id, key = steps.store_asset(context, storage, output)
    result = {
        "assetId": asset_id,
        "preparedKey": key,
        "durationSec": round(info.duration_sec, 3),
        "sampleRate": info.sample_rate,
        "channels": info.channels,
        "outputLoudness": output_loudness,
        "recipe": recipe.to_json_dict(),
        "recipeHash": recipe_hash,
        "sourceAssetId": recipe.asset_id,
    }
    if recipe.target_lufs is not None:
        result.update(
            loudness.target_report(
                recipe.target_lufs,
                output_loudness["integratedLufs"],
                duration_sec=info.duration_sec,
                true_peak_db=settings.target_true_peak_db,
            )
        )
    return result
