"""Unit tests of the pure ffmpeg argv builders and output parsers in ``jobtape.audio.media``.

The stderr samples below were captured from ffmpeg n9.0.2 (imageio-ffmpeg) on media/.
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from jobtape.audio import media
from jobtape.audio.errors import MediaError

__all__: list[str] = []

PROBE_MP4 = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'media/video_friday.mp4':
  Metadata:
    major_brand     : mp42
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    creation_time   : 2018-11-01T04:34:53.000000Z
  Duration: 00:00:06.17, start: 0.000000, bitrate: 668 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 74 kb/s (default)
    Metadata:
      creation_time   : 2018-11-01T04:34:53.000000Z
  Stream #0:1[0x2](und): Video: h264 (Main) (avc1 / 0x31637661), yuv420p(tv, smpte170m/bt709/bt709, progressive), 640x480, 589 kb/s, 30 fps, 30 tbr, 3k tbn (default)
    Metadata:
      creation_time   : 2018-11-01T04:34:53.000000Z
      encoder         : JVT/AVC Coding
At least one output file must be specified
"""

PROBE_WAV = """\
[aist#0:0/pcm_s16le @ 0x55ed1f62bc80] Guessed Channel Layout: mono
Input #0, wav, from 'media/speech_ljspeech.wav':
  Duration: 00:00:09.66, bitrate: 352 kb/s
  Stream #0:0: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 22050 Hz, mono, s16, 352 kb/s
At least one output file must be specified
"""

PROBE_MP3_ID3V1 = """\
[in#0/mp3 @ 0x55df27cca040] Estimating duration from bitrate, this may be inaccurate
Input #0, mp3, from 'media/awkward_short_id3v1.mp3':
  Metadata:
    title           : Spring of love
    artist          : Eugene Jaudas - violin ; Louis
    genre           : Other
  Duration: 00:00:04.16, start: 0.000000, bitrate: 96 kb/s
  Stream #0:0: Audio: mp3 (mp3float), 44100 Hz, mono, fltp, 96 kb/s
At least one output file must be specified
"""

PROBE_CORRUPT = """\
[in#0 @ 0x55ac81f77040] Format mp3 detected only with low score of 1, misdetection possible!
[in#0 @ 0x55ac81f77040] Failed to find two consecutive MPEG audio frames.
[in#0 @ 0x55ac81f76cc0] Error opening input: Invalid data found when processing input
Error opening input file /tmp/bad.mp3.
Error opening input files: Invalid data found when processing input
"""

PROBE_MISSING = """\
[in#0 @ 0x565443362cc0] Error opening input: No such file or directory
Error opening input file /tmp/nonexist.mp3.
Error opening input files: No such file or directory
"""

LOUDNORM_STDERR = """\
Output #0, null, to 'pipe:':
  Stream #0:0: Audio: pcm_s16le, 192000 Hz, mono, s16, 3072 kb/s
[Parsed_loudnorm_0 @ 0x7f9cd0001d80] 
{
\t"input_i" : "-20.69",
\t"input_tp" : "-1.26",
\t"input_lra" : "3.00",
\t"input_thresh" : "-30.76",
\t"output_i" : "-16.47",
\t"output_tp" : "-1.50",
\t"output_lra" : "1.40",
\t"output_thresh" : "-26.56",
\t"normalization_type" : "dynamic",
\t"target_offset" : "0.47"
}
[out#0/null @ 0x55ad5cb2bec0] video:0KiB audio:3621KiB subtitle:0KiB other streams:0KiB global headers:0KiB muxing overhead: unknown
"""

EBUR128_STDERR = """\
[Parsed_ebur128_0 @ 0x7f0354001a40] t: 9.599955   TARGET:-23 LUFS    M: -26.8 S: -21.8     I: -20.2 LUFS       LRA:   2.2 LU
[Parsed_ebur128_0 @ 0x7f0354001a40] Summary:

  Integrated loudness:
    I:         -16.1 LUFS
    Threshold: -30.3 LUFS

  Loudness range:
    LRA:         2.2 LU
    Threshold: -40.0 LUFS
    LRA low:   -21.1 LUFS
    LRA high:  -18.9 LUFS
[out#0/null @ 0x564147f29e80] video:0KiB audio:416KiB subtitle:0KiB other streams:0KiB global headers:0KiB muxing overhead: unknown
"""

