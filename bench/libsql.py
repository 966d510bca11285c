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
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import libsql_client
import msgspec

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


class Drain(msgspec.Struct, frozen=True, kw_only=True):
    """One drain's figures, read from the log and the workers' exit lines.

    Attributes:
        rate: jobs/s from the first ``job.claimed`` to the last ``job.completed`` (the goal's figure).
        steady: jobs/s summed over the workers, each from its own first claim to its own last
            completion (excludes the drain tail, when some workers are idle while others end
            their last job, and the ramp at the start).
        per_worker: jobs completed by each worker, most first.
        pickup_ms: mean delay from a job's ``job.created`` to its ``job.claimed`` over the jobs
            claimed by a worker that was idle when the job was created (the dispatch latency).
        gap_ms: mean delay from a worker's ``job.completed`` to its next ``job.claimed``.
        before_child_ms: mean delay from ``job.claimed`` to ``job.child_started``.
        child_ms: mean delay from ``job.child_started`` to ``job.child_exited`` (the child's own time).
        after_child_ms: mean delay from ``job.child_exited`` to ``job.completed``.
        won: claims won, summed over the workers.
        lost: claims lost to another worker, summed over the workers.
        worker_cpu_ms: CPU time per job of the worker processes (their own and their reaped
            children's, user + system) from the first submit to the last completion.
        sqld_cpu_ms: sqld's CPU time per job over the same span.
        spans_s: each worker's first claim and last completion, in seconds from the first
            claim of all (the drain tail: how long the first worker to finish stood idle).
    """

    rate: float
    steady: float
    per_worker: list[int]
    pickup_ms: float
    gap_ms: float
    before_child_ms: float
    child_ms: float
    after_child_ms: float
    won: int
    lost: int
    worker_cpu_ms: float
    sqld_cpu_ms: float
    spans_s: list[tuple[float, float]]


_EXIT_LINE = re.compile(r"claims won (\d+), lost to another actor (\d+)")


def _mean_ms(values: Sequence[dt.timedelta]) -> float:
    return 1000 * statistics.fmean(v.total_seconds() for v in values) if values else float("nan")


