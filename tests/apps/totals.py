"""An app with its own table: the ``sum`` type and a ``totals`` projection (``jobtape rebuild --app totals:app``)."""

from __future__ import annotations

from typing import Any

import sqlite_utils

import jobtape
from jobtape.eventlog.store import Statement
from jobtape.projections.registry import Projection
from jobtape.projections.state import JobState


def _totals(db: sqlite_utils.Database) -> None:
    db.execute("CREATE TABLE totals (job_id TEXT PRIMARY KEY, total INTEGER NOT NULL)")


def _statements(before: JobState | None, after: JobState, table: str) -> list[Statement]:
    if after.status != "complete" or (before is not None and before.status == "complete") or not after.result:
        return []
    return [Statement(f"INSERT OR REPLACE INTO {table} (job_id, total) VALUES (?, ?)", (after.job_id, after.result["sum"]))]


def install(app: jobtape.App) -> jobtape.App:
    """Register the ``totals`` migration and projection and the ``sum`` type on ``app``."""
    app.migration("totals.0001_totals", _totals)
    app.projection(Projection("totals", ("job_id", "total"), _statements))

    @app.job_type("sum")
    def add(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"sum": params["a"] + params["b"]}

    return app


app = install(jobtape.App())
