"""Benchmark: submitting a job (multipart upload and JSON URL ingest) against a durable baseline POST.

The goal (issue 12): a real ``jobtape serve --workers 0`` answers ``POST /api/audio/ingest``
with a 16 KB multipart upload at >= 0.8 of the req/s of a fair physical baseline, at 8 and 32
keep-alive connections, with a p99 no worse than the baseline's; the JSON form (a URL) holds
its figures. The baseline is a Litestar app under the same uvicorn settings whose POST reads
the same body, writes it to a new file with one ``fsync``, and commits one SQLite row (WAL,
the same ``synchronous`` setting) before answering 202 with an id: the least a durable
submit must do. Every jobtape answer must be 202 (the quota and the upload slots are raised
for the bench: ``JOBTAPE_MAX_ACTIVE_JOBS``, ``JOBTAPE_MAX_CONCURRENT_UPLOADS``).

The two servers are loaded in turn (``--rounds`` each, default 3, ``--seconds`` each) by the
client of :mod:`loadgen`; medians, ratios and PASS/FAIL are printed per case, with each
server process's CPU per answered request (user + system of all its threads, from ``/proc``:
steadier than req/s on a shared machine; the fsyncs' waits are not CPU).

Usage::

    python bench/submit.py [--connections 8,32] [--seconds 8] [--rounds 3] [--synchronous FULL|NORMAL] [--before SRC]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request, Response, get, post
from loadgen import LoadResult, add_before_option, before_env, cpu_seconds, free_port, load, start_server

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "media" / "speech_ljspeech.wav"
TARGET_RATE_RATIO = 0.8
TARGET_P99_RATIO = 1.0
UPLOAD_BYTES = 16 * 1024
_BOUNDARY = "jobtapebenchboundary"
_SERVE = [sys.executable, "-m", "jobtape", "serve", "--workers", "0"]


def _multipart_body() -> bytes:
    data = MEDIA.read_bytes()[:UPLOAD_BYTES]
    return (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="clip.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        + data
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )


def _requests(path: str, content_type: str, body: bytes) -> Callable[[], bytes]:
    """POSTs of ``body`` to ``path``, each from its own owner (``X-Client-Id``), as from many clients at
    the default quota: no owner's active-job count grows with the run."""
    counter = itertools.count()

    def request() -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nX-Client-Id: bench-{next(counter)}\r\n\r\n"
        )
        return head.encode() + body

    return request


