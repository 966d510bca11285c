"""The worker's job threads (slots), its lazy work folders and its claims spread over several processes.

Issue 12: per job the worker made a new thread (with its own SQLite connection) and a work
folder it removed again even when the job handler never used it, and worker processes on
one log raced for the same oldest rows. Now a worker runs its jobs on at most
``concurrency`` long-lived threads, makes a job's work folder at its first use, and after
a lost claim reads its candidates away from the other workers'.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.projections.state import JobState
from jobtape.storage import MemoryStorage
from jobtape.worker import runner
from jobtape.worker.context import JobContext


def test_a_job_that_never_uses_its_workdir_makes_no_folder(tmp_path: Path, repository: JobRepository) -> None:
    work_parent = tmp_path / "work"
    seen: list[list[str]] = []

    def noop(context: JobContext, storage: Any, settings: Settings) -> dict[str, Any]:
        seen.append(sorted(os.listdir(work_parent)))  # while the job runs
        return {}

    worker = Worker(
        repository, MemoryStorage(), Settings(data_dir=tmp_path, work_dir=work_parent, concurrency=4), handlers={"ingest": noop}
    )
    for _ in range(20):
        repository.create("ingest", {})
    worker.run(until_idle=True)
    assert worker.finished_count == 20
    assert seen == [[]] * 20  # no worker folder, no job folder, ever
    assert os.listdir(work_parent) == []


def test_a_job_that_uses_its_workdir_gets_a_private_folder_removed_at_its_end(tmp_path: Path, repository: JobRepository) -> None:
    work_parent = tmp_path / "work"
    used: list[Path] = []

    def writes(context: JobContext, storage: Any, settings: Settings) -> dict[str, Any]:
        (context.workdir / "scratch.txt").write_text("x")
        used.append(context.workdir)
        return {}

    worker = Worker(
        repository, MemoryStorage(), Settings(data_dir=tmp_path, work_dir=work_parent, concurrency=2), handlers={"ingest": writes}
    )
    for _ in range(4):
        repository.create("ingest", {})
    worker.run(until_idle=True)
    assert len(set(used)) == 4
    assert all(folder.parent.parent == work_parent.absolute() for folder in used)
    assert not any(folder.exists() for folder in used)
    assert os.listdir(work_parent) == []  # the worker's own folder went when the loop ended


def test_jobs_run_on_at_most_concurrency_threads_and_the_threads_end_with_the_loop(tmp_path: Path, repository: JobRepository) -> None:
    names: set[str] = set()
    before = threading.active_count()

    def record(context: JobContext, storage: Any, settings: Settings) -> dict[str, Any]:
        names.add(threading.current_thread().name)
        return {}

    backend = repository.store.backend
    worker = Worker(repository, MemoryStorage(), Settings(data_dir=tmp_path, concurrency=3), handlers={"ingest": record})
    for _ in range(200):
        repository.create("ingest", {})
    worker.run(until_idle=True)
    assert worker.finished_count == 200
    assert 1 <= len(names) <= 3, names  # not one thread per job
    assert threading.active_count() == before  # the slots ended with the loop
    assert backend.open_connections <= backend.max_idle_connections  # type: ignore[attr-defined]


def test_worker_processes_with_many_slots_run_every_job_exactly_once(tmp_path: Path, repository: JobRepository) -> None:
    """Four processes of eight slots on one SQLite file: each job claimed once and completed once,
    no queue count left behind; the store fixture checks the projections against a rebuild."""
    job_ids = [repository.create("ingest", {}).state.job_id for _ in range(400)]
    script = Path(__file__).with_name("claim_worker_main.py")
    db_path = tmp_path / "jobtape.db"
    processes = [
        subprocess.Popen([sys.executable, str(script), str(db_path), f"worker-{n}", "8"], stdout=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    assert sum(int(output.strip()) for output in outputs) == len(job_ids)
    for job_id in job_ids:
        assert [r.type for r in repository.store.read_stream(job_id)] == ["job.created", "job.claimed", "job.completed"]
        state = repository.get(job_id)
        assert state.result == {"by": state.worker_id}
    assert repository.store.backend.query("SELECT COUNT(*) FROM queue_counts") == [(0,)]


def _noop(context: JobContext, storage: Any, settings: Settings) -> dict[str, Any]:
    return {}


def _hold(repository: JobRepository, state: JobState, worker_id: str) -> None:
    """Another worker claims ``state``'s job: it holds it under a live lease."""
    repository.append(state.job_id, [ev.JobClaimed(worker_id=worker_id, lease_ttl_s=600)], state, actor=worker_id)


def _positions(repository: JobRepository) -> dict[str, int]:
    return {str(job_id): int(position) for job_id, position in repository.store.backend.query("SELECT job_id, created_position FROM jobs")}


