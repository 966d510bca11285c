"""Start-up before the database: ``jobtape worker`` and ``jobtape serve`` started while sqld is
not yet listening wait and retry with backoff (one log line per try) instead of exiting, and
work once a real sqld comes up on that port; a signal ends the wait with exit status 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

__all__: list[str] = []

MEDIA = Path(__file__).resolve().parents[2] / "media"
RETRY_LINE = "is unreachable at start-up"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Process:
    """A ``jobtape`` subprocess with its stderr and stdout in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen([sys.executable, "-m", "jobtape", *args], env=env, stdout=sink, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"did not exit within {timeout_s} s of SIGTERM: {self.text()[-2000:]}") from None


@pytest.fixture
def later_sqld(sqld_binary: Path, tmp_path: Path) -> Iterator[SqldServer]:
    """A sqld whose port is chosen but which is NOT started (the test starts it); stopped at the end."""
    server = SqldServer(sqld_binary, tmp_path / "sqld")
    yield server
    server.stop()


def _env(server: SqldServer, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": server.ws_url,
        "JOBTAPE_LOG_KEY": "w" * 40,  # every host on libSQL holds the same log key (docs/deploy.md)
        "JOBTAPE_DATA_DIR": str(data_dir),
        "STORAGE_BACKEND": "local",
        "PYTHONUNBUFFERED": "1",
    }


def test_worker_and_api_started_before_sqld_wait_for_it_then_run_a_job(later_sqld: SqldServer, tmp_path: Path) -> None:
    env = _env(later_sqld, tmp_path)
    port = _free_port()
    worker = _Process(["worker", "--poll-interval", "0.1"], env, tmp_path / "worker.log")
    api = _Process(["serve", "--workers", "0", "--port", str(port)], env, tmp_path / "serve.log")
    try:
        for process in (worker, api):  # two failed tries each: they retry rather than exit
            wait_for(
                lambda p=process: p.text().count(RETRY_LINE) >= 2 or p.process.poll() is not None, what=f"two retries in {process.log.name}"
            )
            assert process.process.poll() is None, process.text()
        assert "next try in" in worker.text() and "ws://127.0.0.1" in worker.text()

        later_sqld.start()
        wait_for(lambda: "polling" in worker.text(), what="the worker to start polling")
        assert "answered after" in worker.text()
        base = f"http://127.0.0.1:{port}"

        def api_up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(api_up, what="the API to listen")
        with (MEDIA / "speech_librispeech.mp3").open("rb") as handle:
            created = httpx.post(f"{base}/api/audio/ingest", files={"file": ("speech.mp3", handle, "audio/mpeg")})
        assert created.status_code == 202, created.text
        job_url = f"{base}/api/audio/jobs/{created.json()['data']['jobId']}"
        view = wait_for(
            lambda: (v := httpx.get(job_url).json())["status"] in ("complete", "failed") and v, timeout_s=60, what="the job to finish"
        )
        assert view["status"] == "complete", view
    finally:
        codes = [worker.stop(), api.stop()]
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
    assert codes[0] == 0 and codes[1] in (0, -signal.SIGTERM), [worker.text()[-2000:], api.text()[-2000:]]
    assert "Finished server process" in api.text()


def test_a_signal_ends_the_wait_for_the_store(later_sqld: SqldServer, tmp_path: Path) -> None:
    env = _env(later_sqld, tmp_path)
    worker = _Process(["worker"], env, tmp_path / "worker.log")
    api = _Process(["serve", "--workers", "0", "--port", str(_free_port())], env, tmp_path / "serve.log")
    for process in (worker, api):
        wait_for(lambda p=process: RETRY_LINE in p.text() or p.process.poll() is not None, what=f"a retry in {process.log.name}")
    started = time.monotonic()
    assert [worker.stop(), api.stop()] == [0, 0], [worker.text(), api.text()]
    assert time.monotonic() - started < 10  # not waiting out a backoff
    for process in (worker, api):
        assert "stopped before the event store answered" in process.text()


def test_open_backend_waiting_gives_up_only_when_stopped(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from jobtape import errors, startup
    from jobtape.config import Settings
    from jobtape.worker.outage import Backoff

    settings = Settings(job_store_backend="libsql", turso_database_url=f"ws://127.0.0.1:{_free_port()}")
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)  # a stand-in for the signal handler
    timer.start()
    try:
        with pytest.raises(errors.StoreUnavailable):
            startup.open_backend_waiting(settings, stop=stop, backoff=Backoff(0.05, 0.1))
    finally:
        timer.cancel()
    tries = [r.getMessage() for r in caplog.records if "unreachable at start-up" in r.getMessage()]
    assert len(tries) >= 2 and "try 1:" in tries[0] and "next try in 0.1 s" in tries[1]


@pytest.mark.parametrize(
    "command", [["worker"], ["serve", "--workers", "0", "--port", "0"], ["keys", "create", "--owner", "alice", "--scope", "admin"]]
)
def test_a_writer_on_libsql_without_the_log_key_exits_1_at_once_naming_jobtape_log_key(
    later_sqld: SqldServer, tmp_path: Path, command: list[str]
) -> None:
    """Each host generating its own key file would chain its events under its own key: refused before any wait."""
    env = {k: v for k, v in _env(later_sqld, tmp_path).items() if k != "JOBTAPE_LOG_KEY"}
    process = _Process(command, env, tmp_path / "run.log")
    try:
        code = process.process.wait(30)
    finally:
        process.stop()
    assert code == 1, process.text()
    assert "set JOBTAPE_LOG_KEY" in process.text() and RETRY_LINE not in process.text()
    assert not (tmp_path / "log-key").exists()  # no per-host key generated
