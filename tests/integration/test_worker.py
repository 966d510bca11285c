"""The worker on real ffmpeg: ingest, cancel of a running child, failures, claim exclusivity."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import configs  # tests/ is on sys.path
import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.audio import media
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def upload(repository: JobRepository, storage: LocalStorage, source: Path) -> str:
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original{source.suffix}"
    storage.put_file(key, source)
    params = {"sourceType": "upload", "storageKey": key, "originalFilename": source.name}
    return repository.create("ingest", params, job_id=job_id).state.job_id


def blobs(storage: LocalStorage, prefix: str) -> list[Path]:
    root = storage.root / prefix  # type: ignore[attr-defined]
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_ingest_normalises_a_real_recording(tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path) -> None:
    job_id = upload(repository, storage, media_dir / "music_strings.ogg")
    Worker(repository, storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    result = state.result or {}
    assert result["preparedKey"] == f"assets/{result['assetId']}/prepared.flac"
    assert (result["sampleRate"], result["channels"]) == (48000, 2)
    assert abs(result["durationSec"] - 45.84) < 0.1
    prepared = storage.local_path(result["preparedKey"])
    assert prepared is not None
    info = media.probe(prepared)
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 48000, 2)
    measured = media.measure_integrated_loudness(prepared)  # an independent ebur128 pass
    assert abs(measured - (-16.0)) <= 1.0, measured
    types = [r.type for r in repository.store.read_stream(job_id)]
    assert types[:3] == ["job.created", "job.claimed", "job.stage_changed"]
    assert types.count("job.child_started") == types.count("job.child_exited") >= 3
    assert "job.progress" in types and types[-1] == "job.completed"


def test_video_input_yields_its_audio_track(tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path) -> None:
    job_id = upload(repository, storage, media_dir / "video_friday.mp4")
    Worker(repository, storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    assert state.result and state.result["channels"] == 2 and abs(state.result["durationSec"] - 6.17) < 0.15
    assert not media.probe(storage.local_path(state.result["preparedKey"])).has_video  # type: ignore[arg-type]


def test_corrupt_input_fails_cleanly(tmp_path: Path, repository: JobRepository, storage: LocalStorage) -> None:
    corrupt = tmp_path / "corrupt.mp3"
    # Fixed bytes: some random bytes probe as a format (e.g. LRC text) and fail another way.
    corrupt.write_bytes(random.Random(9).randbytes(64 * 1024))
    job_id = upload(repository, storage, corrupt)
    Worker(repository, storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "failed"
    assert state.error and "stderr" in state.error and "Invalid data" in state.error
    assert blobs(storage, "assets") == []


def events_of(repository: JobRepository, job_id: str) -> list[ev.RecordedEvent]:
    return repository.store.read_stream(job_id)


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "polling"])
def test_cancel_kills_the_running_ffmpeg(tmp_path: Path, storage: LocalStorage, media_dir: Path, embedded: bool) -> None:
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    settings, settings_audio = configs.split(
        data_dir=tmp_path, ffmpeg_readrate=1.0, poll_interval_s=60.0 if embedded else 0.2, kill_grace_s=2.0
    )
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    worker = Worker(repository, storage, settings, settings_audio)
    if embedded:
        repository.on_append = worker.on_append
    job_id = upload(repository, storage, media_dir / "music_strings.ogg")
    worker.start()
    try:
        started = wait_for(
            lambda: [
                r.event
                for r in events_of(repository, job_id)
                if isinstance(r.event, ev.JobChildStarted) and "loudnorm" in " ".join(r.event.argv)
            ],
            what="the loudnorm ffmpeg to start",
        )[0]
        assert children.process_start_ticks(started.pid) == started.started_at_ticks
        repository.execute(job_id, lambda s: [ev.JobCancelRequested(reason="test")], actor="api")
        assert repository.get(job_id).stage == "cancelling"
        wait_for(lambda: repository.get(job_id).finished, timeout_s=30, what="job.cancelled")
    finally:
        worker.stop(grace_s=30)
    assert children.process_start_ticks(started.pid) != started.started_at_ticks  # the child is gone
    state = repository.get(job_id)
    assert (state.status, state.stage, state.running_children) == ("cancelled", None, ())
    stream = events_of(repository, job_id)
    exits = [r.event for r in stream if isinstance(r.event, ev.JobChildExited) and r.event.pid == started.pid]
    assert exits and exits[0].exit_status is not None and exits[0].exit_status != 0
    assert [r.type for r in stream][-1] == "job.cancelled"
    assert "job.completed" not in [r.type for r in stream]
    assert blobs(storage, "assets") == []
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"jobtape-{job_id[:8]}-*"))


def test_cancel_in_the_same_instant_as_completion_never_completes(tmp_path: Path, repository: JobRepository, storage: LocalStorage) -> None:
    def handler(context: Any, storage_: LocalStorage, settings: Settings) -> dict[str, Any]:
        key = "assets/raced/prepared.flac"
        context.written_keys.append(key)
        storage_.put_stream(key, [b"audio"])
        # The cancel lands between the render finishing and job.completed being appended.
        repository.execute(context.job_id, lambda s: [ev.JobCancelRequested()], actor="api")
        return {"preparedKey": key}

    job_id = repository.create("ingest", {}).state.job_id
    Worker(repository, storage, Settings(data_dir=tmp_path), handlers={"ingest": handler}).run(until_idle=True)
    state = repository.get(job_id)
    assert (state.status, state.finished) == ("cancelled", True)
    assert "job.completed" not in [r.type for r in events_of(repository, job_id)]
    assert not storage.exists("assets/raced/prepared.flac")


def test_embedded_worker_wakes_on_a_new_job(tmp_path: Path, repository: JobRepository, storage: LocalStorage) -> None:
    worker = Worker(
        repository, storage, Settings(data_dir=tmp_path, poll_interval_s=3600), handlers={"ingest": lambda c, s, t: {"ok": True}}
    )
    repository.on_append = worker.on_append
    worker.start()
    try:
        wait_for(lambda: worker.running_job_ids() == [] and not worker.finished, timeout_s=5, what="an idle worker")
        job_id = repository.create("ingest", {}).state.job_id
        wait_for(lambda: repository.get(job_id).status == "complete", timeout_s=10, what="the job to complete")
    finally:
        worker.stop(grace_s=10)


@pytest.fixture
def shared_db(tmp_path: Path) -> Iterator[tuple[Path, JobRepository]]:
    backend = SQLiteBackend(tmp_path / "shared.db")
    backend.migrate(TABLES.migrations)
    yield tmp_path / "shared.db", JobRepository(EventStore(backend), projections=TABLES.projections)
    backend.close()


def test_worker_processes_claim_each_job_exactly_once(shared_db: tuple[Path, JobRepository]) -> None:
    db_path, repository = shared_db
    job_ids = [repository.create("ingest", {}).state.job_id for _ in range(60)]
    script = Path(__file__).with_name("claim_worker_main.py")
    processes = [
        subprocess.Popen([sys.executable, str(script), str(db_path), f"worker-{n}"], stdout=subprocess.PIPE, text=True) for n in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert sum(int(o.strip()) for o in outputs) == len(job_ids)
    for job_id in job_ids:
        types = [r.type for r in repository.store.read_stream(job_id)]
        assert types == ["job.created", "job.claimed", "job.completed"], types
        state = repository.get(job_id)
        assert state.result == {"by": state.worker_id}


def test_silent_input_is_stored_without_loudness_change(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    silent = tmp_path / "silent.wav"  # the real recording with its samples zeroed
    media.run([media.ffmpeg_executable(), "-nostdin", "-i", str(media_dir / "speech_ljspeech.wav"), "-af", "volume=0", str(silent)])
    job_id = upload(repository, storage, silent)
    Worker(repository, storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    assert state.result and state.result["outputLoudness"] is None
    assert state.result["inputLoudness"]["integratedLufs"] is None