def _baseline_app(folder: str, synchronous: str) -> Any:
    """The durable baseline: the body to a new file with one fsync, one SQLite row committed, 202."""
    database = Path(folder) / "baseline.db"
    blobs = Path(folder) / "baseline-blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    local = threading.local()

    def connection() -> sqlite3.Connection:
        if not hasattr(local, "connection"):
            local.connection = sqlite3.connect(database, isolation_level=None, timeout=30)
            local.connection.execute("PRAGMA journal_mode=WAL")
            local.connection.execute(f"PRAGMA synchronous={synchronous}")
            local.connection.execute("CREATE TABLE IF NOT EXISTS submits (id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL)")
        return local.connection  # type: ignore[no-any-return]

    def store(body: bytes) -> str:
        job_id = uuid.uuid4().hex
        path = blobs / job_id
        with open(path, "wb") as sink:
            sink.write(body)
            sink.flush()
            os.fsync(sink.fileno())
        db = connection()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO submits (id, path, size) VALUES (?, ?, ?)", (job_id, str(path), len(body)))
        db.execute("COMMIT")
        return job_id

    @post("/submit", status_code=202)
    async def submit(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body = await request.body()
        job_id = await anyio.to_thread.run_sync(store, body)
        return Response({"success": True, "data": {"jobId": job_id, "status": "pending"}}, status_code=202)

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([submit, health])


def _serve_baseline(folder: str, synchronous: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(_baseline_app(folder, synchronous), host="127.0.0.1", port=port)).run()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every multipart case meets both goals, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="8,32", help="comma-separated connection counts (default 8,32)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server per case, interleaved (default 3)")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL", help="SQLite synchronous on both sides (default FULL)")
    add_before_option(parser)
    parser.add_argument("--serve-baseline", nargs=3, metavar=("FOLDER", "SYNCHRONOUS", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        _serve_baseline(args.serve_baseline[0], args.serve_baseline[1], int(args.serve_baseline[2]))
        return 0
    multipart = _multipart_body()
    url_json = json.dumps({"sourceType": "url", "url": "http://93.184.215.14/audio/clip.mp3", "rightsAttested": True}).encode()
    counts = [int(n) for n in args.connections.split(",")]
    passed = True
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-submit-") as scratch:
        folder = Path(scratch)
        jobtape_port, baseline_port = free_port(), free_port()
        env = {
            **os.environ,
            "JOBTAPE_MAX_ACTIVE_JOBS": "100000000",
            "JOBTAPE_MAX_CONCURRENT_UPLOADS": "256",
            "JOBTAPE_SQLITE_SYNCHRONOUS": args.synchronous,
        }
        servers: list[subprocess.Popen[bytes]] = []
        try:  # started inside the try: a server that started is stopped even when the other fails to
            servers.append(
                start_server(
                    [
                        *_SERVE,
                        "--port",
                        str(jobtape_port),
                        "--data-dir",
                        str(folder / "data"),
                    ],
                    folder / "jobtape.log",
                    jobtape_port,
                    env,
                )
            )
            servers.append(
                start_server(
                    [sys.executable, __file__, "--serve-baseline", str(folder), args.synchronous, str(baseline_port)],
                    folder / "baseline.log",
                    baseline_port,
                )
            )
            before_port = free_port()
            if args.before is not None:
                servers.append(
                    start_server(
                        [*_SERVE, "--port", str(before_port), "--data-dir", str(folder / "before-data")],
                        folder / "before.log",
                        before_port,
                        before_env(args.before, env),
                    )
                )
            pids = {"jobtape": servers[0].pid, "baseline": servers[1].pid}
            if args.before is not None:
                pids["before"] = servers[2].pid
            cases = [
                ("multipart 16 KB", "multipart/form-data; boundary=" + _BOUNDARY, multipart),
                ("JSON url", "application/json", url_json),
            ]
            for label, content_type, body in cases:
                targets = {
                    "jobtape": (jobtape_port, _requests("/api/audio/ingest", content_type, body)),
                    "baseline": (baseline_port, _requests("/submit", content_type, body)),
                }
                if args.before is not None:
                    targets["before"] = (before_port, _requests("/api/audio/ingest", content_type, body))
                for connections in counts:
                    for name, (port, requests) in targets.items():  # warm-up
                        warm = load(port, requests, connections, 1.0)
                        assert set(warm.statuses) == {202}, (name, label, warm.statuses, (folder / f"{name}.log").read_text()[-2000:])
                    runs: dict[str, list[LoadResult]] = {name: [] for name in targets}
                    cpu: dict[str, list[float]] = {name: [] for name in targets}
                    for round_ in range(1, args.rounds + 1):
                        for name, (port, requests) in targets.items():
                            cpu_before = cpu_seconds(pids[name])
                            result = load(port, requests, connections, args.seconds)
                            cpu[name].append((cpu_seconds(pids[name]) - cpu_before) / sum(result.statuses.values()))
                            assert set(result.statuses) == {202}, (name, label, result.statuses)
                            runs[name].append(result)
                            print(
                                f"{label}, {connections} conn, round {round_} {name:>8}: {result.rate:7,.0f} req/s"
                                f"  p50 {result.p50 * 1e3:6.2f} ms  p99 {result.p99 * 1e3:6.2f} ms"
                                f"  server CPU {cpu[name][-1] * 1e6:5.0f} us/request"
                            )
                    rate = {name: statistics.median(r.rate for r in rs) for name, rs in runs.items()}
                    p99 = {name: statistics.median(r.p99 for r in rs) for name, rs in runs.items()}
                    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
                    rate_ratio = rate["jobtape"] / rate["baseline"]
                    p99_ratio = p99["jobtape"] / p99["baseline"]
                    ok = rate_ratio >= TARGET_RATE_RATIO and p99_ratio <= TARGET_P99_RATIO
                    if label.startswith("multipart"):
                        passed &= ok
                    print(
                        f"{label}, {connections} connections, synchronous={args.synchronous}: jobtape {rate['jobtape']:,.0f} req/s"
                        f" p99 {p99['jobtape'] * 1e3:.1f} ms; baseline {rate['baseline']:,.0f} req/s p99 {p99['baseline'] * 1e3:.1f} ms;"
                        f" req/s ratio {rate_ratio:.2f} (goal >= {TARGET_RATE_RATIO}), p99 ratio {p99_ratio:.2f}"
                        f" (goal <= {TARGET_P99_RATIO}): {'PASS' if ok else 'FAIL'};"
                        f" server CPU {cpu_median['jobtape'] * 1e6:.0f} vs {cpu_median['baseline'] * 1e6:.0f} us/request"
                        f" (ratio {cpu_median['jobtape'] / cpu_median['baseline']:.2f})"
                    )
                    if "before" in rate:
                        print(
                            f"{label}, {connections} connections, before ({args.before}): {rate['before']:,.0f} req/s"
                            f" p99 {p99['before'] * 1e3:.1f} ms; req/s ratio {rate['before'] / rate['baseline']:.2f},"
                            f" p99 ratio {p99['before'] / p99['baseline']:.2f}; server CPU {cpu_median['before'] * 1e6:.0f} us/request"
                            f" (ratio {cpu_median['before'] / cpu_median['baseline']:.2f})"
                        )
        finally:
            for process in servers:
                process.terminate()
                process.wait(timeout=30)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
