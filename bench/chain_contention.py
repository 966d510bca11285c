"""Benchmark: several processes appending to one SQLite log, and what the keyed chain costs them.

Every append names its global position (the log's head + 1, :mod:`jobtape.eventlog.store`); a
process whose head is stale (another process appended since its last append) has its batch
refused by ``events_chain_guard`` and builds it again from the head read back. This runs
``--processes`` processes, each doing ``--jobs`` job lifecycles (1 create + 7 appends, as
bench/lifecycle.py) on one file with one log key, and prints the appends, the rebuilt batches
(lost-append retries) per append, the throughput, and whether the keyed verify of the result
is clean.

Usage::

    python bench/chain_contention.py [--processes 4] [--jobs 200] [--synchronous FULL|NORMAL] [--pause SECONDS]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

KEY = "bench-log-key-" + "x" * 32


def _settings(settings_class: Any, data_dir: Path, **values: Any) -> Any:
    """Settings with the bench's log key (the code before the keyed chain, for a baseline, has no such field)."""
    if "log_key" in {f.name for f in dataclasses.fields(settings_class)}:
        values["log_key"] = KEY
    return settings_class(data_dir=data_dir, **values)


def _child(data_dir: Path, jobs: int, synchronous: str, pause_s: float) -> None:
    from jobtape import runtime
    from jobtape.config import Settings
    from jobtape.defaults import default_tables
    from jobtape.eventlog import events as ev

    settings = _settings(Settings, data_dir, sqlite_synchronous=synchronous)
    repository = runtime.open_repository(settings, tables=default_tables())
    appends = 0
    started = time.perf_counter()
    for index in range(jobs):
        state = repository.create("ingest", {"sourceType": "upload", "storageKey": f"u/{os.getpid()}-{index}.wav"}).state
        appends += 1
        events: list[ev.Event] = [ev.JobClaimed(worker_id="bench:1:1")]
        events += [ev.JobProgress(percent=p) for p in (20, 40, 60, 80, 100)]
        events.append(ev.JobCompleted(result={}))
        for event in events:
            time.sleep(pause_s)  # the job's work between two events (a worker's appends are spread out)
            state = repository.append(state.job_id, [event], state, actor="bench:1:1").state
            appends += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"appends": appends, "retries": getattr(repository.store, "chain_retries", 0), "seconds": elapsed}))
    repository.store.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0 when the keyed verify of the result is clean."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=200, help="job lifecycles per process (8 appends each)")
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"))
    parser.add_argument("--pause", type=float, default=0.0, help="seconds of work between two appends of a process (default 0)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.jobs, args.synchronous, args.pause)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        from jobtape import runtime
        from jobtape.config import Settings
        from jobtape.defaults import default_tables

        runtime.open_store(_settings(Settings, data_dir), default_tables()).close()  # migrate once
        started = time.perf_counter()
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(data_dir),
                    "--jobs",
                    str(args.jobs),
                    "--synchronous",
                    args.synchronous,
                    "--pause",
                    str(args.pause),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.processes)
        ]
        results = [json.loads(child.communicate()[0]) for child in children]
        wall = time.perf_counter() - started
        store = runtime.open_store(_settings(Settings, data_dir), default_tables())
        try:
            from jobtape.audit import logcheck
        except ImportError:  # the code before the keyed chain (a baseline run): the plain verify
            from jobtape.audit import verify

            report = verify.verify(store.iter_stored())
        else:
            report = logcheck.verify_store(store)
        store.close()
    appends = sum(r["appends"] for r in results)
    retries = sum(r["retries"] for r in results)
    print(f"{args.processes} processes x {args.jobs} lifecycles, synchronous={args.synchronous}")
    print(f"appends: {appends}  rebuilt batches (lost-append retries): {retries} = {retries / appends:.3f} per append")
    print(f"throughput: {appends / wall:.0f} appends/s over {wall:.1f} s wall")
    print(f"verify: {report.events_checked} events, {len(report.violations)} violations ({getattr(report, 'chain', 'no keyed chain')})")
    return 0 if not report.violations and report.events_checked == appends else 1


if __name__ == "__main__":
    raise SystemExit(main())
