"""Jobs passing through a worker leave no connections, fds or threads behind, on SQLite and on sqld.

The short form of ``bench/soak.py`` (issue 9): a plain assertion on what a process holds,
never on time. Each job runs in a new thread, the shape that leaked a SQLite connection
per job.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.projections.repository import JobRepository
from jobtape.storage.local import LocalStorage


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fds_and_threads_stay_flat_over_hundreds_of_jobs(repository: JobRepository, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    worker = Worker(
        repository,
        storage,
        Settings(data_dir=tmp_path, concurrency=4, poll_interval_s=0.01),
        handlers={"ingest": lambda context, storage_, settings: {"ok": True}},
    )

    def run(jobs: int) -> None:
        for _ in range(jobs):
            repository.create("ingest", {})
        worker.run(until_idle=True)

    run(40)  # warm-up: pools fill to the calls that ran at once
    fds, threads = open_fds(), threading.active_count()
    run(300)
    assert worker.finished_count == 340
    assert open_fds() - fds <= 8, "file descriptors grew with the jobs"
    assert threading.active_count() - threads <= 1, "threads grew with the jobs"
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"jobtape-{worker.finished[-1][:8]}-*"))
