"""A job of a type the audio job handlers do not know is created, run and stays readable by every tool.

The first step of the engine as a library (issue 10): ``JobCreated.job_type`` was
``Literal["ingest", "preview", "save"]``, so a job of any other type, once appended,
made ``read_stream``, ``rebuild`` and ``verify`` raise ``MalformedEvent`` for the whole log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient

from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.rebuild import rebuild
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage


def test_a_job_of_another_type_runs_on_a_worker_that_has_it_and_every_tool_reads_it(tmp_path: Path, repository: JobRepository) -> None:
    storage = LocalStorage(tmp_path / "storage")

    def add(context: Any, storage_: Any, settings: Any) -> dict[str, Any]:
        params = context.state.params
        return {"sum": params["a"] + params["b"]}

    job_id = repository.create("sum", {"a": 2, "b": 3}).state.job_id
    audio_only = Worker(repository, storage, Settings(data_dir=tmp_path))  # the default: the audio job handlers
    audio_only.run(until_idle=True)
    assert repository.get(job_id).status == "pending"  # a worker claims only the types it runs

    Worker(repository, storage, Settings(data_dir=tmp_path), handlers={"sum": add}).run(until_idle=True)
    state = repository.get(job_id)
    assert (state.job_type, state.status, state.result) == ("sum", "complete", {"sum": 5})
    assert [r.type for r in repository.store.read_stream(job_id)][-1] == "job.completed"
    assert rebuild(repository.store, apply_changes=False, tables=TABLES).differences == []

    with TestClient(create_app(repository, storage, Settings(data_dir=tmp_path))) as client:
        body = client.get(f"/api/audio/jobs/{job_id}").json()
        assert (body["type"], body["status"], body["result"]) == ("sum", "complete", {"sum": 5})
        assert body.get("downloadUrl") is None
        assert next(e["type"] for e in client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]) == "job.created"

    env = {**os.environ, "JOBTAPE_DATA_DIR": str(tmp_path)}
    for command in (["verify"], ["rebuild", "--verify"], ["history", job_id], ["export"], ["stats"]):
        done = subprocess.run([sys.executable, "-m", "jobtape", *command], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stdout[-500:], done.stderr[-500:])
    assert "sum" in done.stdout  # stats names the type


@pytest.mark.parametrize("name", ["Sum", "two words", "", "x" * 65, "9lives", "a/b"])
def test_a_job_type_name_the_log_could_not_keep_is_refused_before_anything_is_written(repository: JobRepository, name: str) -> None:
    with pytest.raises(ValueError, match="job type"):
        repository.create(name, {})
    assert repository.store.backend.query("SELECT COUNT(*) FROM events") == [(0,)]
    assert ev.JOB_TYPE_PATTERN.fullmatch("audio.ingest-v2_x")
