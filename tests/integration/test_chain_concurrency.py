"""The keyed chain under concurrent appends: threads of one process (the SQLite group commit) and
several processes on one file (each refused batch is built again from the head read back).
After either, the keyed verify is clean: no hole, no fork, every append landed once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]

import jobtape
from jobtape import runtime
from jobtape.audit import logcheck
from jobtape.config import Settings
from jobtape.eventlog import events as ev

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_threads_appending_at_once_share_commits_and_leave_one_unbroken_chain(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_key="t" * 40, sqlite_synchronous="NORMAL")
    repository = runtime.open_repository(settings, tables=TABLES)
    errors: list[BaseException] = []

    def lifecycles() -> None:
        try:
            for index in range(15):
                state = repository.create("ingest", {"sourceType": "upload", "storageKey": f"u/{index}.wav"}).state
                for event in (ev.JobClaimed(worker_id="w:1:1"), ev.JobProgress(percent=50), ev.JobCompleted(result={})):
                    state = repository.append(state.job_id, [event], state, actor="w:1:1").state
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=lifecycles) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        report = logcheck.verify_store(repository.store)
        assert (report.events_checked, report.violations) == (8 * 15 * 4, [])
        assert report.chain.startswith("keyed: 480 events checked")
    finally:
        repository.store.close()


def test_processes_appending_to_one_file_leave_one_unbroken_chain(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chain_contention.py"), "--processes", "3", "--jobs", "15", "--pause", "0.001"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # exit 0: the keyed verify of the result is clean and holds every append (3 x 15 x 8)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "appends: 360 " in done.stdout and "verify: 360 events, 0 violations" in done.stdout, done.stdout
    # batches are built in their process's write turn: a process's batch is refused at most once
    # (when it first meets another writer), then built on the head read inside its transaction
    retries = re.search(r"lost-append retries\): (\d+) ", done.stdout)
    assert retries is not None and int(retries[1]) <= 3, done.stdout


def test_serve_and_a_worker_process_chain_under_the_data_dirs_key_and_verify_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("JOBTAPE_LOG_KEY", raising=False)
    worker_log = (tmp_path / "worker.log").open("wb")
    with jobtape_serve(data_dir, "--app", "starter.jobs:app", "--concurrency", "2") as base_url:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobtape",
                "worker",
                "--app",
                "starter.jobs:app",
                "--poll-interval",
                "0.05",
                "--data-dir",
                str(data_dir),
            ],
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            with jobtape.Client(base_url, client_id="alice") as client:
                job_ids = [client.submit("primes", {"limit": 2000 + n}) for n in range(5)]
                assert [client.wait(job_id, timeout_s=60).status for job_id in job_ids] == ["complete"] * 5
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            worker_log.close()
    # every process used data_dir/log-key (not a key of its own): the keyed verify checks every event
    assert (data_dir / "log-key").stat().st_mode & 0o777 == 0o600
    done = subprocess.run(
        [sys.executable, "-m", "jobtape", "verify", "--json", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stdout)
    assert (done.returncode, report["violations"]) == (0, []), report
    assert report["chain"].startswith(f"keyed: {report['eventsChecked']} events checked"), report["chain"]


def test_a_batch_built_on_a_failed_batch_of_its_own_store_is_refused_even_when_its_position_is_free(tmp_path: Path) -> None:
    """The race the soak run found: store A builds batch X at position p and batch Y on X (p + 1);
    X fails; another writer B fills p; Y's position is now right but it links from X's chain,
    which is in no event. The guard compares the chain a batch was built on with the head's."""
    settings = Settings(data_dir=tmp_path, log_key="t" * 40)
    a = runtime.open_store(settings, TABLES)
    b = runtime.open_store(settings, TABLES)
    try:
        a.append("j" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="api")
        position, _chain = a._head or (0, "")  # the state of the race, set up by hand
        a._head = (position + 1, "f" * 64)  # as if X (never committed) had been built at p
        b.append("k" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="api")  # B fills p

        a.append("m" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="api")  # Y: refused, built again

        assert a.chain_retries == 1
        report = logcheck.verify_store(a)
        assert (report.events_checked, report.violations) == (3, [])
    finally:
        a.close()
        b.close()
