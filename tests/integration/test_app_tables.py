"""A package's own tables on the public App: a migration, a projection and a route registered by any app.

The audio package registers ``assets`` and ``previews`` this way; here a small app registers
``totals`` (``tests/apps/totals.py``): its migration runs when the log is opened (once, recorded
by name), its rows are written in each append's batch, ``rebuild`` verifies and repairs them
(``jobtape rebuild --app`` too), ``archive`` removes them with their jobs, and its route is
served next to the engine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apps import totals  # type: ignore[import-not-found]  # tests/ is on sys.path
from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.testing import TestClient

import jobtape
from jobtape import clock, runtime
from jobtape.audit import retention
from jobtape.config import Settings
from jobtape.eventlog.store import EventStore, Statement
from jobtape.http import create_app
from jobtape.projections import registry
from jobtape.projections.rebuild import rebuild

ROOT = Path(__file__).resolve().parents[2]


def _total(store: EventStore, job_id: str) -> list[tuple[Any, ...]]:
    return store.backend.query("SELECT job_id, total FROM totals WHERE job_id = ?", [job_id])


@get("/api/totals/{job_id:str}", sync_to_thread=False)
def read_total(job_id: FromPath[str], repository: NamedDependency[Any], unit: NamedDependency[str]) -> dict[str, Any]:
    rows = _total(repository.store, job_id)
    return {"total": rows[0][1] if rows else None, "unit": unit}


@pytest.fixture
def app(tmp_path: Path) -> Any:
    made = totals.install(jobtape.App(Settings(data_dir=tmp_path, poll_interval_s=0.02)))
    made.route(read_total)
    made.provide("unit", "apples")
    yield made
    made.close()


def test_a_registered_projection_is_written_rebuilt_served_and_archived(app: jobtape.App, tmp_path: Path) -> None:
    assert [m.name for m in app.tables.migrations][-1] == "totals.0001_totals"
    job_id = app.submit("sum", {"a": 2, "b": 3})
    app.worker().run(until_idle=True)
    store = app.repository.store
    assert _total(store, job_id) == [(job_id, 5)]  # written in the completion's batch
    assert rebuild(store, apply_changes=False, tables=app.tables).differences == []

    store.backend.execute_batch([Statement("UPDATE totals SET total = 6")])  # drift
    found = rebuild(store, apply_changes=False, tables=app.tables).differences
    assert [(d.table, d.job_id, d.column, d.live, d.rebuilt) for d in found] == [("totals", job_id, "total", 6, 5)]
    env = {**os.environ, "JOBTAPE_DATA_DIR": str(tmp_path)}
    for app_option, code in (([], 0), (["--app", "tests.apps.totals:app"], 1)):  # only --app's tables have totals
        done = subprocess.run(
            [sys.executable, "-m", "jobtape", "rebuild", "--verify", *app_option],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == code, (app_option, done.stdout[-500:], done.stderr[-500:])
    assert "totals" in done.stdout
    rebuild(store, tables=app.tables)
    assert _total(store, job_id) == [(job_id, 5)]

    storage = runtime.open_storage(app.settings)
    with TestClient(
        create_app(app.repository, storage, app.settings, routes=app.routes_for(storage), dependencies=app.dependencies)
    ) as client:
        assert client.get(f"/api/totals/{job_id}").json() == {"total": 5, "unit": "apples"}

    report = retention.archive(store, cutoff=clock.utcnow(), path=tmp_path / "archive.jsonl", actor="test", tables=app.tables)
    assert report.jobs == 1 and _total(store, job_id) == []  # the row left with its job


def test_a_registered_migration_runs_once_and_names_are_unique(app: jobtape.App) -> None:
    app.repository.store.close()
    backend = runtime.open_backend(app.settings, app.tables)  # the log exists: nothing left to apply
    assert backend.migrate(app.tables.migrations) == []
    backend.close()
    with pytest.raises(ValueError, match="totals.0001_totals is registered twice"):
        app.migration("totals.0001_totals", lambda db: None)
    with pytest.raises(ValueError, match="projection table totals is registered twice"):
        app.projection(registry.Projection("totals", ("job_id",), lambda before, after, table: []))
    with pytest.raises(ValueError, match="'repository' is provided already"):
        app.provide("repository", None)
