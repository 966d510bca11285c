"""Benchmark: job lifecycles through the event store against raw single-row SQLite transactions.

Each job is one ``JobRepository.create`` and seven ``JobRepository.append`` calls of one
event (claimed, 5 x progress, completed): 8 events, 8 transactions, each with the fold,
the event insert (version guard trigger) and the ``jobs`` row upsert. The baseline inserts
the same number of rows with plain ``sqlite3``, one ``BEGIN IMMEDIATE; INSERT; COMMIT``
per row, with the same PRAGMAs. The target: the store reaches at least half the raw rate.

Both sides use the same PRAGMAs, by default the store's: WAL with ``synchronous=FULL``
(every commit fsynced, so an acknowledged append survives a power loss), where the fsync
dominates a commit; ``--synchronous NORMAL`` compares the CPU cost of an append instead.

The lifecycles run twice: one after the other on one thread, and spread over ``--threads``
threads (as a worker with ``--concurrency N`` appends for N jobs at once), where the SQLite
backend's group commit lets concurrent appends share a transaction. Both ratios are printed
against the same single-threaded raw baseline, with PASS/FAIL for each.

The three runs (raw, 1 thread, ``--threads`` threads) repeat in ``--rounds`` interleaved rounds
(default 3) and the medians are printed, each ratio the median of the rounds' ratios (the
machine is shared: a round's fsyncs move with the other processes' I/O). ``--before SRC``
adds a round of another source tree's event store (``git archive main | tar -x -C SRC``,
run in a process with ``PYTHONPATH=SRC``) to each round: a before/after in one run. The
``--profile`` run is profiled on the main thread (``cProfile`` sees one thread).

Usage::

    python bench/lifecycle.py [--jobs 2000] [--threads 8] [--rounds 3] [--synchronous FULL|NORMAL] [--before SRC]
        [--data-dir DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loadgen import add_before_option, before_env

from jobtape.defaults import default_tables
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SYNCHRONOUS_MODES, SQLiteBackend, pragmas
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository

__all__ = ["EVENTS_PER_JOB", "lifecycles", "main", "run_lifecycles", "run_raw_inserts"]

TABLES = default_tables()

EVENTS_PER_JOB = 8
TARGET_RATIO = 0.5
_WORKER = "bench:1:1"


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def lifecycles(repository: JobRepository, indexes: range) -> None:
    """One job lifecycle per index: a create and seven one-event appends (claimed, 5 x progress, completed)."""
    for index in indexes:
        state = repository.create("ingest", {"sourceType": "upload", "storageKey": f"ingest-uploads/{index}/a.wav"}).state
        events: list[ev.Event] = [ev.JobClaimed(worker_id=_WORKER)]
        events += [ev.JobProgress(percent=percent) for percent in (20, 40, 60, 80, 100)]
        events.append(ev.JobCompleted(result={"preparedKey": f"assets/{index}/prepared.flac"}))
        for event in events:
            state = repository.append(state.job_id, [event], state, actor=_WORKER).state


def run_lifecycles(path: Path, jobs: int, threads: int = 1, synchronous: str = "FULL") -> tuple[float, float]:
    """Run ``jobs`` lifecycles (8 appends each) on a fresh SQLite file over ``threads`` threads.

    Returns:
        ``(elapsed seconds, batches per transaction)`` (the latter is 1.0 without group commit).
    """
    backend = SQLiteBackend(_fresh(path), synchronous=synchronous)
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    share = -(-jobs // threads)
    workers = [threading.Thread(target=lifecycles, args=(repository, range(n * share, min(jobs, (n + 1) * share)))) for n in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    grouping = backend.batches_committed / max(1, backend.transactions)
    backend.close()
    return elapsed, grouping


def run_raw_inserts(path: Path, rows: int, synchronous: str = "FULL") -> float:
    """Insert ``rows`` rows into a plain table, one transaction each; return the elapsed seconds."""
    connection = sqlite3.connect(_fresh(path), isolation_level=None)
    for pragma in pragmas(synchronous):
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
            (
                f"{index // EVENTS_PER_JOB:032x}",
                index % EVENTS_PER_JOB + 1,
                "job.progress",
                '{"percent":40}',
                _WORKER,
                "2026-01-01T00:00:00.000000Z",
            ),
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def _one_round(folder: Path, jobs: int, threads: int, synchronous: str) -> tuple[float, float, float]:
    """One round of this tree's event store: ``(1-thread seconds, N-thread seconds, appends per transaction)``."""
    single_s, _ = run_lifecycles(folder / "lifecycle-1.db", jobs, 1, synchronous)
    multi_s, grouping = run_lifecycles(folder / f"lifecycle-{threads}.db", jobs, threads, synchronous)
    return single_s, multi_s, grouping