def _sharing_worker(tmp_path: Path, repository: JobRepository) -> Worker:
    """Worker ``b-me`` past its first claim, sharing the queue with ``a-other`` (rank 1 of 2)."""
    worker = Worker(repository, MemoryStorage(), Settings(data_dir=tmp_path, concurrency=8), handlers={"ingest": _noop}, worker_id="b-me")
    worker.claims_won = 1
    return worker


def test_a_worker_sharing_the_queue_reads_the_oldest_jobs_of_its_own_share(tmp_path: Path, repository: JobRepository) -> None:
    """Two claiming workers read disjoint candidates: created position modulo 2 = rank by id."""
    jobs = [repository.create("ingest", {}).state for _ in range(40)]
    _hold(repository, jobs[0], "a-other")
    positions = _positions(repository)
    fresh = Worker(repository, MemoryStorage(), Settings(data_dir=tmp_path, concurrency=8), handlers={"ingest": _noop}, worker_id="c-new")
    assert len(fresh._candidates_for(8, set())) == 1  # before its first claim the others do not count it: one at a time

    found = _sharing_worker(tmp_path, repository)._candidates_for(8, set())

    pending = sorted(positions[job.job_id] for job in jobs[1:])
    assert [positions[state.job_id] for state in found] == [p for p in pending if p % 2 == 1][:8]


def test_a_worker_whose_share_is_empty_takes_jobs_past_the_ones_their_owner_reads_next(tmp_path: Path, repository: JobRepository) -> None:
    # enough that the random offset (below SPREAD_MIN) past the owners' reads still leaves 8 jobs
    jobs = [repository.create("ingest", {}).state for _ in range(2 * (2 * 2 * 8 + runner.SPREAD_MIN + 8) + 40)]
    positions = _positions(repository)
    for job in jobs:
        if positions[job.job_id] % 2 == 1:  # b-me's share: all taken (by a-other)
            _hold(repository, job, "a-other")
    pending = sorted(positions[job.job_id] for job in jobs if positions[job.job_id] % 2 == 0)

    found = _sharing_worker(tmp_path, repository)._candidates_for(8, set())

    assert len(found) == 8
    assert all(positions[state.job_id] > pending[2 * 2 * 8 - 1] for state in found)  # past the oldest 2 x claimers x read


def test_the_oldest_job_of_another_share_is_taken_once_it_stayed_the_oldest(
    tmp_path: Path, repository: JobRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job in the share of a worker that does not take it (another type, or it stopped claiming)
    does not wait forever: still the oldest at the next look, a sharing worker takes it."""
    monkeypatch.setattr(runner, "OLDEST_CHECK_S", 0.0)
    jobs = [repository.create("ingest", {}).state for _ in range(40)]
    _hold(repository, jobs[0], "a-other")
    positions = _positions(repository)
    oldest = min((job for job in jobs[1:]), key=lambda job: positions[job.job_id])
    worker = _sharing_worker(tmp_path, repository)
    if positions[oldest.job_id] % 2 == 1:  # make the oldest pending job one of a-other's share
        _hold(repository, oldest, "a-other")
        oldest = min((job for job in jobs[1:] if job is not oldest), key=lambda job: positions[job.job_id])
    assert positions[oldest.job_id] % 2 == 0

    first = worker._candidates_for(4, set())  # notes the oldest
    second = worker._candidates_for(4, {state.job_id for state in first})  # still the oldest: taken

    assert oldest.job_id not in {state.job_id for state in first}
    assert second[0].job_id == oldest.job_id


def test_a_worker_with_nothing_to_run_takes_one_of_the_newest_jobs_of_the_other_shares(tmp_path: Path, repository: JobRepository) -> None:
    """The drain tail: its own share empty and fewer jobs left than the owners read next, a worker
    holding no job takes one of the newest (read last by their owner), not nothing; a worker still
    holding a job leaves them to their owner."""
    jobs = [repository.create("ingest", {}).state for _ in range(12)]
    positions = _positions(repository)
    for job in jobs:
        if positions[job.job_id] % 2 == 1:  # b-me's share: all taken (by a-other)
            _hold(repository, job, "a-other")
    pending = sorted((positions[job.job_id], job.job_id) for job in jobs if positions[job.job_id] % 2 == 0)
    worker = _sharing_worker(tmp_path, repository)

    assert worker._candidates_for(8, {pending[0][1]}) == []  # holds a job: leaves the last jobs to their owner
    found = worker._candidates_for(8, set())

    assert len(found) == 1
    assert found[0].job_id in {job_id for _, job_id in pending[-2:]}  # one of the 2 (claimers) newest
