"""ffmpeg argv for rendering an edit recipe (pure: builds command lines, runs nothing).

A render is ONE filter graph over the asset's prepared FLAC::

    atrim=start=S:end=E, asetpts=PTS-STARTPTS,   trim to [S, E) (sample-accurate), time from 0
    afade=t=in:st=0:d=FI,                        fade in  (when FI > 0)
    afade=t=out:st=L-FO:d=FO,                    fade out (when FO > 0; L = E - S)
    volume=GdB,                                  gain     (when G != 0)
    loudnorm=I=T:TP=..:LRA=..:measured_*=..:linear=true   (when targetLufs is set)

With ``targetLufs`` the render is two-pass EBU R128 like ingest: :func:`measure_argv` runs
the graph up to the gain with ``loudnorm ... print_format=json`` into ``-f null``, and
:func:`render_argv` applies the measurement linearly. Outputs: a 128 kbps MP3 preview or a
FLAC 48 kHz save; progress goes to stdout as ``-progress`` lines.
"""

from __future__ import annotations

import math
import os
from typing import Literal

from jobtape.audio import media
from jobtape.audio.recipes import CanonicalRecipe

__all__ = ["PREVIEW_BITRATE", "SAVE_SAMPLE_RATE", "OutputFormat", "edit_filters", "measure_argv", "render_argv"]

OutputFormat = Literal["mp3", "flac"]
#: Bitrate of preview MP3s.
PREVIEW_BITRATE = "128k"
#: Sample rate of saved assets, in Hz.
SAVE_SAMPLE_RATE = 48000
_GLOBAL = ("-hide_banner", "-nostdin", "-nostats", "-stats_period", f"{media.STATS_PERIOD_S:g}", "-progress", "pipe:1")


def edit_filters(recipe: CanonicalRecipe) -> list[str]:
    """The trim, fade and gain filters of a recipe, in order (loudnorm not included)."""
    filters = [f"atrim=start={recipe.start_sec:.3f}:end={recipe.end_sec:.3f}", "asetpts=PTS-STARTPTS"]
    if recipe.fade_in_sec > 0:
        filters.append(f"afade=t=in:st=0:d={recipe.fade_in_sec:.3f}")
    if recipe.fade_out_sec > 0:
        start = max(0.0, recipe.length_sec - recipe.fade_out_sec)
        filters.append(f"afade=t=out:st={start:.3f}:d={recipe.fade_out_sec:.3f}")
    if recipe.gain_db != 0:
        filters.append(f"volume={recipe.gain_db:.3f}dB")
    return filters


def _clamp(value: float, low: float, high: float) -> str:
    # loudnorm rejects out-of-range measurements (a near-silent input's true peak is -inf).
    value = low if math.isnan(value) else min(max(value, low), high)
    return f"{value:.2f}"


def _loudnorm(recipe: CanonicalRecipe, true_peak_db: float) -> str:
    assert recipe.target_lufs is not None
    return f"loudnorm=I={recipe.target_lufs:g}:TP={true_peak_db:g}:LRA=11"


def measure_argv(source: str | os.PathLike[str], recipe: CanonicalRecipe, true_peak_db: float = -1.5) -> list[str]:
    """The first loudnorm pass over the edited audio (writes nothing; JSON on stderr).

    Only meaningful when ``recipe.target_lufs`` is set.
    """
    graph = ",".join([*edit_filters(recipe), f"{_loudnorm(recipe, true_peak_db)}:print_format=json"])
    return [
        media.ffmpeg_executable(),
        *_GLOBAL,
        "-i",
        os.path.abspath(source),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        graph,
        "-f",
        "null",
        "-",
    ]


def render_argv(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    recipe: CanonicalRecipe,
    output_format: OutputFormat,
    measured: media.LoudnormMeasurement | None = None,
    true_peak_db: float = -1.5,
) -> list[str]:
    """The render: the recipe's filter graph encoded as ``output_format`` into ``output`` (overwritten).

    Args:
        source: the asset's prepared FLAC.
        output: the file to write.
        recipe: the validated recipe.
        output_format: ``"mp3"`` (128 kbps preview) or ``"flac"`` (48 kHz save).
        measured: the :func:`measure_argv` result; required when ``recipe.target_lufs`` is set.
        true_peak_db: the loudnorm true-peak ceiling in dBTP.

    Raises:
        ValueError: ``target_lufs`` is set but ``measured`` is missing.
    """
    filters = edit_filters(recipe)
    if recipe.target_lufs is not None:
        if measured is None:
            raise ValueError("a recipe with targetLufs needs the measure pass's result")
        if not measured.silent:  # loudnorm turns digital silence into full-scale DC: leave it silent
            filters.append(
                f"{_loudnorm(recipe, true_peak_db)}:measured_I={_clamp(measured.input_i, -99, 0)}"
                f":measured_TP={_clamp(measured.input_tp, -99, 99)}:measured_LRA={_clamp(measured.input_lra, 0, 99)}"
                f":measured_thresh={_clamp(measured.input_thresh, -99, 0)}:offset={_clamp(measured.target_offset, -99, 99)}"
                ":linear=true:print_format=json"
            )
    # loudnorm resamples to 192 kHz internally; both outputs come back to 48 kHz.
    filters.append(f"aresample={SAVE_SAMPLE_RATE}")
    if output_format == "flac":
        filters.append("asetnsamples=n=4608:p=0")  # FLAC blocks; loudnorm's first frame is too big
        codec = ["-ar", str(SAVE_SAMPLE_RATE), "-c:a", "flac"]
    else:
        codec = ["-ar", str(SAVE_SAMPLE_RATE), "-c:a", "libmp3lame", "-b:a", PREVIEW_BITRATE, "-f", "mp3"]
    return [
        media.ffmpeg_executable(),
        *_GLOBAL,
        "-y",
        "-i",
        os.path.abspath(source),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        ",".join(filters),
        *codec,
        os.path.abspath(output),
    ]
