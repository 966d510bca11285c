"""URL ingest on the real yt-dlp against an HTTP server on 127.0.0.1 serving real recordings.

Every test turns the private-URL allowance on explicitly (the server is on loopback), and
every request goes to that server only.
"""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import configs  # tests/ is on sys.path
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.audio import media, ytdlp
from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children

#: Bytes and pause of the trickling handler: about 40 KB/s, so music_strings.ogg takes ~15 s.
TRICKLE_CHUNK = 2048
TRICKLE_PAUSE_S = 0.05


class MediaServer:
    """A threaded http.server on ``host`` (127.0.0.1) serving ``root``; ``/slow/<name>`` trickles the
    file, ``/redirect/<url>`` answers 302 to ``<url>``."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.requests: list[str] = []
        self.stopping = threading.Event()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path.startswith("/slow/"):
                    return self._trickle(root / self.path.removeprefix("/slow/"))
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", self.path.removeprefix("/redirect/"))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                super().do_GET()

            def _trickle(self, path: Path) -> None:
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "audio/ogg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for start in range(0, len(data), TRICKLE_CHUNK):
                        if server.stopping.wait(TRICKLE_PAUSE_S):
                            return
                        self.wfile.write(data[start : start + TRICKLE_CHUNK])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client (yt-dlp) was killed

        self.host = host
        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="media server", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """The test site: two real recordings, a page embedding the real video, an HLS rendition, a page without media."""
    media_dir = Path(__file__).resolve().parents[2] / "media"
    root = tmp_path_factory.mktemp("site")
    for name in ("speech_librispeech.mp3", "music_strings.ogg", "video_friday.mp4"):
        shutil.copy(media_dir / name, root / name)
    (root / "clip.html").write_text(
        "<!doctype html><html><head><title>His Girl Friday</title></head><body>"
        '<video controls width="640"><source src="video_friday.mp4" type="video/mp4"></video></body></html>'
    )
    (root / "about.html").write_text("<!doctype html><html><head><title>About</title></head><body><p>No media.</p></body></html>")
    (root / "hls").mkdir()
    subprocess.run(
        [media.ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(media_dir / "speech_librispeech.mp3"),
         "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", str(root / "hls" / "talk.m3u8")],
        check=True, timeout=60,
    )  # fmt: skip
    server = MediaServer(root)
    yield server
    server.close()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def settings(tmp_path: Path, **overrides: Any) -> tuple[Settings, AudioSettings]:
    return configs.split(data_dir=tmp_path, allow_private_urls=True, kill_grace_s=2.0, **overrides)


def submit(repository: JobRepository, url: str, source_type: str = "url") -> str:
    params = {"sourceType": source_type, "url": url, "rightsAttested": True}
    return repository.create("ingest", params).state.job_id


def run_one(repository: JobRepository, storage: LocalStorage, config: tuple[Settings, AudioSettings], url: str) -> Any:
    job_id = submit(repository, url)
    Worker(repository, storage, *config).run(until_idle=True)
    return repository.get(job_id)


def workdirs(repository: JobRepository, job_id: str) -> list[Path]:
    """The job workdirs named in the yt-dlp command lines the job recorded."""
    found = []
    for recorded in repository.store.read_stream(job_id):
        if isinstance(recorded.event, ev.JobChildStarted) and {"yt_dlp", "jobtape.audio.ytdlp_guard"} & set(recorded.event.argv):
            home = next(a for a in recorded.event.argv if a.startswith("home:"))
            found.append(Path(home.removeprefix("home:")).parent)
    return found


def assert_nothing_left(repository: JobRepository, storage: LocalStorage, job_id: str) -> None:
    assert workdirs(repository, job_id), "no yt-dlp child was recorded"
    assert not any(path.exists() for path in workdirs(repository, job_id))
    assets = storage.root / "assets"
    assert not assets.exists() or not any(assets.rglob("*.flac"))


def test_direct_link_to_a_recording(tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer) -> None:
    url = site.url("speech_librispeech.mp3")
    state = run_one(repository, storage, settings(tmp_path), url)

    assert state.status == "complete", state.error
    result = state.result
    assert result["source"] == {"type": "url", "url": url, "title": "speech_librispeech", "durationSec": None, "extractor": "generic"}
    assert (result["sampleRate"], abs(result["durationSec"] - 5.2) < 0.15) == (48000, True)
    assert media.probe(storage.local_path(result["preparedKey"])).codec == "flac"  # type: ignore[arg-type]
    recorded = repository.store.read_stream(state.job_id)
    stages = [r.event.stage for r in recorded if isinstance(r.event, ev.JobStageChanged)]
    assert stages == ["downloading", "probing", "measuring", "normalizing", "storing"]
    first_child = next(r.event for r in recorded if isinstance(r.event, ev.JobChildStarted))
    assert first_child.argv[1:3] == ["-m", "yt_dlp"] and first_child.argv[-1] == url
    assert "job.child_exited" in [r.type for r in recorded]
    assert not any(path.exists() for path in workdirs(repository, state.job_id))


def test_page_embedding_a_video(tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer) -> None:
    state = run_one(repository, storage, settings(tmp_path), site.url("clip.html"))

    assert state.status == "complete", state.error
    result = state.result
    assert result["source"]["extractor"] == "html5" and result["source"]["title"].startswith("His Girl Friday")
    assert result["channels"] == 2 and abs(result["durationSec"] - 6.17) < 0.15
    assert not media.probe(storage.local_path(result["preparedKey"])).has_video  # type: ignore[arg-type]


def test_hls_playlist(tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer) -> None:
    state = run_one(repository, storage, settings(tmp_path), site.url("hls/talk.m3u8"))

    assert state.status == "complete", state.error
    source = state.result["source"]
    assert (source["extractor"], source["title"]) == ("generic", "talk")
    assert abs(source["durationSec"] - 5.2) < 0.3  # the playlist's EXTINF sum, as yt-dlp reports it
    assert abs(state.result["durationSec"] - 5.2) < 0.3
    progress = [r.event.percent for r in repository.store.read_stream(state.job_id) if isinstance(r.event, ev.JobProgress)]
    assert progress, "no download progress was recorded"


@pytest.mark.parametrize(
    ("path", "limit", "message", "retryable"),
    [
        ("missing.mp3", None, "the URL answered HTTP 404", False),
        ("about.html", None, "no audio or video found at the URL", False),
        ("music_strings.ogg", 100_000, "the media is larger than the download limit: 595654 bytes > 100000 bytes", False),
        # no Content-Length for a playlist: the limit is enforced on the bytes received
        ("hls/talk.m3u8", 20_000, "the media is larger than the download limit", False),
    ],
    ids=["404", "no media", "over the limit", "hls over the limit"],
)
def test_download_failures_fail_the_job_clearly(
    tmp_path: Path,
    repository: JobRepository,
    storage: LocalStorage,
    site: MediaServer,
    path: str,
    limit: int | None,
    message: str,
    retryable: bool,
) -> None:
    config = settings(tmp_path, **({"max_download_bytes": limit} if limit else {}))
    state = run_one(repository, storage, config, site.url(path))

    assert state.status == "failed"
    assert state.error.startswith(message), state.error
    failed = repository.store.read_stream(state.job_id)[-1].event
    assert isinstance(failed, ev.JobFailed) and failed.retryable is retryable
    assert_nothing_left(repository, storage, state.job_id)


def test_refused_at_the_worker_when_the_allowance_is_off(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer
) -> None:
    served = len(site.requests)
    state = run_one(repository, storage, configs.split(data_dir=tmp_path), site.url("speech_librispeech.mp3"))

    assert state.status == "failed"
    assert state.error.startswith("the URL was refused: url host '127.0.0.1' resolves to 127.0.0.1, a loopback address")
    assert len(site.requests) == served
    assert "job.child_started" not in [r.type for r in repository.store.read_stream(state.job_id)]


def test_slow_download_over_the_time_limit_is_stopped(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer
) -> None:
    state = run_one(repository, storage, settings(tmp_path, timeout_ingest_s=1.5), site.url("slow/music_strings.ogg"))

    assert state.status == "failed"
    # the worker's job timeout (from the claim) and the download's own limit (from yt-dlp's start)
    # use the same setting; whichever fires first stops yt-dlp
    assert re.match(r"(timed out after 1\.5 s|the download took longer than 1\.5 s and was stopped)", state.error), state.error
    started = next(r.event for r in repository.store.read_stream(state.job_id) if isinstance(r.event, ev.JobChildStarted))
    assert children.wait_gone(started.pid, started.started_at_ticks, 5.0)
    assert_nothing_left(repository, storage, state.job_id)


def test_cancel_during_a_slow_download_kills_yt_dlp(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer
) -> None:
    worker = Worker(repository, storage, *settings(tmp_path, poll_interval_s=60.0))
    repository.on_append = worker.on_append  # the embedded worker: woken by the cancel at once
    job_id = submit(repository, site.url("slow/music_strings.ogg"))
    worker.start()
    try:

        def downloading() -> ev.JobChildStarted | None:
            recorded = repository.store.read_stream(job_id)
            started = [r.event for r in recorded if isinstance(r.event, ev.JobChildStarted)]
            progressed = any(isinstance(r.event, ev.JobProgress) and r.event.percent > 0 for r in recorded)
            return started[0] if started and progressed else None

        started = wait_for(downloading, what="yt-dlp to report download progress")
        assert children.process_start_ticks(started.pid) == started.started_at_ticks
        partial = list((workdirs(repository, job_id)[0] / "download").iterdir())
        assert partial, "yt-dlp wrote no partial file yet"

        repository.execute(job_id, lambda s: [ev.JobCancelRequested(reason="test")], actor="api")
        wait_for(lambda: repository.get(job_id).finished, what="job.cancelled")
    finally:
        worker.stop(30)

    assert repository.get(job_id).status == "cancelled"
    assert children.wait_gone(started.pid, started.started_at_ticks, 5.0)
    types = [r.type for r in repository.store.read_stream(job_id)]
    assert types[-2:] == ["job.child_exited", "job.cancelled"]
    assert_nothing_left(repository, storage, job_id)


def test_guarded_yt_dlp_refuses_to_connect_to_a_non_public_address(tmp_path: Path, site: MediaServer) -> None:
    """Without the allowance, yt-dlp runs through the guard: redirects and embedded URLs meet the same policy."""
    served = len(site.requests)
    (tmp_path / "download").mkdir()
    argv = ytdlp.download_argv(
        site.url("speech_librispeech.mp3"),
        tmp_path / "download",
        tmp_path / "info.jsonl",
        ffmpeg=media.ffmpeg_executable(),
        max_bytes=10**6,
        guard=True,
    )

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode != 0
    assert ytdlp.describe_failure(done.returncode, done.stderr) == (
        "the download was refused: it led to a non-public address (127.0.0.1: it resolves to 127.0.0.1, a loopback address)",
        False,
    )
    assert len(site.requests) == served
    assert list((tmp_path / "download").iterdir()) == []


@pytest.fixture(scope="module")
def inside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    """A server on 127.0.0.2, standing for a host inside the network that must not be fetched from."""
    root = tmp_path_factory.mktemp("inside")
    media_dir = Path(__file__).resolve().parents[2] / "media"
    for name in ("speech_librispeech.mp3", "video_friday.mp4"):
        shutil.copy(media_dir / name, root / name)
    server = MediaServer(root, host="127.0.0.2")
    yield server
    server.close()


def only_the_site(tmp_path: Path) -> tuple[Settings, AudioSettings]:
    """The SSRF guard on, with the test site's address (127.0.0.1) allowlisted and nothing else."""
    return configs.split(data_dir=tmp_path, allowed_private_networks=("127.0.0.1/32",), kill_grace_s=2.0)


