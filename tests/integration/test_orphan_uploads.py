"""Orphan uploads: a process killed between an upload's write and its ``job.created`` leaves a
blob no job refers to; a worker's sweep deletes it after the grace period, and never a blob
whose job exists (or was archived with its blobs kept)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import blobs, clock, runtime
from jobtape.audit import retention
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.storage.base import Storage

__all__: list[str] = []

HOUR = dt.timedelta(hours=1)

#: A process that writes an upload as the ingest route does (Storage.put_new at the flat key) and is
#: killed (SIGKILL) before it appends the job's job.created.
_KILLED_UPLOADER = """
import os, signal, sys
from pathlib import Path
from jobtape.storage import LocalStorage
storage = LocalStorage(Path(sys.argv[1]))
storage.put_new(f"ingest-uploads/{sys.argv[2]}.wav", b"RIFF" + os.urandom(4096))
os.kill(os.getpid(), signal.SIGKILL)
"""


def _failed_job(repository: JobRepository, storage: Storage, key: str, job_id: str) -> None:
    storage.put_stream(key, [b"upload of " + job_id.encode()])
    state = repository.create("ingest", {"sourceType": "upload", "storageKey": key}, job_id=job_id).state
    repository.append(job_id, [ev.JobClaimed(worker_id="w"), ev.JobFailed(error="not media")], state, actor="w")


def _age(storage: LocalStorage, key: str, by: dt.timedelta) -> None:
    path = storage.local_path(key)
    assert path is not None
    then = time.time() - by.total_seconds()
    os.utime(path, (then, then))


def test_a_worker_deletes_the_upload_of_a_process_killed_before_job_created_and_keeps_every_other(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    backend = SQLiteBackend(data_dir / "jobtape.db")
    backend.migrate(TABLES.migrations)
    store = EventStore(backend, keys=runtime.log_keys(Settings(data_dir=data_dir)))
    repository = JobRepository(store, projections=TABLES.projections)
    storage = LocalStorage(data_dir / "storage")

    orphan_id, young_id, job_id, archived_id = (os.urandom(16).hex() for _ in range(4))
    for killed in (orphan_id, young_id):
        done = subprocess.run([sys.executable, "-c", _KILLED_UPLOADER, str(storage.root), killed], timeout=60)
        assert done.returncode == -signal.SIGKILL
    orphan, young = f"ingest-uploads/{orphan_id}.wav", f"ingest-uploads/{young_id}.wav"
    assert storage.exists(orphan) and storage.exists(young)  # what the killed processes left
    assert repository.load(orphan_id) is None and repository.load(young_id) is None
    archived = f"ingest-uploads/{archived_id}/original.mp3"  # the layout before issue 12
    _failed_job(repository, storage, archived, archived_id)
    report = retention.archive(store, cutoff=clock.utcnow() + HOUR, path=tmp_path / "archive.jsonl", actor="test", tables=TABLES)
    assert report.jobs == 1 and repository.load(archived_id) is None  # --keep-blobs (no storage): the upload stays
    with_job = f"ingest-uploads/{job_id}.mp3"
    _failed_job(repository, storage, with_job, job_id)  # its job exists: failed, its upload retained for 24 h
    unnamed = "ingest-uploads/notes.txt"  # no job id in its name
    storage.put_stream(unnamed, [b"?"])
    for key in (orphan, with_job, archived, unnamed):
        _age(storage, key, 2 * HOUR)  # past the 1 h grace; `young` is not
    store.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBTAPE_", "STORAGE_"))}
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(data_dir), "--poll-interval", "0.05", "--lease-ttl", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: not storage.exists(orphan), timeout_s=30, what="the worker's sweep to delete the orphan upload")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert "removed 1 upload(s) older than 3600 s that no job refers to" in stderr, stderr
    assert [key for key in (young, with_job, archived, unnamed) if not storage.exists(key)] == []


def test_the_sweep_on_s3_deletes_only_old_uploads_whose_job_does_not_exist(repository: JobRepository, s3_storage: Any) -> None:
    storage: Storage = s3_storage
    job_ids = [os.urandom(16).hex() for _ in range(5)]
    orphans = [f"ingest-uploads/{job_id}.wav" for job_id in job_ids[:3]]
    for key in orphans:
        storage.put_new(key, b"RIFF upload")  # the write made, job.created never appended
    kept = [f"ingest-uploads/{job_ids[3]}.wav", f"ingest-uploads/{job_ids[4]}/original.wav", "ingest-uploads/readme"]
    _failed_job(repository, storage, kept[0], job_ids[3])
    _failed_job(repository, storage, kept[1], job_ids[4])
    storage.put_stream(kept[2], [b"?"])
    sweeper = blobs.OrphanUploadSweeper(repository, storage, grace_s=HOUR.total_seconds(), limit=2)

    assert [sweeper.sweep().deleted for _ in range(4)] == [[], [], [], []]  # all younger than the grace
    later = clock.utcnow() + 2 * HOUR
    deleted = [key for _ in range(4) for key in sweeper.sweep(later).deleted]  # 6 blobs, 2 a sweep: one pass and a bit

    assert sorted(deleted) == sorted(orphans)
    assert sorted(blob.key for blob in storage.list_blobs("ingest-uploads/")) == sorted(kept)


def test_the_job_id_of_an_upload_key() -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    assert blobs.upload_job_id(f"ingest-uploads/{job_id}.wav") == job_id
    assert blobs.upload_job_id(f"ingest-uploads/{job_id}/original.mp3") == job_id
    assert blobs.upload_job_id(f"ingest-uploads/{job_id}") == job_id
    for key in (
        "ingest-uploads/x/original.wav",
        "ingest-uploads/notes.txt",
        f"assets/{job_id}/prepared.flac",
        f"ingest-uploads/{job_id}x.wav",
    ):
        assert blobs.upload_job_id(key) is None


def test_a_grace_of_0_turns_the_sweep_off(repository: JobRepository, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    key = f"ingest-uploads/{os.urandom(16).hex()}.wav"
    storage.put_new(key, b"RIFF")
    assert blobs.OrphanUploadSweeper(repository, storage, grace_s=0).sweep(clock.utcnow() + 100 * HOUR).deleted == []
    assert blobs.OrphanUploadSweeper(repository, storage, grace_s=1).sweep(clock.utcnow() + HOUR).deleted == [key]
    with pytest.raises(ValueError, match="JOBTAPE_ORPHAN_UPLOAD_GRACE"):
        Settings(orphan_upload_grace_s=-1)
