"""Edit recipes end to end on real recordings: preview and save renders measured with ffmpeg,
the preview cache, signed downloads with HTTP Range, the active-job quota, projections."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import configs  # tests/ is on sys.path
import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.audio import media
from jobtape.audio.projections import assets
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import rebuild
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage, signing
from jobtape.worker import children

MEDIA = Path(__file__).resolve().parents[2] / "media"


@dataclasses.dataclass
class Env:
    client: TestClient
    repository: JobRepository
    storage: LocalStorage
    settings: Settings
    speech: assets.Asset  # speech_ljspeech.wav, 9.66 s mono
    music: assets.Asset  # music_strings.ogg, 45.84 s stereo

    def run_worker(self) -> None:
        Worker(self.repository, self.storage, self.settings).run(until_idle=True)

    def post(self, route: str, recipe: dict[str, Any], **headers: str) -> Any:
        return self.client.post(f"/api/audio/edit/{route}", json=recipe, headers=headers)

    def finished(self, route: str, recipe: dict[str, Any]) -> dict[str, Any]:
        """POST a recipe, run the worker, return the poll body of the completed job."""
        response = self.post(route, recipe)
        assert response.status_code == 202, response.text
        self.run_worker()
        view: dict[str, Any] = self.client.get(f"/api/audio/jobs/{response.json()['data']['jobId']}").json()
        assert view["status"] == "complete", view["error"]
        return view

    def path(self, key: str) -> Path:
        found = self.storage.local_path(key)
        assert found is not None and found.is_file()
        return found

    def event_count(self) -> int:
        return int(self.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])


def _ingest(repository: JobRepository, storage: LocalStorage, settings: Settings, source: Path) -> assets.Asset:
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original{source.suffix}"
    storage.put_file(key, source)
    repository.create("ingest", {"sourceType": "upload", "storageKey": key}, job_id=job_id, owner="fixture")
    Worker(repository, storage, settings).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    found = assets.select_asset(repository.store, state.result["assetId"])  # type: ignore[index]
    assert found is not None
    return found


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("edits")
    backend = SQLiteBackend(data_dir / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    storage = LocalStorage(data_dir / "storage", signing.URLSigner(b"s" * 32))
    settings = Settings(data_dir=data_dir, max_active_jobs=50)
    speech = _ingest(repository, storage, settings, MEDIA / "speech_ljspeech.wav")
    music = _ingest(repository, storage, settings, MEDIA / "music_strings.ogg")
    with TestClient(create_app(repository, storage, settings)) as client:
        yield Env(client, repository, storage, settings, speech, music)
    backend.close()


def test_ingest_fills_the_assets_projection(env: Env) -> None:
    assert (env.speech.duration_sec, env.speech.sample_rate, env.speech.channels) == (pytest.approx(9.66, abs=0.05), 48000, 1)
    assert env.music.channels == 2 and env.music.integrated_lufs == pytest.approx(-16.0, abs=1.0)
    assert env.speech.storage_key == f"assets/{env.speech.asset_id}/prepared.flac" and env.speech.owner == "fixture"


def test_preview_trims_within_50_ms_and_its_poll_has_a_download_url(env: Env) -> None:
    view = env.finished("preview", {"assetId": env.music.asset_id, "startSec": 10.25, "endSec": 13.5})
    result = view["result"]
    assert result["previewKey"] == f"previews/{result['recipeHash']}.mp3" and result["cacheHit"] is False
    rendered = media.probe(env.path(result["previewKey"]))
    assert (rendered.codec, rendered.sample_rate) == ("mp3", 48000)
    assert abs(rendered.duration_sec - 3.25) <= 0.05
    assert view["downloadUrl"].startswith("/api/storage/download?key=previews%2F")
    download = env.client.get(view["downloadUrl"])
    assert download.status_code == 200 and download.headers["content-type"] == "audio/mpeg"
    assert download.content == env.path(result["previewKey"]).read_bytes()


def test_fade_in_makes_the_first_100_ms_at_least_20_db_quieter(env: Env) -> None:
    trim = {"assetId": env.music.asset_id, "startSec": 20.0, "endSec": 24.0}
    plain = env.finished("save", trim)["result"]
    faded = env.finished("save", {**trim, "fadeInSec": 2.0})["result"]
    plain_db, _ = media.measure_volume(env.path(plain["preparedKey"]), start=0.0, duration=0.1)
    faded_db, _ = media.measure_volume(env.path(faded["preparedKey"]), start=0.0, duration=0.1)
    assert plain_db - faded_db >= 20.0, (plain_db, faded_db)
    later_plain, _ = media.measure_volume(env.path(plain["preparedKey"]), start=3.0, duration=0.5)
    later_faded, _ = media.measure_volume(env.path(faded["preparedKey"]), start=3.0, duration=0.5)
    assert abs(later_plain - later_faded) < 0.5  # after the fade the audio is untouched


def test_gain_is_applied_within_half_a_db(env: Env) -> None:
    trim = {"assetId": env.speech.asset_id, "startSec": 1.0, "endSec": 6.0}
    plain = env.finished("save", trim)["result"]
    quieter = env.finished("save", {**trim, "gainDb": -9.5})["result"]
    plain_db = media.measure_integrated_loudness(env.path(plain["preparedKey"]))
    quieter_db = media.measure_integrated_loudness(env.path(quieter["preparedKey"]))
    assert abs((plain_db - quieter_db) - 9.5) <= 0.5, (plain_db, quieter_db)


def test_save_with_target_lufs_is_a_new_asset_within_1_lu(env: Env) -> None:
    view = env.finished("save", {"assetId": env.music.asset_id, "startSec": 5.0, "endSec": 25.0, "targetLufs": -23.0})
    result = view["result"]
    assert result["assetId"] != env.music.asset_id and result["sourceAssetId"] == env.music.asset_id
    prepared = env.path(result["preparedKey"])
    info = media.probe(prepared)
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 48000, 2)
    assert abs(info.duration_sec - 20.0) <= 0.05
    assert abs(media.measure_integrated_loudness(prepared) - (-23.0)) <= 1.0
    saved = assets.select_asset(env.repository.store, result["assetId"])
    assert saved is not None and saved.duration_sec == pytest.approx(20.0, abs=0.05)
    assert saved.origin_job_id == view["jobId"] and saved.integrated_lufs == pytest.approx(-23.0, abs=1.0)
    assert view["downloadUrl"].startswith("/api/storage/download?key=assets%2F")
    # the new asset is editable at once
    again = env.post("preview", {"assetId": saved.asset_id, "endSec": 19.0, "fadeOutSec": 2})
    assert again.status_code == 202


def test_the_same_recipe_twice_renders_once_and_hits_the_cache(env: Env) -> None:
    recipe = {"assetId": env.speech.asset_id, "startSec": 2.0, "endSec": 4.0, "fadeOutSec": 0.5}
    first = env.finished("preview", recipe)
    # the same recipe spelled differently (defaults explicit, ints) has the same hash
    second = env.post("preview", {**recipe, "startSec": 2, "fadeInSec": 0, "gainDb": 0, "targetLufs": None})
    assert second.status_code == 202
    assert second.json()["data"]["status"] == "complete"
    job_id = second.json()["data"]["jobId"]
    stream = env.repository.store.read_stream(job_id)
    assert [r.type for r in stream] == ["job.created", "job.completed"]
    assert stream[0].recorded_at == stream[1].recorded_at  # one append
    view = env.client.get(f"/api/audio/jobs/{job_id}").json()
    assert view["result"]["cacheHit"] is True and view["result"]["previewKey"] == first["result"]["previewKey"]
    renders = [p for p in (env.storage.root / "previews").iterdir() if first["result"]["recipeHash"] in p.name]
    assert len(renders) == 1
    children = env.repository.store.backend.query("SELECT COUNT(*) FROM events WHERE job_id = ? AND type = 'job.child_started'", [job_id])
    assert children == [(0,)]


def test_a_preview_queued_twice_is_rendered_once(env: Env) -> None:
    recipe = {"assetId": env.speech.asset_id, "startSec": 3.0, "endSec": 6.5, "gainDb": -2}
    first, second = (env.post("preview", recipe) for _ in range(2))  # both miss the cache: nothing rendered yet
    assert [r.json()["data"]["status"] for r in (first, second)] == ["pending", "pending"]
    env.run_worker()  # concurrency 1: the first renders, the second finds that render when it starts
    first_id, second_id = (r.json()["data"]["jobId"] for r in (first, second))
    rendered = env.client.get(f"/api/audio/jobs/{first_id}").json()["result"]
    reused = env.client.get(f"/api/audio/jobs/{second_id}").json()["result"]
    assert rendered["cacheHit"] is False
    assert reused == {**rendered, "cacheHit": True, "renderedByJobId": first_id}
    started = env.repository.store.backend.query(
        "SELECT job_id, COUNT(*) FROM events WHERE job_id IN (?, ?) AND type = 'job.child_started' GROUP BY job_id", [first_id, second_id]
    )
    assert [job for job, _ in started] == [first_id]  # no ffmpeg ran for the second


def test_renders_report_stages_and_progress_like_ingest(env: Env) -> None:
    view = env.finished("preview", {"assetId": env.music.asset_id, "startSec": 5.0, "endSec": 35.0, "targetLufs": -20})
    stream = env.repository.store.read_stream(view["jobId"])
    stages = [r.event.stage for r in stream if isinstance(r.event, ev.JobStageChanged)]
    assert stages == ["fetching", "measuring", "rendering", "storing"]
    progress: dict[str, list[int]] = {}
    stage = ""
    for recorded in stream:
        if isinstance(recorded.event, ev.JobStageChanged):
            stage = recorded.event.stage
        elif isinstance(recorded.event, ev.JobProgress):
            progress.setdefault(stage, []).append(recorded.event.percent)
    assert set(progress) == {"measuring", "rendering"}  # the two ffmpeg passes report 0-100 each
    assert all(values == sorted(values) and values[-1] == 100 for values in progress.values()), progress
    started = [r.event for r in stream if isinstance(r.event, ev.JobChildStarted)]
    exited = [r.event for r in stream if isinstance(r.event, ev.JobChildExited)]
    assert [e.pid for e in exited] == [c.pid for c in started] and {e.exit_status for e in exited} == {0}


def test_cancelling_a_save_while_it_renders_kills_ffmpeg_and_leaves_no_asset(env: Env, tmp_path: Path) -> None:
    slow = Worker(env.repository, env.storage, *configs.split(data_dir=tmp_path, ffmpeg_readrate=1.0, kill_grace_s=2))
    response = env.post("save", {"assetId": env.music.asset_id, "startSec": 1.0})  # ~45 s at real time
    job_id = response.json()["data"]["jobId"]
    assets_before = sorted((env.storage.root / "assets").rglob("*"))
    slow.start()
    try:

        def rendering() -> ev.JobChildStarted | None:
            stream = env.repository.store.read_stream(job_id)
            stage = [r.event.stage for r in stream if isinstance(r.event, ev.JobStageChanged)][-1:]
            started = [r.event for r in stream if isinstance(r.event, ev.JobChildStarted)]
            return started[-1] if stage == ["rendering"] and started else None

        child = wait_for(rendering, timeout_s=20, what="the render's ffmpeg")
        cancelled = env.client.post(f"/api/audio/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        wait_for(lambda: env.repository.get(job_id).finished, timeout_s=10, what="job.cancelled")
    finally:
        slow.stop(grace_s=5)
    assert env.repository.get(job_id).status == "cancelled"
    assert children.wait_gone(child.pid, child.started_at_ticks, 5.0)
    types = [r.type for r in env.repository.store.read_stream(job_id)]
    assert types[-3:] == ["job.cancel_requested", "job.child_exited", "job.cancelled"]
    assert sorted((env.storage.root / "assets").rglob("*")) == assets_before  # no partial asset
    assert env.repository.store.backend.query("SELECT COUNT(*) FROM assets WHERE origin_job_id = ?", [job_id]) == [(0,)]


def test_preview_audio_route_serves_bytes_with_ranges(env: Env) -> None:
    pending = env.post("preview", {"assetId": env.speech.asset_id, "startSec": 0.5, "endSec": 3.0})
    job_id = pending.json()["data"]["jobId"]
    not_yet = env.client.get(f"/api/audio/edit/preview/{job_id}/audio")
    assert not_yet.status_code == 404 and "no preview yet" in not_yet.json()["error"]
    env.run_worker()
    key = env.repository.get(job_id).result["previewKey"]  # type: ignore[index]
    data = env.path(key).read_bytes()
    whole = env.client.get(f"/api/audio/edit/preview/{job_id}/audio")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = env.client.get(f"/api/audio/edit/preview/{job_id}/audio", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    tail = env.client.get(f"/api/audio/edit/preview/{job_id}/audio", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    beyond = env.client.get(f"/api/audio/edit/preview/{job_id}/audio", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    ingest_job = env.speech.origin_job_id
    assert env.client.get(f"/api/audio/edit/preview/{ingest_job}/audio").status_code == 404


def test_signed_links_refuse_tampering_and_expiry(env: Env) -> None:
    key = env.speech.storage_key
    url = env.storage.signed_url(key, 60)
    assert url is not None
    ranged = env.client.get(url, headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"fLaC" and ranged.headers["content-type"] == "audio/flac"
    other = env.music.storage_key
    assert env.client.get(url.replace(key.replace("/", "%2F"), other.replace("/", "%2F"))).status_code == 403
    expires = int(url.split("expires=")[1].split("&")[0])
    assert env.client.get(url.replace(f"expires={expires}", f"expires={expires + 3600}")).status_code == 403
    signer = env.storage.signer
    assert signer is not None
    expired = env.client.get(signer.sign(key, 1, now_s=time.time() - 60))
    assert expired.status_code == 403 and "expired" in expired.json()["error"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"startSec": 4.0, "endSec": 4.0}, 422, "endSec"),
        ({"endSec": 99.0}, 422, "endSec"),
        ({"startSec": 50.0}, 422, "startSec"),
        ({"startSec": 1.0, "endSec": 3.0, "fadeInSec": 2.5}, 422, "fadeInSec"),
        ({"startSec": 1.0, "endSec": 3.0, "fadeInSec": 1.5, "fadeOutSec": 1.0}, 422, "fadeOutSec"),
        ({"gainDb": 31}, 422, "gainDb"),
        ({"targetLufs": -3}, 422, "targetLufs"),
        ({"gainDb": "loud"}, 422, "gainDb"),
        ({"gainDb": None}, 422, "gainDb"),
        ({"fadeInSec": -1}, 422, "fadeInSec"),
        ({"fade_in_sec": 1}, 422, "fadeInSec"),
    ],
)
def test_bad_recipes_are_refused_naming_the_field_and_append_nothing(env: Env, change: dict[str, Any], status: int, field: str) -> None:
    before = env.event_count()
    for route in ("preview", "save"):
        response = env.post(route, {"assetId": env.speech.asset_id, **change})
        assert response.status_code == status, response.text
        assert field in response.json()["error"]
    assert env.event_count() == before


def test_unknown_asset_is_404(env: Env) -> None:
    response = env.post("preview", {"assetId": "0" * 32})
    assert (response.status_code, response.json()) == (404, {"error": "Asset not found"})


def test_quota_refuses_the_next_job_with_429_and_appends_nothing(env: Env, tmp_path: Path) -> None:
    limited = Settings(data_dir=tmp_path, max_active_jobs=2)
    with TestClient(create_app(env.repository, env.storage, limited)) as client:
        owner = {"X-Client-Id": "quota-owner"}
        recipe = {"assetId": env.speech.asset_id, "startSec": 7.0}
        for n in range(2):
            assert client.post("/api/audio/edit/save", json=recipe, headers=owner).status_code == 202, n
        before = env.event_count()
        refused = client.post("/api/audio/edit/preview", json={**recipe, "gainDb": 1}, headers=owner)
        assert refused.status_code == 429 and "quota-owner" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) > 0
        uploads = sorted((env.storage.root / "ingest-uploads").rglob("*"))
        upload = client.post(
            "/api/audio/ingest", files={"file": ("a.wav", (MEDIA / "speech_ljspeech.wav").read_bytes(), "audio/wav")}, headers=owner
        )
        assert upload.status_code == 429
        assert sorted((env.storage.root / "ingest-uploads").rglob("*")) == uploads  # no blob left
        assert env.event_count() == before
        other = client.post("/api/audio/edit/preview", json={**recipe, "gainDb": 1}, headers={"X-Client-Id": "someone"})
        assert other.status_code == 202  # the quota is per owner
    env.run_worker()  # finish them so later tests see an idle queue


def test_a_retried_save_with_its_idempotency_key_answers_the_first_job(env: Env) -> None:
    recipe = {"assetId": env.speech.asset_id, "startSec": 1.0, "endSec": 4.0}
    headers = {"X-Client-Id": "retrying-app", "Idempotency-Key": "save-7"}
    first = env.post("save", recipe, **headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["data"]["jobId"]
    before = env.event_count()
    replay = env.post("save", {**recipe, "fadeInSec": 0.0}, **headers)  # the same recipe, spelt out
    assert (replay.status_code, replay.json()["data"]) == (200, {"jobId": job_id, "status": "pending"})
    assert env.event_count() == before  # no second job, no event

    uploads = sorted(env.storage.root.rglob("*"))
    other_recipe = env.post("save", {**recipe, "gainDb": 3}, **headers)
    other_type = env.post("preview", recipe, **headers)
    upload = env.client.post(
        "/api/audio/ingest", headers=headers, files={"file": ("a.wav", (MEDIA / "speech_ljspeech.wav").read_bytes(), "audio/wav")}
    )
    for refused in (other_recipe, other_type, upload):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"].startswith("Idempotency-Key 'save-7' was already used for a save job")
    assert env.event_count() == before
    assert sorted(env.storage.root.rglob("*")) == uploads  # the refused upload left no blob

    elsewhere = env.post("save", recipe, **{"X-Client-Id": "another-app", "Idempotency-Key": "save-7"})
    assert elsewhere.status_code == 202 and elsewhere.json()["data"]["jobId"] != job_id  # keys are per owner
    env.run_worker()
    done = env.post("save", recipe, **headers)
    assert (done.status_code, done.json()["data"]) == (200, {"jobId": job_id, "status": "complete"})


def test_rebuild_verifies_and_repairs_assets_and_previews(env: Env) -> None:
    backend = env.repository.store.backend
    assert rebuild.rebuild(env.repository.store, apply_changes=False, tables=TABLES).differences == []
    backend.execute_batch(
        [
            Statement("UPDATE assets SET duration_sec = 1.0 WHERE asset_id = ?", (env.speech.asset_id,)),
            Statement("DELETE FROM previews WHERE recipe_hash = (SELECT MIN(recipe_hash) FROM previews)"),
        ]
    )
    report = rebuild.rebuild(env.repository.store, apply_changes=False, tables=TABLES)
    found = {(d.table, d.column) for d in report.differences}
    assert found == {("assets", "duration_sec"), ("previews", "*")}
    assert report.rows_rebuilt["assets"] >= 2 and report.rows_rebuilt["previews"] >= 1
    rebuild.rebuild(env.repository.store, tables=TABLES)
    assert rebuild.rebuild(env.repository.store, apply_changes=False, tables=TABLES).differences == []
    repaired = assets.select_asset(env.repository.store, env.speech.asset_id)
    assert repaired is not None and repaired.duration_sec == env.speech.duration_sec
