"""The HTTP load generator the server benches share: start a server process, load it, time it.

A small asyncio HTTP/1.1 keep-alive client: each of ``connections`` connections sends one
request, reads the whole answer (``Content-Length`` framing), records the latency and the
status, and sends the next until the time is up. httpx itself tops out below the servers'
rate on 2 cores, so the bench would measure the client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

__all__ = ["LoadResult", "cpu_seconds", "free_port", "load", "start_server"]

#: This folder (``bench/``): on a ``--before`` child's path after the other tree (:func:`before_env`).
BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(command: list[str], log: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` (stdout and stderr to ``log``) and wait until ``/health`` on ``port`` answers 200.

    Raises:
        SystemExit: the process exited or did not answer within 60 s (the log's tail in the message).
    """
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise SystemExit(f"server did not answer /health: {log.read_text()[-2000:]}")
        time.sleep(0.1)  # bench only: wait for the server to listen


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far, from ``/proc/<pid>/stat`` (Linux).

    The difference over a load run divided by the answers is the server's CPU per request:
    steadier than req/s on a shared machine, where the rate also moves with what else runs.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LoadResult:
    """One load run: ``rate`` (answers per second), ``p50`` and ``p99`` (seconds), ``statuses`` (status -> count)."""

    def __init__(self, rate: float, p50: float, p99: float, statuses: dict[int, int]) -> None:
        self.rate, self.p50, self.p99, self.statuses = rate, p50, p99, statuses


async def _connection(
    port: int, next_request: Callable[[], bytes], stop_at: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            request = next_request()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _load(port: int, next_request: Callable[[], bytes], connections: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_connection(port, next_request, stop_at, latencies, statuses) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return LoadResult(len(latencies) / elapsed, p50, p99, statuses)


def load(port: int, next_request: Callable[[], bytes], connections: int, seconds: float) -> LoadResult:
    """Send requests over ``connections`` keep-alive connections for ``seconds`` seconds.

    Args:
        port: the server's port on 127.0.0.1.
        next_request: returns the bytes of the next whole HTTP/1.1 request (head and body).
        connections: concurrent connections, each with one request in flight.
        seconds: how long to load, in seconds.
    """
    return asyncio.run(_load(port, next_request, connections, seconds))


def add_before_option(parser: argparse.ArgumentParser, shares: str = "") -> None:
    """Add ``--before SRC``: also load a jobtape of another source tree in the same rounds (see :func:`before_env`).

    ``shares``: what the before server shares with jobtape's, for the help (e.g. ``" on the same data dir"``).
    """
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="SRC",
        help="also load a jobtape of another source tree (e.g. `git archive main | tar -x -C SRC`), run with PYTHONPATH=SRC, "
        f"in the same rounds{shares}: a before/after in one run (default: none)",
    )


def before_env(source: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the ``--before`` server: ``env`` (default this process's) with ``PYTHONPATH=source`` and ``PYTHONSAFEPATH=1``.

    ``PYTHONSAFEPATH`` (Python 3.11+) keeps ``python -m jobtape`` from putting the current
    folder first on ``sys.path``: run from a checkout (as the benches' commands are), it would
    import that checkout's ``jobtape`` instead of ``source``'s, and "before" would measure the
    same code as "jobtape". ``bench/`` follows ``source`` on the path, since
    ``PYTHONSAFEPATH`` also leaves a script's own folder off it (a bench re-run as a
    ``--before`` child imports ``loadgen`` and ``noop_app`` from there).
    """
    path = os.pathsep.join([str(source.resolve()), str(BENCH_DIR)])  # then bench/ itself: loadgen, noop_app
    return {**(os.environ if env is None else env), "PYTHONPATH": path, "PYTHONSAFEPATH": "1"}
