"""Benchmark: the SQL floor of an append and of a worker's job (what no Python could beat).

The appends and no-op throughput goals of issue 12 compare the event store with a raw
single-row insert (``bench/lifecycle.py``) and with Huey's consumer (``bench/throughput.py``).
This bench asks how close the store could come if its Python cost nothing: it records the
exact batches of SQL the real store writes, then replays them from a list with plain
``sqlite3`` (one ``execute`` per statement, as the raw baseline makes) on a fresh file with
the same schema and PRAGMAs. The replay is the floor of the design: the guarded event insert
with its triggers, ``log_head``, the ``jobs`` row and its indexes, ``queue_counts``, each
append one transaction. Whatever the Python does, an append cannot cost less.

Two floors, each measured beside its baseline in the same run:

- **Appends** (``lifecycle.py``'s mix: a create and seven one-event appends per job): each
  recorded batch replayed as ``BEGIN IMMEDIATE; ...; COMMIT``, alternating every ``--chunk``
  lifecycles with the raw single-row inserts of ``lifecycle.py`` (as many transactions).
  Printed: the replay's rate against the raw rate, the ratio the store could reach at best;
  and the same for the batches' event inserts alone (no projection rows, no ``log_head``):
  the floor of an append to this ``events`` table (its two indexes, ``AUTOINCREMENT``, the
  guard triggers, the hash columns) if nothing else were written.
- **A worker's job** (create, then claim and completion): the creates replayed untimed, then
  each job's claim and completion batches replayed (a) one transaction per batch (a worker
  without group commit) and (b) every batch in one transaction (the best group commit could
  ever do: the statements alone, no commit cost). With ``--huey`` (needs ``huey``, in the
  ``test`` extra) Huey's real consumer (``-w 1``, as ``throughput.py`` runs it) drains as many
  tasks in the same run, and the ratio of each floor to its rate is printed.

Usage::

    python bench/sql_floor.py [--jobs 1000] [--rounds 3] [--chunk 25] [--synchronous FULL|NORMAL] [--huey] [--breakdown]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lifecycle import EVENTS_PER_JOB, TABLES, _fresh, _Raw, lifecycles

from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SYNCHRONOUS_MODES, SQLiteBackend, pragmas
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections.repository import JobRepository

__all__ = ["Recording", "events_alone", "main", "record_lifecycles", "record_worker_jobs", "replay"]

Batch = list[Statement]
_WORKER = "bench:1:1"


class Recording(SQLiteBackend):
    """The SQLite backend, keeping a copy of every batch it commits (in commit order, one thread)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[Batch] = []

    def execute_built(self, build: Callable[[], Sequence[Statement]]) -> list[list[tuple[Any, ...]]]:
        """Run the batch as the backend does and keep its statements once it committed."""
        built: list[Batch] = []

        def keep() -> Sequence[Statement]:
            statements = list(build())
            built.append(statements)
            return statements

        results = super().execute_built(keep)
        self.batches.extend(built)
        return results


def _recording_repository(path: Path, synchronous: str) -> tuple[Recording, JobRepository]:
    backend = Recording(_fresh(path), synchronous=synchronous)
    backend.migrate(TABLES.migrations)
    return backend, JobRepository(EventStore(backend), projections=TABLES.projections)


def record_lifecycles(path: Path, jobs: int, synchronous: str) -> list[Batch]:
    """The batches of ``jobs`` lifecycles (``lifecycle.py``'s: 8 batches per job), in commit order."""
    backend, repository = _recording_repository(path, synchronous)
    try:
        lifecycles(repository, range(jobs))
    finally:
        backend.close()
    assert len(backend.batches) == jobs * EVENTS_PER_JOB, len(backend.batches)
    return backend.batches


