"""Credentials a real sqld refuses fail fast with :class:`errors.StoreAuthRejected`, not as an outage.

sqld runs with ``--auth-jwt-key-file`` (an Ed25519 public key in PEM); the tests sign their
own JWTs (``{"alg": "EdDSA", "typ": "JWT"}``, payload ``{"a": "rw"}``). Over a WebSocket sqld
accepts the connection and answers the Hrana ``hello`` with ``hello_error``
``AUTH_JWT_INVALID``; over HTTP it answers 401.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import configs  # tests/ is on sys.path
import pytest
from configs import TABLES  # tests/ is on sys.path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import clock, errors
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.store import EventStore
from jobtape.http import errors as http_errors
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children

__all__: list[str] = []

TIMEOUT_S = 15.0  # the backend's request timeout; a refusal must come well before it
SCHEMES = ["ws", "http"]


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: Ed25519PrivateKey, payload: dict[str, object]) -> str:
    """A compact JWS signed with EdDSA (RFC 7515, RFC 8037)."""
    signing_input = _base64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode()) + "." + _base64url(json.dumps(payload).encode())
    return signing_input + "." + _base64url(key.sign(signing_input.encode()))


@pytest.fixture
def server_key() -> Ed25519PrivateKey:
    """The key pair whose public half sqld trusts."""
    return Ed25519PrivateKey.generate()


def _trust(key_file: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key``'s public half where sqld reads it at start-up."""
    key_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _restart_trusting(server: SqldServer, key: Ed25519PrivateKey) -> None:
    """Restart sqld on the same data and port, trusting only ``key`` (the operator rotates the key)."""
    server.stop()
    _trust(Path(server.extra_args[server.extra_args.index("--auth-jwt-key-file") + 1]), key)
    server.start()


def _exit_output(process: subprocess.Popen[bytes], log: Path, what: str, timeout_s: float) -> str:
    """Wait for ``process`` to exit (killing it if it does not in time); return its log."""
    try:
        wait_for(lambda: process.poll() is not None, timeout_s=timeout_s, what=what)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return log.read_text(errors="replace")


@pytest.fixture
def auth_sqld(sqld_factory: Callable[..., SqldServer], server_key: Ed25519PrivateKey, tmp_path: Path) -> SqldServer:
    """A running sqld that requires a JWT signed by :func:`server_key` (its key file: ``tmp_path/jwt-public.pem``)."""
    key_file = tmp_path / "jwt-public.pem"
    _trust(key_file, server_key)
    return sqld_factory("--auth-jwt-key-file", str(key_file))


def _url(server: SqldServer, scheme: str) -> str:
    return server.ws_url if scheme == "ws" else server.http_url


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_right_token_appends_and_reads(auth_sqld: SqldServer, server_key: Ed25519PrivateKey, scheme: str) -> None:
    backend = LibSQLBackend(_url(auth_sqld, scheme), _jwt(server_key, {"a": "rw"}), timeout_s=TIMEOUT_S)
    try:
        backend.migrate(TABLES.migrations)
        repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        created = repository.create("ingest", {"storageKey": "k"})
        assert repository.get(created.state.job_id).status == "pending"
    finally:
        backend.close()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("token", ["other key", "none", "garbage"])
