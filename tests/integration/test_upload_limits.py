"""Uploads cannot hold the server hostage: real ``jobtape serve`` processes, raw sockets, ``kill -9``, a full tmpfs.

Each test starts ``jobtape serve --workers 0`` on a free loopback port and talks HTTP/1.1
over a plain socket, so a client can stop sending mid-body, vanish, or never finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

BOUNDARY = "upload-limits-boundary"
FILE_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="talk.wav"\r\nContent-Type: audio/wav\r\n\r\n'
).encode()
FORM_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
MB = 1024 * 1024


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spool_files(self) -> list[Path]:
        return sorted((self.data_dir / "upload-tmp").glob("upload-*.part"))

    def spool_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.spool_files() if path.exists())

    def event_count(self) -> int:
        with contextlib.closing(sqlite3.connect(f"file:{self.data_dir / 'jobtape.db'}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def stored_blobs(self) -> list[Path]:
        return sorted(path for path in (self.data_dir / "storage").rglob("*") if path.is_file())

    def healthy(self) -> bool:
        return httpx.get(f"{self.base_url}/health", timeout=10).status_code == 200

    def upload(self, data: bytes) -> httpx.Response:
        return httpx.post(f"{self.base_url}/api/audio/ingest", files={"file": ("talk.wav", data, "audio/wav")}, timeout=30)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``jobtape serve --workers 0`` on a free port; every one started is killed after the test."""
    started: list[Server] = []

    def start(*flags: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> Server:
        folder = data_dir or tmp_path / "data"
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobtape", "serve", "--workers", "0", "--port", "0", "--data-dir", str(folder), *flags],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        found = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")

        def port() -> int | None:
            assert process.poll() is None, f"serve exited early: {log.read_text()}"
            match = found.search(log.read_bytes())
            return int(match.group(1)) if match else None

        server = Server(process, 0, folder, log)
        started.append(server)
        server.port = wait_for(port, timeout_s=60, what="jobtape serve to listen")
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=30)


def open_upload(server: Server, body_bytes: int, *, headers: str = "") -> socket.socket:
    """Start a multipart upload announcing a ``body_bytes`` file; send only the request head and the part headers."""
    total = len(FILE_HEAD) + body_bytes + len(FORM_TAIL)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    client.sendall(
        f"POST /api/audio/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
        f"\r\nContent-Length: {total}\r\n{headers}\r\n".encode()
    )
    return client


def read_response(client: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, lowercase headers, body) within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no complete response within {timeout_s} s: {data!r}"
        client.settimeout(remaining)
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data.partition(b"\r\n\r\n")[0])
    return int(match.group(1)) if match else 0


