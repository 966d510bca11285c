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
against single-threaded raw inserts made beside them (below), with PASS/FAIL for each.

The machine is shared, and a commit's fsync moves with the other processes' I/O by
several times within a minute, so the two sides run side by side: the 1-thread lifecycles
and the raw inserts alternate every ``--chunk`` lifecycles (25: 200 appends, then 200 raw
transactions, ...), each side's time summed, and the ``--threads`` run sits between two
halves of its raw inserts; each ratio is taken within its round. ``--rounds`` rounds
(default 3), medians printed. ``--before SRC`` adds a round of another source tree's event
store after each (``git archive main | tar -x -C SRC``, run in a process with
``PYTHONPATH=SRC``, with its own raw inserts alongside): a before/after in one run. The
``--profile`` run is profiled on the main thread (``cProfile`` sees one thread).

Usage::

    python bench/lifecycle.py [--jobs 2000] [--threads 8] [--rounds 3] [--chunk 25] [--synchronous FULL|NORMAL] [--before SRC]
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
from typing import NamedTuple

from loadgen import add_before_option, before_env

from jobtape.defaults import default_tables
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SYNCHRONOUS_MODES, SQLiteBackend, pragmas
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository

__all__ = ["EVENTS_PER_JOB", "Round", "lifecycles", "main", "run_lifecycles", "run_raw_inserts", "run_round"]

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


class _Raw:
    """The baseline: a plain table on its own file, one ``BEGIN IMMEDIATE; INSERT; COMMIT`` per row."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.connection = sqlite3.connect(_fresh(path), isolation_level=None)
        for pragma in pragmas(synchronous):
            self.connection.execute(pragma)
        self.connection.execute(
            "CREATE TABLE rows (position INTEGER PRIMARY KEY, job_id TEXT NOT NULL, version INTEGER NOT NULL,"
            " type TEXT NOT NULL, data TEXT NOT NULL, actor TEXT NOT NULL, recorded_at TEXT NOT NULL)"
        )
        self.inserted = 0

    def insert(self, rows: int) -> float:
        """Insert ``rows`` rows, one transaction each; return the elapsed seconds."""
        connection = self.connection
        start = time.perf_counter()
        for index in range(self.inserted, self.inserted + rows):
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
        self.inserted += rows
        return time.perf_counter() - start

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def run_raw_inserts(path: Path, rows: int, synchronous: str = "FULL") -> float:
    """Insert ``rows`` rows into a plain table, one transaction each; return the elapsed seconds."""
    raw = _Raw(path, synchronous)
    try:
        return raw.insert(rows)
    finally:
        raw.close()


class Round(NamedTuple):
    """One round's seconds: raw and store for the same number of transactions, side by side."""

    raw_single_s: float
    single_s: float
    raw_multi_s: float
    multi_s: float
    grouping: float
    #: CPU seconds (``time.process_time``) of the 1-thread lifecycles.
    single_cpu_s: float


def run_round(folder: Path, jobs: int, threads: int, synchronous: str, chunk: int) -> Round:
    """One round: the 1-thread lifecycles and the raw inserts alternate every ``chunk`` lifecycles
    (the same number of transactions in each side's chunk), so both meet the same moments of a
    shared machine's I/O; then the ``threads``-thread run between two halves of its raw inserts."""
    raw = _Raw(folder / "raw.db", synchronous)
    backend = SQLiteBackend(_fresh(folder / "lifecycle-1.db"), synchronous=synchronous)
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    raw_single_s = single_s = single_cpu_s = 0.0
    try:
        for first in range(0, jobs, chunk):
            part = range(first, min(jobs, first + chunk))
            raw_single_s += raw.insert(len(part) * EVENTS_PER_JOB)
            start, cpu = time.perf_counter(), time.process_time()
            lifecycles(repository, part)
            single_s += time.perf_counter() - start
            single_cpu_s += time.process_time() - cpu
        backend.close()
        half = jobs * EVENTS_PER_JOB // 2
        raw_multi_s = raw.insert(half)
        multi_s, grouping = run_lifecycles(folder / f"lifecycle-{threads}.db", jobs, threads, synchronous)
        raw_multi_s += raw.insert(jobs * EVENTS_PER_JOB - half)
    finally:
        backend.close()
        raw.close()
    return Round(raw_single_s, single_s, raw_multi_s, multi_s, grouping, single_cpu_s)


def _before_round(source: Path, folder: Path, args: argparse.Namespace) -> Round:
    """One round of the ``--before`` tree's event store, in a process importing ``jobtape`` from ``source``."""
    argv = [sys.executable, __file__, "--jobs", str(args.jobs), "--threads", str(args.threads), "--synchronous", args.synchronous]
    argv += ["--chunk", str(args.chunk), "--data-dir", str(folder / "before"), "--one-round"]
    output = subprocess.run(argv, env=before_env(source), check=True, capture_output=True, text=True).stdout
    return Round(*(float(value) for value in output.split()))


def main(argv: list[str] | None = None) -> int:
    """Run both in rounds, print the medians, the ratios and PASS/FAIL; return 0 if any run of this tree passes, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="job lifecycles to run (default 2000)")
    parser.add_argument("--threads", type=int, default=8, help="threads for the concurrent run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (this tree's, then --before's); medians printed (default 3)")
    parser.add_argument("--chunk", type=int, default=25, help="lifecycles between two switches to the raw inserts (default 25)")
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
            print(*run_round(folder, args.jobs, args.threads, args.synchronous, args.chunk))
            return 0
        rounds: dict[str, list[Round]] = {"store": [], "before": []}
        for _ in range(args.rounds):
            rounds["store"].append(run_round(folder, args.jobs, args.threads, args.synchronous, args.chunk))
            if args.before is not None:
                rounds["before"].append(_before_round(args.before, folder, args))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lifecycles, *_profiled_repository(folder / "profile.db", args.synchronous), range(args.jobs))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    events = args.jobs * EVENTS_PER_JOB
    print(
        f"PRAGMA synchronous={args.synchronous} (journal_mode=WAL) on both sides; {events} appends per run,"
        f" raw inserts alternating every {args.chunk} lifecycles; median of {args.rounds} rounds"
    )
    passed_any = False
    for side, results in rounds.items():
        if not results:
            continue
        name = "event store" if side == "store" else f"before ({args.before})"
        for raw_column, column, label in ((0, 1, "1 thread"), (2, 3, f"{args.threads} threads")):
            ratios = [r[raw_column] / r[column] for r in results]
            ratio = statistics.median(ratios)
            seconds = statistics.median(r[column] for r in results)
            raw_rate = events / statistics.median(r[raw_column] for r in results)
            passed = ratio >= TARGET_RATIO
            passed_any |= passed and side == "store"
            if column == 3:
                extra = f", {statistics.median(r.grouping for r in results):.1f} appends per transaction"
            else:
                extra = f", CPU {1e6 * statistics.median(r.single_cpu_s for r in results) / events:.0f} us per append"
            print(
                f"{name}, {label}: {events / seconds:,.0f} events/s{extra}; raw sqlite3 beside it {raw_rate:,.0f} rows/s;"
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
