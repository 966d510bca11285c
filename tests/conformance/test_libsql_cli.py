"""Every CLI command on a libSQL store (issue 5: "every CLI command works with either").

A log built by real jobs on the embedded SQLite file is exported, imported into a real sqld
(``JOB_STORE_BACKEND=libsql``: moving a local log to Turso), and then read, verified,
summarised, exported, archived and re-imported there, with answers equal to those on SQLite.
``--data-dir`` points at an empty folder throughout: a command that fell back to SQLite would
find no log there (or create one, which the test checks does not happen).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from configs import TABLES  # tests/ is on sys.path
from integration.audit_log import build_real_log  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import cli, errors

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def _json(env: dict[str, str], *args: str) -> Any:
    code, output = _run(env, *args, "--json")
    assert code == 0, output
    return json.loads(output)


def _event_lines(export: Path) -> list[dict[str, Any]]:
    """The event lines of an export (without its keyed trailer)."""
    return [json.loads(line) for line in export.read_text().splitlines() if line.startswith('{"position"')]


@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A SQLite data dir with 3 completed ingests, 1 failed, 1 cancelled mid-ffmpeg (real jobs)."""
    data_dir = tmp_path_factory.mktemp("sqlite-log")
    return data_dir, build_real_log(data_dir)


def test_every_audit_command_reads_and_writes_a_libsql_store(
    real_log: tuple[Path, dict[str, str]], sqld_factory: Callable[..., SqldServer], tmp_path: Path
) -> None:
    sqlite_dir, jobs = real_log
    local = {"JOBTAPE_DATA_DIR": str(sqlite_dir)}
    empty = tmp_path / "no-local-log"
    remote = {
        "JOBTAPE_DATA_DIR": str(empty),
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": sqld_factory().ws_url,
        "JOBTAPE_LOG_KEY": "c" * 40,  # every host on libSQL holds the same log key (docs/deploy.md)
    }
    exported = tmp_path / "log.jsonl"
    assert _run(local, "export", "-o", str(exported))[0] == 0
    events = len(_event_lines(exported))

    # the remote log has its own key: the SQLite log's is accepted for verification with --key-file
    code, output = _run(remote, "import", str(exported), "--data-dir", str(empty), "--key-file", str(sqlite_dir / "log-key"))

    assert code == 0 and f"imported {events} events of 5 jobs" in output, output
    assert f"checked {events} events of 5 jobs: OK" in _run(remote, "verify")[1]
    assert "0 differences" in _run(remote, "rebuild", "--verify")[1]
    unkeyed = {**remote, "JOBTAPE_LOG_KEY": ""}  # a rebuild appends nothing: it needs no log key on libSQL
    assert "the jobs table was replaced" in _run(unkeyed, "rebuild")[1]
    assert "0 differences" in _run(unkeyed, "rebuild", "--verify")[1]
    with pytest.raises(errors.LogKeyError, match="set JOBTAPE_LOG_KEY"):  # a writing command still refuses (exit 1 in `main`)
        _run(unkeyed, "keys", "create", "--owner", "alice", "--scope", "jobs:read")
    assert _json(remote, "stats") == _json(local, "stats")
    assert _json(remote, "jobs")["jobs"] == _json(local, "jobs")["jobs"]
    cancelled = jobs["cancelled"]
    assert _json(remote, "history", cancelled)["events"] == _json(local, "history", cancelled)["events"]
    assert _json(remote, "status", cancelled, "--as-of", "-0s")["state"]["status"] == "cancelled"
    tail = _run(remote, "tail", "--type", "job.cancel_requested")[1]
    assert cancelled in tail and "operator: wrong file" in tail
    again = tmp_path / "again.jsonl"
    assert _run(remote, "export", "-o", str(again))[0] == 0
    assert [line["hash"] for line in _event_lines(again)] == [line["hash"] for line in _event_lines(exported)]

    archive = tmp_path / "archive.jsonl"
    code, output = _run(remote, "archive", "--older-than", "0s", "--to", str(archive), "--json")
    assert code == 0, output
    assert json.loads(output)["jobs"] == 5 and _json(remote, "jobs")["jobs"] == []
    assert "checked 0 events of 0 jobs: OK" in _run(remote, "verify")[1]
    assert _run(remote, "import", str(archive), "--data-dir", str(empty))[0] == 0
    assert _json(remote, "stats") == _json(local, "stats")
    assert not (empty / "jobtape.db").exists()  # nothing fell back to a local SQLite file


def test_a_command_on_an_unreachable_store_exits_1_with_the_reason(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOBTAPE_DATA_DIR": str(tmp_path),
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": "ws://127.0.0.1:9",
    }  # nothing listens on the discard port
    done = subprocess.run(
        [sys.executable, "-m", "jobtape", "verify"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: the event store is unavailable") and "Traceback" not in done.stderr
    assert not (tmp_path / "jobtape.db").exists()


def test_the_configuration_reaches_sqld_through_every_url_form(sqld_factory: Callable[..., SqldServer]) -> None:
    """``DEPLOY_ENV=production`` selects libSQL (seed 003); each URL form the docs list answers."""
    from jobtape import runtime
    from jobtape.config import Settings

    server = sqld_factory()
    port = server.ws_url.rsplit(":", 1)[1]
    for url in (server.ws_url, server.http_url, f"libsql://127.0.0.1:{port}?tls=0"):
        settings = Settings.from_env({"DEPLOY_ENV": "production", "TURSO_DATABASE_URL": url, "JOBTAPE_LOG_KEY": "p" * 40})
        assert settings.job_store_backend == "libsql"
        repository = runtime.open_repository(settings, tables=TABLES)
        try:
            created = repository.create("ingest", {"storageKey": url})
            assert repository.get(created.state.job_id).params == {"storageKey": url}
        finally:
            repository.store.close()
    assert Settings.from_env({"DEPLOY_ENV": "staging"}).job_store_backend == "sqlite"
