"""API keys on a real SQLite file: the real CLI, lookup, the SQL guards, and every reader of the whole log.

Issue 11: key creation and revocation are events in the log (their own streams,
``key-<key_id>``), the token is stored only as a hash, and the job fold never sees a key
stream. Each tool that reads every stream (rebuild, verify, tail, export/import, archive,
stats, status/jobs as of a time, the queue) is run here over a log that holds keys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from configs import TABLES  # tests/ is on sys.path

from jobtape import cli, clock, errors, runtime
from jobtape.audit import asof, retention, stats, transfer
from jobtape.audit import verify as audit_verify
from jobtape.auth import tokens
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import keys, rebuild
from jobtape.projections.repository import JobRepository

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]


def _jobtape(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``jobtape`` command line in a child process."""
    env = {**os.environ, "JOBTAPE_DATA_DIR": str(data_dir)}
    env.pop("JOB_STORE_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "jobtape", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )


@pytest.fixture
def repository(tmp_path: Path) -> JobRepository:
    made = runtime.open_repository(Settings(data_dir=tmp_path / "var"), tables=TABLES)
    yield made  # type: ignore[misc]
    made.store.close()


def _finished_job(repository: JobRepository, owner: str = "alice") -> str:
    state = repository.create("save", {"assetId": "a" * 32}, owner=owner).state
    for event in (ev.JobClaimed(worker_id="w"), ev.JobCompleted(result={"ok": True})):
        state = repository.append(state.job_id, [event], state, actor="w").state
    return state.job_id


def test_the_cli_creates_lists_and_revokes_keys_and_lookup_follows(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    created = _jobtape(data_dir, "keys", "create", "--owner", "alice", "--scope", "jobs:submit,jobs:read", "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    key_id = tokens.parse(token)
    assert key_id is not None and f"created API key {key_id} for owner alice" in created.stdout
    quiet = _jobtape(data_dir, "keys", "create", "--owner", "bob", "--scope", "admin", "--quiet")
    assert quiet.returncode == 0 and tokens.parse(quiet.stdout.strip()) is not None and quiet.stdout.count("\n") == 1

    listed = _jobtape(data_dir, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["keys"]
    first = rows[0]
    assert (first["keyId"], first["owner"], first["scopes"], first["name"], first["revokedAt"]) == (
        key_id, "alice", ["jobs:read", "jobs:submit"], "ci", None
    )  # fmt: skip
    table = _jobtape(data_dir, "keys", "list")
    for secret in (token, tokens.token_hash(token), quiet.stdout.strip(), tokens.token_hash(quiet.stdout.strip())):
        assert secret not in listed.stdout + table.stdout  # never the token, never its hash
    assert "2 keys, 2 active" in table.stdout

    store = runtime.open_store(Settings(data_dir=data_dir), TABLES)
    try:
        found = keys.lookup(store, token)
        assert found == keys.ApiKey(key_id=key_id, owner="alice", scopes=frozenset({"jobs:submit", "jobs:read"}), revoked=False, name="ci")
        assert _jobtape(data_dir, "keys", "revoke", key_id).returncode == 0
        assert keys.lookup(store, token) == keys.ApiKey(
            key_id=key_id, owner="alice", scopes=frozenset({"jobs:submit", "jobs:read"}), revoked=True, name="ci"
        )
        actors = {(r.type, r.actor) for r in store.read_key_stream(kev.key_stream(key_id))}
        assert {type_ for type_, _ in actors} == {"key.created", "key.revoked"} and all(a.startswith("cli") for _, a in actors)
    finally:
        store.close()

    again = _jobtape(data_dir, "keys", "revoke", key_id)
    assert again.returncode == 1 and "revoked already" in again.stderr
    unknown = _jobtape(data_dir, "keys", "revoke", "0000000000000000")
    assert unknown.returncode == 1 and "no API key with id '0000000000000000'" in unknown.stderr
    bad_scope = _jobtape(data_dir, "keys", "create", "--owner", "carol", "--scope", "jobs:write")
    assert bad_scope.returncode == 2 and "jobs:submit, jobs:read, jobs:cancel, admin" in bad_scope.stderr
    assert "1 active" in _jobtape(data_dir, "keys", "list").stdout


def test_lookup_answers_none_for_a_wrong_malformed_or_unknown_token(repository: JobRepository) -> None:
    _, token = keys.KeyRepository(repository.store).create("alice", "jobs:read", actor="cli:test")
    last = token[-1]
    wrong = token[:-1] + ("A" if last != "A" else "B")
    assert keys.lookup(repository, token) is not None
    assert keys.lookup(repository, wrong) is None
    assert keys.lookup(repository, token + "x") is None
    assert keys.lookup(repository, tokens.new_token()[1]) is None
    assert keys.lookup(repository, "") is None


def test_the_guards_are_in_sql(repository: JobRepository) -> None:
    store = repository.store
    state, token = keys.KeyRepository(store).create("alice", "jobs:read", actor="cli:test")
    stream = kev.key_stream(state.key_id)
    revoked = kev.KeyRevoked(key_id=state.key_id)
    store.append_key_events(stream, [revoked], 1, actor="cli:test", extra=keys.statements(state, state))
    with pytest.raises(errors.ConcurrencyError):  # a revoke decided on the stale version 1: the version guard
        store.append_key_events(stream, [revoked], 1, actor="cli:test")
    unknown = kev.key_stream("0000000000000000")
    with pytest.raises(errors.ConcurrencyError):  # a revoke of a key that was never created
        store.append_key_events(unknown, [kev.KeyRevoked(key_id="0000000000000000")], 1, actor="cli:test")
    created = kev.KeyCreated(key_id=state.key_id, owner="mallory", scopes=["admin"], token_hash="00" * 32)
    with pytest.raises(errors.ConcurrencyError):  # the same key id created twice
        store.append_key_events(stream, [created], 0, actor="cli:test")
    copy = kev.KeyCreated(key_id="1111111111111111", owner="mallory", scopes=["admin"], token_hash=tokens.token_hash(token))
    copy_state = keys.key_state.apply(None, copy, stream=kev.key_stream(copy.key_id), version=1, recorded_at=clock.utcnow())
    with pytest.raises(errors.ConstraintViolation, match="token_hash"):  # a second key with the same token
        store.append_key_events(kev.key_stream(copy.key_id), [copy], 0, actor="cli:test", extra=keys.statements(None, copy_state))
    assert keys.lookup(store, token).owner == "alice"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="key stream"):  # the job path refuses a key stream
        store.append(stream, [ev.JobCreated(job_type="save")], 2, actor="api")
    with pytest.raises(ValueError, match="not a key stream"):
        store.append_key_events("0" * 32, [revoked], 0, actor="cli:test")


def test_a_trigger_keeps_key_events_in_key_streams_only(tmp_path: Path, repository: JobRepository) -> None:
    path = tmp_path / "var" / "jobtape.db"
    with sqlite3.connect(path) as conn:
        # A row the chain guard lets through (the next position, built on the head's chain), so
        # only the key-stream trigger can refuse it.
        conn.execute("UPDATE log_head SET expected = chain WHERE id = 1")
        head = conn.execute("SELECT position FROM log_head WHERE id = 1").fetchone()[0]
        insert = (
            "INSERT INTO events (position, job_id, version, type, data, actor, recorded_at, key_id, chain)"
            " VALUES (?, ?, 1, ?, '{}', 'x', 'now', 'k', 'c')"
        )
        for stream, type_ in (("key-2222222222222222", "job.created"), ("3" * 32, "key.created")):
            with pytest.raises(sqlite3.IntegrityError, match="key events belong in key streams"):
                conn.execute(insert, (head + 1, stream, type_))


def test_rebuild_and_verify_cover_key_streams_and_the_job_fold_never_sees_them(repository: JobRepository) -> None:
    store = repository.store
    key_repository = keys.KeyRepository(store)
    alice, _ = key_repository.create("alice", "jobs:submit", actor="cli:test")
    job_id = _finished_job(repository)
    bob, _ = key_repository.create("bob", "admin,jobs:read", name="ops", actor="cli:test")
    key_repository.revoke(alice.key_id, actor="cli:test")  # the log's head is a key event
    pending = repository.create("save", {"assetId": "b" * 32}).state

    report = rebuild.rebuild(store, apply_changes=False, tables=TABLES)
    assert report.differences == [] and report.jobs_rebuilt == 2 and report.rows_rebuilt["api_keys"] == 2 and report.events_read == 7
    checked = audit_verify.verify(store.iter_stored())
    assert (checked.violations, checked.jobs_checked, checked.keys_checked) == ([], 2, 2)

    store.backend.execute_batch([Statement("UPDATE api_keys SET revoked_at = NULL, scopes = 'admin' WHERE key_id = ?", (alice.key_id,))])
    drifted = rebuild.rebuild(store, apply_changes=False, tables=TABLES)
    assert {(d.table, d.job_id, d.column) for d in drifted.differences} == {
        ("api_keys", alice.key_id, "scopes"), ("api_keys", alice.key_id, "revoked_at")
    }  # fmt: skip
    rebuild.rebuild(store, tables=TABLES)
    assert rebuild.rebuild(store, apply_changes=False, tables=TABLES).differences == []
    assert [k.revoked_at is not None for k in keys.list_keys(store)] == [True, False]

    # every job read skips key streams
    assert {e.job_id for e in store.iter_all()} == {job_id, pending.job_id}
    assert store.created_job_ids() == {job_id, pending.job_id}
    assert store.read_stream(kev.key_stream(bob.key_id)) == []
    assert [j.state.job_id for j in asof.jobs_as_of(store.iter_all(), clock.utcnow())] == [job_id, pending.job_id]
    assert stats.compute(transfer.timelines(store)).jobs == 2
    assert repository.queue_position(pending.job_id) == 1


def test_export_and_import_carry_key_streams_and_a_selection_of_jobs_leaves_them_out(repository: JobRepository, tmp_path: Path) -> None:
    store = repository.store
    key_repository = keys.KeyRepository(store)
    alice, alice_token = key_repository.create("alice", "jobs:submit,jobs:read", actor="cli:test")
    job_id = _finished_job(repository)
    _, bob_token = key_repository.create("bob", "admin", actor="cli:test")
    key_repository.revoke(alice.key_id, actor="cli:test")
    exported = tmp_path / "log.jsonl"
    with exported.open("w") as out:
        report = transfer.export(store, out, None)
    assert (report.jobs, report.keys, report.events) == (1, 2, 6)

    target = EventStore(runtime.open_backend(Settings(data_dir=tmp_path / "copy"), TABLES))
    try:
        with exported.open() as lines:
            imported = transfer.import_lines(target, lines, TABLES)
        assert (imported.jobs, imported.keys, imported.events) == (1, 2, 6)
        assert keys.lookup(target, alice_token).revoked is True  # type: ignore[union-attr]
        assert keys.lookup(target, bob_token) == keys.ApiKey(key_id=tokens.parse(bob_token) or "", owner="bob",
                                                              scopes=frozenset({"admin"}), revoked=False, name="")  # fmt: skip
        assert rebuild.rebuild(target, apply_changes=False, tables=TABLES).differences == []
        assert audit_verify.verify(target.iter_stored()).violations == []
    finally:
        target.close()

    selected = tmp_path / "jobs.jsonl"
    with selected.open("w") as out:
        only_jobs = transfer.export(store, out, transfer.select_jobs(store, since=1))
    assert (only_jobs.jobs, only_jobs.keys) == (1, 0) and "key-" not in selected.read_text()
    assert job_id in selected.read_text()


def test_an_archive_never_archives_key_streams(repository: JobRepository, tmp_path: Path) -> None:
    store = repository.store
    state, token = keys.KeyRepository(store).create("alice", "jobs:submit", actor="cli:test")
    job_id = _finished_job(repository)
    report = retention.archive(
        store, cutoff=clock.utcnow() + dt.timedelta(days=1), path=tmp_path / "a.jsonl", actor="cli:test", tables=TABLES
    )
    assert report.jobs == 1 and "key-" not in (tmp_path / "a.jsonl").read_text()
    assert not store.stream_exists(job_id) and store.stream_exists(kev.key_stream(state.key_id))
    assert keys.lookup(store, token) is not None
    assert audit_verify.verify(store.iter_stored()).violations == []
    assert rebuild.rebuild(store, apply_changes=False, tables=TABLES).differences == []


def test_tail_and_verify_commands_show_key_events_without_secrets(repository: JobRepository, tmp_path: Path) -> None:
    state, token = keys.KeyRepository(repository.store).create("alice", "jobs:read", name="ci", actor="cli:test")
    env = {"JOBTAPE_DATA_DIR": str(tmp_path / "var")}
    tail = CliRunner().invoke(cli.cli, ["tail"], env=env, catch_exceptions=False)
    assert (
        tail.exit_code == 0
        and f"key-{state.key_id} v1" in tail.output
        and "key.created owner alice scopes jobs:read name ci" in tail.output
    )
    assert tokens.token_hash(token) not in tail.output
    checked = CliRunner().invoke(cli.cli, ["verify"], env=env, catch_exceptions=False)
    assert checked.exit_code == 0 and "checked 1 events of 0 jobs and 1 API keys: OK" in checked.output
    rebuilt = CliRunner().invoke(cli.cli, ["rebuild", "--verify"], env=env, catch_exceptions=False)
    assert rebuilt.exit_code == 0 and "0 differences" in rebuilt.output


@pytest.mark.parametrize("command", ["create", "list", "revoke"])
def test_every_keys_command_has_complete_help(command: str) -> None:
    result = CliRunner().invoke(cli.cli, ["keys", command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.startswith(f"Usage: cli keys {command}")
    found = cli.cli.commands["keys"].commands[command]  # type: ignore[attr-defined]
    assert (found.help or "").strip()
    for param in found.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, param.name
            assert param.show_default or "by default" in param.help, param.name
