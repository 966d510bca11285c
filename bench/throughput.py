"""Benchmark: no-op jobs/s through real ``jobtape worker`` processes against Huey's real consumer.

Each run submits ``--jobs`` no-op jobs up front, then starts the real worker processes on
the same SQLite file and waits until every job finished:

- **jobtape**: ``--jobs`` ``noop`` jobs (``bench/noop_app.py``) created through
  ``JobRepository.create`` (the API's batch), then 1, 2 or 4 ``jobtape worker --app
  noop_app:app --concurrency C`` processes. The rate is read from the log: from the first
  ``job.claimed`` of the process that started last (so a process's start-up does not count
  against the others) to the last ``job.completed``, counting the completions in that
  window. Each process prints its claims won and lost when it exits; a lost claim is a
  ``job.claimed`` the version guard (or the fold) refused because another worker got there first.
  The log is then checked: every job completed exactly once, with exactly one claim won.
- **Huey**: the same number of no-op tasks (``bench/huey_noop.py``: ``SqliteHuey`` in WAL
  mode with the same ``PRAGMA synchronous``) enqueued up front, then ``huey_consumer -w W -k
  thread``. The rate is from the first dequeue to the empty queue (the bench samples the
  ``task`` table every 2 ms).

Both sides run at ``synchronous=FULL`` (the default of both: every commit fsynced) and
``NORMAL``, each at every concurrency listed, in ``--rounds`` interleaved rounds (jobtape,
Huey, jobtape, ...); the medians are printed, and the ratios of each side's best:

- FULL: best jobtape >= 2x best Huey; NORMAL: >= 1x;
- 2 and 4 worker processes: never below 1 process (same concurrency per process);
- lost claims < 1% of the claims won, in every multi-process run.

Each line also gives the CPU per job: user + system CPU of the worker processes (or of
Huey's consumer) from ``/proc/<pid>/stat``, between the first finished job and the drained
queue (start-up not counted), divided by the jobs finished meanwhile. ``--before SRC`` runs
each jobtape configuration a second time in every round with worker processes importing
another source tree's jobtape (``PYTHONPATH=SRC``): a before/after in one run.

Usage::

    python bench/throughput.py [--jobs 5000] [--rounds 3] [--synchronous FULL NORMAL]
        [--concurrency 1 4 8] [--processes 1 2 4] [--huey-workers 1 2 4] [--before SRC] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from loadgen import add_before_option

from jobtape import runtime
from jobtape.config import Settings

__all__ = ["Run", "main", "run_huey", "run_jobtape"]

BENCH = Path(__file__).resolve().parent
JOBTAPE = Path(sys.executable).with_name("jobtape")
HUEY_CONSUMER = Path(sys.executable).with_name("huey_consumer")
_CLAIMS = re.compile(r"worker (\S+): (\d+) job\(s\) finished; claims won (\d+), lost to another actor (\d+)")
POLL_S = 0.002


@dataclasses.dataclass
class Run:
    """One drain: ``jobs`` completed in ``seconds``; claims won and lost (jobtape only)."""

    jobs: int
    seconds: float
    won: int = 0
    lost: int = 0
    #: CPU seconds (user + system) of the worker processes (or the consumer) while they drained, and the jobs done meanwhile.
    cpu_s: float = 0.0
    cpu_jobs: int = 0

    @property
    def cpu_per_job_us(self) -> float:
        """CPU microseconds per job of the processes draining the queue (``nan`` when not sampled)."""
        return 1e6 * self.cpu_s / self.cpu_jobs if self.cpu_jobs else float("nan")

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def _fresh_dir(parent: Path, name: str) -> Path:
    folder = parent / name
    if folder.exists():
        for child in sorted(folder.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes used so far (``/proc/<pid>/stat``, Linux)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total * _TICK_S


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def run_jobtape(parent: Path, jobs: int, synchronous: str, processes: int, concurrency: int, before: Path | None = None) -> Run:
    """Submit ``jobs`` no-op jobs, drain them with ``processes`` real worker processes; check the log.

    ``before``: the workers run the jobtape of that source tree (``PYTHONPATH``) instead of this one.
    """
    data_dir = _fresh_dir(parent, "jobtape")
    settings = Settings(data_dir=data_dir, sqlite_synchronous="NORMAL")  # submitting is not timed
    sys.path.insert(0, str(BENCH))
    from noop_app import app

    repository = runtime.open_repository(settings, tables=app.tables)
    try:
        for _ in range(jobs):
            repository.create("noop", {}, actor="bench")
    finally:
        repository.store.close()
    env = _env(JOBTAPE_SQLITE_SYNCHRONOUS=synchronous, JOBTAPE_DATA_DIR=str(data_dir))
    if before is not None:  # the workers import the other tree's jobtape (noop_app from this bench folder)
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(before.resolve())])
    argv = [str(JOBTAPE), "worker", "--app", "noop_app:app", "--concurrency", str(concurrency), "--poll-interval", "0.1"]
    workers = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    database = data_dir / "jobtape.db"
    pids = [worker.pid for worker in workers]
    cpu_start: tuple[float, int] | None = None  # (CPU seconds, jobs finished) once the first job finished
    try:
        with sqlite3.connect(database) as conn:
            deadline = time.monotonic() + 600
            while left := conn.execute("SELECT COUNT(*) FROM jobs WHERE finished = 0").fetchone()[0]:
                if cpu_start is None and left < jobs:  # the drain began: start-up (imports) is not counted
                    cpu_start = (_cpu_s(pids), jobs - left)
                if time.monotonic() > deadline or any(worker.poll() is not None for worker in workers):
                    raise RuntimeError("the workers did not drain the queue")
                time.sleep(0.02)
            cpu_end = _cpu_s(pids)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=60)[1] for worker in workers]
    won = lost = 0
    for output in outputs:
        found = _CLAIMS.search(output)
        if found is None:
            raise RuntimeError(f"a worker did not report its claims:\n{output}")
        won += int(found[3])
        lost += int(found[4])
    with sqlite3.connect(database) as conn:
        counts = dict(conn.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall())
        if counts.get("job.completed") != jobs or counts.get("job.claimed") != jobs or won != jobs:
            raise RuntimeError(f"not every job ran exactly once: {counts}, claims won {won}")
        first_claims = conn.execute("SELECT actor, MIN(recorded_at) FROM events WHERE type = 'job.claimed' GROUP BY actor").fetchall()
        start = max(_parse_time(at) for _, at in first_claims)
        times = [_parse_time(at) for (at,) in conn.execute("SELECT recorded_at FROM events WHERE type = 'job.completed'")]
    end = max(times)
    done = sum(1 for at in times if at > start)
    cpu_s, cpu_jobs = (cpu_end - cpu_start[0], jobs - cpu_start[1]) if cpu_start is not None else (0.0, 0)
    return Run(done, (end - start).total_seconds(), won, lost, cpu_s, cpu_jobs)


def run_huey(parent: Path, jobs: int, synchronous: str, workers: int) -> Run:
    """Enqueue ``jobs`` no-op tasks, drain them with Huey's real consumer running ``workers`` threads."""
    folder = _fresh_dir(parent, "huey")
    database = folder / "huey.db"
    sys.path.insert(0, str(BENCH))
    from huey_noop import make_huey, register_noop

    huey = make_huey(str(database), "NORMAL")  # enqueueing is not timed
    task = register_noop(huey)
    for _ in range(jobs):
        task()
    huey.storage.close()
    env = _env(HUEY_DB=str(database), HUEY_SYNCHRONOUS=synchronous)
    argv = [str(HUEY_CONSUMER), "huey_noop.huey", "-w", str(workers), "-k", "thread", "-q", "-C", "-n"]
    consumer = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with sqlite3.connect(database) as conn:
            deadline = time.monotonic() + 600
            start = 0.0
            while (left := conn.execute("SELECT COUNT(*) FROM task").fetchone()[0]) >= jobs:
                if time.monotonic() > deadline or consumer.poll() is not None:
                    raise RuntimeError("the consumer did not start")
                time.sleep(POLL_S)
            start, at_start = time.perf_counter(), left
            cpu_start = _cpu_s([consumer.pid])
            while left:
                if time.monotonic() > deadline or consumer.poll() is not None:
                    raise RuntimeError("the consumer did not drain the queue")
                time.sleep(POLL_S)
                left = conn.execute("SELECT COUNT(*) FROM task").fetchone()[0]
            end = time.perf_counter()
            cpu_s = _cpu_s([consumer.pid]) - cpu_start
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.communicate(timeout=60)
    return Run(at_start, end - start, cpu_s=cpu_s, cpu_jobs=at_start)


