"""The ingest path with S3 storage (moto's server over HTTP): direct upload to a presigned
PUT URL, ingest by storage key, the worker's temp-file pattern, presigned download of the result.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import configs  # tests/ is on sys.path
import httpx
import pytest
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.audio.http import direct_upload
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.defaults import worker as Worker
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.storage.s3 import S3Storage

__all__: list[str] = []

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"


@pytest.fixture
def worker_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the workers' folders of per-job temp dirs go to (``Settings.work_parent`` under ``tempfile.gettempdir()``)."""
    folder = tmp_path / "worker-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    parent = Settings().work_parent
    parent.mkdir()
    return parent


@pytest.fixture
def client(repository: JobRepository, s3_storage: S3Storage, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(repository, s3_storage, Settings(data_dir=tmp_path))
    with TestClient(app) as test_client:
        yield test_client


def _direct_upload(client: TestClient, data: bytes, filename: str = "speech.wav") -> str:
    ticket = client.post("/api/storage/upload", json={"filename": filename, "contentType": "audio/wav"})
    assert ticket.status_code == 200, ticket.text
    body = ticket.json()
    assert body["method"] == "PUT" and body["expiresInSec"] == 3600
    assert body["storageKey"].startswith("direct-uploads/") and body["storageKey"].endswith("/original.wav")
    put = httpx.put(body["uploadUrl"], content=data)  # straight to the bucket, not through the API
    assert put.status_code == 200, put.text
    return str(body["storageKey"])


def _ingest_key(client: TestClient, key: str) -> Any:
    return client.post("/api/audio/ingest", json={"sourceType": "storage", "storageKey": key, "originalFilename": "speech.wav"})


def test_direct_upload_then_ingest_by_key_runs_the_whole_path(
    client: TestClient, repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    key = _direct_upload(client, SPEECH.read_bytes())
    response = _ingest_key(client, key)
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["jobId"]
    Worker(repository, s3_storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    assert state.result is not None and state.result["source"]["type"] == "storage"
    prepared = state.result["preparedKey"]
    download = httpx.get(s3_storage.signed_url(prepared, 7 * 24 * 3600))
    assert download.status_code == 200 and download.content[:4] == b"fLaC"
    assert list(worker_tmp.iterdir()) == []  # the worker's temp dir is gone


def test_multipart_ingest_stores_the_upload_in_the_bucket(
    client: TestClient, repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    with SPEECH.open("rb") as handle:
        response = client.post("/api/audio/ingest", files={"file": ("speech.wav", handle, "audio/wav")})
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["jobId"]
    assert s3_storage.exists(repository.get(job_id).params["storageKey"])
    Worker(repository, s3_storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    assert repository.get(job_id).status == "complete"
    assert list(worker_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("assets/0123/prepared.flac", 422, "handed out to you by POST /api/storage/upload"),
        ("direct-uploads/" + direct_upload.owner_tag("anonymous") + "/" + "0" * 32 + "/original.wav", 422, "nothing was uploaded"),
        ("direct-uploads/" + "0" * 32 + "/original.wav", 422, "handed out"),  # the key form before the owner tag
        ("../etc/passwd", 422, "handed out"),
    ],
)
def test_ingest_by_key_refuses_keys_not_handed_out_or_not_uploaded(
    client: TestClient, repository: JobRepository, key: str, status: int, message: str
) -> None:
    response = _ingest_key(client, key)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert repository.store.head_position() == 0


def test_a_key_handed_to_another_owner_is_answered_as_never_handed_out_and_its_object_kept(
    client: TestClient, repository: JobRepository, s3_storage: S3Storage
) -> None:
    alice = {"X-Client-Id": "alice"}
    ticket = client.post("/api/storage/upload", json={"filename": "a.wav"}, headers=alice).json()
    key = ticket["storageKey"]
    assert key.startswith(f"direct-uploads/{direct_upload.owner_tag('alice')}/")
    assert httpx.put(ticket["uploadUrl"], content=SPEECH.read_bytes()).status_code == 200
    body = {"sourceType": "storage", "storageKey": key}
    refused = client.post("/api/audio/ingest", json=body, headers={"X-Client-Id": "bob"})
    never_handed_out = client.post(
        "/api/audio/ingest", json={**body, "storageKey": key.replace(direct_upload.owner_tag("alice"), "f" * 16)}, headers=alice
    )
    assert refused.status_code == never_handed_out.status_code == 422
    assert refused.json()["error"] == never_handed_out.json()["error"]  # the same answer: the key leaks nothing
    assert repository.store.head_position() == 0 and s3_storage.exists(key)  # nothing appended, nothing deleted
    accepted = client.post("/api/audio/ingest", json=body, headers=alice)
    assert accepted.status_code == 202, accepted.text
    assert repository.get(accepted.json()["data"]["jobId"]).owner == "alice"


def test_local_storage_has_no_upload_urls(repository: JobRepository, tmp_path: Path) -> None:
    app = create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        response = client.post("/api/storage/upload", json={"filename": "a.wav"})
    assert response.status_code == 501
    assert "multipart/form-data" in response.json()["error"]


def test_failed_job_leaves_no_temp_files_and_no_output(
    client: TestClient, repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    key = _direct_upload(client, b"RIFF this is not audio at all" * 100)
    job_id = _ingest_key(client, key).json()["data"]["jobId"]
    Worker(repository, s3_storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    assert repository.get(job_id).status == "failed"
    assert list(worker_tmp.iterdir()) == []
    assert s3_storage.delete_prefix("assets/") == 0


def test_cancelled_job_leaves_no_temp_files_and_no_output(
    client: TestClient, repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    key = _direct_upload(client, SPEECH.read_bytes())
    job_id = _ingest_key(client, key).json()["data"]["jobId"]
    settings, settings_audio = configs.split(data_dir=tmp_path, ffmpeg_readrate=1.0, poll_interval_s=0.05, kill_grace_s=2.0)
    worker = Worker(repository, s3_storage, settings, settings_audio)
    worker.start()
    try:
        wait_for(lambda: repository.get(job_id).stage == "measuring", what="the measuring pass")
        assert len(list(worker_tmp.iterdir())) == 1  # the worker's folder, holding the job's temp dir with the input
        assert client.post(f"/api/audio/jobs/{job_id}/cancel").status_code in (200, 202)
        wait_for(lambda: repository.get(job_id).status == "cancelled", what="the cancel")
        wait_for(lambda: job_id in worker.finished, what="the job thread to end")
    finally:
        worker.stop(30)
    assert list(worker_tmp.iterdir()) == []
    assert s3_storage.delete_prefix("assets/") == 0
    assert not os.listdir(worker_tmp)


def test_an_unreachable_bucket_is_retried_with_backoff_and_the_job_completes_when_it_is_back(
    repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    key = "ingest-uploads/outage/original.wav"
    s3_storage.put_file(key, SPEECH)
    job_id = repository.create("ingest", {"sourceType": "upload", "storageKey": key}).state.job_id
    settings = Settings(data_dir=tmp_path, backoff_base_s=0.05, backoff_cap_s=0.1, poll_interval_s=0.02)
    unreachable = S3Storage(
        s3_storage.bucket, endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key_id="testing", secret_access_key="testing"
    )  # nothing listens on port 9
    Worker(repository, unreachable, settings).run(until_idle=True)  # attempt 1, while the bucket is away
    scheduled = repository.store.read_stream(job_id)[-1]
    assert scheduled.type == "job.retry_scheduled", scheduled
    assert scheduled.event.error.startswith(f"storage failed: S3 request for '{key}' failed: Could not connect")
    assert repository.get(job_id).status == "pending"

    worker = Worker(repository, s3_storage, settings)  # the bucket is back
    worker.start()
    try:
        wait_for(lambda: repository.get(job_id).finished, timeout_s=30, what="attempt 2")
    finally:
        worker.stop(grace_s=5)
    state = repository.get(job_id)
    assert (state.status, state.attempt) == ("complete", 2), state.error
    assert list(worker_tmp.iterdir()) == []


def test_a_blob_missing_from_the_bucket_fails_the_job_at_once(
    repository: JobRepository, s3_storage: S3Storage, tmp_path: Path, worker_tmp: Path
) -> None:
    missing = S3Storage(
        "no-such-bucket-here",
        endpoint_url=s3_storage.client.meta.endpoint_url,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
    )
    job_id = repository.create("ingest", {"sourceType": "upload", "storageKey": "ingest-uploads/x/original.wav"}).state.job_id
    Worker(repository, missing, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert (state.status, state.attempt) == ("failed", 1)
    assert "job.retry_scheduled" not in [r.type for r in repository.store.read_stream(job_id)]
    assert list(worker_tmp.iterdir()) == []
