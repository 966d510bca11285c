"""The ingest -> preview -> save path with S3 storage (moto's server over HTTP on 127.0.0.1)
and real ffmpeg on a real recording: the edit job handlers fetch the asset from the bucket into
the job's temp dir and upload their result; no temp file remains after success, failure and
cancellation. The download routes answer JSON ``{downloadUrl}`` with presigned GET URLs whose
``X-Amz-Expires`` is the configured TTL (moto does not enforce expiry; S3/R2 do).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.defaults import worker as Worker
from jobtape.projections.keys import KeyRepository
from jobtape.projections.repository import JobRepository
from jobtape.storage.s3 import S3Storage

__all__: list[str] = []

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"  # 9.66 s mono
DOWNLOAD_TTL_S = 4321  # not the default, so the URLs prove they follow the setting


def _expires_s(url: str) -> int:
    """The ``X-Amz-Expires`` of a presigned URL (SigV4 query authentication), in seconds."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and "X-Amz-Signature" in query
    return int(query["X-Amz-Expires"][0])


@dataclasses.dataclass
class Env:
    client: TestClient
    repository: JobRepository
    storage: S3Storage
    settings: Settings
    worker_tmp: Path
    asset_id: str
    asset_key: str
    upload_key: str  # the ingest's original upload

    def run_worker(self) -> None:
        Worker(self.repository, self.storage, self.settings).run(until_idle=True)

    def create(self, route: str, recipe: dict[str, Any]) -> str:
        response = self.client.post(f"/api/audio/edit/{route}", json=recipe)
        assert response.status_code == 202, response.text
        return str(response.json()["data"]["jobId"])

    def poll(self, job_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.client.get(f"/api/audio/jobs/{job_id}").json()
        return view

    def keys(self, prefix: str) -> list[str]:
        listed = self.storage.client.list_objects_v2(Bucket=self.storage.bucket, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]


@pytest.fixture
def env(repository: JobRepository, s3_storage: S3Storage, tmp_path: Path) -> Iterator[Env]:
    """An API and worker on S3 storage, with ``speech_ljspeech.wav`` ingested through the API."""
    worker_tmp = tmp_path / "worker-tmp"  # where the workers' folders of per-job temp dirs go
    settings = Settings(data_dir=tmp_path, download_url_ttl_s=DOWNLOAD_TTL_S, poll_interval_s=0.05, kill_grace_s=2.0, work_dir=worker_tmp)
    with TestClient(create_app(repository, s3_storage, settings)) as client:
        with SPEECH.open("rb") as handle:
            response = client.post("/api/audio/ingest", files={"file": ("speech.wav", handle, "audio/wav")})
        assert response.status_code == 202, response.text
        Worker(repository, s3_storage, settings).run(until_idle=True)
        state = repository.get(response.json()["data"]["jobId"])
        assert state.status == "complete", state.error
        assert state.result is not None
        yield Env(
            client,
            repository,
            s3_storage,
            settings,
            worker_tmp,
            state.result["assetId"],
            state.result["preparedKey"],
            str(state.params["storageKey"]),
        )


def test_preview_then_save_fetch_from_and_upload_to_the_bucket(env: Env) -> None:
    preview_job = env.create("preview", {"assetId": env.asset_id, "startSec": 1.0, "endSec": 4.0})
    env.run_worker()
    view = env.poll(preview_job)
    assert view["status"] == "complete", view["error"]
    preview_key = view["result"]["previewKey"]
    assert env.keys("previews/") == [preview_key]
    assert list(env.worker_tmp.iterdir()) == []  # the fetched source.flac and the render are gone

    # The poll's link is the bucket's presigned GET, valid for the configured TTL.
    assert view["downloadUrl"].startswith(env.storage.client.meta.endpoint_url)
    assert _expires_s(view["downloadUrl"]) == DOWNLOAD_TTL_S
    # The preview audio route answers JSON {downloadUrl} on object storage (seed 001), not bytes.
    audio = env.client.get(f"/api/audio/edit/preview/{preview_job}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"].startswith("application/json")
    link = audio.json()["downloadUrl"]
    assert _expires_s(link) == DOWNLOAD_TTL_S
    mp3 = httpx.get(link)  # a plain HTTP client, straight to the bucket
    assert mp3.status_code == 200 and mp3.content[:3] == b"ID3" and len(mp3.content) > 10_000

    save_job = env.create("save", {"assetId": env.asset_id, "startSec": 2.0, "endSec": 5.0, "gainDb": -3})
    env.run_worker()
    saved = env.poll(save_job)
    assert saved["status"] == "complete", saved["error"]
    prepared_key = saved["result"]["preparedKey"]
    assert prepared_key == f"assets/{saved['result']['assetId']}/prepared.flac"
    assert sorted(env.keys("assets/")) == sorted([env.asset_key, prepared_key])
    assert saved["result"]["durationSec"] == pytest.approx(3.0, abs=0.05)
    assert list(env.worker_tmp.iterdir()) == []

    # GET /api/storage/download?key= answers {downloadUrl} on object storage (seed 004).
    download = env.client.get("/api/storage/download", params={"key": prepared_key})
    assert download.status_code == 200, download.text
    assert download.headers["cache-control"] == "private, no-store"
    url = download.json()["downloadUrl"]
    assert _expires_s(url) == DOWNLOAD_TTL_S
    flac = httpx.get(url)
    assert flac.status_code == 200 and flac.content[:4] == b"fLaC"
    assert flac.content == b"".join(env.storage.open_stream(prepared_key))


def test_download_route_signs_only_stored_outputs(env: Env) -> None:
    assert env.upload_key.startswith("ingest-uploads/") and env.storage.exists(env.upload_key)
    refused = env.client.get("/api/storage/download", params={"key": env.upload_key})
    assert refused.status_code == 403 and "only prepared assets and previews" in refused.json()["error"]
    missing = env.client.get("/api/storage/download", params={"key": "previews/" + "0" * 64 + ".mp3"})
    assert missing.status_code == 404 and "previews/" in missing.json()["error"]
    bad = env.client.get("/api/storage/download", params={"key": "assets/../ingest-uploads/x"})
    assert bad.status_code == 400 and "'..' path segment" in bad.json()["error"]


def test_download_by_key_answers_another_owners_output_like_a_missing_file(env: Env) -> None:
    """Issue 11: with ``--auth required`` the route signs an asset's or preview's key only for
    its owner (``anonymous`` here, who submitted them with auth off) or ``admin``."""
    preview_job = env.create("preview", {"assetId": env.asset_id, "startSec": 1.0, "endSec": 2.0})
    env.run_worker()
    preview_key = env.poll(preview_job)["result"]["previewKey"]
    keys = KeyRepository(env.repository.store)
    tokens = {
        who: keys.create(owner, scopes, actor="cli:test")[1]
        for who, owner, scopes in (("owner", "anonymous", "jobs:read"), ("bob", "bob", "jobs:read"), ("admin", "bob", "admin"))
    }
    settings = dataclasses.replace(env.settings, auth_mode="required")
    with TestClient(create_app(env.repository, env.storage, settings)) as client:

        def get(who: str, key: str) -> Any:
            return client.get("/api/storage/download", params={"key": key}, headers={"Authorization": f"Bearer {tokens[who]}"})

        for key, missing in ((env.asset_key, f"assets/{'0' * 32}/prepared.flac"), (preview_key, f"previews/{'0' * 64}.mp3")):
            refused, absent = get("bob", key), get("bob", missing)
            assert refused.status_code == absent.status_code == 404, refused.text
            assert refused.json()["error"] == absent.json()["error"].replace(missing, key)  # the same answer as a missing file
            for who in ("owner", "admin"):
                answer = get(who, key)
                assert answer.status_code == 200, answer.text
                assert httpx.get(answer.json()["downloadUrl"]).status_code == 200


def test_failed_render_leaves_no_temp_files_and_no_output(env: Env) -> None:
    # The asset's blob is replaced by bytes ffmpeg cannot decode: fetched, then the render fails.
    env.storage.put_stream(env.asset_key, [b"fLaC but not really" * 500])
    preview_job = env.create("preview", {"assetId": env.asset_id, "startSec": 1.0, "endSec": 2.0})
    save_job = env.create("save", {"assetId": env.asset_id, "startSec": 1.0, "endSec": 2.0})
    env.run_worker()
    for job_id in (preview_job, save_job):
        state = env.repository.get(job_id)
        assert state.status == "failed" and state.error is not None and "ffmpeg" in state.error
    assert list(env.worker_tmp.iterdir()) == []
    assert env.keys("previews/") == [] and env.keys("assets/") == [env.asset_key]


def test_missing_source_fails_the_job_and_leaves_no_temp_files(env: Env) -> None:
    job_id = env.create("save", {"assetId": env.asset_id})
    env.storage.delete(env.asset_key)  # gone after the create: the API answers 410 from now on
    gone = env.client.post("/api/audio/edit/save", json={"assetId": env.asset_id})
    assert gone.status_code == 410 and "no longer stored" in gone.json()["error"]
    env.run_worker()
    state = env.repository.get(job_id)
    assert state.status == "failed" and state.error is not None
    assert "missing from storage" in state.error
    assert list(env.worker_tmp.iterdir()) == [] and env.keys("assets/") == []


def test_cancelled_render_leaves_no_temp_files_and_no_output(env: Env) -> None:
    slow = AudioSettings(ffmpeg_readrate=1.0)  # real time: ~9 s, long enough to cancel
    job_id = env.create("save", {"assetId": env.asset_id})
    worker = Worker(env.repository, env.storage, env.settings, slow)
    worker.start()
    try:
        wait_for(lambda: env.repository.get(job_id).stage == "rendering", what="the render")
        (workdir,) = env.worker_tmp.glob("worker-*/*-*")  # the job's folder in the worker's folder
        assert (workdir / "source.flac").is_file()  # the asset, fetched from the bucket
        assert env.client.post(f"/api/audio/jobs/{job_id}/cancel").status_code in (200, 202)
        wait_for(lambda: env.repository.get(job_id).status == "cancelled", what="the cancel")
        wait_for(lambda: job_id in worker.finished, what="the job thread to end")
    finally:
        worker.stop(30)
    assert list(env.worker_tmp.iterdir()) == []
    assert env.keys("assets/") == [env.asset_key]


def test_local_download_route_still_serves_bytes_and_needs_a_signed_link(repository: JobRepository, tmp_path: Path) -> None:
    from jobtape.storage import LocalStorage, signing

    storage = LocalStorage(tmp_path / "storage", signing.URLSigner(b"k" * 32))
    storage.put_file("previews/a.mp3", SPEECH)
    with TestClient(create_app(repository, storage, Settings(data_dir=tmp_path))) as client:
        unsigned = client.get("/api/storage/download", params={"key": "previews/a.mp3"})
        assert unsigned.status_code == 400 and "expires and signature" in unsigned.json()["error"]
        link = storage.signed_url("previews/a.mp3", 60)
        assert link is not None
        served = client.get(link)
    assert served.status_code == 200 and served.content == SPEECH.read_bytes()


def test_presigned_urls_carry_the_configured_expiry(repository: JobRepository, s3_storage: S3Storage, tmp_path: Path) -> None:
    # moto does not enforce X-Amz-Expires (S3 and R2 do): the URLs must at least state the settings.
    settings = Settings(data_dir=tmp_path, upload_url_ttl_s=777, download_url_ttl_s=DOWNLOAD_TTL_S)
    with TestClient(create_app(repository, s3_storage, settings)) as client:
        ticket = client.post("/api/storage/upload", json={"filename": "a.wav"}).json()
    assert ticket["expiresInSec"] == 777 and _expires_s(ticket["uploadUrl"]) == 777
    assert httpx.put(ticket["uploadUrl"], content=b"RIFF").status_code == 200
    assert _expires_s(s3_storage.signed_url("previews/x.mp3", 7 * 24 * 3600)) == 604800  # the default, S3's maximum