def record_worker_jobs(path: Path, jobs: int, synchronous: str) -> tuple[list[Batch], list[Batch]]:
    """``(creates, claims and completions)``: ``jobs`` creates, then each job's claim and completion batches."""
    backend, repository = _recording_repository(path, synchronous)
    try:
        states = [
            repository.create("ingest", {"sourceType": "upload", "storageKey": f"ingest-uploads/{n}/a.wav"}).state for n in range(jobs)
        ]
        creates = list(backend.batches)
        for created in states:
            claimed = repository.append(created.job_id, [ev.JobClaimed(worker_id=_WORKER)], created, actor=_WORKER).state
            repository.append(claimed.job_id, [ev.JobCompleted(result={})], claimed, actor=_WORKER)
    finally:
        backend.close()
    return creates, backend.batches[len(creates) :]


def _replay_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """A plain ``sqlite3`` connection on a fresh file with the store's schema and PRAGMAs."""
    backend = SQLiteBackend(_fresh(path), synchronous=synchronous)
    backend.migrate(TABLES.migrations)
    backend.close()
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in pragmas(synchronous):
        connection.execute(pragma)
    return connection


def replay(
    connection: sqlite3.Connection, batches: Sequence[Batch], one_transaction: bool = False, times: dict[str, float] | None = None
) -> float:
    """Run ``batches`` on ``connection``, one transaction each (or all in one); return the elapsed seconds.

    With ``times``, each statement is timed apart and its seconds added under its SQL text
    (``BEGIN`` and ``COMMIT`` under their own): the breakdown of ``--breakdown``.
    """
    if times is not None:
        return _replay_timed(connection, batches, times)
    execute = connection.execute
    start = time.perf_counter()
    if one_transaction:
        execute("BEGIN IMMEDIATE")
    for batch in batches:
        if not one_transaction:
            execute("BEGIN IMMEDIATE")
        for sql, params in batch:
            execute(sql, params).fetchall()
        if not one_transaction:
            execute("COMMIT")
    if one_transaction:
        execute("COMMIT")
    return time.perf_counter() - start


def _replay_timed(connection: sqlite3.Connection, batches: Sequence[Batch], times: dict[str, float]) -> float:
    execute, clock = connection.execute, time.perf_counter
    start = clock()
    for batch in batches:
        for sql, params in (Statement("BEGIN IMMEDIATE"), *batch, Statement("COMMIT")):
            before = clock()
            execute(sql, params).fetchall()
            times[sql] = times.get(sql, 0.0) + clock() - before
    return clock() - start


def _print_breakdown(folder: Path, batches: list[Batch], synchronous: str) -> None:
    """Each statement's share of one more replay, one transaction per batch."""
    connection = _replay_connection(folder / "breakdown.db", synchronous)
    times: dict[str, float] = {}
    try:
        total = replay(connection, batches, times=times)
    finally:
        connection.close()
    print(f"where the appends floor goes ({1e6 * total / len(batches):.0f} us per append, summed per statement text):")
    for sql, seconds in sorted(times.items(), key=lambda item: -item[1]):
        print(f"  {1e6 * seconds / len(batches):6.1f} us  {' '.join(sql.split())[:110]}")


def _appends_round(folder: Path, batches: list[Batch], synchronous: str, chunk: int) -> tuple[float, float, float]:
    """``(replay seconds, event inserts alone seconds, raw seconds)`` for the same number of transactions,
    alternating every ``chunk`` lifecycles."""
    connection = _replay_connection(folder / "replay.db", synchronous)
    alone = _replay_connection(folder / "events-alone.db", synchronous)
    raw = _Raw(folder / "raw.db", synchronous)
    replay_s = alone_s = raw_s = 0.0
    step = chunk * EVENTS_PER_JOB
    try:
        for first in range(0, len(batches), step):
            part = batches[first : first + step]
            raw_s += raw.insert(len(part))
            replay_s += replay(connection, part)
            alone_s += replay(alone, [events_alone(batch) for batch in part])
    finally:
        connection.close()
        alone.close()
        raw.close()
    return replay_s, alone_s, raw_s


def events_alone(batch: Batch) -> Batch:
    """The batch's event inserts only (no projection rows, no ``log_head``): the append's floor on this ``events`` table."""
    return [statement for statement in batch if statement.sql.lstrip().startswith("INSERT INTO events ")]


