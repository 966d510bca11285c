"""Blobs of finished jobs leave storage only on record: archive (local storage and a real S3
API), failed-upload retention (a real ``jobtape worker``), and what the API answers for files
that are gone (410 on an edit, no dead download links after an import)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient

from jobtape import runtime
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.defaults import worker as Worker
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage, signing
from jobtape.storage.base import Storage

pytestmark = pytest.mark.slow

MEDIA = Path(__file__).resolve().parents[2] / "media"
CORRUPT = random.Random(9).randbytes(64 * 1024)  # fixed bytes that are no media format (see test_worker)


@dataclasses.dataclass
class Log:
    """A data dir whose log holds real jobs and whose storage holds their blobs."""

    data_dir: Path
    repository: JobRepository
    storage: Storage
    settings: Settings
    env: dict[str, str]
    ids: dict[str, str]  # complete, failed, render, hit

    def owned(self) -> dict[str, tuple[str, ...]]:
        return {name: job_state.owned_keys(self.repository.get(job_id)) for name, job_id in self.ids.items()}

    def jobtape(self, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobtape", *args, "--data-dir", str(data_dir or self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def event_count(self) -> int:
        return int(self.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])


def _open(data_dir: Path) -> JobRepository:
    backend = SQLiteBackend(data_dir / "jobtape.db")
    backend.migrate(TABLES.migrations)
    # the data dir's log key, as the CLI subprocesses use it (their verify checks the keyed chain)
    return JobRepository(EventStore(backend, keys=runtime.log_keys(Settings(data_dir=data_dir))), projections=TABLES.projections)


def _upload(repository: JobRepository, storage: Storage, name: str, content: bytes) -> str:
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original{Path(name).suffix}"
    storage.put_stream(key, [content])
    return repository.create("ingest", {"sourceType": "upload", "storageKey": key}, job_id=job_id).state.job_id


def _storage(kind: str, data_dir: Path, request: pytest.FixtureRequest) -> tuple[Storage, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTAPE_", "STORAGE_", "S3_", "AWS_"))}
    env["JOBTAPE_SIGNING_SECRET"] = "s" * 32
    if kind == "local":
        return LocalStorage(data_dir / "storage", signing.URLSigner(b"s" * 32)), env
    storage = request.getfixturevalue("s3_storage")
    env.update(
        STORAGE_BACKEND="s3",
        S3_BUCKET=storage.bucket,
        S3_ENDPOINT_URL=request.getfixturevalue("s3_endpoint"),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
    )
    return storage, env


@pytest.fixture(params=["local", "s3"])
def real_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    """A complete ingest, a failed one (corrupt upload), a rendered preview and a cache hit of it."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    repository = _open(data_dir)
    storage, env = _storage(request.param, data_dir, request)
    settings = Settings(data_dir=data_dir, max_active_jobs=50)
    ids = {
        "complete": _upload(repository, storage, "a.mp3", (MEDIA / "awkward_short_id3v1.mp3").read_bytes()),
        "failed": _upload(repository, storage, "b.mp3", CORRUPT),
    }
    Worker(repository, storage, settings).run(until_idle=True)
    asset_id = repository.get(ids["complete"]).result["assetId"]  # type: ignore[index]
    with TestClient(create_app(repository, storage, settings)) as client:
        recipe = {"assetId": asset_id, "startSec": 0, "endSec": 1}
        ids["render"] = client.post("/api/audio/edit/preview", json=recipe).json()["data"]["jobId"]
        Worker(repository, storage, settings).run(until_idle=True)
        hit = client.post("/api/audio/edit/preview", json=recipe).json()["data"]
        assert hit["status"] == "complete"
        ids["hit"] = hit["jobId"]
    assert [repository.get(ids[n]).status for n in ("complete", "failed", "render")] == ["complete", "failed", "complete"]
    yield Log(data_dir, repository, storage, settings, env, ids)
    repository.store.close()


def _lines(export: Path) -> list[dict[str, Any]]:
    """The event lines of an export (without its keyed trailer)."""
    return [json.loads(line) for line in export.read_text().splitlines() if line.startswith('{"position"')]


def _removals(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["jobId"]: {**json.loads(line["data"]), "actor": line["actor"]} for line in lines if line["type"] == "job.blobs_deleted"}