VOLUMEDETECT_STDERR = """\
[Parsed_volumedetect_0 @ 0x7f8b74001a40] n_samples: 212893
[Parsed_volumedetect_0 @ 0x7f8b74001a40] mean_volume: -20.3 dB
[Parsed_volumedetect_0 @ 0x7f8b74001a40] max_volume: -1.3 dB
[Parsed_volumedetect_0 @ 0x7f8b74001a40] histogram_1db: 6
"""

PROGRESS_STDOUT = """\
bitrate=N/A
total_size=N/A
out_time_us=4850000
out_time_ms=4850000
out_time=00:00:04.850000
dup_frames=0
drop_frames=0
speed=20.4x
progress=continue
bitrate=N/A
total_size=N/A
out_time_us=9700000
out_time_ms=9700000
out_time=00:00:09.700000
dup_frames=0
drop_frames=0
speed=56.5x
progress=end
"""


# --- probe ------------------------------------------------------------------------------


def test_parse_probe_video_with_audio() -> None:
    assert media.parse_probe(PROBE_MP4) == media.MediaInfo(
        duration_sec=6.17, sample_rate=44100, channels=2, has_audio=True, has_video=True, codec="aac"
    )


def test_parse_probe_wav_and_mp3() -> None:
    wav = media.parse_probe(PROBE_WAV)
    assert (wav.duration_sec, wav.sample_rate, wav.channels, wav.codec) == (9.66, 22050, 1, "pcm_s16le")
    assert not wav.has_video
    mp3 = media.parse_probe(PROBE_MP3_ID3V1)
    assert (mp3.duration_sec, mp3.sample_rate, mp3.channels, mp3.codec) == (4.16, 44100, 1, "mp3")


def test_parse_probe_long_duration() -> None:
    text = PROBE_WAV.replace("00:00:09.66", "01:02:03.50")
    assert media.parse_probe(text).duration_sec == pytest.approx(3723.5)


def test_parse_probe_unknown_duration_is_zero() -> None:
    text = PROBE_WAV.replace("Duration: 00:00:09.66, bitrate: 352 kb/s", "Duration: N/A, bitrate: N/A")
    assert media.parse_probe(text).duration_sec == 0.0


@pytest.mark.parametrize(
    ("layout", "channels"),
    [
        ("mono", 1),
        ("stereo", 2),
        ("2.1", 3),
        ("5.1", 6),
        ("5.1(side)", 6),
        ("7.1", 8),
        ("quad", 4),
        ("3 channels", 3),
        ("4 channels (FL+FR+LFE+BC)", 4),
        ("ambisonic 1", None),
    ],
)
def test_parse_probe_channel_layouts(layout: str, channels: int | None) -> None:
    text = PROBE_WAV.replace("22050 Hz, mono, s16", f"22050 Hz, {layout}, s16")
    assert media.parse_probe(text).channels == channels


def test_cover_art_is_not_video() -> None:
    text = PROBE_MP3_ID3V1.replace(
        "At least one",
        "  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 500x500, 90k tbr (attached pic)\nAt least one",
    )
    assert not media.parse_probe(text).has_video


@pytest.mark.parametrize("stderr", [PROBE_CORRUPT, PROBE_MISSING, ""])
def test_parse_probe_not_media(stderr: str) -> None:
    with pytest.raises(MediaError) as info:
        media.parse_probe(stderr)
    assert info.value.stderr_tail == media.stderr_tail(stderr)
    if stderr:
        assert "Error opening input files" in str(info.value)


def test_parse_probe_no_audio() -> None:
    video_only = PROBE_MP4.replace("Audio: aac", "Data: bin_data")
    with pytest.raises(MediaError, match="no audio stream"):
        media.parse_probe(video_only)


# --- loudnorm ---------------------------------------------------------------------------


def test_parse_loudnorm_json() -> None:
    measured = media.parse_loudnorm_json(LOUDNORM_STDERR)
    assert measured == media.LoudnormMeasurement(
        input_i=-20.69,
        input_tp=-1.26,
        input_lra=3.0,
        input_thresh=-30.76,
        output_i=-16.47,
        output_tp=-1.5,
        output_lra=1.4,
        output_thresh=-26.56,
        target_offset=0.47,
        normalization_type="dynamic",
    )


