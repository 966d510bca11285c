"""A data dir written by the code before the audio package (main at 248ad6f) opens and upgrades unchanged.

The audio tables moved from the engine's migrations 0006 and 0009 into the audio package's
(``audio.0001_assets_previews``, ``audio.0002_asset_removals``); the engine's parts were
renamed (``0006_quota_guard``, ``0009_blob_removal_columns``). Each lists the shipped name in
``replaces``, so a database that recorded the shipped names applies none of them again (a
re-run would fail: ``table assets already exists``). ``tests/data/main-248ad6f.db`` was
written by that code (``tests/data/make_main_db.py``): a completed ingest (an ``assets``
row), a rendered preview (a ``previews`` row) and a failed upload (``retained_upload``).

Its events carry no ``owned_keys`` / ``download_key`` (declared in the log since branch
``owned``): they re-encode to the very ``data`` stored (so every hash stays), and the fold's
legacy reading (:mod:`jobtape.projections.legacy`) gives them the owned keys, the retained
upload and the poll's link they had.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient

from jobtape import blobs, defaults, runtime
from jobtape.audio.projections import assets, previews
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.projections import state as job_state
from jobtape.projections.rebuild import rebuild

MAIN_DB = Path(__file__).resolve().parents[1] / "data" / "main-248ad6f.db"
ASSET_ID, RECIPE_HASH = "a" * 32, "b" * 64
INGEST, PREVIEW, FAILED = "f07ec17bc0394982a47f75d2d5c6b079", "c72d3b3089ab45ecbdd0bc002e2a2a9e", "4245aefcda094dd9826ef01d83f40a08"
PREPARED, RENDERED = f"assets/{ASSET_ID}/prepared.flac", f"previews/{RECIPE_HASH}.mp3"
UPLOAD_A, UPLOAD_B = "ingest-uploads/a/original.wav", "ingest-uploads/b/original.wav"


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        return [(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows]


def test_a_data_dir_of_the_code_before_the_audio_package_applies_only_newer_migrations_and_reads_the_same(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copy(MAIN_DB, data_dir / "jobtape.db")

    backend = SQLiteBackend(data_dir / "jobtape.db")
    # Every split migration is recorded under its shipped name; only those added since apply.
    assert backend.migrate(TABLES.migrations) == ["0010_queue_counts", "0011_api_keys", "0012_log_chain"]
    backend.close()
    fresh = tmp_path / "fresh.db"
    SQLiteBackend(fresh).migrate(TABLES.migrations)
    assert _schema(data_dir / "jobtape.db") == _schema(fresh)  # the split migrations build the same tables

    repository = runtime.open_repository(Settings(data_dir=data_dir), tables=TABLES)
    try:
        assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
        asset = assets.select_asset(repository.store, ASSET_ID)
        assert asset is not None and asset.storage_key == f"assets/{ASSET_ID}/prepared.flac" and asset.owner == "alice"
        cached = previews.select_preview(repository.store, RECIPE_HASH)
        assert cached is not None and cached.preview_key == f"previews/{RECIPE_HASH}.mp3"
        created = repository.create("save", {"assetId": ASSET_ID}, owner="alice")  # the log takes new jobs
        assert created.state.version == 1
    finally:
        repository.store.close()

    env = {**os.environ, "JOBTAPE_DATA_DIR": str(data_dir)}
    for command in (["verify"], ["rebuild", "--verify"]):
        done = subprocess.run([sys.executable, "-m", "jobtape", *command], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stdout[-500:], done.stderr[-500:])


def test_old_jobs_keep_their_owned_keys_retention_and_download_links(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    shutil.copy(MAIN_DB, data_dir / "jobtape.db")
    settings = Settings(data_dir=data_dir)
    repository = runtime.open_repository(settings, tables=TABLES)
    storage = runtime.open_storage(settings)
    try:
        for row in repository.store.backend.query("SELECT position, type, data FROM events ORDER BY position"):
            event = ev.decode_event(row[0], row[1], row[2])
            assert ev.encode_event(event) == (row[1], row[2])  # the same data, hence the same hash
        expected = {  # (owned keys, retained inputs, download key), as the audio rules gave before
            INGEST: ((UPLOAD_A, PREPARED), (), PREPARED),
            PREVIEW: ((RENDERED,), (), RENDERED),
            FAILED: ((UPLOAD_B,), (UPLOAD_B,), None),
        }
        for job_id, (owned, retained, download) in expected.items():
            folded = job_state.fold(repository.store.read_stream(job_id))
            for state in (repository.get(job_id), folded):  # the stored row (old state JSON) and a fresh fold
                assert state is not None
                assert (job_state.owned_keys(state), job_state.retained_inputs(state), job_state.download_key(state)) == (
                    owned,
                    retained,
                    download,
                ), job_id

        for key in (PREPARED, RENDERED, UPLOAD_B):
            storage.put_stream(key, [b"x"])
        with TestClient(defaults.create_app(repository, storage, settings)) as client:
            for job_id, key in ((INGEST, PREPARED), (PREVIEW, RENDERED)):
                assert f"key={key.replace('/', '%2F')}" in client.get(f"/api/audio/jobs/{job_id}").json()["downloadUrl"]
            assert "downloadUrl" not in client.get(f"/api/audio/jobs/{FAILED}").json()
        report = blobs.BlobSweeper(repository, storage, retention_s=0, actor="host:1:1").sweep()
        assert report.removed == {FAILED: [UPLOAD_B]} and not storage.exists(UPLOAD_B)
    finally:
        repository.store.close()


def test_pending_jobs_written_before_queue_counts_get_their_positions_after_the_upgrade(tmp_path: Path) -> None:
    from jobtape.eventlog.store import EventStore
    from jobtape.projections import queue
    from jobtape.projections.repository import JobRepository

    path = tmp_path / "jobtape.db"
    shutil.copy(MAIN_DB, path)
    backend = SQLiteBackend(path)
    try:
        before = tuple(m for m in TABLES.migrations if m.name not in ("0010_queue_counts", "0011_api_keys"))
        assert backend.migrate(before) == ["0012_log_chain"]  # the store appends with the keyed chain
        older = tuple(p for p in TABLES.projections if p.table not in (queue.TABLE, "api_keys"))  # what the code before 0010 wrote
        old = JobRepository(EventStore(backend), projections=older)
        jobs = [old.create("save", {"assetId": ASSET_ID}, owner="alice").state for _ in range(6)]
        old.append(jobs[0].job_id, [ev.JobClaimed(worker_id="w", attempt=1)], jobs[0], actor="w")
        old.append(jobs[3].job_id, [ev.JobCancelRequested()], jobs[3], actor="api")

        assert backend.migrate(TABLES.migrations) == ["0010_queue_counts", "0011_api_keys"]
        repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        assert [repository.queue_position(j.job_id) for j in jobs] == [None, 1, 2, None, 3, 4]
        assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
        claimed = repository.append(jobs[1].job_id, [ev.JobClaimed(worker_id="w", attempt=1)], repository.get(jobs[1].job_id), actor="w")
        assert claimed.state.status == "processing"
        assert [repository.queue_position(j.job_id) for j in jobs] == [None, None, 1, None, 2, 3]
    finally:
        backend.close()