def closed_by_server(client: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes the connection within ``timeout_s`` seconds."""
    client.settimeout(timeout_s)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_stalled_upload_is_abandoned_with_408_its_spool_removed_and_the_server_still_serves(
    start_server: Callable[..., Server],
) -> None:
    server = start_server("--upload-idle-timeout", "1")
    client = open_upload(server, 8 * MB)
    client.sendall(FILE_HEAD + b"\0" * (3 * MB))  # then nothing more
    wait_for(lambda: server.spool_bytes() >= MB, timeout_s=30, what="the upload to reach the spool")

    status, headers, body = read_response(client, timeout_s=30)

    assert status == 408
    assert "no bytes of the upload arrived for 1 s" in json.loads(body)["error"]
    assert headers.get("connection") == "close" and closed_by_server(client, 30)
    assert server.spool_files() == []
    assert server.event_count() == 0 and server.stored_blobs() == []
    assert server.healthy() and server.upload(b"RIFF" * 1000).status_code == 202
    client.close()


def test_an_upload_slower_than_the_minimum_rate_is_abandoned_with_408(start_server: Callable[..., Server]) -> None:
    server = start_server("--upload-idle-timeout", "1", "--upload-min-rate", "100000")
    client = open_upload(server, 8 * MB)
    client.sendall(FILE_HEAD)
    answered = False
    deadline = time.monotonic() + 30
    while not answered:  # 1 KB every 50 ms (20 KB/s) until the server answers: never idle, always too slow
        assert time.monotonic() < deadline, "the slow upload was not abandoned"
        client.sendall(b"\0" * 1024)
        answered = bool(select.select([client], [], [], 0.05)[0])

    status, _, body = read_response(client, timeout_s=30)

    assert status == 408
    assert "below the minimum of 100000 bytes/s" in json.loads(body)["error"]
    wait_for(lambda: server.spool_files() == [], timeout_s=30, what="the spool file to go")
    assert server.event_count() == 0
    client.close()


def test_uploads_beyond_the_cap_get_503_with_retry_after_and_spool_nothing(start_server: Callable[..., Server]) -> None:
    server = start_server("--max-concurrent-uploads", "2")
    stalled = [open_upload(server, 8 * MB) for _ in range(2)]
    for client in stalled:
        client.sendall(FILE_HEAD + b"\0" * (2 * MB))  # past the 1 MiB kept in memory: each goes to a spool file
    wait_for(lambda: len(server.spool_files()) == 2, timeout_s=30, what="two uploads to be spooling")

    third = open_upload(server, 8 * MB, headers="Expect: 100-continue\r\n")
    status, headers, body = read_response(third, timeout_s=30)

    assert status == 503
    assert headers["retry-after"] == "5"
    assert "receiving 2 uploads already, its limit" in json.loads(body)["error"]
    refused = server.upload(b"RIFF" * 100_000)  # a client that sends its body anyway reads the same answer
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5", refused.text
    assert len(server.spool_files()) == 2 and server.event_count() == 0
    assert server.healthy()  # other routes are not capped
    stalled[0].close()  # a slot comes free as soon as its client goes
    wait_for(lambda: len(server.spool_files()) == 1, timeout_s=30, what="the closed upload's spool to go")
    assert wait_for(lambda: server.upload(b"RIFF" * 1000).status_code == 202, timeout_s=30, what="a free slot")
    for client in (third, *stalled):
        client.close()


def test_a_client_that_disconnects_mid_body_leaves_no_spool_file(start_server: Callable[..., Server]) -> None:
    server = start_server()
    client = open_upload(server, 8 * MB)
    client.sendall(FILE_HEAD + b"\0" * (3 * MB))
    wait_for(lambda: server.spool_bytes() >= MB, timeout_s=30, what="the upload to reach the spool")

    client.close()

    wait_for(lambda: server.spool_files() == [], timeout_s=30, what="the spool file to be removed")
    assert server.event_count() == 0 and server.stored_blobs() == []
    assert server.healthy()
    assert "Traceback" not in server.log.read_text()


def test_spool_files_of_a_killed_server_are_removed_at_start_and_a_live_servers_are_kept(
    start_server: Callable[..., Server],
) -> None:
    first = start_server()
    client = open_upload(first, 8 * MB)
    client.sendall(FILE_HEAD + b"\0" * (2 * MB))
    orphan = wait_for(lambda: first.spool_bytes() >= MB and first.spool_files(), timeout_s=30, what="a spool file")

    # A second server on the same data folder sweeps at start-up and every 0.2 s: the live upload stays.
    second = start_server(data_dir=first.data_dir, env={"JOBTAPE_UPLOAD_SWEEP_INTERVAL": "0.2"})
    assert second.spool_files() == orphan
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    client.close()
    assert first.spool_files() == orphan  # nothing of the dead process removed it

    wait_for(lambda: second.spool_files() == [], timeout_s=30, what="the periodic sweep to remove the dead's spool")
    assert "removed 1 upload spool file(s) that no live process owned" in second.log.read_text()
    locks = list((first.data_dir / "upload-tmp").glob("owner-*.lock"))
    assert len(locks) == 1  # the dead server's lock went with its files; the live server's stays


def test_a_restart_after_kill_9_removes_the_stale_spool_file(start_server: Callable[..., Server]) -> None:
    first = start_server()
    client = open_upload(first, 8 * MB)
    client.sendall(FILE_HEAD + b"\0" * (2 * MB))
    wait_for(lambda: first.spool_bytes() >= MB, timeout_s=30, what="a spool file")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    client.close()
    assert len(first.spool_files()) == 1

    restarted = start_server(data_dir=first.data_dir)  # listening means start-up (and its sweep) is done

    assert restarted.spool_files() == []
    assert restarted.healthy() and restarted.upload(b"RIFF" * 1000).status_code == 202


@pytest.fixture
def small_disk(mount_tmpfs: Callable[..., Path]) -> Callable[[Path], Path]:
    """Mount a 2 MiB tmpfs at a folder (see the ``mount_tmpfs`` fixture in tests/conftest.py)."""
    return lambda folder: mount_tmpfs(folder, size="2m")


@pytest.mark.parametrize("full", ["upload-tmp", "storage"])
def test_a_disk_that_fills_during_an_upload_gives_507_and_leaves_nothing(
    start_server: Callable[..., Server],
    small_disk: Callable[[Path], Path],
    tmp_path: Path,
    full: str,
) -> None:
    data_dir = tmp_path / "data"
    disk = small_disk(data_dir / full)  # the spool's disk, or the storage's (then the spool fits, the copy does not)
    server = start_server(data_dir=data_dir)
    too_big = b"\0" * (3 * MB)

    response = server.upload(too_big)

    assert response.status_code == 507, response.text
    assert response.json() == {"error": "the server has no room to store this; retry later"}
    assert server.spool_files() == [] and server.stored_blobs() == [] and server.event_count() == 0
    assert [p.name for p in disk.rglob("*") if p.is_file() and not p.name.startswith("owner-")] == []
    assert server.healthy()
    accepted = server.upload(b"RIFF" * 10_000)  # the space is free again: the server still takes uploads
    assert accepted.status_code == 202, accepted.text
    assert server.event_count() == 1 and len(server.stored_blobs()) == 1


def test_a_sweep_keeps_the_files_of_live_owners_and_removes_the_rest(tmp_path: Path) -> None:
    from jobtape.http.spool import SpoolFolder

    folder = tmp_path / "upload-tmp"
    live, gone, sweeper = SpoolFolder(folder), SpoolFolder(folder), SpoolFolder(folder)
    kept = [live.create_file(), sweeper.create_file()]
    dropped = [gone.create_file()]
    gone.close()  # its lock file goes; a process killed before close leaves it, unlocked (see the kill -9 tests)
    legacy = folder / "upload-k3j4h5.part"  # written before spool names carried an owner
    stale_start, fresh_start = folder / "owner-1.0badf00d.new", folder / "owner-2.0badf00d.new"
    for path in (legacy, stale_start, fresh_start):
        path.write_bytes(b"x")
    os.utime(stale_start, (time.time() - 120, time.time() - 120))  # a process killed while it started, 2 min ago
    for fd, _ in kept + dropped:
        os.close(fd)

    assert sweeper.sweep() == 2

    left = sorted(path.name for path in folder.iterdir())
    assert left == sorted([path.name for _, path in kept] + [fresh_start.name, f"owner-{live.token}.lock", f"owner-{sweeper.token}.lock"])
    live.close()
    assert sweeper.sweep() == 1 and [path for _, path in kept if path.exists()] == [kept[1][1]]
    sweeper.close()


def test_upload_settings_come_from_the_environment_and_bad_values_are_named() -> None:
    from jobtape.config import Settings

    settings = Settings.from_env(
        {
            "JOBTAPE_UPLOAD_IDLE_TIMEOUT": "2.5",
            "JOBTAPE_MAX_CONCURRENT_UPLOADS": "3",
            "JOBTAPE_UPLOAD_MIN_RATE": "0",
            "JOBTAPE_UPLOAD_SWEEP_INTERVAL": "60",
        }
    )
    assert (
        settings.upload_idle_timeout_s,
        settings.max_concurrent_uploads,
        settings.upload_min_rate_bytes_s,
        settings.upload_sweep_interval_s,
    ) == (2.5, 3, 0.0, 60.0)
    with pytest.raises(ValueError, match="JOBTAPE_MAX_CONCURRENT_UPLOADS must be at least 1, not 0"):
        Settings.from_env({"JOBTAPE_MAX_CONCURRENT_UPLOADS": "0"})
    with pytest.raises(ValueError, match="JOBTAPE_UPLOAD_IDLE_TIMEOUT must be 0 .off. or more"):
        Settings.from_env({"JOBTAPE_UPLOAD_IDLE_TIMEOUT": "-1"})
