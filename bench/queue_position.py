"""Benchmark: queue position of the last pending job, 1,000,000 pending jobs against 10,000.

The goal (issue 12): answering for the last of ``--large`` pending jobs costs at most 2x
answering for the last of ``--small`` (an order-statistics structure, ``queue_counts``:
:mod:`jobtape.projections.queue`), where the old answer, ``1 + COUNT(*)`` of the pending
jobs with a smaller ``created_position`` over an index range, grows linearly. Both are
timed on the same two logs and printed with their ratio; PASS when the new one is <= 2.

How the logs are built (fast, and the same tables an append writes): each job is one
``job.created`` event inserted with the store's one event statement
(:data:`jobtape.eventlog.stored.INSERT_EVENT`, with its hash chain) and its ``jobs`` row
written by the ``jobs`` projection's own statement (:func:`jobtape.projections.jobs.upsert`
of the folded state), 5,000 jobs per batch through the backend's ``execute_batch``.
``queue_counts`` is then filled in one statement from ``jobs``
(:data:`jobtape.projections.queue.FILL_FROM_JOBS`, the fill migration ``0010_queue_counts``
runs on an existing data dir), which gives the same rows as the per-append statements (``tests/integration/test_queue_position.py`` checks that after
every step), at a fraction of the cost. ``--per-append`` writes ``queue_counts`` through
the per-append statements instead (slower to build; the answer and its timing are the same).

Each answer is timed as the call a poll makes (``JobRepository.queue_position``), the
median of ``--repeats`` calls (the old COUNT: fewer on the large log, where each call takes
tens of milliseconds). Both logs are checked to answer exactly ``n`` for the last job, by
both queries.

Usage::

    python bench/queue_position.py [--small 10000] [--large 1000000] [--repeats 2000] [--data-dir DIR] [--per-append]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jobtape import clock
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, stored
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import jobs, queue, registry
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository

__all__ = ["build_log", "main"]

TARGET_RATIO = 2.0
_BATCH = 5000
#: The query queue_counts replaces (main before it), for reference.
_COUNT = (
    "SELECT 1 + (SELECT COUNT(*) FROM jobs AS other WHERE other.status = 'pending'"
    " AND other.created_position < me.created_position)"
    " FROM jobs AS me WHERE me.job_id = ? AND me.status = 'pending'"
)


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def build_log(path: Path, count: int, *, per_append: bool = False) -> JobRepository:
    """A migrated log at ``path`` holding ``count`` pending ``noop`` jobs; returns a repository over it.

    The id of the ``i``-th job (0-based) is ``i`` as 32 hex digits; the last is ``count - 1``.
    """
    backend = SQLiteBackend(_fresh(path), synchronous="NORMAL")
    backend.migrate(registry.ENGINE_TABLES.migrations)
    store = EventStore(backend)
    created = ev.JobCreated(job_type="noop", params={})
    type_, data = ev.encode_event(created)
    at = clock.utcnow()
    stamp = clock.format_timestamp(at)
    for start in range(0, count, _BATCH):
        inserts: list[stored.StoredEvent] = []
        rows: list[Statement] = []
        for index in range(start, min(start + _BATCH, count)):
            job_id = f"{index:032x}"
            digest = hashing.event_hash(hashing.genesis_hash(job_id), job_id, 1, type_, data, "bench", stamp)
            inserts.append(
                stored.StoredEvent(
                    position=0, job_id=job_id, version=1, type=type_, data=data, actor="bench", recorded_at=stamp, hash=digest
                )
            )
            state = job_state.apply(None, created, job_id=job_id, version=1, recorded_at=at)
            rows.append(jobs.upsert(state))
            if per_append:
                rows += queue.statements(None, state)
        store.import_events(inserts, rows)  # chained at the log's next positions (as an import)
    if not per_append:
        backend.execute_batch([Statement(queue.FILL_FROM_JOBS)])
    return JobRepository(store)


def _median_s(call: Callable[[], object], repeats: int) -> float:
    call()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _old_count(repository: JobRepository, job_id: str) -> int | None:
    rows = repository.store.backend.query(_COUNT, [job_id])
    return int(rows[0][0]) if rows else None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when the ratio is within :data:`TARGET_RATIO`, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="pending jobs in the small log (default 10000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="pending jobs in the large log (default 1000000)")
    parser.add_argument("--repeats", type=int, default=2000, help="timed answers per log (default 2000)")
    parser.add_argument("--count-repeats", type=int, default=21, help="timed answers of the old COUNT on the large log (default 21)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for the SQLite files (default: a temp dir)")
    parser.add_argument("--per-append", action="store_true", help="write queue_counts with the per-append statements")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-") as scratch:
        folder = args.data_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        figures: dict[int, tuple[float, float]] = {}
        for count in (args.small, args.large):
            started = time.perf_counter()
            repository = build_log(folder / f"queue-{count}.db", count, per_append=args.per_append)
            built_s = time.perf_counter() - started
            try:
                last = f"{count - 1:032x}"
                assert repository.queue_position(last) == count == _old_count(repository, last), "the answers are not exact"
                new = _median_s(functools.partial(repository.queue_position, last), args.repeats)
                old_repeats = args.repeats if count == args.small else args.count_repeats
                old = _median_s(functools.partial(_old_count, repository, last), old_repeats)
            finally:
                repository.store.close()
            figures[count] = (new, old)
            print(f"{count:>9,} pending jobs (built in {built_s:.1f} s): queue_counts {new * 1e3:.3f} ms, old COUNT {old * 1e3:.3f} ms")
    (new_small, old_small), (new_large, old_large) = figures[args.small], figures[args.large]
    ratio, old_ratio = new_large / new_small, old_large / old_small
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(f"queue position, last of {args.large:,} vs last of {args.small:,}: ratio {ratio:.2f} (goal <= {TARGET_RATIO:g}) {verdict}")
    print(f"reference, the old 1 + COUNT(*) over an index range: ratio {old_ratio:.1f}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