def test_an_allowlisted_network_is_fetched_through_the_guard(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer
) -> None:
    state = run_one(repository, storage, only_the_site(tmp_path), site.url("speech_librispeech.mp3"))

    assert state.status == "complete", state.error
    child = next(r.event for r in repository.store.read_stream(state.job_id) if isinstance(r.event, ev.JobChildStarted))
    assert child.argv[1:5] == ["-m", "jobtape.audio.ytdlp_guard", "--allow-network", "127.0.0.1/32"]


@pytest.mark.parametrize("via", ["redirect", "embedding page"])
def test_the_guard_refuses_a_redirect_or_an_embedded_url_to_another_private_address(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, site: MediaServer, inside: MediaServer, via: str
) -> None:
    """The URL passes the check (127.0.0.1 is allowlisted); what it leads yt-dlp to (127.0.0.2) does not."""
    if via == "redirect":
        url = site.url("redirect/" + inside.url("speech_librispeech.mp3"))
    else:
        page = f"inside-{tmp_path.name}.html"
        (site.root / page).write_text(
            "<!doctype html><html><head><title>Inside</title></head><body>"
            f'<video controls><source src="{inside.url("video_friday.mp4")}" type="video/mp4"></video></body></html>'
        )
        url = site.url(page)
    served_inside = len(inside.requests)

    state = run_one(repository, storage, only_the_site(tmp_path), url)

    assert state.status == "failed"
    assert state.error.startswith(
        "the download was refused: it led to a non-public address (127.0.0.2: it resolves to 127.0.0.2, a loopback address)"
    ), state.error
    assert len(inside.requests) == served_inside  # not one request reached the inside host
    assert_nothing_left(repository, storage, state.job_id)
