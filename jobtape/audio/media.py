"""ffmpeg argv builders and output parsers, plus a small blocking runner.

The builders and parsers are pure so the worker can run long commands itself
(``subprocess.Popen`` with stdout read line by line into ``ProgressParser``, stderr
drained concurrently and handed to ``parse_loudnorm_json``). ``run``, ``probe`` and the
``measure_*`` helpers block and are meant for probes and tests.

Only ``ffmpeg`` is assumed (no ffprobe): probing parses the banner that
``ffmpeg -hide_banner -i FILE`` prints on stderr. Loudness normalisation is two-pass
EBU R128 with the ``loudnorm`` filter: measure, then apply with ``linear=true``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import msgspec

from jobtape.audio.errors import MediaError
from jobtape.worker.messages import scrub_paths

__all__ = [
    "STATS_PERIOD_S",
    "LoudnormMeasurement",
    "MediaInfo",
    "ProgressParser",
    "Target",
    "ffmpeg_executable",
    "loudnorm_apply_argv",
    "loudnorm_measure_argv",
    "measure_integrated_loudness",
    "measure_volume",
    "parse_ebur128_summary",
    "parse_loudnorm_json",
    "parse_probe",
    "parse_volumedetect",
    "probe",
    "run",
    "scrub_paths",
    "stderr_tail",
]

#: Default time limit of ``run``, in seconds.
DEFAULT_TIMEOUT_S = 600.0
#: ffmpeg's ``-stats_period``, in seconds. ffmpeg's main loop looks at received signals
#: only once per stats period, so this bounds how long a SIGTERM (a cancel, a timeout, a
#: shutdown) takes to stop it: measured ~45 ms at 0.05 s against ~350 ms at ffmpeg's default
#: 0.5 s (``bench/cancel_latency.py``). It also paces the ``-progress`` lines (20 per second).
STATS_PERIOD_S = 0.05
_GLOBAL_OPTIONS = ("-hide_banner", "-nostdin", "-nostats", "-stats_period", f"{STATS_PERIOD_S:g}")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "hexadecagonal": 16}


class MediaInfo(msgspec.Struct, frozen=True):
    """What ``probe`` learned about a media file.

    ``sample_rate`` (Hz), ``channels`` and ``codec`` describe the first audio stream and
    are ``None`` when the banner does not say. ``duration_sec`` is 0.0 when unknown.
    ``has_video`` ignores cover art (``attached pic``) streams.
    """

    duration_sec: float
    sample_rate: int | None
    channels: int | None
    has_audio: bool
    has_video: bool
    codec: str | None


class Target(msgspec.Struct, frozen=True):
    """The loudness to normalise to (EBU R128 / podcast defaults)."""

    #: Integrated loudness, in LUFS.
    integrated_lufs: float = -16.0
    #: Maximum true peak, in dBTP.
    true_peak_db: float = -1.5
    #: Loudness range target, in LU (a wider input range makes loudnorm go dynamic).
    lra: float = 11.0


class LoudnormMeasurement(msgspec.Struct, frozen=True):
    """The JSON block ``loudnorm`` prints (LUFS, dBTP and LU; ``-inf`` for silence)."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    output_i: float
    output_tp: float
    output_lra: float
    output_thresh: float
    target_offset: float
    #: ``"linear"`` or ``"dynamic"``: what the pass actually did.
    normalization_type: str = ""

    @property
    def silent(self) -> bool:
        """Whether the input is digital silence (``input_i`` is ``-inf``)."""
        return not math.isfinite(self.input_i)


