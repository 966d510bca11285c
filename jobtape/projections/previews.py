"""The ``previews`` projection: the preview cache, recipe hash -> the preview job that rendered it.

A ``preview`` job that completes after rendering (``result.cacheHit`` false) writes its
row in the same batch as its ``job.completed``. Jobs created already complete from the
cache (``cacheHit`` true) write nothing. Two renders of the same recipe can race (both
missed the cache); the row then keeps the job with the smaller id, a rule that does not
depend on the order of completion, so a rebuild yields the same row.

Result fields read::

    {"previewKey": "previews/{recipeHash}.mp3", "recipeHash": str, "durationSec": float,
     "assetId": str, "cacheHit": bool}
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from jobtape import clock
from jobtape.eventlog.store import SQLBackend, Statement
from jobtape.projections.state import JobState

__all__ = ["COLUMNS", "TABLE", "Preview", "preview_row", "select_preview", "statements"]

#: The live table.
TABLE = "previews"
#: Columns in table order; the first is the row key.
COLUMNS = ("recipe_hash", "job_id", "preview_key", "duration_sec", "asset_id", "created_at")


class Preview(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``previews``.

    Attributes:
        recipe_hash: sha256 hex of the canonical recipe (:func:`jobtape.recipes.recipe_hash`).
        job_id: the preview job that rendered it.
        preview_key: ``previews/{recipeHash}.mp3``.
        duration_sec: the render's length in seconds.
        asset_id: the source asset.
        created_at: UTC time of the render's completion.
    """

    recipe_hash: str
    job_id: str
    preview_key: str
    duration_sec: float
    asset_id: str | None
    created_at: dt.datetime


def preview_row(state: JobState) -> dict[str, Any] | None:
    """The ``previews`` row a job's state yields (``{column: value}``), or ``None``."""
    result = state.result
    if state.job_type != "preview" or state.status != "complete" or not result or result.get("cacheHit"):
        return None
    recipe_hash, key = result.get("recipeHash"), result.get("previewKey")
    if not isinstance(recipe_hash, str) or not isinstance(key, str):
        return None
    duration = result.get("durationSec")
    asset_id = result.get("assetId")
    return {
        "recipe_hash": recipe_hash,
        "job_id": state.job_id,
        "preview_key": key,
        "duration_sec": float(duration) if isinstance(duration, int | float) else 0.0,
        "asset_id": asset_id if isinstance(asset_id, str) else None,
        "created_at": clock.format_timestamp(state.updated_at),
    }


def statements(before: JobState | None, after: JobState, table: str = TABLE) -> list[Statement]:
    """The statements an append from ``before`` to ``after`` runs on ``table`` (empty unless a render completes)."""
    if before is not None and before.finished:
        return []
    row = preview_row(after)
    if row is None:
        return []
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    sql = (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        f" ON CONFLICT (recipe_hash) DO UPDATE SET {updates} WHERE excluded.job_id < {table}.job_id"
    )
    return [Statement(sql, tuple(row[c] for c in COLUMNS))]


def select_preview(backend: SQLBackend, recipe_hash: str) -> Preview | None:
    """The cached preview of a recipe hash, or ``None``."""
    rows = backend.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE recipe_hash = ?", [recipe_hash])
    if not rows:
        return None
    values = dict(zip(COLUMNS, rows[0], strict=True))
    values["created_at"] = clock.parse_timestamp(values["created_at"])
    return Preview(**values)
