"""Takeovers on real SQLite, ffmpeg and processes: a worker that loses its job, and reapers racing.

- A worker whose job is taken back by another worker's reaper (``job.lease_expired``)
  while its ffmpeg runs must kill the child, remove its partial output and append nothing
  more (docs/worker.md, "Leases and heartbeats": ``JobLost``).
- Several reapers that find the same expired leases at the same moment take each job back
  exactly once: the version guard lets one win and the others leave the job alone
  (docs/worker.md, "Reaper, retries and backoff").
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from pathlib import Path

import configs  # tests/ is on sys.path
import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from test_worker import blobs, upload  # type: ignore[import-not-found]

from jobtape import clock, errors
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children, policy
from jobtape.worker.reaper import Reaper

OTHER_REAPER = "other-host:1:1"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def started_children(repository: JobRepository, job_id: str) -> list[ev.JobChildStarted]:
    return [r.event for r in repository.store.read_stream(job_id) if isinstance(r.event, ev.JobChildStarted)]


def test_a_worker_that_loses_its_job_kills_its_child_removes_partial_output_and_appends_nothing(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    # lease_ttl_s=120: the worker's own reaper and orphan sweep run at its start, then only
    # every 60 s. At the default 30 s its orphan sweep would, 15 s in, record the exit of the ffmpeg
    # it lost (job.child_exited, actor: the worker's id), which this test would have to tell
    # apart from an append by the losing job thread.
    settings, settings_audio = configs.split(data_dir=tmp_path, ffmpeg_readrate=1.0, kill_grace_s=2, poll_interval_s=0.05, lease_ttl_s=120)
    job_id = upload(repository, storage, media_dir / "music_strings.ogg")  # 45 s at real time
    worker = Worker(repository, storage, settings, settings_audio)
    loudnorm: ev.JobChildStarted | None = None
    worker.start()
    try:
        # The long ffmpeg: the loudnorm measuring pass, the job's second child (the first is the probe).
        loudnorm = wait_for(lambda: started_children(repository, job_id)[1:], timeout_s=30, what="the loudnorm ffmpeg to start")[0]
        assert "loudnorm" in " ".join(loudnorm.argv)
        assert children.process_alive(loudnorm.pid, loudnorm.started_at_ticks)
        # Its argv names no workdir (the upload is read in place); the child runs inside it.
        workdir = Path(os.readlink(f"/proc/{loudnorm.pid}/cwd"))
        assert workdir.parent == worker.workdirs.folder and workdir.name.startswith(f"{job_id}-")
        assert workdir.parent.parent == settings.work_parent
        assert (workdir / "measure.stderr").is_file()  # partial output of the running pass

        # Another worker's reaper takes the job back, guarded by the version it just read
        # (retried only if the running worker appended in between, as the reaper's next round would).
        for _ in range(50):
            state = repository.get(job_id)
            assert (state.status, state.worker_id) == ("processing", worker.worker_id)
            assert loudnorm.pid in state.running_children
            taken = ev.JobLeaseExpired(
                worker_id=worker.worker_id,
                attempt=state.attempt,
                not_before=clock.utcnow() + dt.timedelta(hours=1),  # nobody re-claims it here
                orphaned_pids=list(state.running_children),
            )
            try:
                taken_at = repository.append(job_id, [taken], state, actor=OTHER_REAPER).state.version
                break
            except errors.ConcurrencyError:
                continue
        else:
            pytest.fail("the takeover kept losing the version race to the worker")

        # The worker's watch reads the job's row every WATCH_INTERVAL_S (0.25 s) and sees the job
        # is no longer its own; the child dies (SIGTERM: ffmpeg exits within ~50 ms). Without the
        # watch the worker would find out only at its next append, the pass's first progress
        # event ~3 s in (after loudnorm's lookahead): too late for this deadline.
        wait_for(
            lambda: not children.process_alive(loudnorm.pid, loudnorm.started_at_ticks), timeout_s=2, what="the worker to kill its ffmpeg"
        )
        wait_for(lambda: not worker.running_job_ids(), timeout_s=15, what="the worker to drop the job")
        # The job thread removes the workdir before it leaves the running set.
        assert not workdir.exists(), sorted(p.name for p in workdir.iterdir())
        assert blobs(storage, "assets") == []
        assert job_id in worker.finished
    finally:
        worker.stop(grace_s=5)
        if loudnorm is not None and loudnorm.started_at_ticks is not None:  # a failed run leaves no ffmpeg behind
            children.kill_if_ours(loudnorm.pid, loudnorm.started_at_ticks, 1.0)

    stream = repository.store.read_stream(job_id)
    takeover = next(r for r in stream if r.type == "job.lease_expired")
    assert (takeover.version, takeover.actor) == (taken_at, OTHER_REAPER)
    by_loser = [(r.version, r.type) for r in stream if r.version > taken_at and r.actor == worker.worker_id]
    assert by_loser == [], f"the worker appended after losing the job: {by_loser}"
    state = repository.get(job_id)
    assert (state.status, state.attempt, state.worker_id) == ("pending", 1, None)
    assert loudnorm.pid in state.orphaned_children  # no exit recorded by the loser; the host's orphan sweep will


JOBS = 12
REAPERS = 6


def test_racing_reapers_take_each_expired_job_back_exactly_once(
    tmp_path: Path, repository: JobRepository, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, max_attempts=2)
    ghost = "ghost:1:1"  # a dead worker of another host: only its leases can give its jobs back
    expired_at = clock.utcnow() - dt.timedelta(minutes=1)
    on_last_attempt: set[str] = set()
    for index in range(JOBS):
        state = repository.create("ingest", {}).state
        if index % 3 == 0:  # attempt 1 ended in a retryable failure: the reaped attempt is the last one
            state = repository.append(state.job_id, [ev.JobClaimed(worker_id=ghost, attempt=1, lease_ttl_s=30)], state, actor=ghost).state
            state = repository.append(state.job_id, [ev.JobRetryScheduled(error="reset by peer", attempt=1)], state, actor=ghost).state
            on_last_attempt.add(state.job_id)
        claim = ev.JobClaimed(worker_id=ghost, attempt=state.attempt + 1, lease_expires_at=expired_at, lease_ttl_s=30)
        repository.append(state.job_id, [claim], state, actor=ghost)
    job_ids = [row[0] for row in repository.store.backend.query("SELECT job_id FROM jobs ORDER BY created_position")]
    assert len(job_ids) == JOBS

    # Each reaper has its own connection to the database, like the reapers of separate worker processes.
    backends = [SQLiteBackend(repository.store.backend.path) for _ in range(REAPERS)]  # type: ignore[attr-defined]
    reapers = [
        Reaper(
            JobRepository(EventStore(backend), projections=TABLES.projections),
            settings,
            actor=f"host{i}:{1000 + i}:1",
            host_id=f"host{i}",
            rng=random.Random(i),
        )
        for i, backend in enumerate(backends)
    ]
    barrier = threading.Barrier(REAPERS)
    won: dict[int, list[str]] = {}
    spans: dict[int, tuple[float, float]] = {}
    failures: list[BaseException] = []

    def reap(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            began = time.monotonic()
            won[index] = reapers[index].reap_expired()
            spans[index] = (began, time.monotonic())
        except BaseException as exc:
            failures.append(exc)

    caplog.set_level(logging.INFO, logger="jobtape.worker.reaper")
    threads = [threading.Thread(target=reap, args=(i,), name=f"reaper {i}") for i in range(REAPERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for backend in backends:
            backend.close()
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)

    # The reapers ran at the same time (released together by the barrier).
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values()), spans

    # Each job was taken back by exactly one reaper.
    winners = sorted(job_id for jobs in won.values() for job_id in jobs)
    assert len(winners) == len(set(winners)), f"jobs taken back more than once: {len(winners) - len(set(winners))}"
    assert winners == sorted(job_ids)
    for job_id in job_ids:
        stream = repository.store.read_stream(job_id)
        assert [r.version for r in stream] == list(range(1, len(stream) + 1))
        expiries = [r for r in stream if r.type == "job.lease_expired"]
        assert len(expiries) == 1, [(r.version, r.type, r.actor) for r in stream]
        assert expiries[0].event == ev.JobLeaseExpired(
            worker_id=ghost, attempt=expiries[0].event.attempt, not_before=expiries[0].event.not_before, orphaned_pids=[]
        )
        [winner] = [i for i, jobs in won.items() if job_id in jobs]
        assert all(r.actor == reapers[winner].actor for r in stream if r.version >= expiries[0].version)
        state = repository.get(job_id)
        if job_id in on_last_attempt:
            assert [r.type for r in stream][-2:] == ["job.lease_expired", "job.failed"]
            assert (state.status, state.attempt, state.finished) == ("failed", 2, True)
            assert state.error and f"worker {ghost} lost the job (its lease expired) on attempt 2 of 2" in state.error
        else:
            assert [r.type for r in stream][-1] == "job.lease_expired"
            assert (state.status, state.attempt, state.worker_id, state.finished) == ("pending", 1, None, False)
            assert state.not_before is not None and state.not_before > expiries[0].recorded_at

    # The race was real: some reapers decided on a version that another reaper had already
    # moved on; the guard refused their append and they left the job alone (the reaper logs each).
    refused = [r.getMessage() for r in caplog.records if "moved on, left alone" in r.getMessage()]
    assert refused, "no reaper lost a race: the reapers did not contend for the same job"
    assert all("another writer appended first" in message for message in refused), refused[:3]


def test_a_types_own_max_attempts_decides_when_the_reaper_fails_its_job(repository: JobRepository, tmp_path: Path) -> None:
    """``max_attempts`` is the total number of attempts, for the reaper as for the worker: a type
    allowed one attempt fails on its first lease expiry; another type goes back to pending."""
    settings = Settings(data_dir=tmp_path, max_attempts=3)
    ghost = "ghost:1:1"
    expired_at = clock.utcnow() - dt.timedelta(minutes=1)
    job_ids = {}
    for job_type in ("ingest", "save"):
        state = repository.create(job_type, {}).state
        claim = ev.JobClaimed(worker_id=ghost, attempt=1, lease_expires_at=expired_at, lease_ttl_s=30)
        job_ids[job_type] = repository.append(state.job_id, [claim], state, actor=ghost).state.job_id
    reaper = Reaper(repository, settings, actor="host:2:1", host_id="host", limits={"ingest": policy.TypeLimits(max_attempts=1)})
    assert sorted(reaper.reap_expired()) == sorted(job_ids.values())
    once = repository.get(job_ids["ingest"])
    assert once.status == "failed"
    assert once.error == "worker ghost:1:1 lost the job (its lease expired) on attempt 1 of 1; giving up after 1 attempts"
    assert repository.get(job_ids["save"]).status == "pending"  # attempt 1 of the settings' 3
