"""Failed-upload retention: the upload of a failed or cancelled ingest is removed on record,
after the retention, by one host only, and again after a crash between record and delete."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import blobs, runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

CORRUPT = random.Random(9).randbytes(64 * 1024)  # fixed bytes that are no media format (see test_worker)
DAY = dt.timedelta(hours=24)


def _failed_ingest(repository: JobRepository, storage: LocalStorage, *, cancelled: bool = False) -> tuple[str, str]:
    """An upload ingest that ended failed (or cancelled while pending); returns (job_id, upload key)."""
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original.mp3"
    storage.put_stream(key, [CORRUPT])
    repository.create("ingest", {"sourceType": "upload", "storageKey": key}, job_id=job_id)
    state = repository.get(job_id)
    if cancelled:
        repository.append(job_id, [ev.JobCancelRequested(reason="test")], state, actor="api")
    else:
        repository.append(job_id, [ev.JobClaimed(worker_id="w"), ev.JobFailed(error="not media")], state, actor="w")
    return job_id, key


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def test_the_upload_of_a_failed_or_cancelled_ingest_goes_after_the_retention_and_its_stream_says_why(
    repository: JobRepository, storage: LocalStorage
) -> None:
    failed, failed_key = _failed_ingest(repository, storage)
    cancelled, cancelled_key = _failed_ingest(repository, storage, cancelled=True)
    finished = repository.get(cancelled).updated_at
    sweeper = blobs.BlobSweeper(repository, storage, retention_s=DAY.total_seconds(), actor="host:1:1")

    assert sweeper.sweep(finished + DAY - dt.timedelta(minutes=1)).removed == {}
    assert storage.exists(failed_key) and storage.exists(cancelled_key)

    report = sweeper.sweep(finished + DAY + dt.timedelta(seconds=1))

    assert report.removed == {failed: [failed_key], cancelled: [cancelled_key]}
    assert not storage.exists(failed_key) and not storage.exists(cancelled_key)
    last = repository.store.read_stream(failed)[-1]
    assert isinstance(last.event, ev.JobBlobsDeleted) and last.actor == "host:1:1"
    assert last.event.keys == [failed_key] and last.event.reason == "failed-upload retention (86400 s after the job ended)"
    state = repository.get(failed)
    assert (state.status, state.error, state.removed_keys) == ("failed", "not media", (failed_key,))
    assert sweeper.sweep(finished + 2 * DAY).removed == {}  # nothing is recorded twice


def test_of_two_hosts_sweeping_at_once_exactly_one_records_and_deletes(tmp_path: Path, storage: LocalStorage) -> None:
    repositories = []
    for _ in range(2):  # two hosts: each its own connection to the same log file
        backend = SQLiteBackend(tmp_path / "jobtape.db")
        backend.migrate(TABLES.migrations)
        repositories.append(JobRepository(EventStore(backend), projections=TABLES.projections))
    job_id, key = _failed_ingest(repositories[0], storage)
    both_read = threading.Barrier(2, timeout=30)
    results: list[list[str]] = []

    def select(state: object) -> list[str]:
        if threading.current_thread().name.startswith("host") and not getattr(threading.current_thread(), "waited", False):
            threading.current_thread().waited = True  # type: ignore[attr-defined]
            both_read.wait()  # both hosts decided on the same version before either appends
        return [key]

    def host(repository: JobRepository) -> None:
        results.append(blobs.remove_job_blobs(repository, storage, job_id, select, reason="test", actor="h"))

    threads = [threading.Thread(target=host, args=(r,), name=f"host{i}") for i, r in enumerate(repositories)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert sorted(results) == [[], [key]]
        stream = repositories[0].store.read_stream(job_id)
        assert [r.type for r in stream].count("job.blobs_deleted") == 1 and not storage.exists(key)
    finally:
        for repository in repositories:
            repository.store.close()


def test_a_removal_recorded_before_a_crash_is_deleted_by_the_next_process_sweep(repository: JobRepository, storage: LocalStorage) -> None:
    job_id, key = _failed_ingest(repository, storage)
    # The crash: the event is recorded, the process dies before the delete.
    repository.append(job_id, [ev.JobBlobsDeleted(keys=[key], reason="crashed")], repository.get(job_id), actor="gone")
    assert storage.exists(key)

    report = blobs.BlobSweeper(repository, storage, retention_s=0, actor="host:2:1").sweep()

    assert (report.removed, report.redeleted) == ({}, 1) and not storage.exists(key)
    assert [r.type for r in repository.store.read_stream(job_id)].count("job.blobs_deleted") == 1


def test_a_jobtape_worker_with_retention_0_removes_a_failed_uploads_blob_on_record(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    backend = SQLiteBackend(data_dir / "jobtape.db")
    backend.migrate(TABLES.migrations)
    # the data dir's log key, which the worker and the verify subprocesses use too
    repository = JobRepository(EventStore(backend, keys=runtime.log_keys(Settings(data_dir=data_dir))), projections=TABLES.projections)
    storage = LocalStorage(data_dir / "storage")
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original.mp3"
    storage.put_stream(key, [CORRUPT])
    repository.create("ingest", {"sourceType": "upload", "storageKey": key}, job_id=job_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTAPE_", "STORAGE_"))}
    env["JOBTAPE_FAILED_UPLOAD_RETENTION"] = "0"
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(data_dir), "--poll-interval", "0.05", "--lease-ttl", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        state = wait_for(lambda: (s := repository.get(job_id)).removed_keys and s, timeout_s=60, what="the failed upload's removal")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert (state.status, state.removed_keys) == ("failed", (key,)) and not storage.exists(key)
    last = repository.store.read_stream(job_id)[-1]
    assert isinstance(last.event, ev.JobBlobsDeleted) and last.event.reason.startswith("failed-upload retention (0 s")
    assert last.actor.count(":") == 2  # the worker's id, host:pid:n
    backend.close()
    for command in (["verify"], ["rebuild", "--verify"]):
        done = subprocess.run(
            [sys.executable, "-m", "jobtape", *command, "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _render(repository: JobRepository, storage: LocalStorage, job_id: str, recipe_hash: str) -> str:
    key = f"previews/{recipe_hash}.mp3"
    storage.put_stream(key, [b"ID3 render of " + job_id.encode()])
    created = repository.create("preview", {"recipeHash": recipe_hash, "sourceKey": "assets/a/prepared.flac"}, job_id=job_id)
    repository.append(
        job_id,
        [
            ev.JobClaimed(worker_id="w"),
            ev.JobCompleted(result={"previewKey": key, "recipeHash": recipe_hash, "durationSec": 1.0, "cacheHit": False}),
        ],
        created.state,
        actor="w",
    )
    return key


def test_archive_keeps_a_preview_mp3_that_a_newer_render_outside_the_archive_holds_in_the_cache(
    repository: JobRepository, storage: LocalStorage, tmp_path: Path
) -> None:
    from jobtape import clock
    from jobtape.audio.projections import previews
    from jobtape.audit import retention

    recipe_hash = "ab" * 32
    old, newer = "f" * 32, "0" * 32
    key = _render(repository, storage, old, recipe_hash)
    other_key = _render(repository, storage, "e" * 32, "cd" * 32)
    cutoff = clock.utcnow()
    _render(repository, storage, newer, recipe_hash)  # raced the same recipe, finished after the cutoff
    assert previews.cache_holder(repository.store, key) == newer  # the smaller job id keeps the row

    report = retention.archive(repository.store, cutoff=cutoff, path=tmp_path / "a.jsonl", actor="cli:t", storage=storage, tables=TABLES)

    assert report.jobs == 2 and report.removed_keys == {"e" * 32: [other_key]}
    assert storage.exists(key) and not storage.exists(other_key)  # the newer render's cache entry still plays
