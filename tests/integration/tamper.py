"""The tamperings of issue 11, performed on a real log (a SQLite file or a real sqld) by someone who
can write the database but does not hold the log key, and the real ``jobtape`` CLI that must name
or refuse them. Shared by tests/integration/test_tamper_evidence.py (SQLite) and
tests/conformance/test_libsql_tamper.py (sqld).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobtape import runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.projections.registry import Tables

__all__ = ["KEY", "Target", "build_log", "rechain_stream", "tamper_cases"]

#: The log key of every target (JOBTAPE_LOG_KEY of the test process and the CLI subprocesses).
KEY = "k" * 40


@dataclasses.dataclass
class Target:
    """One event log and how to reach it.

    Attributes:
        settings: the settings of the log (its key is :data:`KEY`).
        env: the environment of a CLI subprocess on it.
        raw: runs statements straight on the database (the attacker: no store, no key).
        query: runs one read straight on the database.
        fresh: makes another, empty log of the same kind (an import's target).
    """

    settings: Settings
    env: dict[str, str]
    raw: Callable[[Sequence[str | tuple[str, Sequence[Any]]]], None]
    query: Callable[[str], list[tuple[Any, ...]]]
    fresh: Callable[[], Target]

    def jobtape(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m jobtape ARGS --data-dir DATA_DIR`` on this log (a real process)."""
        return subprocess.run(
            [sys.executable, "-m", "jobtape", *args, "--data-dir", str(self.settings.data_dir)],
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def verify(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[tuple[str, int, str]], dict[str, Any]]:
        """``jobtape verify --json``: (exit code, [(rule, position, job id)], the report)."""
        done = self.jobtape("verify", "--json", *args, env=env)
        assert done.stdout, done.stderr
        report = json.loads(done.stdout)
        return done.returncode, [(v["rule"], v["position"], v["jobId"]) for v in report["violations"]], report


def build_log(target: Target, tables: Tables) -> dict[str, Any]:
    """Three finished jobs whose events interleave, so job ``b``'s last event lies mid-log.

    Returns:
        ``{"a": job id, "b": ..., "c": ..., "positions": {job id: [positions]}}``.
    """
    repository = runtime.open_repository(target.settings, tables=tables)
    try:
        states = {}
        for name in ("a", "b"):
            states[name] = repository.create("ingest", {"sourceType": "upload", "storageKey": f"u/{name}.wav"}).state

        def step(name: str, *events: ev.Event) -> None:
            states[name] = repository.append(states[name].job_id, list(events), states[name], actor="w:1:1").state

        step("a", ev.JobClaimed(worker_id="w:1:1"))
        step("b", ev.JobClaimed(worker_id="w:1:1"))
        step("a", ev.JobProgress(percent=40))
        states["c"] = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/c.wav"}).state
        step("b", ev.JobCompleted(result={"preparedKey": "assets/b/prepared.flac"}))
        step("a", ev.JobProgress(percent=80), ev.JobCompleted(result={"preparedKey": "assets/a/prepared.flac"}))
        step("c", ev.JobClaimed(worker_id="w:1:1"))
        step("c", ev.JobFailed(error="broken input"))
    finally:
        repository.store.close()
    ids = {name: state.job_id for name, state in states.items()}
    positions: dict[str, list[int]] = {}
    for position, job_id in target.query("SELECT position, job_id FROM events ORDER BY position"):
        positions.setdefault(str(job_id), []).append(int(position))
    return {**ids, "positions": positions}


def rechain_stream(target: Target, job_id: str, version: int, data: str) -> list[int]:
    """Edit event ``version`` of ``job_id`` and re-chain the stream's later hashes with plain sha256.

    The unkeyed chain then holds again (what an attacker could always do); returns the
    positions rewritten.
    """
    rows = target.query(f"SELECT position, version, type, data, actor, recorded_at FROM events WHERE job_id = '{job_id}' ORDER BY version")
    previous = hashing.genesis_hash(job_id)
    statements: list[str | tuple[str, Sequence[Any]]] = ["DROP TRIGGER events_no_update"]
    rewritten = []
    for position, row_version, type_, stored_data, actor, recorded_at in rows:
        text = data if row_version == version else str(stored_data)
        previous = hashing.event_hash(previous, job_id, int(row_version), str(type_), text, str(actor), str(recorded_at))
        if row_version >= version:
            statements.append(("UPDATE events SET data = ?, hash = ? WHERE position = ?", (text, previous, position)))
            rewritten.append(int(position))
    target.raw(statements)
    return rewritten


_FORGED_ARCHIVE = (
    "INSERT INTO archives (archive_id, archived_at, archived_by, cutoff, file_name, export_sha256, job_count,"
    " event_count, key_id, removed, mac) VALUES ('forged', '2026-01-01T00:00:00.000000Z', 'cli:x', "
    "'2026-01-01T00:00:00.000000Z', 'x.jsonl', ?, 1, ?, 'x', '[]', ?)"
)


def tamper_cases() -> list[str]:
    """The names of the tamperings every target runs (one test each)."""
    return ["rechain", "delete_last_event", "tail_after_checkpoint", "forged_archive", "import_removed", "wrong_key"]


def run_case(case: str, target: Target, tables: Tables, tmp_path: Path) -> None:
    """Perform tampering ``case`` on ``target`` and check the CLI names or refuses it."""
    log = build_log(target, tables)
    assert target.verify()[:2] == (0, []), target.verify()  # the intact log is clean (so each check below can fail)
    last_b = log["positions"][log["b"]][-1]
    head = max(p for ps in log["positions"].values() for p in ps)
    assert last_b < head  # b's last event lies mid-log
    if case == "rechain":
        rewritten = rechain_stream(target, log["a"], 3, '{"percent":99}')
        code, violations, _ = target.verify()
        assert code == 1
        # the unkeyed sha256 chain holds (the old verify said OK); the keyed chain names each rewritten event
        assert [(rule, position) for rule, position, _ in violations] == [("chain", p) for p in rewritten]
        assert {job for _, _, job in violations} == {log["a"]}
    elif case == "delete_last_event":
        target.raw(["DROP TRIGGER events_no_delete", f"DELETE FROM events WHERE position = {last_b}"])
        code, violations, _ = target.verify()
        assert code == 1 and ("removed", last_b, "-") in violations, violations
    elif case == "tail_after_checkpoint":
        done = target.jobtape("checkpoint")
        assert done.returncode == 0, done.stderr
        checkpoint = tmp_path / "checkpoint.json"
        checkpoint.write_text(done.stdout)
        assert json.loads(done.stdout)["position"] == head
        assert target.verify("--against", str(checkpoint))[:2] == (0, [])
        # the tail goes, and log_head is set back to the new last event: verify alone cannot tell
        (new_last, new_chain, key_id) = target.query(
            f"SELECT position, chain, key_id FROM events WHERE position < {head - 1} ORDER BY position DESC LIMIT 1"
        )[0]
        target.raw(
            [
                "DROP TRIGGER events_no_delete",
                f"DELETE FROM events WHERE position >= {head - 1}",
                ("UPDATE log_head SET position = ?, chain = ?, key_id = ?", (new_last, new_chain, key_id)),
            ]
        )
        assert target.verify()[0] == 0  # a removed tail leaves no trace in the log itself
        code, violations, _ = target.verify("--against", str(checkpoint))
        assert code == 1 and violations == [("checkpoint", head, "-")], violations
    elif case == "forged_archive":
        count = len(log["positions"][log["b"]])
        target.raw(
            [
                (_FORGED_ARCHIVE, ("0" * 64, count, "f" * 64)),
                (
                    "INSERT INTO archived_jobs (archive_id, job_id, last_position, event_count) VALUES ('forged', ?, ?, ?)",
                    (log["b"], last_b, count),
                ),
                (f"DELETE FROM events WHERE job_id = '{log['b']}'", ()),  # the triggers allow it: the record exists
            ]
        )
        assert target.query(f"SELECT COUNT(*) FROM events WHERE job_id = '{log['b']}'") == [(0,)]
        code, violations, _ = target.verify()
        assert code == 1
        assert ("archive_forged", 0, "-") in violations and ("archive_forged", last_b, log["b"]) in violations, violations
        assert ("removed", log["positions"][log["b"]][0], "-") in violations, violations
    elif case == "import_removed":
        exported = tmp_path / "log.jsonl"
        assert target.jobtape("export", "-o", str(exported)).returncode == 0
        lines = exported.read_text().splitlines()
        kept = [line for line in lines if not (line.startswith('{"position"') and json.loads(line)["position"] == last_b)]
        assert len(kept) == len(lines) - 1
        cut = tmp_path / "cut.jsonl"
        cut.write_text("\n".join(kept) + "\n")
        fresh = target.fresh()
        done = fresh.jobtape("import", str(cut))
        assert done.returncode == 1 and "lines were removed" in done.stderr, done.stderr
        assert fresh.query("SELECT COUNT(*) FROM events") == [(0,)]  # nothing was written
        # the same file whole imports, and the copy verifies
        done = fresh.jobtape("import", str(exported))
        assert done.returncode == 0, done.stderr
        assert fresh.verify()[:2] == (0, [])
    elif case == "wrong_key":
        code, violations, report = target.verify(env={"JOBTAPE_LOG_KEY": "w" * 40})
        assert code == 1 and [rule for rule, _, _ in violations] == ["key"] and "does not hold" in report["violations"][0]["message"]
        real_id = target.query("SELECT key_id FROM log_head")[0][0]
        code, violations, report = target.verify(env={"JOBTAPE_LOG_KEY": "w" * 40, "JOBTAPE_LOG_KEY_ID": str(real_id)})
        assert code == 1 and [rule for rule, _, _ in violations] == ["key"] and "the key is wrong" in report["violations"][0]["message"]
    else:
        raise AssertionError(case)
