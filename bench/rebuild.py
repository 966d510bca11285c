"""Benchmark: ``jobtape rebuild``, ``rebuild --verify``, export and import against a raw scan of the same log.

The log: ``--events`` events (default 1,000,000) of 8-event job lifecycles (created, claimed,
5 x progress, completed), 1,000 jobs in flight at a time so streams interleave as they do in a
real log. It is written by a BULK path that produces the same log the append path would:
every event is encoded by :func:`jobtape.eventlog.events.encode_event`, chained by
:mod:`jobtape.eventlog.hashing` and inserted with the one event INSERT
(:data:`jobtape.eventlog.stored.INSERT_EVENT`) under the log's own triggers, many events per
transaction (``executemany``); the projection rows are then written by a first (untimed)
rebuild, i.e. by the fold, exactly as the appends would have written them.

Measured in the same run, on the same file:

- baseline: a raw scan of ``events`` (``sqlite3``, one ``SELECT`` in position order) with a
  ``msgspec.json`` decode of every ``data`` column: the physical floor of reading the log;
- ``rebuild`` (apply, no comparison) and ``rebuild --verify`` (compare, no apply), through
  :func:`jobtape.projections.rebuild.rebuild`;
- ``export`` to JSON Lines and ``import`` of that file into a fresh data dir, the import in a
  child process whose peak RSS is reported (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` would include
  the bench's own memory, which a forked child keeps in that figure across its exec);
- with ``--floor``: the import's FLOOR, the event inserts alone (:func:`insert_floor`): the
  one event INSERT of every event of the log into a fresh data dir, through the log's guard
  triggers, in transactions of the import's batch size, with the parameters read beforehand
  (no decoding, no checks, no projection rows). An import also checks every event (twice,
  for a file) and writes the projection rows, so its rate cannot exceed this one: the ratio
  of this rate to the rebuild's says whether the import's goal is reachable at all.

Goals (issue 12): rebuild >= 0.5 of the raw scan rate; import >= 0.5 of the rebuild rate with
peak memory <= 100 MB.

Usage::

    python bench/rebuild.py [--events 1000000] [--data-dir DIR] [--floor]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from jobtape import clock
from jobtape.defaults import default_tables
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, stored
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.sqlite import SQLiteBackend, pragmas
from jobtape.eventlog.store import EventStore

__all__ = ["generate_log", "insert_floor", "main", "raw_scan"]

TABLES = default_tables()
EVENTS_PER_JOB = 8
IN_FLIGHT = 1000
REBUILD_RATIO = 0.5
IMPORT_RATIO = 0.5
IMPORT_PEAK_BYTES = 100 * 1024 * 1024
_WORKER = "bench:1:1"
_START = clock.parse_timestamp("2026-01-01T00:00:00.000000Z")


def _lifecycle(index: int) -> list[ev.Event]:
    events: list[ev.Event] = [
        ev.JobCreated(job_type="ingest", params={"sourceType": "upload", "storageKey": f"ingest-uploads/{index}/a.wav"}),
        ev.JobClaimed(worker_id=_WORKER),
    ]
    events += [ev.JobProgress(percent=percent) for percent in (20, 40, 60, 80, 100)]
    events.append(ev.JobCompleted(result={"preparedKey": f"assets/{index}/prepared.flac"}))
    return events


def generate_log(path: Path, events: int) -> int:
    """Write a log of about ``events`` events (whole lifecycles) to a fresh SQLite file; return the count.

    Projection rows are written afterwards by an untimed rebuild (see the module docstring).
    """
    backend = SQLiteBackend(path, synchronous="NORMAL")
    backend.migrate(TABLES.migrations)
    backend.close()
    jobs = max(1, events // EVENTS_PER_JOB)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous=OFF")
    written, tick = 0, 0
    keys = LogKeys.ephemeral()  # the events' keyed chain, as the store writes it (migration 0012)
    position, link = 0, hashing.GENESIS_CHAIN
    for first in range(0, jobs, IN_FLIGHT):
        block = range(first, min(jobs, first + IN_FLIGHT))
        lifecycles = {index: _lifecycle(index) for index in block}
        previous = {index: hashing.genesis_hash(f"{index:032x}") for index in block}
        rows = []
        for step in range(EVENTS_PER_JOB):
            for index in block:
                job_id = f"{index:032x}"
                type_, data = ev.encode_event(lifecycles[index][step])
                stamp = clock.format_timestamp(_START + dt.timedelta(microseconds=37 * tick))
                tick += 1
                previous[index] = hashing.event_hash(previous[index], job_id, step + 1, type_, data, _WORKER, stamp)
                position += 1
                link = hashing.chain_link(keys.current, keys.current_id, link, position, previous[index])
                rows.append((position, job_id, step + 1, type_, data, _WORKER, stamp, previous[index], keys.current_id, link))
        connection.execute("BEGIN")
        connection.executemany(stored.INSERT_EVENT, rows)
        connection.execute("COMMIT")
        written += len(rows)
    connection.close()
    return written


def raw_scan(path: Path) -> int:
    """Read every event in position order and decode its ``data`` with msgspec; return the count."""
    connection = sqlite3.connect(path)
    decoder = msgspec.json.Decoder()
    count = 0
    for _position, _job_id, _version, _type, data, _actor, _recorded_at, _hash, _key_id, _chain in connection.execute(
        f"SELECT {stored.COLUMNS} FROM events ORDER BY position"
    ):
        decoder.decode(data)
        count += 1
    connection.close()
    return count


def insert_floor(log: Path, target: Path, batch: int) -> tuple[int, float, float]:
    """Insert every event of ``log`` into a fresh log at ``target`` through the event INSERT alone.

    The rows are read from ``log`` a batch at a time (not timed) and inserted with
    :data:`jobtape.eventlog.stored.INSERT_EVENT` (same positions, keys and chain links, so
    ``events_chain_guard`` and the other guard triggers pass), ``batch`` events per
    transaction (``executemany``), on a connection with the store's PRAGMAs
    (:func:`jobtape.eventlog.sqlite.pragmas`: WAL, ``synchronous=FULL``).

    Returns:
        ``(events, wall seconds, CPU seconds)`` of the inserts and commits alone.
    """
    backend = SQLiteBackend(target)
    backend.migrate(TABLES.migrations)
    backend.close()
    source = sqlite3.connect(log)
    connection = sqlite3.connect(target, isolation_level=None)
    for pragma in pragmas():
        connection.execute(pragma)
    rows = source.execute(f"SELECT {stored.COLUMNS} FROM events ORDER BY position")
    count, wall, cpu = 0, 0.0, 0.0
    while page := rows.fetchmany(batch):
        start, start_cpu = time.perf_counter(), time.process_time()
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(stored.INSERT_EVENT, page)
        connection.execute("COMMIT")
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        count += len(page)
    source.close()
    connection.close()
    return count, wall, cpu


_IMPORT_CHILD = """
import resource, sys, time
from pathlib import Path
from jobtape.audit import transfer
from jobtape.defaults import default_tables
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
tables = default_tables()
backend = SQLiteBackend(Path(sys.argv[2]))
backend.migrate(tables.migrations)
store = EventStore(backend)
start = time.perf_counter()
with open(sys.argv[1], encoding="utf-8") as file:
    report = transfer.import_lines(store, file, tables)
