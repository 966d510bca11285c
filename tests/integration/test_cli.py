"""The ``jobtape`` command line on real SQLite files: history, rebuild, help, worker, demo."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from configs import TABLES  # tests/ is on sys.path

from jobtape import cli, runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import Statement

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]


def _job(data_dir: Path) -> str:
    repository = runtime.open_repository(Settings(data_dir=data_dir), tables=TABLES)
    try:
        state = repository.create("ingest", {"sourceType": "upload", "originalFilename": "a.wav"}).state
        for event in (
            ev.JobClaimed(worker_id="worker-7"),
            ev.JobStageChanged(stage="measuring"),
            ev.JobChildStarted(pid=4242, argv=["/opt/bin/ffmpeg-linux", "-i", "a.wav"]),
            ev.JobProgress(percent=60),
            ev.JobChildExited(pid=4242, exit_status=0),
            ev.JobCompleted(result={"assetId": "a1", "preparedKey": "assets/a1/prepared.flac"}),
        ):
            state = repository.append(state.job_id, [event], state, actor="worker-7").state
        return state.job_id
    finally:
        repository.store.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def job_id(data_dir: Path) -> str:
    return _job(data_dir)


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli.cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_history_prints_the_timeline_and_the_status(data_dir: Path, job_id: str) -> None:
    code, output = _invoke("history", "--data-dir", str(data_dir), job_id)

    assert code == 0, output
    for text in (
        "job.created",
        "job.claimed",
        "job.stage_changed",
        "job.child_started",
        "job.progress",
        "job.child_exited",
        "job.completed",
        "api",
        "worker-7",
        "stage measuring",
        "60%",
        "pid 4242 ffmpeg-linux",
        "pid 4242 exit 0",
        "result: assetId, preparedKey",
    ):
        assert text in output
    assert "+0." in output
    assert output.strip().splitlines()[-1].startswith("status: complete")


def test_history_reads_the_data_dir_from_the_environment_and_prints_json(data_dir: Path, job_id: str) -> None:
    code, output = _invoke("history", job_id, "--json", env={"JOBTAPE_DATA_DIR": str(data_dir)})

    assert code == 0, output
    body = json.loads(output)
    assert body["status"] == "complete"
    assert [e["type"] for e in body["events"]][:2] == ["job.created", "job.claimed"]
    assert body["events"][3]["data"]["argv"][0] == "/opt/bin/ffmpeg-linux"


def test_history_shows_errors_literally_and_the_failed_status(data_dir: Path) -> None:
    repository = runtime.open_repository(Settings(data_dir=data_dir), tables=TABLES)
    try:
        state = repository.create("ingest", {"sourceType": "upload"}).state
        state = repository.append(state.job_id, [ev.JobClaimed(worker_id="w")], state, actor="w").state
        failed = ev.JobFailed(error="ffmpeg failed: [aac @ 0x55d] invalid data\n--- stderr (tail) ---\n...")
        state = repository.append(state.job_id, [failed], state, actor="w").state
    finally:
        repository.store.close()

    code, output = _invoke("history", "--data-dir", str(data_dir), state.job_id)

    assert code == 0, output
    assert "ffmpeg failed: [aac @ 0x55d] invalid data" in output and "stderr (tail)" not in output
    assert "status: failed (progress 0%, error ffmpeg failed: [aac @ 0x55d] invalid data; 3 events)" in output


def test_history_of_an_unknown_job_fails_clearly(data_dir: Path, job_id: str) -> None:
    code, output = _invoke("history", "--data-dir", str(data_dir), "0" * 32)
    assert (code, "Job not found: " + "0" * 32 in output) == (1, True)


def test_history_without_an_event_log_fails_clearly(tmp_path: Path) -> None:
    code, output = _invoke("history", "--data-dir", str(tmp_path / "nowhere"), "0" * 32)
    assert code == 1 and "no event log" in output
    assert not (tmp_path / "nowhere").exists()


def _tamper(data_dir: Path, job_id: str) -> None:
    store = runtime.open_store(Settings(data_dir=data_dir), TABLES)
    try:
        store.backend.execute_batch([Statement("UPDATE jobs SET status = 'failed' WHERE job_id = ?", (job_id,))])
    finally:
        store.close()


def test_rebuild_verify_exit_codes_and_repair(data_dir: Path, job_id: str) -> None:
    assert _invoke("rebuild", "--verify", "--data-dir", str(data_dir)) == (
        0,
        "rebuilt 1 jobs from 7 events; 0 differences; nothing was changed\n",
    )

    _tamper(data_dir, job_id)
    code, output = _invoke("rebuild", "--verify", "--data-dir", str(data_dir))
    assert code == 1
    assert "1 differences" in output and job_id in output and "status" in output and "'failed'" in output

    code, output = _invoke("rebuild", "--verify", "--json", "--data-dir", str(data_dir))
    report = json.loads(output)
    assert code == 1 and (report["applied"], report["jobsRebuilt"], report["rowsRebuilt"]["jobs"]) == (False, 1, 1)
    assert [(d["table"], d["jobId"], d["column"], d["live"], d["rebuilt"]) for d in report["differences"]] == [
        ("jobs", job_id, "status", "failed", "complete")
    ]

    code, output = _invoke("rebuild", "--data-dir", str(data_dir))
    assert code == 0 and "the jobs table was replaced" in output
    assert _invoke("rebuild", "--verify", "--data-dir", str(data_dir))[0] == 0


def test_rebuild_of_a_log_that_cannot_be_folded_names_the_position(data_dir: Path, job_id: str) -> None:
    store = runtime.open_store(Settings(data_dir=data_dir), TABLES)
    try:
        store.backend.execute_batch(
            [
                Statement(
                    "INSERT INTO events (position, key_id, chain, job_id, version, type, data, actor, recorded_at)"
                    " VALUES ((SELECT position + 1 FROM log_head), 'raw', 'raw', ?, 8, 'job.progress', '{\"percent\": 5}', 'x', '2026-01-01T00:00:00Z')",
                    (job_id,),
                )
            ]
        )
    finally:
        store.close()

    code, output = _invoke("rebuild", "--verify", "--data-dir", str(data_dir))

    assert code == 1
    assert f"job {job_id}" in output and "position 8, version 8" in output


def _commands() -> list[list[str]]:
    return [[], *([name] for name in cli.cli.commands)]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "jobtape")
def test_every_command_has_complete_help(command: list[str]) -> None:
    code, output = _invoke(*command, "--help")
    assert code == 0 and output.startswith(f"Usage: {' '.join(['cli', *command])}")
    group_or_command = cli.cli.commands[command[0]] if command else cli.cli
    assert (group_or_command.help or "").strip()
    for param in group_or_command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, param.name
            assert param.show_default or "by default" in param.help, param.name
    assert set(cli.cli.commands) == {
        "serve",
        "worker",
        "history",
        "rebuild",
        "demo",
        "status",
        "jobs",
        "tail",
        "export",
        "import",
        "verify",
        "checkpoint",
        "stats",
        "archive",
        "keys",
    }


def _read_until(process: subprocess.Popen[bytes], text: bytes, timeout_s: float) -> bytes:
    """Read the process's stderr until ``text`` appears; fail after ``timeout_s`` seconds."""
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while text not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not seen within {timeout_s} s: {seen!r}"
            if selector.select(remaining):
                chunk = os.read(process.stderr.fileno(), 4096)
                assert chunk, f"stderr closed before {text!r}: {seen!r}"
                seen += chunk
    return seen


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_on_a_signal_and_exits_0(tmp_path: Path, spawn: list[subprocess.Popen[bytes]], signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(tmp_path), "--poll-interval", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    spawn.append(process)
    _read_until(process, b"SIGINT/SIGTERM to stop", 30)

    process.send_signal(signum)

    assert process.wait(timeout=30) == 0
    assert (tmp_path / "jobtape.db").is_file()


@pytest.mark.slow
def test_demo_runs_a_real_ingest_end_to_end(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "jobtape", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # cwd without media/: the checkout's file is found
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "complete" in completed.stdout and "preparedKey" in completed.stdout
    assert "job.completed" in completed.stdout and "status: complete" in completed.stdout


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_bad_private_network_is_refused_before_anything_starts(tmp_path: Path, command: str) -> None:
    code, output = _invoke(
        command, "--data-dir", str(tmp_path), "--allow-private-network", "10.1.2.0/24", "--allow-private-network", "intranet"
    )
    assert code == 1
    assert "Error: 'intranet' is not an IP network" in output and "a CIDR such as 10.1.2.0/24" in output
    assert not (tmp_path / "jobtape.db").exists()