def _worker_round(folder: Path, creates: list[Batch], jobs_batches: list[Batch], synchronous: str) -> tuple[float, float]:
    """``(seconds one transaction per batch, seconds all in one transaction)`` for the claims and completions."""
    seconds = []
    for one in (False, True):
        connection = _replay_connection(folder / f"worker-{one}.db", synchronous)
        try:
            replay(connection, creates, one_transaction=True)
            seconds.append(replay(connection, jobs_batches, one_transaction=one))
        finally:
            connection.close()
    return seconds[0], seconds[1]


def _huey_rate(folder: Path, jobs: int, synchronous: str) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import run_huey

    return run_huey(folder, jobs, synchronous, 1).rate


def main(argv: list[str] | None = None) -> int:
    """Record, replay in rounds, print the medians and ratios; always returns 0 (a floor has no goal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="job lifecycles recorded (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians printed (default 3)")
    parser.add_argument("--chunk", type=int, default=25, help="lifecycles between two switches to the raw inserts (default 25)")
    parser.add_argument("--synchronous", choices=SYNCHRONOUS_MODES, default="FULL", help="PRAGMA synchronous (default FULL)")
    parser.add_argument("--breakdown", action="store_true", help="also print each statement's share of the appends floor")
    parser.add_argument("--huey", action="store_true", help="also drain as many no-op tasks with Huey's consumer (-w 1) per round")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobtape-floor-") as temp:
        folder = Path(temp)
        batches = record_lifecycles(folder / "record.db", args.jobs, args.synchronous)
        creates, jobs_batches = record_worker_jobs(folder / "record-worker.db", args.jobs, args.synchronous)
        appends: list[tuple[float, float, float]] = []
        worker: list[tuple[float, float]] = []
        huey: list[float] = []
        for _ in range(args.rounds):
            appends.append(_appends_round(folder, batches, args.synchronous, args.chunk))
            worker.append(_worker_round(folder, creates, jobs_batches, args.synchronous))
            if args.huey:
                huey.append(_huey_rate(folder, args.jobs, args.synchronous))
        if args.breakdown:
            _print_breakdown(folder, batches, args.synchronous)
    statements = sum(len(batch) for batch in batches) / len(batches)
    events = len(batches)
    ratios = [raw_s / replay_s for replay_s, _, raw_s in appends]
    alone_ratios = [raw_s / alone_s for _, alone_s, raw_s in appends]
    replay_rate = events / statistics.median(r for r, _, _ in appends)
    alone_rate = events / statistics.median(a for _, a, _ in appends)
    raw_rate = events / statistics.median(r for _, _, r in appends)
    print(
        f"PRAGMA synchronous={args.synchronous} (journal_mode=WAL); {args.jobs} lifecycles ({events} batches,"
        f" {statements:.1f} statements per batch); median of {args.rounds} rounds"
    )
    print(
        f"appends floor (the store's batches replayed from a list, one transaction each): {replay_rate:,.0f} appends/s,"
        f" {1e6 / replay_rate:.0f} us per append; raw sqlite3 beside it {raw_rate:,.0f} rows/s;"
        f" best ratio any Python could reach: {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
    )
    print(
        f"the event inserts alone (no projection, no log_head; one transaction each): {alone_rate:,.0f} appends/s,"
        f" {1e6 / alone_rate:.0f} us per append; ratio to raw {statistics.median(alone_ratios):.2f}"
        f" (rounds: {', '.join(f'{x:.2f}' for x in alone_ratios)})"
    )
    per_batch = args.jobs / statistics.median(s for s, _ in worker)
    one_txn = args.jobs / statistics.median(s for _, s in worker)
    line = (
        f"worker floor (claim + completion batches replayed): {per_batch:,.0f} jobs/s one transaction per batch,"
        f" {one_txn:,.0f} jobs/s all in one transaction ({1e6 / one_txn:.0f} us of statements per job)"
    )
    if huey:
        rate = statistics.median(huey)
        line += (
            f"; Huey's consumer (-w 1) in the same rounds {rate:,.0f} tasks/s: floor / Huey {per_batch / rate:.2f}"
            f" (one transaction per batch), {one_txn / rate:.2f} (one transaction)"
        )
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
