"""Chaos: 3 worker processes on 24 real ingest jobs while a controller SIGKILLs and restarts them.

The controller kills a random worker holding a job every 1.5-3 s (``JOBTAPE_CHAOS_SEED`` picks the
sequence; 6 kills, each followed by a restart). At the end every job is complete (or
failed with a stated reason), none completed twice, no ffmpeg the workers started is
alive, the projection equals a rebuild from the log, and the log shows the takeovers.
The summary line is printed (``pytest -s``) and written to ``$JOBTAPE_CHAOS_SUMMARY`` if set.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import rebuild as rebuild_projection
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children

ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / "media"
FILES = ("speech_librispeech.mp3", "speech_ljspeech.wav", "awkward_short_id3v1.mp3", "video_friday.mp4")
JOBS = 24
KILLS = 6
DEADLINE_S = 100.0
WORKER_FLAGS = (
    "--lease-ttl",
    "2",
    "--poll-interval",
    "0.2",
    "--concurrency",
    "2",
    "--max-attempts",
    "10",
    "--backoff-base",
    "0.2",
    "--backoff-cap",
    "1",
    "--ffmpeg-readrate",
    "4",
    "--grace",
    "0",
    "--host-id",
    "chaos-host",
)


class Workers:
    """The worker processes: start, SIGKILL, restart, stop gracefully."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        with open(self.data_dir / f"worker-{self.started}.stderr", "wb") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(self.data_dir), *WORKER_FLAGS],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def holding(self, worker_ids: list[str]) -> list[int]:
        """Indexes of the live processes among ``worker_ids`` (``host:pid:n``): workers that hold a job now."""
        pids = {int(worker_id.split(":")[1]) for worker_id in worker_ids}
        return [index for index, process in enumerate(self.processes) if process.pid in pids and process.poll() is None]

    def kill_and_restart(self, index: int) -> None:
        victim = self.processes[index]
        victim.kill()
        victim.wait()
        self.processes[index] = self.start()

    def stop(self) -> list[int | None]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=30))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    for process in pool.processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _takeovers(stream: list[ev.RecordedEvent]) -> int:
    """Claims that follow a lease_expired of an earlier claim: claimed, lease_expired, claimed again."""
    count, expired = 0, False
    for item in stream:
        if isinstance(item.event, ev.JobLeaseExpired):
            expired = True
        elif isinstance(item.event, ev.JobClaimed) and expired:
            count, expired = count + 1, False
    return count


@pytest.mark.slow
def test_jobs_survive_workers_killed_at_random(tmp_path: Path, workers: Workers) -> None:
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    storage = LocalStorage(tmp_path / "storage")
    job_ids = []
    for n in range(JOBS):
        source = MEDIA / FILES[n % len(FILES)]
        job_id = os.urandom(16).hex()
        key = f"ingest-uploads/{job_id}/original{source.suffix}"
        storage.put_file(key, source)
        repository.create("ingest", {"sourceType": "upload", "storageKey": key, "originalFilename": source.name}, job_id=job_id)
        job_ids.append(job_id)

    seed = int(os.environ.get("JOBTAPE_CHAOS_SEED", "4"))
    rng = random.Random(seed)
    started_at = time.monotonic()
    workers.processes = [workers.start() for _ in range(3)]
    kills = 0
    next_kill = started_at + rng.uniform(1.5, 3.0)

    def unfinished() -> list[str]:
        rows = backend.query("SELECT job_id FROM jobs WHERE finished = 0")
        return [row[0] for row in rows]

    def remaining_s() -> float:
        return max(0.0, DEADLINE_S - (time.monotonic() - started_at))

    def holders() -> list[int]:
        rows = backend.query("SELECT DISTINCT worker_id FROM jobs WHERE status = 'processing' ORDER BY worker_id")
        return workers.holding([row[0] for row in rows])

    # The controller: every 1.5-3 s while jobs run, SIGKILL a worker that holds a job (one still
    # starting, as a restarted one is for seconds on a loaded machine, would make no takeover).
    while kills < KILLS and unfinished():
        wait_for(lambda: (time.monotonic() >= next_kill and holders()) or not unfinished(), remaining_s(), "the next kill", 0.1)
        victims = holders()
        if unfinished() and victims:
            workers.kill_and_restart(rng.choice(victims))
            kills += 1
            next_kill = time.monotonic() + rng.uniform(1.5, 3.0)
    wait_for(lambda: not unfinished(), remaining_s(), "every job to finish", 0.1)
    elapsed = time.monotonic() - started_at

    streams = {job_id: repository.store.read_stream(job_id) for job_id in job_ids}
    spawned = [(r.event.pid, r.event.started_at_ticks) for s in streams.values() for r in s if isinstance(r.event, ev.JobChildStarted)]

    def alive_children() -> list[int]:
        return [pid for pid, ticks in spawned if children.process_alive(pid, ticks)]

    # The live workers' orphan sweep kills what the dead ones left.
    wait_for(lambda: not alive_children(), 15, "orphaned ffmpeg processes to be killed", 0.1)
    alive = alive_children()
    exit_codes = workers.stop()

    statuses = collections.Counter(repository.get(job_id).status for job_id in job_ids)
    takeovers = sum(_takeovers(stream) for stream in streams.values())
    releases = sum(1 for s in streams.values() for r in s if isinstance(r.event, ev.JobLeaseExpired))
    orphan_exits = sum(
        1 for s in streams.values() for r in s if isinstance(r.event, ev.JobChildExited) and r.actor != _holder_of(s, r.event.pid)
    )
    summary = (
        f"chaos seed={seed}: kills={kills} restarts={workers.started - 3} takeovers={takeovers}"
        f" lease_expired={releases} orphan_exits_recorded={orphan_exits} ffmpeg_started={len(spawned)}"
        f" jobs={len(job_ids)} final={dict(statuses)} elapsed={elapsed:.1f}s"
    )
    print(summary)
    if os.environ.get("JOBTAPE_CHAOS_SUMMARY"):
        with open(os.environ["JOBTAPE_CHAOS_SUMMARY"], "a") as handle:
            handle.write(summary + "\n")

    assert alive == [], f"ffmpeg processes still alive: {alive}"
    assert exit_codes == [0, 0, 0]
    for job_id, stream in streams.items():
        state = repository.get(job_id)
        assert state.status == "complete" or (state.status == "failed" and state.error), (job_id, state.error)
        assert [r.type for r in stream].count("job.completed") <= 1
    assert kills == KILLS and takeovers >= 1
    assert rebuild_projection.rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []
    backend.close()


def _holder_of(stream: list[ev.RecordedEvent], pid: int) -> str | None:
    """The actor that recorded ``pid``'s child_started (its worker)."""
    return next((r.actor for r in stream if isinstance(r.event, ev.JobChildStarted) and r.event.pid == pid), None)
