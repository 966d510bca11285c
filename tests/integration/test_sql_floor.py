"""``bench/sql_floor.py`` replays the store's own batches: the floor it prints is the same work.

The floor of an append (issue 12) is only a floor if the replay writes what the store
wrote. Replaying the recorded batches on a fresh file must leave every table the store's
run left, row for row (the guard triggers would refuse a replay out of order or with a
different hash).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_floor() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))  # sql_floor imports lifecycle, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("jobtape_bench_sql_floor", ROOT / "bench" / "sql_floor.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        names.remove("_jobtape_migrations")  # when each migration ran: not the replay's to repeat
        return {name: sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr) for name in names}


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_the_replay_leaves_every_table_as_the_store_left_it(tmp_path: Path, synchronous: str) -> None:
    floor = load_floor()
    batches = floor.record_lifecycles(tmp_path / "record.db", 6, synchronous)
    assert len(batches) == 6 * 8
    connection = floor._replay_connection(tmp_path / "replay.db", synchronous)
    try:
        floor.replay(connection, batches)
    finally:
        connection.close()
    recorded, replayed = tables(tmp_path / "record.db"), tables(tmp_path / "replay.db")
    assert len(recorded["events"]) == 6 * 8 and recorded["jobs"]
    assert replayed == recorded


def test_the_worker_jobs_replay_in_one_transaction_as_in_many(tmp_path: Path) -> None:
    floor = load_floor()
    creates, jobs_batches = floor.record_worker_jobs(tmp_path / "record.db", 4, "NORMAL")
    assert (len(creates), len(jobs_batches)) == (4, 8)
    for one in (False, True):
        connection = floor._replay_connection(tmp_path / f"replay-{one}.db", "NORMAL")
        try:
            floor.replay(connection, creates, one_transaction=True)
            floor.replay(connection, jobs_batches, one_transaction=one)
        finally:
            connection.close()
        assert tables(tmp_path / f"replay-{one}.db") == tables(tmp_path / "record.db")


def test_a_replay_out_of_order_is_refused_by_the_guards(tmp_path: Path) -> None:
    floor = load_floor()
    batches = floor.record_lifecycles(tmp_path / "record.db", 1, "NORMAL")
    connection = floor._replay_connection(tmp_path / "replay.db", "NORMAL")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            floor.replay(connection, [batches[0], batches[2]])  # the claim skipped: version 3 after 1
    finally:
        connection.close()


def test_the_event_inserts_alone_write_the_same_events(tmp_path: Path) -> None:
    floor = load_floor()
    batches = floor.record_lifecycles(tmp_path / "record.db", 3, "NORMAL")
    alone = [floor.events_alone(batch) for batch in batches]
    assert all(len(batch) == 1 for batch in alone)
    connection = floor._replay_connection(tmp_path / "alone.db", "NORMAL")
    try:
        floor.replay(connection, alone)
    finally:
        connection.close()
    replayed, recorded = tables(tmp_path / "alone.db"), tables(tmp_path / "record.db")
    assert replayed["events"] == recorded["events"] and len(recorded["events"]) == 24
    assert replayed["jobs"] == [] and recorded["jobs"]
