"""The audit commands on a log produced by real jobs (real ffmpeg ingests by the real Worker)."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from audit_log import build_real_log  # type: ignore[import-not-found]  # tests/integration is on sys.path
from click.testing import CliRunner
from configs import TABLES  # tests/ is on sys.path

from jobtape import cli, clock, runtime
from jobtape.config import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data dir whose log holds 3 completed ingests, 1 failed (corrupt file), 1 cancelled mid-ffmpeg."""
    data_dir = tmp_path_factory.mktemp("real-log")
    return data_dir, build_real_log(data_dir)


@pytest.fixture
def log_copy(real_log: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    """A private copy of the real log, for tests that change it."""
    target = tmp_path / "copy"
    shutil.copytree(real_log[0], target)
    return target


def run(*args: str, data_dir: Path | None = None) -> tuple[int, str]:
    env = {"JOBTAPE_DATA_DIR": str(data_dir)} if data_dir is not None else None
    result = CliRunner().invoke(cli.cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def run_json(*args: str, data_dir: Path) -> Any:
    code, output = run(*args, "--json", data_dir=data_dir)
    assert code == 0, output
    return json.loads(output)


def events_of(data_dir: Path, job_id: str) -> list[dict[str, Any]]:
    return run_json("history", job_id, data_dir=data_dir)["events"]  # type: ignore[no-any-return]


# -- history -----------------------------------------------------------------------------------


def test_history_summarises_stages_attempts_and_children(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, jobs = real_log
    body = run_json("history", jobs["speech"], data_dir=data_dir)
    summary = body["summary"]

    assert [(a["attempt"], a["workerId"], a["outcome"]) for a in summary["attempts"]] == [(1, "audit-host:100:1", "completed")]
    assert [s["stage"] for s in summary["stages"]] == ["queued", "claimed", "fetching", "probing", "measuring", "normalizing", "storing"]
    assert all(s["durationS"] >= 0 for s in summary["stages"])
    assert [(c["stage"], c["exitStatus"]) for c in summary["children"]] == [
        ("probing", 0),
        ("measuring", 0),
        ("normalizing", 0),
        ("normalizing", 0),
    ]
    assert summary["totalS"] == pytest.approx(sum(s["durationS"] for s in summary["stages"]), abs=1e-3)

    code, output = run("history", jobs["cancelled"], data_dir=data_dir)
    assert code == 0, output
    for text in ("attempts", "time per stage", "child processes", "cancelling", "cancel requested by api", "audit-host:200:1"):
        assert text in output
    children = run_json("history", jobs["cancelled"], data_dir=data_dir)["summary"]["children"]
    assert children[-1]["stage"] == "measuring" and children[-1]["exitStatus"] not in (0, None)  # SIGTERMed


# -- status / jobs as of a time ----------------------------------------------------------------


def test_status_as_of_folds_the_events_up_to_that_time(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, jobs = real_log
    events = events_of(data_dir, jobs["cancelled"])
    cancel_at = next(e["recordedAt"] for e in events if e["type"] == "job.cancel_requested")
    before_cancel = next(e["recordedAt"] for e in reversed(events) if e["recordedAt"] < cancel_at)

    then = run_json("status", jobs["cancelled"], "--as-of", before_cancel, data_dir=data_dir)
    now = run_json("status", jobs["cancelled"], data_dir=data_dir)

    assert (then["state"]["status"], then["state"]["cancelRequested"]) == ("processing", False)
    assert then["eventsFolded"] < len(events) == now["eventsFolded"]
    assert (now["state"]["status"], now["state"]["finished"]) == ("cancelled", True)

    code, output = run("status", jobs["cancelled"], "--as-of", "-1d", data_dir=data_dir)
    assert code == 1 and "did not exist at" in output
    code, output = run("status", jobs["cancelled"], "--as-of", "last tuesday", data_dir=data_dir)
    assert code == 2 and "ISO 8601" in output and "-10m" in output


def test_jobs_as_of_shows_the_queue_with_positions(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, jobs = real_log
    last_created = events_of(data_dir, jobs["failed"])[0]["recordedAt"]  # 4 jobs were queued before the worker ran

    then = run_json("jobs", "--as-of", last_created, data_dir=data_dir)["jobs"]
    pending_now = run_json("jobs", "--status", "pending", data_dir=data_dir)["jobs"]
    finished = run_json("jobs", "--as-of", "now", data_dir=data_dir)["jobs"]

    assert [(j["jobId"], j["status"], j["queuePosition"]) for j in then] == [
        (jobs[name], "pending", n) for n, name in enumerate(("speech", "short", "video", "failed"), start=1)
    ]
    assert pending_now == []
    assert sorted(j["status"] for j in finished) == ["cancelled", "complete", "complete", "complete", "failed"]
    code, output = run("jobs", "--as-of", last_created, data_dir=data_dir)
    assert code == 0 and "queue" in output and jobs["speech"] in output


# -- tail ----------------------------------------------------------------------------------------


def test_tail_prints_the_newest_events_with_filters(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, jobs = real_log
    code, output = run("tail", "-n", "3", data_dir=data_dir)
    assert code == 0
    lines = output.strip().splitlines()
    assert len(lines) == 3 and lines[-1].split()[-1] == "job.cancelled"

    failed = [json.loads(line) for line in run("tail", "--type", "job.failed", "--json", data_dir=data_dir)[1].splitlines()]
    assert [(e["jobId"], e["type"]) for e in failed] == [(jobs["failed"], "job.failed")]

    one_job = run("tail", "--job", jobs["short"], "--since", "1", "--json", data_dir=data_dir)[1].splitlines()
    assert [json.loads(line)["version"] for line in one_job] == list(range(1, len(one_job) + 1))

    code, output = run("tail", "--since", "never", data_dir=data_dir)
    assert code == 2 and "global position" in output


def _read_stdout_until(process: subprocess.Popen[bytes], text: bytes, timeout_s: float) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while text not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not printed within {timeout_s} s: {seen!r}"
            if selector.select(remaining):
                chunk = os.read(process.stdout.fileno(), 4096)
                assert chunk, f"stdout closed before {text!r}: {seen!r}"
                seen += chunk
    return seen


def test_tail_follow_prints_events_appended_by_another_process_and_exits_0_on_ctrl_c(log_copy: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtape", "tail", "--follow", "-n", "1", "--poll-interval", "0.05", "--data-dir", str(log_copy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _read_stdout_until(process, b"job.cancelled", 30)
        repository = runtime.open_repository(Settings(data_dir=log_copy), tables=TABLES)
        try:
            job_id = repository.create("ingest", {"sourceType": "upload"}, actor="tail-test").state.job_id
        finally:
            repository.store.close()
        line = _read_stdout_until(process, job_id.encode(), 30)
        assert b"tail-test job.created" in line
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


# -- verify ----------------------------------------------------------------------------------------


def test_verify_passes_on_the_real_log(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, _ = real_log
    code, output = run("verify", data_dir=data_dir)
    assert code == 0 and "OK: no violations" in output
    report = run_json("verify", data_dir=data_dir)
    assert (report["jobsChecked"], report["violations"]) == (5, [])


def test_verify_names_the_position_of_an_event_edited_in_the_database_file(log_copy: Path) -> None:
    database = log_copy / "jobtape.db"
    with sqlite3.connect(database) as conn:  # an attacker with file access, not the API
        (position,) = conn.execute("SELECT position FROM events WHERE type = 'job.cancel_requested'").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET actor = 'nobody' WHERE position = ?", (position,))
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET actor = 'nobody' WHERE position = ?", (position,))

    code, output = run("verify", "--json", data_dir=log_copy)

    assert code == 1
    violations = json.loads(output)["violations"]
    assert [(v["position"], v["rule"]) for v in violations] == [(position, "hash")]
    code, output = run("verify", data_dir=log_copy)
    assert code == 1 and f"│ {position} " in output and "changed after it was written" in output


# -- stats ----------------------------------------------------------------------------------------


def test_stats_counts_jobs_and_summarises_stage_times(real_log: tuple[Path, dict[str, str]]) -> None:
    data_dir, _ = real_log
    body = run_json("stats", data_dir=data_dir)

    assert body["jobs"] == 5
    assert {(s["status"], s["jobs"]) for s in body["statuses"]} == {("complete", 3), ("failed", 1), ("cancelled", 1)}
    rows = {d["stage"]: d for d in body["durations"]}
    assert {"queued", "claimed", "fetching", "probing", "measuring", "normalizing", "storing", "(total)"} <= set(rows)
    assert rows["normalizing"]["count"] == 3 and rows["(total)"]["count"] == 5
    for row in rows.values():
        assert 0 <= row["p50S"] <= row["p95S"] <= row["maxS"]
    assert run_json("stats", "--since", "2999-01-01", data_dir=data_dir)["jobs"] == 0
    code, output = run("stats", data_dir=data_dir)
    assert code == 0 and "p95" in output and "normalizing" in output


# -- export / import ---------------------------------------------------------------------------


def test_export_then_import_replays_the_log_into_a_fresh_store(real_log: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    data_dir, jobs = real_log
    exported = tmp_path / "log.jsonl"
    assert run("export", "-o", str(exported), data_dir=data_dir)[0] == 0
    lines = exported.read_text().splitlines()
    assert "exportTrailer" in lines[-1]  # the keyed trailer
    lines = lines[:-1]
    assert [json.loads(line)["position"] for line in lines] == sorted(json.loads(line)["position"] for line in lines)

    # the target has its own log key: the source's is accepted for verification with --key-file
    code, output = run("import", str(exported), "--data-dir", str(tmp_path / "replay"), "--key-file", str(data_dir / "log-key"))

    assert code == 0 and f"imported {len(lines)} events of 5 jobs" in output
    assert run("verify", data_dir=tmp_path / "replay")[0] == 0
    code, output = run("rebuild", "--verify", data_dir=tmp_path / "replay")
    assert code == 0 and "0 differences" in output
    for job_id in jobs.values():
        original, replayed = events_of(data_dir, job_id), events_of(tmp_path / "replay", job_id)
        assert [(e["type"], e["recordedAt"], e["actor"], e["data"]) for e in original] == [
            (e["type"], e["recordedAt"], e["actor"], e["data"]) for e in replayed
        ]
    one = [
        json.loads(line)
        for line in run("export", "--job", jobs["failed"], data_dir=data_dir)[1].splitlines()
        if line.startswith('{"position"')
    ]
    assert {e["jobId"] for e in one} == {jobs["failed"]} and one[-1]["type"] == "job.failed"


@pytest.mark.parametrize("damage", ["edit", "gap"])
def test_import_refuses_a_tampered_or_gapped_export_naming_the_line(
    real_log: tuple[Path, dict[str, str]], tmp_path: Path, damage: str
) -> None:
    data_dir, _ = real_log
    lines = run("export", data_dir=data_dir)[1].splitlines()
    lines = [line for line in lines if line.startswith("{")]
    if damage == "edit":
        record = json.loads(lines[9])
        record["actor"] = "someone-else"
        lines[9] = json.dumps(record)
        expected = "line 10: the hash of job"
    else:
        del lines[9]
        expected = "line 10: job"
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")

    code, output = run("import", str(broken), "--data-dir", str(tmp_path / "target"), "--key-file", str(data_dir / "log-key"))

    assert code == 1 and expected in output, output
    assert run("tail", "--json", data_dir=tmp_path / "target")[1] == ""  # nothing was written


# -- archive ----------------------------------------------------------------------------------------


def test_archive_removes_old_finished_jobs_through_the_recorded_path_and_import_brings_them_back(log_copy: Path, tmp_path: Path) -> None:
    archive_file = tmp_path / "archive.jsonl"
    assert run("archive", "--older-than", "30d", "--to", str(archive_file), data_dir=log_copy)[1].count("nothing") == 1

    code, output = run("archive", "--older-than", "0s", "--to", str(archive_file), "--json", data_dir=log_copy)

    assert code == 0, output
    report = json.loads(output)
    assert (report["jobs"], report["events"]) == (5, len(archive_file.read_text().splitlines()) - 1)  # and the keyed trailer
    assert run_json("jobs", data_dir=log_copy)["jobs"] == []
    assert run("verify", data_dir=log_copy)[0] == 0
    with sqlite3.connect(log_copy / "jobtape.db") as conn:
        archived_at, archived_by, digest, count = conn.execute(
            "SELECT archived_at, archived_by, export_sha256, job_count FROM archives"
        ).fetchone()
        assert (digest, count) == (report["sha256"], 5) and archived_by.startswith("cli:")
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM assets").fetchone() == (0,)
        assert clock.parse_timestamp(archived_at) <= clock.utcnow()

    code, output = run("import", str(archive_file), "--data-dir", str(log_copy))

    assert code == 0, output
    assert sorted(j["status"] for j in run_json("jobs", data_dir=log_copy)["jobs"]) == [
        "cancelled",
        "complete",
        "complete",
        "complete",
        "failed",
    ]
    assert run("verify", data_dir=log_copy)[0] == 0
    assert "0 differences" in run("rebuild", "--verify", data_dir=log_copy)[1]
    with sqlite3.connect(log_copy / "jobtape.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM assets").fetchone() == (3,)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # the re-imported events are protected again
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM archives")


def test_archive_refuses_a_log_whose_hash_chain_is_broken(log_copy: Path, tmp_path: Path) -> None:
    with sqlite3.connect(log_copy / "jobtape.db") as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET actor = 'nobody' WHERE position = 3")

    code, output = run("archive", "--older-than", "0s", "--to", str(tmp_path / "a.jsonl"), data_dir=log_copy)

    assert code == 1 and "nothing was removed" in output and "was changed after export" in output
    assert len(run_json("jobs", data_dir=log_copy)["jobs"]) == 5
