"""Several processes against one sqld: exclusive claims over the network, and an outage.

The outage test runs the whole path as deployed: the API (in-process, TestClient) and two
``jobtape worker`` processes configured only through the environment
(``JOB_STORE_BACKEND=libsql``, ``TURSO_DATABASE_URL``), ingesting a real recording with
ffmpeg. sqld is stopped while jobs run and restarted on the same data dir and port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import runtime
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog import hashing
from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import rebuild as rebuild_module
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

__all__: list[str] = []

#: The log key every process of these tests holds, as a deployment on libSQL passes it.
LOG_KEY = "libsql-cluster-test-log-key-0123456789abcdef"
SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"


@pytest.fixture
def libsql_repository(sqld: SqldServer) -> Iterator[JobRepository]:
    settings = Settings(job_store_backend="libsql", turso_database_url=sqld.ws_url, log_key=LOG_KEY)
    repository = runtime.open_repository(settings, tables=TABLES)
    yield repository
    repository.store.close()


def test_worker_processes_claim_each_job_exactly_once_over_the_network(
    sqld: SqldServer, libsql_repository: JobRepository, tmp_path: Path
) -> None:
    job_ids = [libsql_repository.create("ingest", {}).state.job_id for _ in range(40)]
    script = Path(__file__).with_name("libsql_worker_main.py")
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), sqld.ws_url, f"worker-{n}"],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "JOBTAPE_LOG_KEY": LOG_KEY,
                "JOBTAPE_DATA_DIR": str(tmp_path),
            },  # every host holds the log's key (docs/deploy.md)
        )
        for n in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert sum(int(o.strip()) for o in outputs) == len(job_ids)
    for job_id in job_ids:
        types = [r.type for r in libsql_repository.store.read_stream(job_id)]
        assert types == ["job.created", "job.claimed", "job.completed"], types
        state = libsql_repository.get(job_id)
        assert state.result == {"by": state.worker_id}


def test_http_url_works_like_the_websocket(sqld: SqldServer) -> None:
    backend = LibSQLBackend(sqld.http_url)
    try:
        backend.migrate(TABLES.migrations)
        repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        created = repository.create("ingest", {"a": 1})
        assert repository.get(created.state.job_id).params == {"a": 1}
    finally:
        backend.close()


def test_an_unreachable_store_raises_store_unavailable(sqld: SqldServer) -> None:
    from jobtape import errors

    backend = LibSQLBackend(sqld.ws_url, timeout_s=5.0)
    try:
        backend.migrate(TABLES.migrations)
        sqld.stop()
        with pytest.raises(errors.StoreUnavailable) as info:
            backend.query("SELECT 1")
        assert not info.value.in_doubt
        sqld.start()  # same data dir and port: the backend reconnects on the next call
        assert backend.query("SELECT COUNT(*) FROM _jobtape_migrations")[0][0] >= 3
    finally:
        backend.close()


def _upload(client: TestClient, owner: str) -> Any:
    with SPEECH.open("rb") as handle:
        return client.post("/api/audio/ingest", files={"file": ("speech.wav", handle, "audio/wav")}, headers={"X-Client-Id": owner})


def _verify_stream(repository: JobRepository, job_id: str) -> list[str]:
    """Assert versions 1..n without gaps and an intact hash chain; return the event types."""
    rows = repository.store.backend.query(
        "SELECT version, type, data, actor, recorded_at, hash FROM events WHERE job_id = ? ORDER BY version", [job_id]
    )
    previous = hashing.genesis_hash(job_id)
    for expected, (version, type_, data, actor, recorded_at, stored) in enumerate(rows, start=1):
        assert version == expected
        previous = hashing.event_hash(previous, job_id, version, type_, data, actor, recorded_at)
        assert stored == previous, f"hash chain broken at {job_id} v{version}"
    return [row[1] for row in rows]


@pytest.mark.slow
def test_sqld_outage_mid_run_api_answers_503_workers_back_off_and_every_job_finishes(
    sqld: SqldServer, libsql_repository: JobRepository, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, job_store_backend="libsql", turso_database_url=sqld.ws_url, log_key=LOG_KEY)
    app = create_app(libsql_repository, LocalStorage(settings.storage_root), settings)
    env = {
        **os.environ,
        "JOB_STORE_BACKEND": "libsql",
        "TURSO_DATABASE_URL": sqld.ws_url,
        "JOBTAPE_DATA_DIR": str(tmp_path),
        "JOBTAPE_LOG_KEY": LOG_KEY,
        "STORAGE_BACKEND": "local",
        "PYTHONUNBUFFERED": "1",
    }
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    workers = []
    for log in logs:
        with log.open("wb") as sink:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jobtape", "worker", "--poll-interval", "0.2", "--concurrency", "2"],
                    env=env,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        with TestClient(app) as client:
            job_ids = []
            for n in range(6):
                response = _upload(client, f"client-{n}")  # one owner each: the per-owner quota is not under test
                assert response.status_code == 202, response.text
                job_ids.append(response.json()["data"]["jobId"])
            wait_for(lambda: all("polling" in log.read_text(errors="replace") for log in logs), what="both workers up")
            wait_for(
                lambda: any(client.get(f"/api/audio/jobs/{j}").json()["status"] == "processing" for j in job_ids),
                what="a job to be processing",
            )

            sqld.stop()
            down = client.get(f"/api/audio/jobs/{job_ids[0]}")
            assert down.status_code == 503, down.text
            assert int(down.headers["retry-after"]) >= 1
            assert "event store is unavailable" in down.json()["error"]
            refused = _upload(client, "client-x")
            assert refused.status_code == 503
            uploads = settings.storage_root / "ingest-uploads"
            assert {path.stem for path in uploads.glob("*")} <= set(job_ids)  # the refused blob is gone (ingest-uploads/<jobId>.<ext>)
            backoff = ("next try in", "checking the in-doubt append again")
            wait_for(
                lambda: all(any(m in log.read_text(errors="replace") for m in backoff) for log in logs),
                timeout_s=30,
                what="both workers to back off",
            )
            sqld.start()

            def finished() -> bool:
                views = [client.get(f"/api/audio/jobs/{j}") for j in job_ids]
                return all(v.status_code == 200 and v.json()["status"] in ("complete", "failed", "cancelled") for v in views)

            wait_for(finished, timeout_s=180, what="every job to finish after the restart")
            views = [client.get(f"/api/audio/jobs/{j}").json() for j in job_ids]
            assert [v["status"] for v in views] == ["complete"] * len(job_ids), views
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for job_id in job_ids:
        types = _verify_stream(libsql_repository, job_id)
        assert types.count("job.created") == 1 and types.count("job.completed") == 1, types
        assert types.count("job.claimed") == 1, types
        assert types[-1] == "job.completed", types
    assert rebuild_module.rebuild(libsql_repository.store, apply_changes=False, tables=TABLES).differences == []
    assert [p.returncode for p in workers] == [0, 0], [log.read_text()[-2000:] for log in logs]
