"""Benchmark: the poll ``GET /api/audio/jobs/{id}`` against a Litestar endpoint serving one SQLite row.

The goal (issue 12): with ``--jobs`` jobs (default 100,000) and random ids over
``--connections`` keep-alive connections (default 32), a real ``jobtape serve --workers 0``
answers >= 0.8 of the req/s of a baseline Litestar app, under the same uvicorn settings
(``uvicorn.Config(app, host, port)``, as ``jobtape serve`` runs it), whose GET handler reads one
row of the same ``jobs`` table by primary key on one SQLite connection, inline on the event
loop, and returns it as JSON; and its p99 latency is within 1.5x of the baseline's.

The data dir is built fast with the store's own statements (as ``bench/queue_position.py``
does): each job's events are inserted with :data:`jobtape.eventlog.stored.INSERT_EVENT` (hash
chain included) and its ``jobs`` row by the projection's statement of the folded state,
``--batch`` jobs per ``execute_batch``; ``queue_counts`` is filled from ``jobs`` in one
statement. Every ``--complete-every``-th job (default 10) is complete with a download key
whose file exists in local storage (so its poll signs a ``downloadUrl``); the rest are pending.

The two servers are loaded in turn (jobtape, baseline, jobtape, ...; ``--rounds`` each,
default 3) for ``--seconds`` each by the same client: a small asyncio HTTP/1.1 keep-alive
client in this process (httpx itself tops out below the servers' rate on 2 cores, so it
would measure the client). Printed: each run's req/s, p50 and p99 and the server process's
CPU per answered request (user + system of all its threads, from ``/proc``: steadier than
req/s on a shared machine), the medians, the ratios and PASS/FAIL (on req/s and p99). Every
answer must be 200.

Usage::

    python bench/poll.py [--jobs 100000] [--connections 32] [--seconds 10] [--rounds 3] [--data-dir DIR] [--auth off|required]

With ``--auth required`` jobtape runs as deployed with API keys: a key of the jobs' owner
(``jobtape keys create --scope jobs:read``) is sent as ``Authorization: Bearer`` with every
poll and checked on every request (the baseline stays a plain route).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from loadgen import add_before_option, before_env, cpu_seconds, free_port, load, start_server

__all__ = ["build_data_dir", "main"]

TARGET_RATE_RATIO = 0.8
TARGET_P99_RATIO = 1.5
_BATCH = 5000
_SERVE = [sys.executable, "-m", "jobtape", "serve", "--workers", "0"]


def build_data_dir(data_dir: Path, count: int, complete_every: int) -> list[str]:
    """Fill ``data_dir`` (``jobtape.db`` and ``storage/``) with ``count`` jobs; return their ids.

    Job ``i`` has id ``i`` as 32 hex digits; every ``complete_every``-th is complete with a
    download key (``assets/<id>.mp3``, 16 bytes stored), the others pending.
    """
    from jobtape import clock
    from jobtape.eventlog import events as ev
    from jobtape.eventlog import hashing, stored
    from jobtape.eventlog.sqlite import SQLiteBackend
    from jobtape.eventlog.store import EventStore, Statement
    from jobtape.projections import jobs, queue, registry
    from jobtape.projections import state as job_state

    data_dir.mkdir(parents=True, exist_ok=True)
    backend = SQLiteBackend(data_dir / "jobtape.db", synchronous="NORMAL")
    backend.migrate(registry.ENGINE_TABLES.migrations)
    store = EventStore(backend)  # a key of this process: the bench only reads what it seeds
    storage = data_dir / "storage" / "assets"
    storage.mkdir(parents=True, exist_ok=True)
    at = clock.utcnow()
    stamp = clock.format_timestamp(at)
    created = ev.JobCreated(job_type="noop", params={})
    ids = [f"{index:032x}" for index in range(count)]
    for start in range(0, count, _BATCH):
        inserts: list[stored.StoredEvent] = []
        rows: list[Statement] = []
        for index in range(start, min(start + _BATCH, count)):
            job_id = ids[index]
            chain: list[ev.Event] = [created]
            if complete_every and index % complete_every == complete_every - 1:
                key = f"assets/{job_id}.mp3"
                (storage / f"{job_id}.mp3").write_bytes(b"ID3 bench output")
                chain += [
                    ev.JobClaimed(worker_id="bench:1:1"),
                    ev.JobCompleted(result={"outputKey": key}, owned_keys=[key], download_key=key),
                ]
            previous = hashing.genesis_hash(job_id)
            state = None
            for version, event in enumerate(chain, start=1):
                type_, data = ev.encode_event(event)
                previous = hashing.event_hash(previous, job_id, version, type_, data, "bench", stamp)
                inserts.append(
                    stored.StoredEvent(
                        position=0, job_id=job_id, version=version, type=type_, data=data, actor="bench", recorded_at=stamp, hash=previous
                    )
                )
                state = job_state.apply(state, event, job_id=job_id, version=version, recorded_at=at)
            assert state is not None
            rows.append(jobs.upsert(state))
        store.import_events(inserts, rows)  # chained at the log's next positions (as an import)
    backend.execute_batch([Statement(queue.FILL_FROM_JOBS)])
    backend.close()
    return ids


def _baseline_app(database: str) -> Any:
    """The baseline: one SQLite row by primary key, as JSON, read inline on one connection."""
    from litestar import Litestar, get

    connection = sqlite3.connect(database, check_same_thread=False)

    @get("/row/{job_id:str}", sync_to_thread=False)
    def one_row(job_id: str) -> dict[str, Any]:
        row = connection.execute(
            "SELECT job_id, job_type, status, stage, progress, created_at, updated_at FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        names = ("jobId", "type", "status", "stage", "progress", "createdAt", "updatedAt")
        return dict(zip(names, row, strict=True))

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([one_row, health])


def _serve_baseline(database: str, port: int) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(_baseline_app(database), host="127.0.0.1", port=port)).run()


def _requests(paths: list[str], headers: dict[str, str] | None = None) -> Callable[[], bytes]:
    """GETs of random ``paths`` with ``headers``."""
    rng = random.Random(os.urandom(8))
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())

    def request() -> bytes:
        return f"GET {rng.choice(paths)} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()

    return request


def _api_key(data_dir: Path) -> str:
    """A new API key of the jobs' owner (``anonymous``) with ``jobs:read``, made by ``jobtape keys create`` as deployed."""
    command = [sys.executable, "-m", "jobtape", "keys", "create", "--owner", "anonymous", "--scope", "jobs:read", "--quiet"]
    done = subprocess.run([*command, "--name", "bench-poll", "--data-dir", str(data_dir)], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when both ratios meet their goals, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the log (default 100000)")
    parser.add_argument("--complete-every", type=int, default=10, help="every n-th job is complete with a download (default 10; 0: none)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server, interleaved (default 3)")
    parser.add_argument("--data-dir", type=Path, default=None, help="an empty folder for the data dir (default: a temp dir)")
    parser.add_argument(
        "--auth",
        choices=("off", "required"),
        default="off",
        help="jobtape's --auth mode (default off); required: every poll sends an API key (Bearer) of the jobs' owner",
    )
    add_before_option(parser, " on the same data dir")
    parser.add_argument("--serve-baseline", nargs=2, metavar=("DATABASE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        _serve_baseline(args.serve_baseline[0], int(args.serve_baseline[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-poll-") as scratch:
        data_dir = args.data_dir or Path(scratch) / "data"
        started = time.perf_counter()
        ids = build_data_dir(data_dir, args.jobs, args.complete_every)
        print(f"{args.jobs:,} jobs built in {time.perf_counter() - started:.1f} s ({data_dir})")
        headers: dict[str, str] = {}
        if args.auth == "required":
            headers["Authorization"] = f"Bearer {_api_key(data_dir)}"
        jobtape_port, baseline_port = free_port(), free_port()
        logs = Path(scratch)
        servers: list[subprocess.Popen[bytes]] = []
        try:  # started inside the try: a server that started is stopped even when the other fails to
            servers.append(
                start_server(
                    [*_SERVE, "--port", str(jobtape_port), "--data-dir", str(data_dir), "--auth", args.auth],
                    logs / "jobtape.log",
                    jobtape_port,
                )
            )
            servers.append(
                start_server(
                    [sys.executable, __file__, "--serve-baseline", str(data_dir / "jobtape.db"), str(baseline_port)],
                    logs / "baseline.log",
                    baseline_port,
                )
            )
            targets = {
                "jobtape": (jobtape_port, [f"/api/audio/jobs/{job_id}" for job_id in ids], headers),
                "baseline": (baseline_port, [f"/row/{job_id}" for job_id in ids], {}),
            }
            pids = {"jobtape": servers[0].pid, "baseline": servers[1].pid}
            if args.before is not None:
                before_port = free_port()
                servers.append(
                    start_server(
                        [*_SERVE, "--port", str(before_port), "--data-dir", str(data_dir), "--auth", args.auth],
                        logs / "before.log",
                        before_port,
                        before_env(args.before),
                    )
                )
                targets["before"] = (before_port, targets["jobtape"][1], headers)
                pids["before"] = servers[2].pid
            for name, (port, paths, sent) in targets.items():  # warm-up, and check the answers
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=sent) as client:
                    for path in (paths[0], paths[args.complete_every - 1] if args.complete_every else paths[-1]):
                        answer = client.get(path)
                        assert answer.status_code == 200, (name, path, answer.text)
                load(port, _requests(paths, sent), args.connections, 1.0)
            figures: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in targets}
            for round_ in range(1, args.rounds + 1):
                for name, (port, paths, sent) in targets.items():
                    cpu_before = cpu_seconds(pids[name])
                    result = load(port, _requests(paths, sent), args.connections, args.seconds)
                    cpu_per_request = (cpu_seconds(pids[name]) - cpu_before) / sum(result.statuses.values())
                    rate, p50, p99 = result.rate, result.p50, result.p99
                    assert set(result.statuses) == {200}, (name, result.statuses)
                    figures[name].append((rate, p50, p99, cpu_per_request))
                    print(
                        f"round {round_} {name:>8}: {rate:8,.0f} req/s  p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
                        f"  server CPU {cpu_per_request * 1e6:5.0f} us/request"
                    )
        finally:
            for process in servers:
                process.terminate()
                process.wait(timeout=30)
    medians = {name: tuple(statistics.median(run[i] for run in runs) for i in range(4)) for name, runs in figures.items()}
    for name, (rate, p50, p99, cpu) in medians.items():
        print(
            f"median   {name:>8}: {rate:8,.0f} req/s  p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms  server CPU {cpu * 1e6:5.0f} us/request"
        )
    rate_ratio = medians["jobtape"][0] / medians["baseline"][0]
    p99_ratio = medians["jobtape"][2] / medians["baseline"][2]
    ok = rate_ratio >= TARGET_RATE_RATIO and p99_ratio <= TARGET_P99_RATIO
    print(f"jobtape --auth {args.auth}")
    if "before" in medians:
        print(
            f"before ({args.before}): req/s ratio {medians['before'][0] / medians['baseline'][0]:.2f}, "
            f"p99 ratio {medians['before'][2] / medians['baseline'][2]:.2f}, "
            f"CPU per request ratio {medians['before'][3] / medians['baseline'][3]:.2f}"
        )
    print(f"server CPU per request ratio {medians['jobtape'][3] / medians['baseline'][3]:.2f} (jobtape / baseline; lower is better)")
    print(
        f"req/s ratio {rate_ratio:.2f} (goal >= {TARGET_RATE_RATIO}), p99 ratio {p99_ratio:.2f} (goal <= {TARGET_P99_RATIO}): "
        + ("PASS" if ok else "FAIL")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
