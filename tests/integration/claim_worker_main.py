"""A worker process for the claim-exclusivity test: a no-media job handler, run until idle.

Usage: python claim_worker_main.py DB_PATH NAME [CONCURRENCY]  (default 2)
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobtape.config import Settings
from jobtape.defaults import default_tables
from jobtape.defaults import worker as Worker
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import MemoryStorage


def main() -> None:
    db_path, name = sys.argv[1], sys.argv[2]
    backend = SQLiteBackend(Path(db_path))
    repository = JobRepository(EventStore(backend), projections=default_tables().projections)
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    settings = Settings(data_dir=Path(db_path).parent, concurrency=concurrency, poll_interval_s=0.01)
    worker = Worker(
        repository,
        MemoryStorage(),
        settings,
        handlers={"ingest": lambda context, storage, settings: {"by": context.worker_id}},
        worker_id=name,
    )
    worker.run(until_idle=True)
    print(worker.finished_count)


if __name__ == "__main__":
    main()