elapsed = time.perf_counter() - start
store.close()
# VmHWM: this process's own peak RSS in KiB. Not ru_maxrss: Linux carries a forked child's
# maxrss over its exec, so it would report the bench's own (larger) peak.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1])
print(report.events, elapsed, peak)
"""


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def main(argv: list[str] | None = None) -> int:
    """Generate the log, run every measurement, print rates, ratios and PASS/FAIL; 0 if all pass."""
    from jobtape.audit import transfer
    from jobtape.projections.rebuild import rebuild

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log (default 1,000,000)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--floor", action="store_true", help="also measure the import's floor: the event inserts alone (see insert_floor)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobtape-bench-rebuild-") as temp:
        folder = args.data_dir or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("log.db", "imported.db", "floor.db"):
            for suffix in ("", "-wal", "-shm", "-writer"):
                (folder / (name + suffix)).unlink(missing_ok=True)
        (folder / "export.jsonl").unlink(missing_ok=True)
        log = folder / "log.db"
        start = time.perf_counter()
        count = generate_log(log, args.events)
        store = EventStore(SQLiteBackend(log))
        rebuild(store, tables=TABLES)  # the projection rows, as the appends would have written them
        print(f"log: {count:,} events, {count // EVENTS_PER_JOB:,} jobs, written in {time.perf_counter() - start:.1f} s (bulk path)")

        start = time.perf_counter()
        raw_scan(log)
        raw_s = time.perf_counter() - start

        start = time.perf_counter()
        applied = rebuild(store, tables=TABLES)
        rebuild_s = time.perf_counter() - start

        start = time.perf_counter()
        verified = rebuild(store, apply_changes=False, tables=TABLES)
        verify_s = time.perf_counter() - start
        assert applied.events_read == verified.events_read == count and not verified.differences, verified.differences[:3]

        start = time.perf_counter()
        with (folder / "export.jsonl").open("w", encoding="utf-8") as out:
            exported = transfer.export(store, out, None)
        export_s = time.perf_counter() - start
        store.close()

        child = subprocess.run(
            [sys.executable, "-c", _IMPORT_CHILD, str(folder / "export.jsonl"), str(folder / "imported.db")],
            check=True,
            capture_output=True,
            text=True,
        )
        imported_text, import_text, rss_text = child.stdout.split()
        imported, import_s = int(imported_text), float(import_text)
        peak = int(rss_text) * 1024  # KiB
        floor = insert_floor(log, folder / "floor.db", transfer.IMPORT_BATCH) if args.floor else None

    raw_rate, rebuild_rate = _rate(count, raw_s), _rate(count, rebuild_s)
    verify_rate, export_rate, import_rate = _rate(count, verify_s), _rate(exported.events, export_s), _rate(imported, import_s)
    rebuild_ok = rebuild_rate / raw_rate >= REBUILD_RATIO
    import_ok = import_rate / rebuild_rate >= IMPORT_RATIO
    memory_ok = peak <= IMPORT_PEAK_BYTES
    print(f"raw scan + msgspec decode: {raw_s:.2f} s = {raw_rate:,.0f} ev/s (baseline)")
    print(
        f"rebuild (apply, no compare): {rebuild_s:.2f} s = {rebuild_rate:,.0f} ev/s; ratio {rebuild_rate / raw_rate:.2f};"
        f" TARGET >= {REBUILD_RATIO}: {_verdict(rebuild_ok)}"
    )
    print(f"rebuild --verify: {verify_s:.2f} s = {verify_rate:,.0f} ev/s; ratio {verify_rate / raw_rate:.2f} (no target)")
    print(f"export: {export_s:.2f} s = {export_rate:,.0f} ev/s")
    print(
        f"import: {import_s:.2f} s = {import_rate:,.0f} ev/s; ratio to rebuild {import_rate / rebuild_rate:.2f};"
        f" TARGET >= {IMPORT_RATIO}: {_verdict(import_ok)}"
    )
    print(f"import peak RSS (child process): {peak / 1024 / 1024:.0f} MB; TARGET <= 100 MB: {_verdict(memory_ok)}")
    if floor is not None:
        floor_events, floor_s, floor_cpu = floor
        floor_rate = _rate(floor_events, floor_s)
        print(
            f"import FLOOR (the event inserts alone, {transfer.IMPORT_BATCH:,} per transaction, guard triggers, no checks):"
            f" {floor_s:.2f} s ({floor_cpu:.2f} s CPU) = {floor_rate:,.0f} ev/s = {1e6 * floor_s / floor_events:.1f} us per event"
            f" vs the rebuild's {1e6 * rebuild_s / count:.1f} us; ratio to rebuild {floor_rate / rebuild_rate:.2f}"
            f" (the import's ratio cannot exceed it; {'reachable' if floor_rate / rebuild_rate >= IMPORT_RATIO else 'UNREACHABLE'}"
            f" against {IMPORT_RATIO})"
        )
    return 0 if rebuild_ok and import_ok and memory_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
