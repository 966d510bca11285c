"""yt-dlp's command line, progress and info lines, and failure messages (pure; the real runs are in integration)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from jobtape.audio import ytdlp, ytdlp_guard


def test_argv_runs_the_module_with_limits_and_machine_readable_output(tmp_path: Path) -> None:
    argv = ytdlp.download_argv(
        "https://example.org/a.mp3",
        tmp_path / "download",
        tmp_path / "info.jsonl",
        ffmpeg="/opt/ffmpeg",
        max_bytes=1234,
        guard=False,
        python="/venv/bin/python",
    )

    assert argv[:3] == ["/venv/bin/python", "-m", "yt_dlp"]
    assert argv[-2:] == ["--", "https://example.org/a.mp3"]  # a URL never reads as an option
    pairs = dict(itertools.pairwise(argv))
    assert (pairs["-f"], pairs["--max-filesize"], pairs["--ffmpeg-location"]) == ("bestaudio/best", "1234", "/opt/ffmpeg")
    assert pairs["--progress-template"].startswith("download:" + ytdlp.PROGRESS_PREFIX)
    assert pairs["--print-to-file"].startswith("after_move:")
    for flag in ("--ignore-config", "--no-playlist", "--newline", "--socket-timeout"):
        assert flag in argv


def test_argv_runs_the_guard_unless_private_urls_are_allowed(tmp_path: Path) -> None:
    guarded = ytdlp.download_argv("https://example.org/a.mp3", tmp_path, tmp_path / "i", ffmpeg="ffmpeg", max_bytes=1)
    assert guarded[1:3] == ["-m", "jobtape.audio.ytdlp_guard"]


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ('{"downloaded_bytes": 261120, "total_bytes": 515198, "status": "downloading"}', 50),
        ('{"downloaded_bytes": 515198, "total_bytes": 515198, "status": "finished"}', 100),
        ('{"downloaded_bytes": 515198, "total_bytes": 515198, "status": "downloading"}', 99),
        ('{"downloaded_bytes": 132916, "total_bytes_estimate": 177931.2, "fragment_index": 3, "fragment_count": 6}', 50),
        ('{"downloaded_bytes": 1000, "total_bytes_estimate": 4000.0}', 25),
        ('{"downloaded_bytes": 1000, "status": "downloading"}', None),
    ],
)
def test_progress_lines_give_a_percent(line: str, percent: int | None) -> None:
    progress = ytdlp.parse_progress(ytdlp.PROGRESS_PREFIX + line)
    assert progress is not None and progress.percent == percent


@pytest.mark.parametrize(
    "line", ["[download] Destination: media.mp3", "", ytdlp.PROGRESS_PREFIX + "{not json", ytdlp.PROGRESS_PREFIX + "[1]"]
)
def test_other_lines_are_not_progress(line: str) -> None:
    assert ytdlp.parse_progress(line) is None


def test_info_file_gives_its_last_object() -> None:
    text = '{"title": "a"}\nnot json\n{"title": "talk", "duration": 5.2, "extractor": "generic"}\n'
    assert ytdlp.parse_info_lines(text) == {"title": "talk", "duration": 5.2, "extractor": "generic"}
    assert ytdlp.parse_info_lines("") is None


def test_skipped_for_size_is_read_from_stdout() -> None:
    lines = [
        "[info] x: Downloading 1 format(s): ogg",
        "[download] File is larger than max-filesize (595654 bytes > 100000 bytes). Aborting.",
    ]
    assert ytdlp.skipped_as_too_large(lines) == (595654, 100000)
    assert ytdlp.skipped_as_too_large(lines[:1]) is None


@pytest.mark.parametrize(
    ("stderr", "message", "retryable"),
    [
        (
            "ERROR: [generic] nope: Unable to download webpage: HTTP Error 404: File not found (caused by <HTTPError 404>)",
            "the URL answered HTTP 404 File not found: there is nothing to download there; check the URL",
            False,
        ),
        (
            "ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden (caused by ...)",
            "the site refused the download with HTTP 403 Forbidden",
            False,
        ),
        ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "the site answered HTTP 503", True),
        ("ERROR: unable to download video data: HTTP Error 429: Too Many Requests", "the site answered HTTP 429", True),
        (
            "WARNING: [generic] Falling back on generic information extractor\nERROR: Unsupported URL: http://h/about.html",
            "no audio or video found at the URL",
            False,
        ),
        (
            (
                "ERROR: [generic] x: Unable to download webpage: HTTPConnection(host='h', port=1): Failed to establish a new"
                " connection: [Errno 111] Connection refused"
            ),
            "network error while downloading: [generic] x:",
            True,
        ),
        (
            (
                "ERROR: [generic] a: Unable to download webpage: HTTPConnection(host='h', port=80): Failed to resolve 'h'"
                " ([Errno -2] jobtape refused to connect h: it resolves to 10.0.0.7, a private address) (caused by ...)"
            ),
            "the download was refused: it led to a non-public address (h: it resolves to 10.0.0.7, a private address)",
            False,
        ),
        ("ERROR: [youtube] abc: Video unavailable", "the download failed: [youtube] abc: Video unavailable", False),
        ("Traceback (most recent call last):\n  ...", "the download failed: yt-dlp exited with status 1", False),
    ],
)
def test_failures_get_a_readable_message(stderr: str, message: str, retryable: bool) -> None:
    described, may_retry = ytdlp.describe_failure(1, stderr)
    assert described.startswith(message), described
    assert may_retry is retryable


def test_the_guard_gets_the_allowlist_before_yt_dlps_own_options(tmp_path: Path) -> None:
    argv = ytdlp.download_argv(
        "https://example.org/a.mp3", tmp_path, tmp_path / "i", ffmpeg="ffmpeg", max_bytes=1, allowed_networks=["10.1.2.0/24", "fd00::/8"]
    )
    assert argv[1:7] == ["-m", "jobtape.audio.ytdlp_guard", "--allow-network", "10.1.2.0/24", "--allow-network", "fd00::/8"]
    assert argv[7] == "--ignore-config"
    assert ytdlp_guard.split_allowed(argv[3:]) == (["10.1.2.0/24", "fd00::/8"], argv[7:])
    unguarded = ytdlp.download_argv(
        "https://example.org/a.mp3", tmp_path, tmp_path / "i", ffmpeg="ffmpeg", max_bytes=1, guard=False, allowed_networks=["10.1.2.0/24"]
    )
    assert unguarded[1:4] == ["-m", "yt_dlp", "--ignore-config"]


def test_a_refusal_on_a_line_after_an_empty_error_line_is_named() -> None:
    stderr = (
        "WARNING: [generic] Falling back on generic information extractor\nERROR: \n"
        "[download] Got error: HTTPConnection(host='10.9.9.9', port=80): Failed to resolve '10.9.9.9' ([Errno -2]"
        f" {ytdlp_guard.REFUSED_MARKER} 10.9.9.9: it resolves to 10.9.9.9, a private address). Giving up after 2 retries\n"
    )
    assert ytdlp.describe_failure(1, stderr) == (
        "the download was refused: it led to a non-public address (10.9.9.9: it resolves to 10.9.9.9, a private address)",
        False,
    )
    assert ytdlp.describe_failure(1, "ERROR:\nUnable to download webpage: HTTP Error 503: Service Unavailable\n") == (
        "the site answered HTTP 503 Service Unavailable; try again later",
        True,
    )