def test_archive_removes_the_jobs_blobs_on_record_and_an_import_of_the_archive_offers_no_dead_links(real_log: Log, tmp_path: Path) -> None:
    owned = real_log.owned()
    keys = [key for name in ("complete", "failed", "render") for key in owned[name]]
    assert len(keys) == 4 and owned["hit"] == () and all(real_log.storage.exists(key) for key in keys)
    archive_file = tmp_path / "archive.jsonl"

    done = real_log.jobtape("archive", "--older-than", "0s", "--to", str(archive_file))

    assert done.returncode == 0, done.stderr
    assert "removed 4 files of the archived jobs" in done.stdout
    assert [key for key in keys if real_log.storage.exists(key)] == []
    removals = _removals(_lines(archive_file))
    assert {real_log.ids[name]: tuple(removals[real_log.ids[name]]["keys"]) for name in ("complete", "failed", "render")} == {
        real_log.ids[name]: owned[name] for name in ("complete", "failed", "render")
    }
    assert real_log.ids["hit"] not in removals  # a cache hit owns no file
    assert all(r["reason"].startswith("archive ") and r["actor"].startswith("cli:") for r in removals.values())
    assert real_log.jobtape("verify").returncode == 0
    assert "0 differences" in real_log.jobtape("rebuild", "--verify").stdout

    fresh = tmp_path / "fresh"
    assert real_log.jobtape("import", str(archive_file), "--key-file", str(real_log.data_dir / "log-key"), data_dir=fresh).returncode == 0
    assert real_log.jobtape("verify", data_dir=fresh).returncode == 0
    rebuilt = real_log.jobtape("rebuild", "--verify", data_dir=fresh)
    assert rebuilt.returncode == 0 and "0 differences" in rebuilt.stdout, rebuilt.stdout
    repository = _open(fresh)
    try:
        with TestClient(create_app(repository, real_log.storage, real_log.settings)) as client:
            polls = {name: client.get(f"/api/audio/jobs/{job_id}").json() for name, job_id in real_log.ids.items()}
            assert [name for name, poll in polls.items() if "downloadUrl" in poll] == []
            audio = {name: client.get(f"/api/audio/edit/preview/{real_log.ids[name]}/audio") for name in ("render", "hit")}
            assert (audio["render"].status_code, audio["hit"].status_code) == (410, 404), audio["render"].text
            before = int(repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])
            asset_id = polls["complete"]["result"]["assetId"]
            edit = client.post("/api/audio/edit/save", json={"assetId": asset_id, "startSec": 0, "endSec": 1})
            assert edit.status_code == 410, edit.text
            assert edit.json()["error"].startswith("the asset's file is no longer stored") and "removed" in edit.text
            assert int(repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0]) == before
    finally:
        repository.store.close()


def test_archive_with_keep_blobs_keeps_every_file_and_says_so(real_log: Log, tmp_path: Path) -> None:
    keys = [key for name in ("complete", "failed", "render") for key in real_log.owned()[name]]
    archive_file = tmp_path / "archive.jsonl"

    done = real_log.jobtape("archive", "--older-than", "0s", "--to", str(archive_file), "--keep-blobs")

    assert done.returncode == 0, done.stderr
    assert "--keep-blobs: kept 4 files of the archived jobs in storage" in done.stdout
    assert all(real_log.storage.exists(key) for key in keys)
    assert _removals(_lines(archive_file)) == {}
    assert real_log.event_count() == 0


@pytest.mark.parametrize("real_log", ["local"], indirect=True)
def test_a_poll_after_import_into_a_fresh_store_without_the_files_gives_no_link_and_an_edit_gets_410(real_log: Log, tmp_path: Path) -> None:
    export = tmp_path / "log.jsonl"
    assert real_log.jobtape("export", "-o", str(export)).returncode == 0
    with TestClient(create_app(real_log.repository, real_log.storage, real_log.settings)) as client:
        assert "downloadUrl" in client.get(f"/api/audio/jobs/{real_log.ids['complete']}").json()  # the check can fail
    fresh = tmp_path / "fresh"
    assert real_log.jobtape("import", str(export), "--key-file", str(real_log.data_dir / "log-key"), data_dir=fresh).returncode == 0
    repository = _open(fresh)
    empty = LocalStorage(fresh / "storage", signing.URLSigner(b"s" * 32))
    try:
        with TestClient(create_app(repository, empty, real_log.settings)) as client:
            polls = {name: client.get(f"/api/audio/jobs/{job_id}").json() for name, job_id in real_log.ids.items()}
            assert polls["complete"]["status"] == "complete"
            assert [name for name, poll in polls.items() if "downloadUrl" in poll] == []
            before = int(repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])
            recipe = {"assetId": polls["complete"]["result"]["assetId"], "startSec": 0, "endSec": 1}
            for route in ("preview", "save"):
                edit = client.post(f"/api/audio/edit/{route}", json=recipe)
                assert edit.status_code == 410 and "storage does not have it" in edit.json()["error"], edit.text
            assert int(repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0]) == before
    finally:
        repository.store.close()
