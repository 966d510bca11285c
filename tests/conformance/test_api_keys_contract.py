"""API keys on both backends (SQLite and a real sqld): lifecycle, guards, rebuild, verify, export/import, and the real CLI.

The ``store`` fixture runs each test on SQLite and on libSQL (tests/conformance/conftest.py);
the CLI test runs ``jobtape keys`` as a child process against a real sqld
(``JOB_STORE_BACKEND=libsql``), with ``--data-dir`` an empty folder that must stay empty.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import errors
from jobtape.audit import transfer
from jobtape.audit import verify as audit_verify
from jobtape.auth import tokens
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev
from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import keys, rebuild
from jobtape.projections.repository import JobRepository

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]


def test_a_key_lives_and_is_revoked_with_its_guards(store: EventStore, repository: JobRepository) -> None:
    key_repository = keys.KeyRepository(store)
    state, token = key_repository.create("alice", "jobs:submit,jobs:cancel", name="web", actor="cli:test")
    job = repository.create("save", {"assetId": "a" * 32}, owner="alice").state
    assert keys.lookup(store, token) == keys.ApiKey(
        key_id=state.key_id, owner="alice", scopes=frozenset({"jobs:submit", "jobs:cancel"}), revoked=False, name="web"
    )
    assert keys.lookup(store, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    key_repository.revoke(state.key_id, actor="cli:test")
    assert keys.lookup(store, token).revoked is True  # type: ignore[union-attr]
    with pytest.raises(errors.IllegalTransition, match="revoked already"):
        key_repository.revoke(state.key_id, actor="cli:test")
    with pytest.raises(errors.ConcurrencyError):  # the version guard, without the fold in front
        store.append_key_events(kev.key_stream(state.key_id), [kev.KeyRevoked(key_id=state.key_id)], 1, actor="cli:test")
    with pytest.raises(errors.KeyNotFound):
        key_repository.revoke("0000000000000000", actor="cli:test")

    assert rebuild.rebuild(store, apply_changes=False, tables=TABLES).differences == []
    report = audit_verify.verify(store.iter_stored())
    assert (report.violations, report.jobs_checked, report.keys_checked) == ([], 1, 1)
    assert [item.job_id for item in store.iter_all()] == [job.job_id]


def test_export_and_import_carry_key_streams(store: EventStore, repository: JobRepository, tmp_path: Path) -> None:
    key_repository = keys.KeyRepository(store)
    alice, alice_token = key_repository.create("alice", "jobs:read", actor="cli:test")
    job = repository.create("save", {"assetId": "a" * 32}).state
    repository.append(job.job_id, [ev.JobCancelRequested()], job, actor="api")
    key_repository.revoke(alice.key_id, actor="cli:test")
    _, bob_token = key_repository.create("bob", "admin", actor="cli:test")
    out = io.StringIO()
    assert (transfer.export(store, out, None).keys, out.getvalue().count("key.created")) == (2, 2)

    target_backend = SQLiteBackend(tmp_path / "copy.db")
    target_backend.migrate(TABLES.migrations)
    target = EventStore(target_backend)
    try:
        imported = transfer.import_lines(target, io.StringIO(out.getvalue()), TABLES)
        assert (imported.jobs, imported.keys, imported.events) == (1, 2, 5)
        assert keys.lookup(target, alice_token).revoked is True  # type: ignore[union-attr]
        assert keys.lookup(target, bob_token).revoked is False  # type: ignore[union-attr]
        assert rebuild.rebuild(target, apply_changes=False, tables=TABLES).differences == []
    finally:
        target.close()


def _jobtape(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtape", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_the_keys_cli_works_on_a_libsql_store(sqld_factory: Callable[..., SqldServer], tmp_path: Path) -> None:
    server = sqld_factory()
    empty = tmp_path / "no-local-log"
    env = {
        "JOBTAPE_DATA_DIR": str(empty),
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": server.ws_url,
        "JOBTAPE_LOG_KEY": "k" * 40,  # as deployed on libSQL (docs/deploy.md): the log key from the environment on every host
    }
    created = _jobtape(env, "keys", "create", "--owner", "alice", "--scope", "jobs:submit,jobs:read", "--json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    assert tokens.parse(made["token"]) == made["keyId"] and made["scopes"] == ["jobs:read", "jobs:submit"]
    listed = _jobtape(env, "keys", "list", "--json")
    assert [k["keyId"] for k in json.loads(listed.stdout)["keys"]] == [made["keyId"]] and made["token"] not in listed.stdout
    assert _jobtape(env, "keys", "revoke", made["keyId"]).returncode == 0
    again = _jobtape(env, "keys", "revoke", made["keyId"])
    assert again.returncode == 1 and "revoked already" in again.stderr
    assert "1 API keys: OK" in _jobtape(env, "verify").stdout
    assert _jobtape(env, "rebuild", "--verify").returncode == 0
    assert not empty.exists()  # nothing fell back to a local SQLite file

    backend = LibSQLBackend(server.ws_url)
    try:
        found = keys.lookup(EventStore(backend), made["token"])
        assert found is not None and found.revoked and found.owner == "alice"
    finally:
        backend.close()