def _median(runs: Sequence[Run]) -> float:
    return statistics.median(run.rate for run in runs)


def _cpu_median(runs: Sequence[Run]) -> float:
    return statistics.median(run.cpu_per_job_us for run in runs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 if every goal passed, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synchronous", nargs="+", default=["FULL", "NORMAL"], choices=["FULL", "NORMAL"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="jobs at once per jobtape worker process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="jobtape worker processes (at the best concurrency)")
    parser.add_argument("--huey-workers", type=int, nargs="+", default=[1, 2, 4], help="huey_consumer -w values")
    parser.add_argument("--data-dir", type=Path, default=None)
    add_before_option(parser, " (its worker processes, on the same jobs)")
    args = parser.parse_args(argv)
    parent = args.data_dir or Path(tempfile.mkdtemp(prefix="jobtape-throughput-"))
    passed = True
    print(f"{args.jobs} no-op jobs per run, median of {args.rounds} interleaved rounds; data in {parent}")
    for synchronous in args.synchronous:
        ours: dict[tuple[int, int], list[Run]] = {}
        previous: dict[tuple[int, int], list[Run]] = {}  # --before
        theirs: dict[int, list[Run]] = {}
        configs = [(1, concurrency) for concurrency in args.concurrency]
        configs += [(p, c) for p in args.processes if p != 1 for c in args.concurrency]
        for _ in range(args.rounds):
            for index in range(max(len(configs), len(args.huey_workers))):
                if index < len(configs):
                    processes, concurrency = configs[index]
                    ours.setdefault(configs[index], []).append(run_jobtape(parent, args.jobs, synchronous, processes, concurrency))
                    if args.before is not None:
                        run = run_jobtape(parent, args.jobs, synchronous, processes, concurrency, args.before)
                        previous.setdefault(configs[index], []).append(run)
                if index < len(args.huey_workers):
                    workers = args.huey_workers[index]
                    theirs.setdefault(workers, []).append(run_huey(parent, args.jobs, synchronous, workers))
        print(f"\nsynchronous={synchronous}")
        for name, side in (("jobtape", ours), ("before", previous)):
            for (processes, concurrency), runs in sorted(side.items()):
                won, lost = sum(r.won for r in runs), sum(r.lost for r in runs)
                print(
                    f"  {name} {processes} process(es) x concurrency {concurrency}: {_median(runs):8,.0f} jobs/s,"
                    f" CPU {_cpu_median(runs):,.0f} us/job  (rounds: {', '.join(f'{r.rate:,.0f}' for r in runs)};"
                    f" lost claims {lost}/{won} = {100 * lost / max(won, 1):.2f}%)"
                )
        for workers, runs in sorted(theirs.items()):
            print(
                f"  huey_consumer -w {workers}: {_median(runs):8,.0f} tasks/s, CPU {_cpu_median(runs):,.0f} us/task"
                f"  (rounds: {', '.join(f'{r.rate:,.0f}' for r in runs)})"
            )
        best_theirs = max(theirs, key=lambda workers: _median(theirs[workers]))
        if previous:
            best_before = max(previous, key=lambda config: _median(previous[config]))
            print(
                f"  before: best ({best_before[0]} x {best_before[1]}) / best Huey (-w {best_theirs}):"
                f" ratio {_median(previous[best_before]) / _median(theirs[best_theirs]):.2f}"
            )
        best_ours = max(ours, key=lambda config: _median(ours[config]))
        ratio = _median(ours[best_ours]) / _median(theirs[best_theirs])
        goal = 2.0 if synchronous == "FULL" else 1.0
        ok = ratio >= goal
        passed &= ok
        print(
            f"  best jobtape ({best_ours[0]} x {best_ours[1]}) / best Huey (-w {best_theirs}): ratio {ratio:.2f}"
            f" (goal >= {goal:g}) {'PASS' if ok else 'FAIL'}"
        )
        concurrency = max(args.concurrency, key=lambda c: _median(ours[(1, c)]))
        one = _median(ours[(1, concurrency)])
        for processes in sorted(p for p in args.processes if p != 1):
            runs = ours[(processes, concurrency)]
            scale = _median(runs) / one
            won, lost = sum(r.won for r in runs), sum(r.lost for r in runs)
            share = 100 * lost / max(won, 1)
            ok = scale >= 1.0 and share < 1.0
            passed &= ok
            print(
                f"  {processes} processes vs 1 (concurrency {concurrency} each): ratio {scale:.2f} (goal >= 1),"
                f" lost claims {share:.2f}% (goal < 1%) {'PASS' if ok else 'FAIL'}"
            )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