@functools.cache
def ffmpeg_executable() -> str:
    """Return the ffmpeg binary: ``ffmpeg`` on PATH, else the one bundled by imageio-ffmpeg.

    Raises:
        MediaError: If neither is available.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise MediaError(f"no ffmpeg binary found: {exc}") from exc


def _path_arg(path: str | os.PathLike[str]) -> str:
    # Absolute paths can be mistaken neither for options ("-x.mp3") nor for protocols ("a:b").
    return os.path.abspath(os.fspath(path))


def stderr_tail(text: str, lines: int = 20) -> str:
    """Return the last ``lines`` non-blank lines of ``text`` (``\\r`` counts as a line end)."""
    kept = [line.rstrip() for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    return "\n".join(kept[-lines:])


# An absolute path not inside a URL (``https://host/a/b`` is left alone): a ``/`` not preceded by a
# word character, ``:``, ``/``, ``.``, ``~``, ``-`` or ``>`` (a placeholder), then one or more folders, then the last segment.
def run(argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; return it with stdout/stderr as text (bad bytes replaced).

    Args:
        argv: The command, e.g. from ``loudnorm_measure_argv``.
        timeout: Time limit in seconds; the process is killed when it passes.
        check: Raise on a non-zero exit status.

    Raises:
        MediaError: If the binary is missing, the time limit passes, or (with
            ``check``) the exit status is not 0; carries the last 20 lines of stderr.
    """
    name = os.path.basename(argv[0])
    try:
        completed = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise MediaError(f"cannot run {name}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise MediaError(f"{name} timed out after {timeout:g} s", stderr_tail(stderr), retryable=True) from exc
    if check and completed.returncode != 0:
        raise MediaError(f"{name} exited with status {completed.returncode}", stderr_tail(completed.stderr))
    return completed


# --- probing ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*Duration:\s*(?:(\d+):(\d{2}):(\d{2}(?:\.\d+)?)|N/A)", re.MULTILINE)
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Audio|Video): (.*)$", re.MULTILINE)
_INPUT_ERRORS = ("Invalid data found when processing input", "No such file or directory", "Permission denied")


def _channels(layout: str) -> int | None:
    layout = layout.strip()
    if match := re.fullmatch(r"(\d+) channels(?: \(.*\))?", layout):
        return int(match.group(1))
    name = layout.split("(", 1)[0]
    if name in _LAYOUT_CHANNELS:
        return _LAYOUT_CHANNELS[name]
    if re.fullmatch(r"\d+(?:\.\d+)+", name):  # "5.1" = 6, "7.1.2" = 10
        return sum(int(part) for part in name.split("."))
    return None


def parse_probe(stderr: str) -> MediaInfo:
    """Parse the stderr of ``ffmpeg -hide_banner -i FILE`` into a ``MediaInfo``.

    Args:
        stderr: The full text ffmpeg printed, e.g. ``"  Duration: 00:00:05.20, ..."``
            followed by ``"  Stream #0:0: Audio: mp3 (mp3float), 16000 Hz, mono, ..."``.

    Raises:
        MediaError: If the input could not be opened or is not media, or if it
            has no audio stream; carries the tail of ``stderr``.
    """
    if "Input #" not in stderr:
        reason = next((marker for marker in _INPUT_ERRORS if marker in stderr), "ffmpeg described no input")
        raise MediaError(f"not a readable media file: {reason}", stderr_tail(stderr))
    duration = 0.0
    if (match := _DURATION.search(stderr)) and match.group(1) is not None:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    streams: list[tuple[str, str]] = _STREAM.findall(stderr)
    audio = [details for kind, details in streams if kind == "Audio"]
    has_video = any(kind == "Video" and "(attached pic)" not in details for kind, details in streams)
    if not audio:
        raise MediaError("the file has no audio stream", stderr_tail(stderr))
    fields = [field.strip() for field in re.split(r",(?![^(]*\))", audio[0])]
    codec_match = re.match(r"[\w-]+", fields[0])
    hz = next((index for index, field in enumerate(fields) if re.fullmatch(r"\d+ Hz", field)), None)
    sample_rate = int(fields[hz].split()[0]) if hz is not None else None
    channels = _channels(fields[hz + 1]) if hz is not None and hz + 1 < len(fields) else None
    return MediaInfo(
        duration_sec=duration,
        sample_rate=sample_rate,
        channels=channels,
        has_audio=True,
        has_video=has_video,
        codec=codec_match.group(0) if codec_match else None,
    )


