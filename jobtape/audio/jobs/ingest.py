"""The ingest job handler: what a worker does for an ingest (ffmpeg runs as child processes).

Ingest stages (each a ``job.stage_changed``; progress 0-100 within the stage where ffmpeg
reports it):

``fetching`` (copy the upload from storage to the job's temp folder) → ``probing``
(ffmpeg reads the header) → ``measuring`` (loudnorm pass 1, EBU R128) → ``normalizing``
(loudnorm pass 2, linear, encoding FLAC 48 kHz) → ``storing`` (upload to
``assets/{assetId}/prepared.flac``).

A URL or YouTube ingest replaces ``fetching`` with ``downloading`` (yt-dlp as a child,
progress by bytes or fragments; see :mod:`jobtape.audio.jobs.url_ingest`); the rest is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobtape import errors
from jobtape.app import JobContext
from jobtape.audio import loudness, media
from jobtape.audio.errors import MediaError
from jobtape.audio.jobs import steps, url_ingest
from jobtape.audio.settings import AudioSettings
from jobtape.storage.base import Storage

__all__ = ["fetch_input", "ingest", "normalize_to_asset"]


def fetch_input(context: JobContext, storage: Storage, key: str) -> Path:
    """Stage ``fetching``: a local path of the blob under ``key`` (copied into the workdir if
    the backend has no local path).

    Raises:
        errors.BlobNotFound: the upload is gone.
    """
    return steps.fetch(context, storage, key, "input" + Path(key).suffix)


def normalize_to_asset(context: JobContext, storage: Storage, settings: AudioSettings, source: Path) -> dict[str, Any]:
    """Probe, two-pass loudness-normalise and store ``source`` as a new prepared asset.

    Returns:
        ``{assetId, preparedKey, durationSec, sampleRate, channels, inputLoudness,
        outputLoudness, normalization, targetLufs}``, plus ``targetMissedByLu`` and
        ``loudnessNote`` when the output is more than 1 LU off the target
        (:func:`loudness.target_report`); loudness values in LUFS / dBTP / LU.

    Raises:
        MediaError: the input is not media, has no audio, or ffmpeg failed.
    """
    context.stage("probing")
    info = steps.probe(context, source, "probe")
    target = media.Target(integrated_lufs=settings.target_lufs, true_peak_db=settings.target_true_peak_db)

    context.stage("measuring")
    measured = media.parse_loudnorm_json(
        steps.ffmpeg_pass(context, steps.with_readrate(media.loudnorm_measure_argv(source, target), settings), info.duration_sec, "measure")
    )

    context.stage("normalizing")
    prepared = context.workdir / "prepared.flac"
    applied_stderr = steps.ffmpeg_pass(
        context,
        steps.with_readrate(media.loudnorm_apply_argv(source, prepared, target, measured), settings),
        info.duration_sec,
        "normalize",
    )
    # Digital silence has no loudness to normalise: the pass only resamples and prints no JSON.
    applied = None if measured.silent else media.parse_loudnorm_json(applied_stderr)
    output = steps.probe(context, prepared, "probe-output")

    asset_id, key = steps.store_asset(context, storage, prepared)
    output_loudness = steps.loudness_summary(applied, "output") if applied else None
    return {
        "assetId": asset_id,
        "preparedKey": key,
        "durationSec": round(output.duration_sec, 3),
        "sampleRate": output.sample_rate,
        "channels": output.channels,
        "inputLoudness": steps.loudness_summary(measured, "input"),
        "outputLoudness": output_loudness,
        "normalization": (applied.normalization_type or "linear") if applied else "none (silent input)",
        "targetLufs": settings.target_lufs,
        **loudness.target_report(
            settings.target_lufs,
            output_loudness["integratedLufs"] if output_loudness else None,
            duration_sec=output.duration_sec,
            true_peak_db=settings.target_true_peak_db,
        ),
    }


def ingest(context: JobContext, storage: Storage, settings: AudioSettings) -> dict[str, Any]:
    """The ingest job handler for uploads and URL/YouTube sources: see the module docstring.

    Job params (from the API): ``{"sourceType": "upload", "storageKey": ...,
    "originalFilename": ...}`` (``"storage"`` for a direct upload), or ``{"sourceType": "url" | "youtube", "url": ...,
    "rightsAttested": true}``.

    Raises:
        MediaError: bad media, an ffmpeg failure, or a failed download (the job fails;
            retryable only for network errors).
    """
    params = context.params
    source_type = params.get("sourceType", "upload")
    if source_type in ("url", "youtube"):
        downloaded = url_ingest.download_source(context, settings)
        result = normalize_to_asset(context, storage, settings, downloaded.path)
        result["source"] = downloaded.source
        return result
    if source_type not in ("upload", "storage"):
        raise MediaError(f"ingest source type {source_type!r} is not supported by this worker")
    try:
        source = fetch_input(context, storage, params["storageKey"])
    except errors.BlobNotFound as exc:
        raise MediaError(f"the uploaded file is missing from storage: {exc.key}") from exc
    result = normalize_to_asset(context, storage, settings, source)
    result["source"] = {"type": source_type, "originalFilename": params.get("originalFilename")}
    return result
