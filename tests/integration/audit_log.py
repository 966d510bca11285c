"""Builds an event log from real jobs: real ingests by the real Worker on real recordings.

Used by the audit tests and to produce the sessions in docs/audit.md
(``python tests/integration/audit_log.py DATA_DIR``). Jobs:

- ``speech``, ``short``, ``video``: ingests that complete (media/speech_ljspeech.wav,
  media/awkward_short_id3v1.mp3, media/video_friday.mp4);
- ``cancelled``: an ingest of media/music_strings.ogg read at real time, cancelled while
  its loudnorm ffmpeg runs;
- ``failed``: an ingest of a corrupt file (random bytes named .mp3).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import configs  # tests/ is on sys.path
from configs import TABLES  # tests/ is on sys.path

if __name__ == "__main__":  # run as a script: tests/ is not on sys.path as it is under pytest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import runtime
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

MEDIA = Path(__file__).resolve().parents[2] / "media"


def _upload(repository: JobRepository, storage: LocalStorage, source: Path) -> str:
    job_id = os.urandom(16).hex()
    key = f"ingest-uploads/{job_id}/original{source.suffix}"
    storage.put_file(key, source)
    params = {"sourceType": "upload", "storageKey": key, "originalFilename": source.name}
    return repository.create("ingest", params, job_id=job_id).state.job_id


def build_real_log(data_dir: Path) -> dict[str, str]:
    """Run the jobs described in the module docstring; return ``{name: job_id}``."""
    settings = Settings(data_dir=data_dir)
    repository = runtime.open_repository(settings, tables=TABLES)
    storage = LocalStorage(settings.storage_root)
    try:
        corrupt = data_dir / "corrupt.mp3"
        corrupt.write_bytes(random.Random(0).randbytes(64 * 1024))  # seeded: some random bytes probe as a stream
        ids = {
            name: _upload(repository, storage, source)
            for name, source in (
                ("speech", MEDIA / "speech_ljspeech.wav"),
                ("short", MEDIA / "awkward_short_id3v1.mp3"),
                ("video", MEDIA / "video_friday.mp4"),
                ("failed", corrupt),
            )
        }
        Worker(repository, storage, settings, worker_id="audit-host:100:1").run(until_idle=True)
        ids["cancelled"] = job_id = _upload(repository, storage, MEDIA / "music_strings.ogg")
        slow, slow_audio = configs.split(data_dir=data_dir, ffmpeg_readrate=1.0, poll_interval_s=0.05, kill_grace_s=2.0)
        worker = Worker(repository, storage, slow, slow_audio, worker_id="audit-host:200:1")
        worker.start()
        try:
            wait_for(
                lambda: any(
                    isinstance(r.event, ev.JobChildStarted) and "loudnorm" in " ".join(r.event.argv)
                    for r in repository.store.read_stream(job_id)
                ),
                60,
                "the loudnorm pass to start",
            )
            repository.execute(job_id, lambda state: [ev.JobCancelRequested(reason="operator: wrong file")], actor="api")
            wait_for(lambda: repository.get(job_id).finished, 30, "job.cancelled")
        finally:
            worker.stop()
        return ids
    finally:
        repository.store.close()


if __name__ == "__main__":
    for name, job in build_real_log(Path(sys.argv[1])).items():
        print(name, job)
