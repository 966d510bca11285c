"""Benchmark: how long a cancel takes to stop a running ffmpeg, embedded worker vs separate worker.

For each of ``--cancels`` jobs (a 45 s recording ingested at real time, so its loudnorm
ffmpeg is running), the clock starts when ``POST /api/audio/jobs/{id}/cancel`` returns
and stops when both are true: the ffmpeg process (pid and /proc start time from the
job's ``job.child_started``) is gone, and ``job.cancelled`` is in the log.

Two setups, each with the API served by uvicorn on 127.0.0.1:

- ``embedded``: one worker in the API process, woken by the cancel's append;
- ``separate``: the API with no worker, and a ``jobtape worker`` process polling the log
  every ``--poll-interval`` seconds (default 1).

Targets (issue 4): embedded p99 < 300 ms; separate p99 < poll interval + 300 ms.

Usage::

    python bench/cancel_latency.py [--cancels 20] [--poll-interval 1.0] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from jobtape import runtime
from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.defaults import create_app, default_tables
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children

__all__ = ["main", "measure", "percentile"]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "media" / "music_strings.ogg"
EMBEDDED_TARGET_S = 0.3


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in 0-1)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def _poll(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


@contextmanager
def _api(
    repository: JobRepository,
    storage: LocalStorage,
    settings: Settings,
    hooks: tuple[list[Callable[[], None]], list[Callable[[], None]]] = ([], []),
) -> Iterator[str]:
    app = create_app(repository, storage, settings, on_startup=hooks[0], on_shutdown=hooks[1])
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        _poll(lambda: server.started, 30, "the API to start", 0.02)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)
        listener.close()


def _loudnorm_child(repository: JobRepository, job_id: str) -> ev.JobChildStarted | None:
    for recorded in repository.store.read_stream(job_id):
        if isinstance(recorded.event, ev.JobChildStarted) and "loudnorm" in " ".join(recorded.event.argv):
            return recorded.event
    return None


def measure(base_url: str, repository: JobRepository, cancels: int) -> list[float]:
    """Run ``cancels`` ingest-then-cancel rounds against the API; return each latency in seconds."""
    latencies = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(cancels):
            with SOURCE.open("rb") as handle:
                response = client.post("/api/audio/ingest", files={"file": (SOURCE.name, handle, "audio/ogg")})
            response.raise_for_status()
            job_id = response.json()["data"]["jobId"]
            child = _poll(lambda job_id=job_id: _loudnorm_child(repository, job_id), 60, "the loudnorm ffmpeg", 0.01)
            response = client.post(f"/api/audio/jobs/{job_id}/cancel")
            started = time.perf_counter()
            response.raise_for_status()
            _poll(
                lambda job_id=job_id, child=child: (
                    not children.process_alive(child.pid, child.started_at_ticks)
                    and (state := repository.load(job_id)) is not None
                    and state.finished
                ),
                30,
                "the cancel",
            )
            latencies.append(time.perf_counter() - started)
    return latencies


def _embedded(data_dir: Path, cancels: int) -> list[float]:
    settings, audio = Settings(data_dir=data_dir), AudioSettings(ffmpeg_readrate=1.0)
    workers: list[Any] = []
    repository = runtime.open_repository(settings, on_append=lambda result: [w.on_append(result) for w in workers], tables=default_tables())
    storage = LocalStorage(settings.storage_root)
    workers.append(Worker(repository, storage, settings, audio))
    hooks = ([workers[0].start], [lambda: workers[0].stop(grace_s=0)])
    try:
        with _api(repository, storage, settings, hooks) as base_url:
            return measure(base_url, repository, cancels)
    finally:
        repository.store.close()


def _separate(data_dir: Path, cancels: int, poll_interval_s: float) -> list[float]:
    settings = Settings(data_dir=data_dir)
    repository = runtime.open_repository(settings, tables=default_tables())
    storage = LocalStorage(settings.storage_root)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobtape",
            "worker",
            "--data-dir",
            str(data_dir),
            "--poll-interval",
            f"{poll_interval_s:g}",
            "--ffmpeg-readrate",
            "1",
            "--grace",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        with _api(repository, storage, settings) as base_url:
            return measure(base_url, repository, cancels)
    finally:
        worker.terminate()
        worker.wait(60)
        repository.store.close()


def _report(name: str, latencies: list[float], target_s: float) -> bool:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    ok = p99 < target_s
    print(
        f"{name:9s} n={len(latencies)} p50={p50 * 1000:7.1f} ms  p99={p99 * 1000:7.1f} ms"
        f"  max={max(latencies) * 1000:7.1f} ms  target p99 < {target_s * 1000:.0f} ms  {'PASS' if ok else 'FAIL'}"
    )
    return ok


def main() -> None:
    """Run both setups and print p50/p99 with PASS/FAIL; exit 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=20, help="cancels per setup (default 20)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the separate worker's poll interval, s")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the two event logs go (default: a temp dir)")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would bury the figures
    with tempfile.TemporaryDirectory(prefix="jobtape-cancel-bench-") as temp:
        root = args.data_dir or Path(temp)
        embedded = _embedded(root / "embedded", args.cancels)
        separate = _separate(root / "separate", args.cancels, args.poll_interval)
    ok = _report("embedded", embedded, EMBEDDED_TARGET_S)
    ok &= _report("separate", separate, args.poll_interval + EMBEDDED_TARGET_S)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