def test_a_refused_token_raises_store_auth_rejected_at_once(auth_sqld: SqldServer, scheme: str, token: str) -> None:
    sent = {"other key": _jwt(Ed25519PrivateKey.generate(), {"a": "rw"}), "none": None, "garbage": "abc"}[token]
    backend = LibSQLBackend(_url(auth_sqld, scheme), sent, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    try:
        with pytest.raises(errors.StoreAuthRejected) as caught:
            backend.migrate(TABLES.migrations)
        assert time.monotonic() - started < 3.0
        assert "check TURSO_AUTH_TOKEN" in caught.value.message
        assert ("AUTH_" if scheme == "ws" else "HTTP status 401") in caught.value.detail
        with pytest.raises(errors.StoreAuthRejected):  # the next call asks again, it is not an outage
            backend.query("SELECT 1")
    finally:
        backend.close()


def test_worker_with_a_refused_token_exits_1_with_the_message(auth_sqld: SqldServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": auth_sqld.ws_url,
        "TURSO_AUTH_TOKEN": _jwt(Ed25519PrivateKey.generate(), {"a": "rw"}),
        "JOBTAPE_LOG_KEY": "a" * 40,
        "JOBTAPE_DATA_DIR": str(tmp_path),
        "STORAGE_BACKEND": "local",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "jobtape", "worker"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    text = _exit_output(process, log, "the worker to exit", timeout_s=10)
    assert process.returncode == 1, text
    assert "the event store refused the credentials: check TURSO_AUTH_TOKEN" in text
    assert "unreachable at start-up" not in text and "Traceback" not in text


def test_a_token_revoked_mid_job_stops_the_worker_and_kills_its_ffmpeg_then_a_valid_one_finishes_the_job(
    auth_sqld: SqldServer, server_key: Ed25519PrivateKey, tmp_path: Path, media_dir: Path
) -> None:
    token = _jwt(server_key, {"a": "rw"})
    storage = LocalStorage(tmp_path / "storage")
    backend = LibSQLBackend(auth_sqld.ws_url, token, timeout_s=TIMEOUT_S)
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    key = "ingest-uploads/revoked/original.ogg"
    storage.put_file(key, media_dir / "music_strings.ogg")  # 45 s at real time
    job_id = repository.create("ingest", {"sourceType": "upload", "storageKey": key}).state.job_id
    slow, slow_audio = configs.split(data_dir=tmp_path, ffmpeg_readrate=1.0, lease_ttl_s=2.0, poll_interval_s=0.05, kill_grace_s=2)
    worker = Worker(repository, storage, slow, slow_audio)
    worker.start()
    try:

        def loudnorm() -> ev.JobChildStarted | None:  # the second ffmpeg: 45 s at real time
            started = [r.event for r in repository.store.read_stream(job_id) if isinstance(r.event, ev.JobChildStarted)]
            return started[1] if len(started) > 1 else None

        child = wait_for(loudnorm, timeout_s=20, what="the loudnorm ffmpeg to start")
        rotated_at = clock.utcnow()
        _restart_trusting(auth_sqld, Ed25519PrivateKey.generate())  # this worker's token is no longer valid
        wait_for(lambda: worker.fatal_error is not None, timeout_s=30, what="the worker to give up")
        with pytest.raises(errors.StoreAuthRejected):
            worker.wait()
        assert worker.running_job_ids() == []
        assert not children.process_alive(child.pid, child.started_at_ticks)  # no ffmpeg left running
    finally:
        worker.stop(grace_s=0)
        backend.close()

    _restart_trusting(auth_sqld, server_key)  # the operator puts the right key back
    backend = LibSQLBackend(auth_sqld.ws_url, token, timeout_s=TIMEOUT_S)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    fixed = Worker(
        repository, storage, Settings(data_dir=tmp_path, lease_ttl_s=2.0, poll_interval_s=0.05, backoff_base_s=0.05, backoff_cap_s=0.1)
    )
    fixed.start()
    try:
        wait_for(lambda: repository.get(job_id).finished, timeout_s=60, what="the job to be taken back and finished")
    finally:
        fixed.stop(grace_s=5)
    state = repository.get(job_id)
    types = [r.type for r in repository.store.read_stream(job_id)]
    try:
        assert (state.status, state.attempt, state.orphaned_children) == ("complete", 2, ()), state.error
        assert "job.lease_expired" in types and types.count("job.claimed") == 2
        first_attempt = repository.store.read_stream(job_id)[: types.index("job.lease_expired")]
        assert all(r.recorded_at < rotated_at for r in first_attempt)  # nothing recorded after the refusal
        assert not any(isinstance(r.event, ev.JobChildExited) and r.event.pid == child.pid for r in first_attempt)
    finally:
        backend.close()


def test_serve_whose_token_is_refused_mid_run_stops_and_exits_1(
    auth_sqld: SqldServer, server_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The embedded worker's next poll meets the refusal: the server stops instead of
    answering 503 forever, so a supervisor sees a failing service."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": auth_sqld.ws_url,
        "TURSO_AUTH_TOKEN": _jwt(server_key, {"a": "rw"}),
        "JOBTAPE_LOG_KEY": "a" * 40,
        "JOBTAPE_DATA_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobtape", "serve", "--port", str(port), "--poll-interval", "0.1"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"Uvicorn running" in log.read_bytes() or process.poll() is not None, timeout_s=30, what="the API to serve")
        assert process.poll() is None, log.read_text(errors="replace")
        _restart_trusting(auth_sqld, Ed25519PrivateKey.generate())  # the server's token is refused from now on
    finally:
        text = _exit_output(process, log, "serve to stop", timeout_s=30)
    assert process.returncode == 1, text
    assert "Error: the event store refused the credentials: check TURSO_AUTH_TOKEN" in text
    assert "Traceback" not in text


def test_the_api_answers_503_without_the_servers_answer() -> None:
    status, message = http_errors.status_for(errors.StoreAuthRejected("AUTH_JWT_INVALID: The JWT is invalid"))
    assert status == 503 and "credentials" in message and "AUTH_JWT_INVALID" not in message
