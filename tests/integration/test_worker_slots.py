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

from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.projections.repository import JobRepository
from jobtape.storage import MemoryStorage
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
