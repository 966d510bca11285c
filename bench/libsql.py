"""Benchmark: the libSQL backend against a real sqld: appends, and worker processes scaling out.

Two measures of issue 12, each a ratio against a baseline measured in the same run on the
same sqld (started here on 127.0.0.1 from ``.tools/sqld``, ``$JOBTAPE_SQLD`` or the PATH;
``bash scripts/setup-sqld.sh`` installs it):

- **Appends.** Job lifecycles through :class:`~jobtape.projections.repository.JobRepository`
  on :class:`~jobtape.eventlog.libsql.LibSQLBackend` (one ``create`` and seven one-event
  appends per job: the fold, the guarded event insert and the projection rows, one Hrana
  batch each) against raw ``libsql-client`` single-statement batches inserting the same
  number of rows into a plain table, over the same WebSocket. Goal: >= 0.5.
- **Worker processes.** ``--jobs`` jobs of the starter app's ``sleep`` type (a real child
  process, ``sleep 0.2``) drained by one ``jobtape worker`` process, then by four, on one
  sqld. Jobs/s is counted from the log: first ``job.claimed`` to last ``job.completed``.
  Goal: four processes >= 3.5x one.

Rounds alternate the two sides; medians of ``--rounds`` are printed with PASS/FAIL.

Usage::

    python bench/libsql.py [--lifecycles 150] [--jobs 80] [--rounds 3] [--skip-workers]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import libsql_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))  # the sqld process helper the tests use

from lifecycle import EVENTS_PER_JOB, lifecycles  # noqa: E402
from sqld_server import SqldServer, find_sqld  # noqa: E402

from jobtape.config import Settings  # noqa: E402
from jobtape.defaults import default_tables  # noqa: E402
from jobtape.projections.repository import JobRepository  # noqa: E402
from jobtape.runtime import open_repository  # noqa: E402

__all__ = ["main"]

APPEND_TARGET = 0.5
SCALE_TARGET = 3.5
_WORKER = "bench:1:1"
_STARTER = "starter.jobs:app"


#: The log key every process of the bench holds (a deployment on libSQL gives each host the same one).
_LOG_KEY = secrets.token_hex(32)


def _repository(url: str) -> JobRepository:
    settings = Settings(job_store_backend="libsql", turso_database_url=url, log_key=_LOG_KEY)
    return open_repository(settings, tables=default_tables())


def run_lifecycles(url: str, jobs: int) -> float:
    """Run ``jobs`` lifecycles of 8 appends each through the event store; return events/s."""
    repository = _repository(url)
    try:
        start = time.perf_counter()
        lifecycles(repository, range(jobs))
        return jobs * EVENTS_PER_JOB / (time.perf_counter() - start)
    finally:
        repository.store.close()


def run_raw(url: str, rows: int) -> float:
    """Insert ``rows`` rows, one single-statement ``libsql-client`` batch each; return rows/s."""
    client = libsql_client.create_client_sync(url)
    try:
        create = (
            "CREATE TABLE IF NOT EXISTS raw_rows (position INTEGER PRIMARY KEY, job_id TEXT NOT NULL, version INTEGER NOT NULL,"
            " type TEXT NOT NULL, data TEXT NOT NULL, actor TEXT NOT NULL, recorded_at TEXT NOT NULL)"
        )
        client.batch([create])
        insert = "INSERT INTO raw_rows (job_id, version, type, data, actor, recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
        start = time.perf_counter()
        for index in range(rows):
            params = [
                f"{index // EVENTS_PER_JOB:032x}",
                index % EVENTS_PER_JOB + 1,
                "job.progress",
                '{"percent":40}',
                _WORKER,
                "2026-01-01T00:00:00.000000Z",
            ]
            client.batch([libsql_client.Statement(insert, params)])
        return rows / (time.perf_counter() - start)
    finally:
        client.close()


def _drain(url: str, processes: int, jobs: int, seconds: float, log_dir: Path) -> float:
    """Submit ``jobs`` sleep jobs, drain them with ``processes`` worker processes; return jobs/s from the log."""
    repository = _repository(url)
    try:
        env = {
            **os.environ,
            "JOB_STORE_BACKEND": "libsql",
            "TURSO_DATABASE_URL": url,
            "JOBTAPE_DATA_DIR": str(log_dir),
            "JOBTAPE_LOG_KEY": _LOG_KEY,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "jobtape", "worker", "--app", _STARTER, "--poll-interval", "0.05"]
        logs = [log_dir / f"worker-{processes}-{n}-{time.monotonic_ns()}.log" for n in range(processes)]
        workers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab")) for log in logs]
        # Every process polls before the first job exists, so the figure is not their start-up time.
        ready_by = time.monotonic() + 60
        while not all("polling" in log.read_text() for log in logs):
            if time.monotonic() > ready_by or any(worker.poll() is not None for worker in workers):
                raise RuntimeError(f"a worker did not start; logs in {log_dir}")
            time.sleep(0.05)  # a bench waiting for its processes, not a test
        job_ids = [repository.create("sleep", {"seconds": seconds}).state.job_id for _ in range(jobs)]
        try:
            deadline = time.monotonic() + 60 + jobs * seconds * 3
            while time.monotonic() < deadline:
                states = [repository.get(job_id) for job_id in job_ids]
                if all(state.status in {"complete", "failed", "cancelled"} for state in states):
                    break
                time.sleep(0.2)  # a bench polling its own progress, not a test
            else:
                raise RuntimeError(f"{processes} worker(s) did not finish {jobs} jobs in time; logs in {log_dir}")
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        failed = [state.job_id for state in states if state.status != "complete"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not complete, e.g. {failed[0]}; logs in {log_dir}")
        claimed: list[dt.datetime] = []
        completed: list[dt.datetime] = []
        for job_id in job_ids:
            for recorded in repository.store.read_stream(job_id):
                if recorded.type == "job.claimed":
                    claimed.append(recorded.recorded_at)
                elif recorded.type == "job.completed":
                    completed.append(recorded.recorded_at)
        return jobs / (max(completed) - min(claimed)).total_seconds()
    finally:
        repository.store.close()


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    """Run both measures, print rates, ratios and PASS/FAIL; return 0 when every goal passes, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=150, help="job lifecycles (8 appends each) per round (default 150)")
    parser.add_argument("--jobs", type=int, default=80, help="sleep jobs per worker round (default 80)")
    parser.add_argument("--seconds", type=float, default=0.2, help="how long each job's child sleeps (default 0.2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (default 3)")
    parser.add_argument("--skip-workers", action="store_true", help="measure appends only")
    args = parser.parse_args(argv)
    binary = find_sqld()
    if binary is None:
        parser.error("no sqld: run `bash scripts/setup-sqld.sh` or set JOBTAPE_SQLD")
    passed = True
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-libsql-") as temp:
        server = SqldServer(binary, Path(temp) / "sqld")
        server.start()
        try:
            raw_rates: list[float] = []
            store_rates: list[float] = []
            for _ in range(args.rounds):
                raw_rates.append(run_raw(server.ws_url, args.lifecycles * EVENTS_PER_JOB))
                store_rates.append(run_lifecycles(server.ws_url, args.lifecycles))
            raw, store = _median(raw_rates), _median(store_rates)
            ratio = store / raw
            passed &= ratio >= APPEND_TARGET
            print(
                f"appends via sqld ({args.rounds} rounds, medians): raw libsql-client single-statement batches {raw:,.0f} rows/s (baseline)"
            )
            print(
                f"event store on LibSQLBackend: {store:,.0f} events/s; ratio {ratio:.2f}; TARGET >= {APPEND_TARGET}: "
                f"{'PASS' if ratio >= APPEND_TARGET else 'FAIL'}"
            )
            print(f"  rounds raw {[round(r) for r in raw_rates]} store {[round(r) for r in store_rates]}")
            if not args.skip_workers:
                ones: list[float] = []
                fours: list[float] = []
                for round_ in range(args.rounds):
                    ones.append(_drain(server.ws_url, 1, args.jobs, args.seconds, Path(temp)))
                    fours.append(_drain(server.ws_url, 4, args.jobs, args.seconds, Path(temp)))
                    print(f"  round {round_ + 1}: 1 process {ones[-1]:.2f} jobs/s, 4 processes {fours[-1]:.2f} jobs/s")
                one, four = _median(ones), _median(fours)
                scale = four / one
                passed &= scale >= SCALE_TARGET
                print(f"worker processes on one sqld, {args.jobs} jobs of sleep {args.seconds:g} s: 1 process {one:.2f} jobs/s (baseline)")
                print(
                    f"4 processes: {four:.2f} jobs/s; ratio {scale:.2f}; TARGET >= {SCALE_TARGET}: {'PASS' if scale >= SCALE_TARGET else 'FAIL'}"
                )
        finally:
            server.stop()
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
