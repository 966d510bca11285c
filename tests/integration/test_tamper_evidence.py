"""Tamper evidence against the database's own writer (issue 11), on a real SQLite file.

Each tampering of the issue is performed with ``sqlite3`` on the file (dropping triggers as an
attacker would) and the real ``jobtape`` CLI, run as a subprocess, names it (``verify``, exit 1)
or refuses it (``import``). Plus the keyed upgrade of a log written before the keyed chain.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from tamper import KEY, Target, run_case, tamper_cases  # type: ignore[import-not-found]  # tests/integration is on sys.path

from jobtape import runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev

__all__: list[str] = []

MAIN_DB = Path(__file__).resolve().parents[1] / "data" / "main-248ad6f.db"


def _sqlite_target(data_dir: Path, counter: list[int]) -> Target:
    data_dir.mkdir(parents=True, exist_ok=True)
    database = data_dir / "jobtape.db"

    def raw(statements: Sequence[str | tuple[str, Sequence[Any]]]) -> None:
        with sqlite3.connect(database) as conn:
            for item in statements:
                sql, params = (item, ()) if isinstance(item, str) else item
                conn.execute(sql, params)

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(database) as conn:
            return conn.execute(sql).fetchall()

    def fresh() -> Target:
        counter[0] += 1
        target = _sqlite_target(data_dir.parent / f"fresh-{counter[0]}", counter)
        runtime.open_store(target.settings, TABLES).close()  # an empty, migrated log
        return target

    return Target(Settings(data_dir=data_dir, log_key=KEY), {"JOBTAPE_LOG_KEY": KEY, "JOBTAPE_DATA_DIR": str(data_dir)}, raw, query, fresh)


@pytest.mark.parametrize("case", tamper_cases())
def test_each_tampering_of_a_sqlite_file_is_named_or_refused(case: str, tmp_path: Path) -> None:
    run_case(case, _sqlite_target(tmp_path / "log", [0]), TABLES, tmp_path)


def test_a_log_written_before_the_keyed_chain_is_chained_on_the_first_keyed_open_and_verifies(tmp_path: Path) -> None:
    target = _sqlite_target(tmp_path / "log", [0])
    shutil.copy(MAIN_DB, tmp_path / "log" / "jobtape.db")
    events = target.query("SELECT COUNT(*), MAX(position) FROM events")[0]

    code, violations, report = target.verify()

    assert (code, violations) == (0, []), violations
    assert report["chain"].startswith(f"keyed: {events[0]} events checked")
    assert target.query("SELECT position, events FROM chain_upgrades") == [(events[1], events[0])]
    # appends continue the chain, and a checkpoint verifies
    repository = runtime.open_repository(target.settings, tables=TABLES)
    try:
        repository.create("ingest", {"sourceType": "upload", "storageKey": "u/new.wav"})
    finally:
        repository.store.close()
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text(target.jobtape("checkpoint").stdout)
    assert target.verify("--against", str(checkpoint))[:2] == (0, [])
    # an edit of a chained legacy event is named like any other
    target.raw(["DROP TRIGGER events_no_update", "UPDATE events SET hash = 'x' || substr(hash, 2) WHERE position = 1"])
    assert ("chain", 1) in [(rule, position) for rule, position, _ in target.verify()[1]]


def test_the_keyed_upgrade_refuses_a_log_whose_sha256_chain_is_broken_and_writes_nothing(tmp_path: Path) -> None:
    target = _sqlite_target(tmp_path / "log", [0])
    shutil.copy(MAIN_DB, tmp_path / "log" / "jobtape.db")
    target.raw(["DROP TRIGGER events_no_update", "UPDATE events SET actor = 'someone' WHERE position = 2"])
    runtime.open_store(Settings(data_dir=tmp_path / "log"), TABLES, create_key=False).close()  # migrated, not chained

    done = target.jobtape("verify")

    assert done.returncode == 1 and "keyed upgrade refused" in done.stderr and "position 2" in done.stderr, done.stderr
    assert target.query("SELECT COUNT(*) FROM events WHERE chain IS NOT NULL") == [(0,)]
    unkeyed = target.jobtape("verify", env={"JOBTAPE_LOG_KEY": ""})  # without a key: read-only, says so
    assert "unkeyed" in unkeyed.stdout and unkeyed.returncode == 1  # the unkeyed rules name the edit
    with pytest.raises(Exception, match="keyed upgrade refused"):
        runtime.open_store(target.settings, TABLES)


def test_appends_of_a_store_without_the_key_are_refused_and_verify_says_unkeyed(tmp_path: Path) -> None:
    target = _sqlite_target(tmp_path / "log", [0])
    runtime.open_store(target.settings, TABLES).close()
    store = runtime.open_store(Settings(data_dir=tmp_path / "log"), TABLES, create_key=False)  # no env key, no key file
    try:
        assert store.keys is None
        with pytest.raises(Exception, match="without its log key"):
            store.append("j", [ev.JobCreated(job_type="ingest")], 0, actor="cli")
    finally:
        store.close()
    done = target.jobtape("verify", env={"JOBTAPE_LOG_KEY": ""})
    assert done.returncode == 0 and "chain: unkeyed" in done.stdout, done.stdout


def test_a_writer_configured_with_another_key_is_warned_and_verify_names_its_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = _sqlite_target(tmp_path / "log", [0])
    repository = runtime.open_repository(target.settings, tables=TABLES)
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state
    repository.store.close()
    other = Settings(data_dir=tmp_path / "log", log_key="o" * 40)

    with caplog.at_level("WARNING", logger="jobtape.runtime"):
        repository = runtime.open_repository(other, tables=TABLES)
    assert "which this process does not hold" in caplog.text
    repository.append(state.job_id, [ev.JobClaimed(worker_id="w:1:1")], state, actor="w:1:1")
    repository.store.close()

    code, violations, report = target.verify()
    assert code == 1 and [rule for rule, _, _ in violations] == ["key"] and "does not hold" in report["violations"][0]["message"]


def test_a_rotated_key_continues_the_chain_and_verify_accepts_both(tmp_path: Path) -> None:
    target = _sqlite_target(tmp_path / "log", [0])
    repository = runtime.open_repository(target.settings, tables=TABLES)
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state
    repository.store.close()
    old_id = target.query("SELECT key_id FROM log_head")[0][0]
    rotated = {"JOBTAPE_LOG_KEY": "n" * 40, "JOBTAPE_LOG_KEY_ID": "new", "JOBTAPE_LOG_KEYS": f"{old_id}:{KEY}"}
    settings = Settings(data_dir=tmp_path / "log", log_key="n" * 40, log_key_id="new", log_keys=f"{old_id}:{KEY}")
    repository = runtime.open_repository(settings, tables=TABLES)
    repository.append(state.job_id, [ev.JobClaimed(worker_id="w:1:1")], state, actor="w:1:1")
    repository.store.close()

    assert target.query("SELECT key_id FROM events ORDER BY position") == [(old_id,), ("new",)]
    code, violations, report = target.verify(env=rotated)
    assert (code, violations) == (0, []) and report["chain"] == "keyed: 2 events checked under log key(s) " + ", ".join(
        sorted([old_id, "new"])
    )
    code, violations, _ = target.verify(env={"JOBTAPE_LOG_KEY": "n" * 40, "JOBTAPE_LOG_KEY_ID": "new"})  # the old key dropped
    assert code == 1 and [rule for rule, _, _ in violations] == ["key"]