def _cpu_s(pid: int) -> float:
    """CPU seconds of a live process and of its reaped children (``/proc/<pid>/stat`` utime + stime + cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _analyse(repository: JobRepository, job_ids: Sequence[str], logs: Sequence[Path], cpu_s: tuple[float, float]) -> Drain:
    """Read the drained jobs' streams and the workers' logs; see :class:`Drain` (``cpu_s``: the
    workers' and sqld's CPU seconds over the drain)."""
    at: dict[str, dict[str, dt.datetime]] = {}
    owner: dict[str, str] = {}
    for job_id in job_ids:
        times: dict[str, dt.datetime] = {}
        for recorded in repository.store.read_stream(job_id):
            times.setdefault(recorded.type, recorded.recorded_at)
            if recorded.type == "job.claimed":
                owner[job_id] = recorded.actor
        at[job_id] = times
    claimed = [t["job.claimed"] for t in at.values()]
    completed = [t["job.completed"] for t in at.values()]
    by_worker: dict[str, list[str]] = {}
    for job_id in sorted(job_ids, key=lambda j: at[j]["job.claimed"]):
        by_worker.setdefault(owner[job_id], []).append(job_id)
    steady = 0.0
    gaps: list[dt.timedelta] = []
    pickups: list[dt.timedelta] = []
    for jobs in by_worker.values():
        span = (at[jobs[-1]]["job.completed"] - at[jobs[0]]["job.claimed"]).total_seconds()
        steady += len(jobs) / span
        free_since: dt.datetime | None = None  # the worker is idle from here (a 1-slot worker)
        for job_id in jobs:
            times = at[job_id]
            if free_since is not None:
                gaps.append(times["job.claimed"] - free_since)
            if free_since is None or times["job.created"] >= free_since:
                pickups.append(times["job.claimed"] - times["job.created"])
            free_since = times["job.completed"]
    start = min(claimed)
    spans = sorted(
        ((at[jobs[0]]["job.claimed"] - start).total_seconds(), (at[jobs[-1]]["job.completed"] - start).total_seconds())
        for jobs in by_worker.values()
    )
    won = lost = 0
    for log in logs:
        for match in _EXIT_LINE.finditer(log.read_text()):
            won += int(match.group(1))
            lost += int(match.group(2))
    values = at.values()
    return Drain(
        rate=len(job_ids) / (max(completed) - min(claimed)).total_seconds(),
        steady=steady,
        per_worker=sorted((len(jobs) for jobs in by_worker.values()), reverse=True),
        pickup_ms=_mean_ms(pickups),
        gap_ms=_mean_ms(gaps),
        before_child_ms=_mean_ms([t["job.child_started"] - t["job.claimed"] for t in values]),
        child_ms=_mean_ms([t["job.child_exited"] - t["job.child_started"] for t in values]),
        after_child_ms=_mean_ms([t["job.completed"] - t["job.child_exited"] for t in values]),
        won=won,
        lost=lost,
        worker_cpu_ms=1000 * cpu_s[0] / len(job_ids),
        sqld_cpu_ms=1000 * cpu_s[1] / len(job_ids),
        spans_s=spans,
    )


def _drain(url: str, sqld_pid: int, processes: int, jobs: int, seconds: float, log_dir: Path, tree: Path | None = None) -> Drain:
    """Submit ``jobs`` sleep jobs, drain them with ``processes`` worker processes (importing
    ``jobtape`` from ``tree``, default this checkout); return the figures read from the log."""
    repository = _repository(url)
    try:
        env = {
            **os.environ,
            "JOB_STORE_BACKEND": "libsql",
            "TURSO_DATABASE_URL": url,
            "JOBTAPE_DATA_DIR": str(log_dir),
            "JOBTAPE_LOG_KEY": _LOG_KEY,
            "PYTHONPATH": os.pathsep.join([str(tree or ROOT), str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "jobtape", "worker", "--app", _STARTER, "--poll-interval", "0.05"]
        logs = [log_dir / f"worker-{processes}-{n}-{time.monotonic_ns()}.log" for n in range(processes)]
        # cwd: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH's tree.
        workers = [subprocess.Popen(command, env=env, cwd=log_dir, stdout=subprocess.DEVNULL, stderr=log.open("ab")) for log in logs]
        # Every process polls before the first job exists, so the figure is not their start-up time.
        ready_by = time.monotonic() + 60
        while not all("polling" in log.read_text() for log in logs):
            if time.monotonic() > ready_by or any(worker.poll() is not None for worker in workers):
                raise RuntimeError(f"a worker did not start; logs in {log_dir}")
            time.sleep(0.05)  # a bench waiting for its processes, not a test
        pids = [worker.pid for worker in workers]
        cpu_before = (sum(_cpu_s(pid) for pid in pids), _cpu_s(sqld_pid))
        job_ids = [repository.create("sleep", {"seconds": seconds}).state.job_id for _ in range(jobs)]
        cpu_after = cpu_before
        try:
            deadline = time.monotonic() + 60 + jobs * seconds * 3
            unfinished = list(job_ids)
            while time.monotonic() < deadline:
                # Only up to the first unfinished job (they finish about in order): reading all
                # of them every time cost sqld more CPU than the workers' own appends.
                while unfinished and repository.get(unfinished[0]).status in {"complete", "failed", "cancelled"}:
                    unfinished.pop(0)
                if not unfinished:
                    cpu_after = (sum(_cpu_s(pid) for pid in pids), _cpu_s(sqld_pid))
                    break
                time.sleep(0.2)  # a bench polling its own progress, not a test
            else:
                raise RuntimeError(f"{processes} worker(s) did not finish {jobs} jobs in time; logs in {log_dir}")
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        failed = [job_id for job_id in job_ids if repository.get(job_id).status != "complete"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not complete, e.g. {failed[0]}; logs in {log_dir}")
        return _analyse(repository, job_ids, logs, (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]))
    finally:
        repository.store.close()


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _print_drain(label: str, drain: Drain) -> None:
    print(
        f"    {label}: {drain.rate:.2f} jobs/s (steady {drain.steady:.2f}); jobs per worker {drain.per_worker};"
        f" claims won {drain.won} lost {drain.lost}; ms: created->claimed (idle worker) {drain.pickup_ms:.1f},"
        f" completed->next claimed {drain.gap_ms:.1f}, claimed->child {drain.before_child_ms:.1f},"
        f" child {drain.child_ms:.1f}, child exited->completed {drain.after_child_ms:.1f};"
        f" CPU per job: workers {drain.worker_cpu_ms:.1f}, sqld {drain.sqld_cpu_ms:.1f};"
        f" workers' first claim-last completion (s) {', '.join(f'{a:.2f}-{b:.2f}' for a, b in drain.spans_s)}",
        flush=True,
    )


def _workers(url: str, sqld_pid: int, args: argparse.Namespace, temp: Path) -> bool:
    """The worker-process measure, for every tree in turn in every round; return whether the goal passed for the first tree."""
    trees = [(name, Path(path).resolve()) for name, _, path in (tree.partition("=") for tree in args.trees or [f"this={ROOT}"])]
    ones: dict[str, list[Drain]] = {name: [] for name, _ in trees}
    fours: dict[str, list[Drain]] = {name: [] for name, _ in trees}
    for round_ in range(args.rounds):
        for name, tree in trees:
            ones[name].append(_drain(url, sqld_pid, 1, args.jobs, args.seconds, temp, tree))
            fours[name].append(_drain(url, sqld_pid, 4, args.jobs, args.seconds, temp, tree))
            print(f"  round {round_ + 1}, {name}:", flush=True)
            _print_drain("1 process", ones[name][-1])
            _print_drain("4 processes", fours[name][-1])
    passed = True
    for index, (name, _) in enumerate(trees):
        one, four = _median([d.rate for d in ones[name]]), _median([d.rate for d in fours[name]])
        one_steady, four_steady = _median([d.steady for d in ones[name]]), _median([d.steady for d in fours[name]])
        scale = four / one
        if index == 0:
            passed = scale >= SCALE_TARGET
        print(f"{name}: worker processes on one sqld, {args.jobs} jobs of sleep {args.seconds:g} s: 1 process {one:.2f} jobs/s (baseline)")
        print(
            f"{name}: 4 processes: {four:.2f} jobs/s; ratio {scale:.2f}; TARGET >= {SCALE_TARGET}: {'PASS' if scale >= SCALE_TARGET else 'FAIL'}"
        )
        print(
            f"{name}: steady state (each worker from its first claim to its last completion, summed):"
            f" 1 process {one_steady:.2f}, 4 processes {four_steady:.2f} jobs/s; ratio {four_steady / one_steady:.2f}"
        )
    return passed


def main(argv: list[str] | None = None) -> int:
    """Run both measures, print rates, ratios and PASS/FAIL; return 0 when every goal passes, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=150, help="job lifecycles (8 appends each) per round (default 150)")
    parser.add_argument("--jobs", type=int, default=80, help="sleep jobs per worker round (default 80)")
    parser.add_argument("--seconds", type=float, default=0.2, help="how long each job's child sleeps (default 0.2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (default 3)")
    parser.add_argument("--skip-workers", action="store_true", help="measure appends only")
    parser.add_argument("--skip-appends", action="store_true", help="measure worker processes only")
    parser.add_argument(
        "--trees",
        nargs="+",
        metavar="NAME=PATH",
        help="worker processes import jobtape from each tree in turn, alternated in every round (default: this checkout)",
    )
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
            for _ in range(0 if args.skip_appends else args.rounds):
                raw_rates.append(run_raw(server.ws_url, args.lifecycles * EVENTS_PER_JOB))
                store_rates.append(run_lifecycles(server.ws_url, args.lifecycles))
            if not args.skip_appends:
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
                assert server.process is not None  # started above
                passed &= _workers(server.ws_url, server.process.pid, args, Path(temp))
        finally:
            server.stop()
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
