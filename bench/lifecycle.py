"""Benchmark: job lifecycles through the event store against raw single-row SQLite transactions.

Each job is one ``JobRepository.create`` and seven ``JobRepository.append`` calls of one
event (claimed, 5 x progress, completed): 8 events, 8 transactions, each with the fold,
the event insert (version guard trigger) and the ``jobs`` row upsert. The baseline inserts
the same number of rows with plain ``sqlite3``, one ``BEGIN IMMEDIATE; INSERT; COMMIT``
per row, with the same PRAGMAs. The target: the store reaches at least half the raw rate.

Usage::

    python bench/lifecycle.py [--jobs 2000] [--data-dir DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import tempfile
import time
from pathlib import Path

from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import PRAGMAS, SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository

__all__ = ["main", "run_lifecycles", "run_raw_inserts"]

EVENTS_PER_JOB = 8
TARGET_RATIO = 0.5
_WORKER = "bench:1:1"


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def run_lifecycles(path: Path, jobs: int) -> float:
    """Run ``jobs`` lifecycles (8 appends each) on a fresh SQLite file; return the elapsed seconds."""
    backend = SQLiteBackend(_fresh(path))
    backend.migrate()
    repository = JobRepository(EventStore(backend))
    start = time.perf_counter()
    for index in range(jobs):
        state = repository.create("ingest", {"sourceType": "upload", "storageKey": f"ingest-uploads/{index}/a.wav"}).state
        events: list[ev.Event] = [ev.JobClaimed(worker_id=_WORKER)]
        events += [ev.JobProgress(percent=percent) for percent in (20, 40, 60, 80, 100)]
        events.append(ev.JobCompleted(result={"preparedKey": f"assets/{index}/prepared.flac"}))
        for event in events:
            state = repository.append(state.job_id, [event], state, actor=_WORKER).state
    elapsed = time.perf_counter() - start
    backend.close()
    return elapsed


def run_raw_inserts(path: Path, rows: int) -> float:
    """Insert ``rows`` rows into a plain table, one transaction each; return the elapsed seconds."""
    connection = sqlite3.connect(_fresh(path), isolation_level=None)
    for pragma in PRAGMAS:
        connection.execute(pragma)
    connection.execute(
        "CREATE TABLE rows (position INTEGER PRIMARY KEY, job_id TEXT NOT NULL, version INTEGER NOT NULL,"
        " type TEXT NOT NULL, data TEXT NOT NULL, actor TEXT NOT NULL, recorded_at TEXT NOT NULL)"
    )
    start = time.perf_counter()
    for index in range(rows):
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO rows (job_id, version, type, data, actor, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (f"{index // EVENTS_PER_JOB:032x}", index % EVENTS_PER_JOB + 1, "job.progress", '{"percent":40}',
             _WORKER, "2026-01-01T00:00:00.000000Z"),
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run both, print the rates, the ratio and PASS/FAIL; return 0 on PASS, 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="job lifecycles to run (default 2000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for the two SQLite files (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the lifecycle run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-") as temp:
        folder = args.data_dir or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        events = args.jobs * EVENTS_PER_JOB
        store_s = run_lifecycles(folder / "lifecycle.db", args.jobs)
        raw_s = run_raw_inserts(folder / "raw.db", events)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run_lifecycles, folder / "profile.db", args.jobs)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    store_rate, raw_rate = events / store_s, events / raw_s
    ratio = store_rate / raw_rate
    print(f"event store: {args.jobs} lifecycles, {events} appends in {store_s:.2f} s = {store_rate:,.0f} events/s")
    print(f"raw sqlite3: {events} single-row transactions in {raw_s:.2f} s = {raw_rate:,.0f} rows/s")
    print(f"ratio: {ratio:.2f}")
    passed = ratio >= TARGET_RATIO
    print(f"TARGET ratio >= {TARGET_RATIO}: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
