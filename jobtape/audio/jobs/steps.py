"""Steps shared by every job handler: fetch an input, probe it, run an ffmpeg pass with progress.

Each step runs its ffmpeg through :meth:`JobContext.run_child`, so it is recorded as
``job.child_started`` / ``job.child_exited``, cancellable, and bounded by the job's timeout.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from jobtape.app import JobContext
from jobtape.audio import media
from jobtape.audio.errors import MediaError
from jobtape.audio.settings import AudioSettings
from jobtape.storage.base import Storage

__all__ = ["fetch", "ffmpeg_pass", "loudness_summary", "probe", "store_asset", "with_readrate"]


def probe(context: JobContext, path: Path, name: str) -> media.MediaInfo:
    """Describe ``path`` with an ffmpeg child named ``name``.

    Raises:
        MediaError: not media, or no audio stream (with ffmpeg's stderr tail).
    """
    # "-t 0 -f null -" decodes nothing but makes ffmpeg exit 0 for a readable file.
    argv = [media.ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", str(path), "-t", "0", "-f", "null", "-"]
    return media.parse_probe(context.run_child(argv, name=name).stderr)


def with_readrate(argv: list[str], settings: AudioSettings) -> list[str]:
    """``argv`` with ``-readrate N`` before its ``-i`` when ``settings.ffmpeg_readrate`` is set."""
    if settings.ffmpeg_readrate is None:
        return argv
    at = argv.index("-i")
    return [*argv[:at], "-readrate", f"{settings.ffmpeg_readrate:g}", *argv[at:]]


def ffmpeg_pass(context: JobContext, argv: list[str], duration_sec: float, name: str) -> str:
    """Run one ffmpeg pass that writes ``-progress`` to stdout, reporting 0-100 percent of ``duration_sec`` seconds.

    Returns:
        ffmpeg's stderr (for loudnorm's JSON).

    Raises:
        MediaError: ffmpeg exited non-zero; the message carries its stderr tail.
    """
    parser = media.ProgressParser(duration_sec)

    def on_line(line: str) -> None:
        percent = parser.feed(line)
        if percent is not None:
            context.progress(percent)

    outcome = context.run_child(argv, on_line=on_line, name=name)
    if outcome.returncode != 0:
        raise MediaError(f"ffmpeg {name} failed with exit status {outcome.returncode}", media.stderr_tail(outcome.stderr))
    return outcome.stderr


def loudness_summary(measurement: media.LoudnormMeasurement, prefix: str) -> dict[str, float | None]:
    """``{integratedLufs, truePeakDb, lra}`` of loudnorm's ``input_*`` or ``output_*`` values (LUFS, dBTP, LU).

    Silence measures as -inf, which JSON cannot carry: it is reported as ``None``.
    """
    values = {
        "integratedLufs": getattr(measurement, f"{prefix}_i"),
        "truePeakDb": getattr(measurement, f"{prefix}_tp"),
        "lra": getattr(measurement, f"{prefix}_lra"),
    }
    return {key: (round(value, 2) if math.isfinite(value) else None) for key, value in values.items()}


def fetch(context: JobContext, storage: Storage, key: str, local_name: str) -> Path:
    """Stage ``fetching``: a local path of the blob under ``key``.

    The backend's own path when it has one (local storage), else a copy in the job's
    workdir named ``local_name`` (removed with the workdir).

    Raises:
        errors.BlobNotFound: no blob under ``key``.
    """
    context.stage("fetching")
    local = storage.local_path(key)
    if local is not None and local.exists():
        return local
    target = context.workdir / local_name
    storage.get_to_file(key, target)
    return target


def store_asset(context: JobContext, storage: Storage, path: Path) -> tuple[str, str]:
    """Stage ``storing``: put ``path`` as a new prepared asset, owned by the job and its poll's download.

    Returns:
        ``(asset_id, key)``: a new 32-hex id and ``assets/<asset_id>/prepared.flac``.

    Raises:
        errors.StorageError: the storage refused the write.
    """
    context.stage("storing")
    asset_id = uuid.uuid4().hex
    key = f"assets/{asset_id}/prepared.flac"
    context.output_written(key)
    context.set_download(key)
    storage.put_file(key, path)
    return asset_id, key