def test_parse_loudnorm_json_takes_last_object_and_inf() -> None:
    second = LOUDNORM_STDERR.replace('"-20.69"', '"-inf"').replace('"dynamic"', '"linear"')
    stderr = "{ not json }\n" + LOUDNORM_STDERR + second
    measured = media.parse_loudnorm_json(stderr)
    assert measured.input_i == -math.inf
    assert measured.normalization_type == "linear"


def test_parse_loudnorm_json_missing() -> None:
    with pytest.raises(MediaError, match="no loudnorm measurement"):
        media.parse_loudnorm_json(PROBE_WAV)


def test_measure_argv() -> None:
    argv = media.loudnorm_measure_argv(Path("in.wav"))
    assert argv[0] == media.ffmpeg_executable()
    assert argv[argv.index("-i") + 1] == str(Path("in.wav").absolute())
    assert argv[argv.index("-af") + 1] == "loudnorm=I=-16:TP=-1.5:LRA=11:print_format=json"
    assert argv[-3:] == ["-f", "null", "-"]
    assert argv[argv.index("-progress") + 1] == "pipe:1"
    assert {"-vn", "-nostats"} <= set(argv)


def test_apply_argv() -> None:
    measured = media.parse_loudnorm_json(LOUDNORM_STDERR)
    target = media.Target(integrated_lufs=-23.0, true_peak_db=-2.0, lra=7.0)
    argv = media.loudnorm_apply_argv("in.mp4", "out/final.flac", target, measured)
    assert argv[argv.index("-af") + 1] == (
        "loudnorm=I=-23:TP=-2:LRA=7:measured_I=-20.69:measured_TP=-1.26:measured_LRA=3.00"
        ":measured_thresh=-30.76:offset=0.47:linear=true:print_format=json"
        ",aresample=48000,asetnsamples=n=4608:p=0"
    )
    assert argv[argv.index("-ar") + 1] == "48000"
    assert argv[argv.index("-c:a") + 1] == "flac"
    assert argv[-1] == str(Path("out/final.flac").absolute())
    assert "-ac" not in argv
    assert {"-vn", "-y", "-nostats"} <= set(argv)
    assert argv[argv.index("-progress") + 1] == "pipe:1"
    assert argv.index("-af") > argv.index("-i") and argv.index("-ar") > argv.index("-af")
    argv = media.loudnorm_apply_argv("a", "b", target, measured, sample_rate=44100)
    assert argv[argv.index("-ar") + 1] == "44100"
    assert ",aresample=44100," in argv[argv.index("-af") + 1]


def test_apply_argv_skips_silence_and_clamps() -> None:
    silent = media.LoudnormMeasurement(
        input_i=-math.inf,
        input_tp=-math.inf,
        input_lra=0.0,
        input_thresh=-math.inf,
        output_i=-math.inf,
        output_tp=-math.inf,
        output_lra=0.0,
        output_thresh=-math.inf,
        target_offset=math.inf,
    )
    assert silent.silent
    argv = media.loudnorm_apply_argv("a", "b", media.Target(), silent, sample_rate=44100)
    assert argv[argv.index("-af") + 1] == "aresample=44100,asetnsamples=n=4608:p=0"
    near_silent = msgspec.structs.replace(silent, input_i=-80.0, target_offset=math.nan)
    assert not near_silent.silent
    argv = media.loudnorm_apply_argv("a", "b", media.Target(), near_silent)
    assert "measured_I=-80.00:measured_TP=-99.00:measured_LRA=0.00:measured_thresh=-99.00:offset=-99.00" in argv[argv.index("-af") + 1]


def test_dash_and_colon_paths_are_made_absolute() -> None:
    argv = media.loudnorm_measure_argv("-weird:name.mp3")
    assert argv[argv.index("-i") + 1].startswith("/")


def test_target_defaults() -> None:
    assert media.Target() == media.Target(integrated_lufs=-16.0, true_peak_db=-1.5, lra=11.0)


# --- measurements -----------------------------------------------------------------------


def test_parse_ebur128_summary_ignores_running_values() -> None:
    assert media.parse_ebur128_summary(EBUR128_STDERR) == -16.1


