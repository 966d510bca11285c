"""A worker process for the libSQL claim test: its own connection to sqld, a no-media job handler, run until idle.

Usage: python libsql_worker_main.py URL NAME   (prints how many jobs it finished)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobtape import runtime
from jobtape.config import Settings
from jobtape.defaults import default_tables
from jobtape.defaults import worker as Worker
from jobtape.storage import MemoryStorage


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    settings = Settings(
        data_dir=Path(os.environ["JOBTAPE_DATA_DIR"]),  # its work folders, in the test's tmp_path
        concurrency=2,
        poll_interval_s=0.01,
        job_store_backend="libsql",
        turso_database_url=url,
        log_key=os.environ["JOBTAPE_LOG_KEY"],  # the log's key, from the environment as on any libSQL host
    )
    repository = runtime.open_repository(settings, tables=default_tables())
    worker = Worker(
        repository,
        MemoryStorage(),
        settings,
        handlers={"ingest": lambda context, storage, settings: {"by": context.worker_id}},
        worker_id=name,
    )
    worker.run(until_idle=True)
    repository.store.close()
    print(len(worker.finished))


if __name__ == "__main__":
    main()
