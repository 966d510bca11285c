"""Run the real ffmpeg (imageio-ffmpeg's binary) on the media in media/."""

from __future__ import annotations

import random
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from jobtape.audio import media
from jobtape.audio.errors import MediaError

__all__: list[str] = []

pytestmark = pytest.mark.slow

MEDIA = Path(__file__).resolve().parents[2] / "media"


def _normalise(source: Path, output: Path, target: media.Target = media.Target()) -> media.LoudnormMeasurement:
    measured = media.parse_loudnorm_json(media.run(media.loudnorm_measure_argv(source, target)).stderr)
    applied = media.run(media.loudnorm_apply_argv(source, output, target, measured))
    return media.parse_loudnorm_json(applied.stderr)


@pytest.mark.parametrize(
    ("name", "duration", "sample_rate", "channels", "has_video"),
    [
        ("speech_librispeech.mp3", 5.2, 16000, 1, False),
        ("music_strings.ogg", 45.8, 44100, 2, False),
        ("speech_ljspeech.wav", 9.66, 22050, 1, False),
        ("video_friday.mp4", 6.17, 44100, 2, True),
        ("awkward_short_id3v1.mp3", 4.16, 44100, 1, False),
    ],
)
def test_probe_real_media(name: str, duration: float, sample_rate: int, channels: int, has_video: bool) -> None:
    info = media.probe(MEDIA / name)
    assert info.duration_sec == pytest.approx(duration, abs=0.1)
    assert (info.sample_rate, info.channels, info.has_audio, info.has_video) == (sample_rate, channels, True, has_video)
    assert info.codec


def test_probe_corrupt_file(tmp_path: Path) -> None:
    bogus = tmp_path / "upload.mp3"
    bogus.write_bytes(random.Random(0).randbytes(5000))  # seeded: some random bytes probe as a stream
    with pytest.raises(MediaError) as info:
        media.probe(bogus)
    assert "Invalid data found when processing input" in info.value.stderr_tail
    assert "stderr (tail)" in str(info.value)


def test_probe_text_file_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="Invalid data"):
        media.probe(MEDIA / "SOURCES.md")
    with pytest.raises(MediaError, match="No such file"):
        media.probe(tmp_path / "missing.wav")


def test_probe_without_banner_duration_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams written to pipes print ``Duration: N/A``; probe then decodes to measure."""
    real_parse = media.parse_probe

    def parse_without_duration(stderr: str) -> media.MediaInfo:
        return real_parse(re.sub(r"Duration: [0-9:.]+", "Duration: N/A", stderr))

    monkeypatch.setattr(media, "parse_probe", parse_without_duration)
    info = media.probe(MEDIA / "speech_ljspeech.wav")
    assert info.duration_sec == pytest.approx(9.66, abs=0.1)
    assert info.sample_rate == 22050


def test_two_pass_normalisation_of_speech(tmp_path: Path) -> None:
    source = MEDIA / "speech_ljspeech.wav"
    before = media.measure_integrated_loudness(source)
    assert before < -18.0  # the file starts well below the target
    output = tmp_path / "normalised.flac"
    applied = _normalise(source, output)
    info = media.probe(output)
    assert (info.codec, info.sample_rate, info.channels, info.has_video) == ("flac", 48000, 1, False)
    assert info.duration_sec == pytest.approx(9.66, abs=0.1)
    assert media.measure_integrated_loudness(output) == pytest.approx(-16.0, abs=1.0)
    assert applied.output_i == pytest.approx(-16.0, abs=1.0)
    _mean_db, max_db = media.measure_volume(output)
    assert max_db <= -1.0  # sample peak stays under the -1.5 dBTP ceiling (plus rounding)


def test_stereo_stays_stereo_and_custom_target(tmp_path: Path) -> None:
    output = tmp_path / "music.flac"
    _normalise(MEDIA / "music_strings.ogg", output, media.Target(integrated_lufs=-20.0))
    assert media.probe(output).channels == 2
    assert media.measure_integrated_loudness(output) == pytest.approx(-20.0, abs=1.0)


def test_video_input_yields_its_audio(tmp_path: Path) -> None:
    output = tmp_path / "friday.flac"
    _normalise(MEDIA / "video_friday.mp4", output)
    info = media.probe(output)
    assert (info.has_video, info.channels, info.sample_rate) == (False, 2, 48000)
    assert info.duration_sec == pytest.approx(6.17, abs=0.1)


def test_short_inputs_normalise(tmp_path: Path) -> None:
    """Inputs shorter than loudnorm's 3 s first frame still encode to FLAC."""
    short = tmp_path / "short.wav"
    media.run(
        [media.ffmpeg_executable(), "-hide_banner", "-nostdin", "-i", str(MEDIA / "speech_ljspeech.wav"), "-t", "2", "-y", str(short)]
    )
    for source in (short, MEDIA / "awkward_short_id3v1.mp3"):
        output = tmp_path / f"{source.stem}.flac"
        _normalise(source, output)
        assert media.probe(output).duration_sec == pytest.approx(media.probe(source).duration_sec, abs=0.1)


def test_silence_normalises_without_error(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    media.run(
        [
            media.ffmpeg_executable(),
            "-hide_banner",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=44100:cl=mono",
            "-t",
            "2",
            "-y",
            str(silent),
        ]
    )
    output = tmp_path / "silent.flac"
    measured = media.parse_loudnorm_json(media.run(media.loudnorm_measure_argv(silent)).stderr)
    assert measured.silent
    media.run(media.loudnorm_apply_argv(silent, output, media.Target(), measured))
    info = media.probe(output)
    assert (info.duration_sec, info.sample_rate) == (pytest.approx(2.0, abs=0.1), 48000)
    # loudnorm itself would turn digital silence into full-scale DC; the output stays silent.
    assert media.measure_volume(output)[1] < -80.0


def test_measure_volume_window() -> None:
    source = MEDIA / "speech_ljspeech.wav"
    whole_mean, whole_max = media.measure_volume(source)
    window_mean, window_max = media.measure_volume(source, start=1.0, duration=2.0)
    assert window_max <= whole_max
    assert -60.0 < window_mean < 0.0 and -60.0 < whole_mean < 0.0


def test_progress_parser_on_a_popen_run(tmp_path: Path) -> None:
    """Drive the apply pass the way the worker does: Popen, stdout lines, stderr drained to a file."""
    source = MEDIA / "music_strings.ogg"
    measured = media.parse_loudnorm_json(media.run(media.loudnorm_measure_argv(source)).stderr)
    argv = media.loudnorm_apply_argv(source, tmp_path / "out.flac", media.Target(), measured)
    parser = media.ProgressParser(media.probe(source).duration_sec)
    reported: list[int] = []
    with tempfile.TemporaryFile(mode="w+", dir=tmp_path) as stderr_file:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file, text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                if (percent := parser.feed(line)) is not None:
                    reported.append(percent)
        assert process.returncode == 0
        stderr_file.seek(0)
        applied = media.parse_loudnorm_json(stderr_file.read())
    assert reported[-1] == 100 and parser.finished
    assert reported == sorted(reported) and len(reported) >= 2
    assert applied.output_i == pytest.approx(-16.0, abs=1.0)


def test_run_failure_carries_stderr_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "bad.mp3"
    bogus.write_bytes(random.Random(0).randbytes(4000))  # seeded: some random bytes probe as a stream
    with pytest.raises(MediaError) as info:
        media.run(media.loudnorm_measure_argv(bogus))
    assert "exited with status" in str(info.value)
    assert "Invalid data" in info.value.stderr_tail
    assert len(info.value.stderr_tail.splitlines()) <= 20