def test_parse_ebur128_summary_missing() -> None:
    with pytest.raises(MediaError, match="no ebur128 summary"):
        media.parse_ebur128_summary(EBUR128_STDERR.split("Summary", maxsplit=1)[0])


def test_parse_volumedetect() -> None:
    assert media.parse_volumedetect(VOLUMEDETECT_STDERR) == (-20.3, -1.3)
    silent = VOLUMEDETECT_STDERR.replace("-20.3", "-inf").replace("-1.3", "-inf")
    assert media.parse_volumedetect(silent) == (-math.inf, -math.inf)
    with pytest.raises(MediaError):
        media.parse_volumedetect("nothing here")


# --- progress ---------------------------------------------------------------------------


def test_progress_from_real_stdout() -> None:
    parser = media.ProgressParser(9.66)
    reported = [p for line in PROGRESS_STDOUT.splitlines() if (p := parser.feed(line)) is not None]
    assert reported == [50, 99, 100]  # 9.70 s > 9.66 s is held at 99 until the end marker
    assert parser.finished and parser.percent == 100
    assert parser.out_time_sec == pytest.approx(9.7)


def test_progress_units_are_microseconds() -> None:
    for key in ("out_time_us", "out_time_ms"):
        parser = media.ProgressParser(10.0)
        assert parser.feed(f"{key}=2500000\n") == 25
    parser = media.ProgressParser(7200.0)
    assert parser.feed("out_time=01:00:00.000000") == 50


def test_progress_is_monotonic_and_ignores_noise() -> None:
    parser = media.ProgressParser(100.0)
    assert parser.feed("out_time_us=30000000") == 30
    assert parser.feed("out_time_us=30000000") is None
    assert parser.feed("out_time_us=10000000") is None
    for noise in ["", "garbage", "out_time_us=N/A", "out_time=N/A", "out_time=-00:00:00.023220", "speed=1x"]:
        assert parser.feed(noise) is None
    assert parser.feed("progress=continue") is None
    assert parser.feed("progress=end") == 100
    assert parser.feed("progress=end") is None
    assert parser.feed("out_time_us=200000000") is None


def test_progress_without_duration_only_reports_end() -> None:
    parser = media.ProgressParser(0.0)
    assert parser.feed("out_time_us=5000000") is None
    assert parser.out_time_sec == 5.0
    assert parser.feed("progress=end") == 100


# --- helpers ----------------------------------------------------------------------------


def test_stderr_tail() -> None:
    text = "\n".join(f"line {i}" for i in range(50)) + "\r\nsize=1\rsize=2\n\n"
    tail = media.stderr_tail(text, lines=3)
    assert tail == "line 49\nsize=1\nsize=2"
    assert media.stderr_tail("") == ""
    assert len(media.stderr_tail(text).splitlines()) == 20


def test_ffmpeg_executable_is_cached() -> None:
    assert media.ffmpeg_executable() is media.ffmpeg_executable()
    assert Path(media.ffmpeg_executable()).exists()


def test_run_reports_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot run"):
        media.run([str(tmp_path / "no-such-binary")])


def test_scrub_paths_leaves_no_server_path_in_a_client_message() -> None:
    message = (
        "ffmpeg exited with status 1\n--- stderr (tail) ---\n"
        "/tmp/jobtape-ab12cd34-x9/input: Invalid data found when processing input\n"
        "Error opening input file /srv/jobtape/var/storage/ingest-uploads/ab/original.png.\n"
        "loaded /usr/lib/x86_64-linux-gnu/libavformat.so.59 (see https://ffmpeg.org/a/b.html)"
    )
    scrubbed = media.scrub_paths(message, [("/tmp/jobtape-ab12cd34-x9", "<workdir>"), ("/srv/jobtape/var", "<data-dir>")])
    assert scrubbed == (
        "ffmpeg exited with status 1\n--- stderr (tail) ---\n"
        "<workdir>/input: Invalid data found when processing input\n"
        "Error opening input file <data-dir>/storage/ingest-uploads/ab/original.png.\n"
        "loaded libavformat.so.59 (see https://ffmpeg.org/a/b.html)"
    )


def test_scrub_paths_replaces_a_root_given_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert media.scrub_paths(f"cannot open {real}/input.wav", [(link, "<workdir>")]) == "cannot open <workdir>/input.wav"
