"""A user's job type that writes a blob owns it and links to it, the way the audio jobs do (issue 10).

``tests/apps/reports.py`` stores ``reports/<jobId>.txt`` through ``ctx.storage`` and declares it
(``ctx.output_written``, ``ctx.set_download``); a submit hands the job an input blob
(``owned_keys``). The poll's ``downloadUrl`` comes from the declared download for any job
type; ``jobtape archive --app`` removes the job's blobs on record; failed-upload retention
removes the input of a job that failed; the object-storage download route signs the
``reports/`` keys the app registers and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apps import reports  # type: ignore[import-not-found]  # tests/ is on sys.path
from litestar.testing import TestClient

import jobtape
from jobtape import blobs, runtime
from jobtape.config import Settings
from jobtape.http import create_app
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository

ROOT = Path(__file__).resolve().parents[2]
INPUT = "inputs/q3.csv"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    made = reports.install(jobtape.App(Settings(data_dir=tmp_path, poll_interval_s=0.02)))
    yield made
    made.close()


def test_a_user_jobs_declared_output_gets_a_download_link_and_archive_removes_its_blobs(app: jobtape.App, tmp_path: Path) -> None:
    storage = runtime.open_storage(app.settings)
    storage.put_stream(INPUT, [b"a,b\n1,2\n"])
    linked = app.submit("report", {"title": "q3", "input_key": INPUT}, owned_keys=[INPUT])
    unlinked = app.submit("report", {"title": "q4", "link": False})
    app.worker(storage=storage).run(until_idle=True)

    state = app.repository.get(linked)
    assert state.status == "complete"
    assert job_state.owned_keys(state) == (INPUT, reports.report_key(linked))
    assert job_state.download_key(state) == reports.report_key(linked)
    completed = app.repository.store.read_stream(linked)[-1].event
    assert (completed.owned_keys, completed.download_key) == ([reports.report_key(linked)], reports.report_key(linked))
    with TestClient(
        create_app(app.repository, storage, app.settings, routes=app.routes_for(storage), dependencies=app.dependencies)
    ) as client:
        poll = client.get(f"/api/jobs/{linked}").json()
        assert client.get(poll["downloadUrl"]).content == b"Q3\nA,B\n1,2\n"
        assert "downloadUrl" not in client.get(f"/api/jobs/{unlinked}").json()  # owned, but no download declared
        events = client.get(f"/api/jobs/{linked}/events").json()["events"]
        assert events[0]["data"]["owned_keys"] == [INPUT]
        assert events[-1]["data"]["download_key"] == reports.report_key(linked)
    assert job_state.owned_keys(app.repository.get(unlinked)) == (reports.report_key(unlinked),)

    env = {**os.environ, "JOBTAPE_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtape",
            "archive",
            "--older-than",
            "0s",
            "--to",
            str(tmp_path / "archive.jsonl"),
            "--app",
            "tests.apps.reports:app",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-500:], done.stderr[-500:])
    assert [key for key in (INPUT, reports.report_key(linked), reports.report_key(unlinked)) if storage.exists(key)] == []
    archived = (tmp_path / "archive.jsonl").read_text()
    assert archived.count('"job.blobs_deleted"') == 2 and INPUT in archived


def test_the_input_handed_to_a_user_job_that_failed_is_removed_by_retention(app: jobtape.App) -> None:
    storage = runtime.open_storage(app.settings)
    storage.put_stream(INPUT, [b"a,b\n"])
    job_id = app.submit("report", {"title": "q3", "input_key": INPUT, "fail": True}, owned_keys=[INPUT])
    app.worker(storage=storage).run(until_idle=True)
    state = app.repository.get(job_id)
    assert state.status == "failed" and job_state.retained_inputs(state) == (INPUT,)

    report = blobs.BlobSweeper(app.repository, storage, retention_s=0, actor="host:1:1").sweep()
    assert report.removed == {job_id: [INPUT]} and not storage.exists(INPUT)
    assert job_state.retained_inputs(app.repository.get(job_id)) == ()


def test_the_object_storage_download_route_signs_only_the_prefixes_the_app_registers(
    app: jobtape.App, repository: JobRepository, s3_storage: Any
) -> None:
    s3_storage.put_stream("reports/a.txt", [b"A"])
    s3_storage.put_stream(INPUT, [b"a"])
    with TestClient(create_app(repository, s3_storage, app.settings, dependencies=app.dependencies)) as client:
        assert client.get("/api/storage/download", params={"key": "reports/a.txt"}).json()["downloadUrl"]
        refused = client.get("/api/storage/download", params={"key": INPUT})
        assert refused.status_code == 403 and "keys starting with reports/" in refused.json()["error"]
    with TestClient(create_app(repository, s3_storage, app.settings)) as client:  # an app that registers none
        refused = client.get("/api/storage/download", params={"key": "reports/a.txt"})
        assert refused.status_code == 403 and "none registered" in refused.json()["error"]
    with pytest.raises(ValueError, match="ending in '/'"):
        app.downloadable("reports")