def _before_round(source: Path, folder: Path, jobs: int, threads: int, synchronous: str) -> tuple[float, float, float]:
    """One round of the ``--before`` tree's event store, in a process importing ``jobtape`` from ``source``."""
    argv = [sys.executable, __file__, "--jobs", str(jobs), "--threads", str(threads), "--synchronous", synchronous]
    argv += ["--data-dir", str(folder / "before"), "--one-round"]
    output = subprocess.run(argv, env=before_env(source), check=True, capture_output=True, text=True).stdout
    single_s, multi_s, grouping = (float(value) for value in output.split())
    return single_s, multi_s, grouping


def main(argv: list[str] | None = None) -> int:
    """Run both in interleaved rounds, print the medians, the ratios and PASS/FAIL; return 0 if any run passes, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="job lifecycles to run (default 2000)")
    parser.add_argument("--threads", type=int, default=8, help="threads for the concurrent run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (raw, store, before); medians printed (default 3)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for the SQLite files (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the single-thread run")
    parser.add_argument(
        "--synchronous",
        choices=SYNCHRONOUS_MODES,
        default="FULL",
        help="PRAGMA synchronous for both sides (default FULL, the store's default)",
    )
    add_before_option(parser)
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)  # a --before round: prints its seconds
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-") as temp:
        folder = args.data_dir or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.one_round:
            print(*_one_round(folder, args.jobs, args.threads, args.synchronous))
            return 0
        events = args.jobs * EVENTS_PER_JOB
        raws: list[float] = []
        rounds: dict[str, list[tuple[float, float, float]]] = {"store": [], "before": []}
        for _ in range(args.rounds):
            raws.append(run_raw_inserts(folder / "raw.db", events, args.synchronous))
            rounds["store"].append(_one_round(folder, args.jobs, args.threads, args.synchronous))
            if args.before is not None:
                rounds["before"].append(_before_round(args.before, folder, args.jobs, args.threads, args.synchronous))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lifecycles, *_profiled_repository(folder / "profile.db", args.synchronous), range(args.jobs))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    raw_s = statistics.median(raws)
    print(f"PRAGMA synchronous={args.synchronous} (journal_mode=WAL) on both sides; median of {args.rounds} interleaved rounds")
    print(
        f"raw sqlite3: {events} single-row transactions in {raw_s:.2f} s = {events / raw_s:,.0f} rows/s (baseline;"
        f" rounds: {', '.join(f'{events / r:,.0f}' for r in raws)})"
    )
    passed_any = False
    for side, results in rounds.items():
        if not results:
            continue
        name = "event store" if side == "store" else f"before ({args.before})"
        for column, label in ((0, "1 thread"), (1, f"{args.threads} threads")):
            seconds = statistics.median(r[column] for r in results)
            ratios = [raw / r[column] for raw, r in zip(raws, results, strict=True)]
            ratio = statistics.median(ratios)
            passed = ratio >= TARGET_RATIO
            passed_any |= passed and side == "store"
            extra = f", {statistics.median(r[2] for r in results):.1f} appends per transaction" if column else ""
            print(
                f"{name}, {label}: {args.jobs} lifecycles, {events} appends in {seconds:.2f} s = {events / seconds:,.0f} events/s{extra};"
                f" ratio {ratio:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); TARGET ratio >= {TARGET_RATIO}:"
                f" {'PASS' if passed else 'FAIL'}"
            )
    return 0 if passed_any else 1


def _profiled_repository(path: Path, synchronous: str) -> tuple[JobRepository]:
    """A repository on a fresh file for the ``--profile`` run (profiled on this thread: cProfile sees one thread)."""
    backend = SQLiteBackend(_fresh(path), synchronous=synchronous)
    backend.migrate(TABLES.migrations)
    return (JobRepository(EventStore(backend), projections=TABLES.projections),)


if __name__ == "__main__":
    raise SystemExit(main())
