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
import re
from typing import Any

import msgspec

from jobtape import clock
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import rows
from jobtape.projections.state import JobState

__all__ = ["COLUMNS", "TABLE", "Preview", "cache_hit_result", "cache_holder", "owner_of_key", "preview_row", "select_preview", "statements"]

_PREVIEW_KEY = re.compile(r"previews/([0-9a-f]+)\.mp3")

#: The live table.
TABLE = "previews"
#: Columns in table order; the first is the row key.
COLUMNS = ("recipe_hash", "job_id", "preview_key", "duration_sec", "asset_id", "created_at")


class Preview(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``previews``.

    Attributes:
        recipe_hash: sha256 hex of the canonical recipe (:func:`jobtape.audio.recipes.recipe_hash`).
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
    if not isinstance(recipe_hash, str) or not isinstance(key, str) or key in state.removed_keys:
        return None  # a removed render is no longer a cache entry
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
    """The statements an append from ``before`` to ``after`` runs on ``table``: the row when a render
    completes, its removal when the render's MP3 is recorded as removed (``job.blobs_deleted``)."""
    if before is not None and before.finished:
        if before.removed_keys == after.removed_keys or before.result is None or preview_row(before) is None:
            return []
        return [Statement(f"DELETE FROM {table} WHERE recipe_hash = ? AND job_id = ?", (before.result["recipeHash"], after.job_id))]
    row = preview_row(after)
    if row is None:
        return []
    # Two renders of one recipe may race: keep the smaller job id, so a rebuild gives the same row.
    return [rows.upsert_row(table, COLUMNS, row, only_if=f"excluded.job_id < {table}.job_id")]


def select_preview(store: EventStore, recipe_hash: str) -> Preview | None:
    """The cached preview of a recipe hash, or ``None``."""
    values = rows.select_row(store, TABLE, COLUMNS, recipe_hash)
    return None if values is None else Preview(**values)


def cache_holder(store: EventStore, key: str) -> str | None:
    """The job whose cache entry names the MP3 ``key`` (renders of one recipe share it), or ``None``
    (also for a key that is no preview's). One primary-key lookup: the key holds the recipe hash."""
    found = _PREVIEW_KEY.fullmatch(key)
    if found is None:
        return None
    job_id = rows.select_value(store, TABLE, "job_id", {"recipe_hash": found[1], "preview_key": key})
    return None if job_id is None else str(job_id)


def owner_of_key(store: EventStore, key: str) -> str | None:
    """The owner of the preview MP3 ``key``: the owner of the job that rendered it (as the
    preview-audio route checks), or ``None`` for a key no preview holds. One lookup by primary keys."""
    found = _PREVIEW_KEY.fullmatch(key)
    if found is None:
        return None
    job_id = cache_holder(store, key)
    owner = None if job_id is None else rows.select_value(store, "jobs", "owner", {"job_id": job_id})
    return None if owner is None else str(owner)


def cache_hit_result(cached: Preview, recipe_hash: str, asset_id: str) -> dict[str, object]:
    """The result of a preview job served from the cache (no render), at the API or in a worker.

    Returns:
        ``{previewKey, recipeHash, durationSec, assetId, cacheHit: True, renderedByJobId}``;
        a cache hit writes no ``previews`` row (:func:`preview_row`).
    """
    return {
        "previewKey": cached.preview_key,
        "recipeHash": recipe_hash,
        "durationSec": cached.duration_sec,
        "assetId": asset_id,
        "cacheHit": True,
        "renderedByJobId": cached.job_id,
    }