def probe(path: str | os.PathLike[str], timeout: float = 60.0) -> MediaInfo:
    """Describe a local media file; if the banner has no duration, decode to measure it.

    Raises:
        MediaError: If the file is missing, not media, or has no audio stream.
    """
    completed = run([ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", _path_arg(path)], timeout, check=False)
    info = parse_probe(completed.stderr)
    if info.duration_sec <= 0.0:
        argv = [ffmpeg_executable(), *_GLOBAL_OPTIONS, "-progress", "pipe:1", "-i", _path_arg(path), "-vn", "-f", "null", "-"]
        parser = ProgressParser(0.0)
        for line in run(argv, timeout).stdout.splitlines():
            parser.feed(line)
        info = msgspec.structs.replace(info, duration_sec=parser.out_time_sec)
    return info


# --- loudness --------------------------------------------------------------------------


def _loudnorm_targets(target: Target) -> str:
    return f"loudnorm=I={target.integrated_lufs:g}:TP={target.true_peak_db:g}:LRA={target.lra:g}"


def loudnorm_measure_argv(input: str | os.PathLike[str], target: Target = Target()) -> list[str]:
    """Build the first (measuring) loudnorm pass; it writes no output file.

    Progress goes to stdout as ``key=value`` lines; the measurement JSON to stderr.
    """
    return [
        ffmpeg_executable(),
        *_GLOBAL_OPTIONS,
        "-progress",
        "pipe:1",
        "-i",
        _path_arg(input),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        f"{_loudnorm_targets(target)}:print_format=json",
        "-f",
        "null",
        "-",
    ]


def _clamped(value: float, low: float, high: float) -> str:
    # loudnorm rejects out-of-range measurements (a near-silent input's true peak is -inf).
    value = low if math.isnan(value) else min(max(value, low), high)
    return f"{value:.2f}"


def loudnorm_apply_argv(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    target: Target,
    measured: LoudnormMeasurement,
    sample_rate: int = 48000,
) -> list[str]:
    """Build the second loudnorm pass, writing the first audio track as FLAC.

    The channel count is kept; video, subtitles and data are dropped. loudnorm works
    at 192 kHz internally, so its output is resampled to ``sample_rate`` (Hz), then cut
    into 4608-sample frames: loudnorm's first frame (3 s) is too big for a FLAC block.
    An existing ``output`` is overwritten. loudnorm turns digital silence into full-scale
    DC, so a ``measured.silent`` input is only resampled (and stderr has no JSON).
    """
    framing = f"aresample={sample_rate},asetnsamples=n=4608:p=0"
    loudnorm = (
        f"{_loudnorm_targets(target)}:measured_I={_clamped(measured.input_i, -99, 0)}:measured_TP={_clamped(measured.input_tp, -99, 99)}"
        f":measured_LRA={_clamped(measured.input_lra, 0, 99)}:measured_thresh={_clamped(measured.input_thresh, -99, 0)}"
        f":offset={_clamped(measured.target_offset, -99, 99)}"
    )
    return [
        ffmpeg_executable(),
        *_GLOBAL_OPTIONS,
        "-progress",
        "pipe:1",
        "-y",
        "-i",
        _path_arg(input),
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        framing if measured.silent else f"{loudnorm}:linear=true:print_format=json,{framing}",
        "-ar",
        str(sample_rate),
        "-c:a",
        "flac",
        _path_arg(output),
    ]


def parse_loudnorm_json(stderr: str) -> LoudnormMeasurement:
    """Parse the last loudnorm JSON object in ``stderr`` (values are quoted numbers).

    Raises:
        MediaError: If ``stderr`` holds no loudnorm JSON object.
    """
    for block in reversed(re.findall(r"\{[^{}]*\}", stderr)):
        try:
            raw: dict[str, Any] = msgspec.json.decode(block)
            values = {name: float(raw[name]) for name in LoudnormMeasurement.__struct_fields__[:-1]}
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            continue
        return LoudnormMeasurement(**values, normalization_type=str(raw.get("normalization_type", "")))
    raise MediaError("no loudnorm measurement in ffmpeg output", stderr_tail(stderr))


def parse_ebur128_summary(stderr: str) -> float:
    """Return the integrated loudness (LUFS) from the ``Summary:`` block ebur128 prints.

    Raises:
        MediaError: If there is no summary.
    """
    summary = stderr.rpartition("Summary:")[2]
    match = re.search(r"^\s*I:\s*(-?(?:\d+(?:\.\d+)?|inf))\s*LUFS", summary, re.MULTILINE)
    if "Summary:" not in stderr or match is None:
        raise MediaError("no ebur128 summary in ffmpeg output", stderr_tail(stderr))
    return float(match.group(1))


def measure_integrated_loudness(path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT_S) -> float:
    """Measure the first audio track's integrated loudness in LUFS with ``ebur128``.

    Raises:
        MediaError: If ffmpeg fails.
    """
    argv = [
        ffmpeg_executable(),
        *_GLOBAL_OPTIONS,
        "-i",
        _path_arg(path),
        "-map",
        "0:a:0",
        "-af",
        "ebur128=framelog=quiet",
        "-f",
        "null",
        "-",
    ]
    return parse_ebur128_summary(run(argv, timeout).stderr)


def parse_volumedetect(stderr: str) -> tuple[float, float]:
    """Return ``(mean_volume, max_volume)`` in dBFS (``-inf`` for silence).

    Raises:
        MediaError: If volumedetect printed no result.
    """
    mean = re.findall(r"mean_volume:\s*(-?(?:[\d.]+|inf)) dB", stderr)
    peak = re.findall(r"max_volume:\s*(-?(?:[\d.]+|inf)) dB", stderr)
    if not mean or not peak:
        raise MediaError("no volumedetect result in ffmpeg output", stderr_tail(stderr))
    return float(mean[-1]), float(peak[-1])


def measure_volume(
    path: str | os.PathLike[str],
    start: float | None = None,
    duration: float | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[float, float]:
    """Measure ``(mean_db, max_db)`` in dBFS over ``duration`` s from ``start`` s (None: all).

    Raises:
        MediaError: If ffmpeg fails or the window holds no audio.
    """
    window = [*(["-ss", f"{start:.6f}"] if start is not None else []), *(["-t", f"{duration:.6f}"] if duration is not None else [])]
    argv = [
        ffmpeg_executable(),
        *_GLOBAL_OPTIONS,
        *window,
        "-i",
        _path_arg(path),
        "-map",
        "0:a:0",
        "-af",
        "volumedetect",
        "-f",
        "null",
        "-",
    ]
    return parse_volumedetect(run(argv, timeout).stderr)


# --- progress --------------------------------------------------------------------------


class ProgressParser:
    """Turn ``-progress pipe:1`` lines into whole percentages of ``duration_sec``.

    ``out_time_us`` and ``out_time_ms`` are both microseconds (an ffmpeg quirk);
    ``out_time`` is ``HH:MM:SS.micro``. Progress never goes backwards and stays at 99
    until ``progress=end``, which yields 100. With ``duration_sec`` <= 0 only the end
    is reported. Pass the duration of the *output* (after any trim).

    Args:
        duration_sec: Expected output duration, in seconds.
    """

    def __init__(self, duration_sec: float) -> None:
        self.duration_sec = duration_sec
        #: Last percentage reported (0-100).
        self.percent = 0
        #: Latest output position, in seconds.
        self.out_time_sec = 0.0
        #: Whether ``progress=end`` was seen.
        self.finished = False

    def feed(self, line: str) -> int | None:
        """Consume one stdout line; return the new percentage if it changed, else None."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key == "progress":
            if value.strip() == "end" and not self.finished:
                self.finished = True
                self.percent = 100
                return 100
            return None
        seconds = _progress_seconds(key, value.strip())
        if seconds is None or self.finished:
            return None
        self.out_time_sec = max(self.out_time_sec, seconds)
        if self.duration_sec <= 0:
            return None
        percent = min(99, int(self.out_time_sec / self.duration_sec * 100))
        if percent <= self.percent:
            return None
        self.percent = percent
        return percent


def _progress_seconds(key: str, value: str) -> float | None:
    try:
        if key in ("out_time_us", "out_time_ms"):
            return max(0.0, int(value) / 1_000_000)
        if key == "out_time" and (match := re.fullmatch(r"(-?)(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", value)):
            sign, hours, minutes, seconds = match.groups()
            return 0.0 if sign else int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        pass
    return None
