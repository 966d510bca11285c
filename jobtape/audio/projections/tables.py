"""The audio package's tables: the ``assets`` and ``previews`` projections and their migrations.

Both tables shipped inside the engine's migrations 0006 and 0009 before the audio jobs
became a package; a database that recorded those names has them already, so these
migrations list the shipped names in ``replaces`` and are not applied again there (the
engine's parts of 0006 and 0009 do the same). A new database gets the engine's tables
first, then these.
"""

from __future__ import annotations

import sqlite_utils

from jobtape.audio.projections import assets, previews
from jobtape.eventlog.schema import Migration
from jobtape.projections.registry import Projection

__all__ = ["ASSETS", "MIGRATIONS", "PREVIEWS", "PROJECTIONS"]


def _assets_previews(db: sqlite_utils.Database) -> None:
    # Projections folded from completed jobs (jobtape.audio.projections.assets / previews).
    db.execute(
        """
        CREATE TABLE assets (
            asset_id TEXT PRIMARY KEY,
            storage_key TEXT NOT NULL,
            duration_sec REAL NOT NULL,
            sample_rate INTEGER,
            channels INTEGER,
            integrated_lufs REAL,
            true_peak_db REAL,
            origin_job_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE previews (
            recipe_hash TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            preview_key TEXT NOT NULL,
            duration_sec REAL NOT NULL,
            asset_id TEXT,
            created_at TEXT NOT NULL
        )
        """
    )


def _asset_removals(db: sqlite_utils.Database) -> None:
    # The audio part of 0009_blob_removals. The UPDATE fills retained_upload (an engine
    # column) for ingests older than the migration on SQLite; a remote libSQL gets the
    # column by the DDL translation but not the UPDATE: `jobtape rebuild`.
    db.execute(
        "UPDATE jobs SET retained_upload = json_extract(state, '$.params.storageKey') "
        "WHERE job_type = 'ingest' AND finished = 1 AND status IN ('failed', 'cancelled') "
        "AND COALESCE(json_extract(state, '$.params.sourceType'), 'upload') = 'upload' "
        "AND json_type(state, '$.params.storageKey') = 'text'"
    )
    # An asset whose prepared file was removed keeps its row, marked, so an edit naming it
    # is answered 410 Gone rather than 404 (the asset existed) or 202 (a job bound to fail).
    db["assets"].add_column("removed_at", str)  # type: ignore[union-attr]


#: The audio package's migrations, run after the engine's. Never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("audio.0001_assets_previews", _assets_previews, replaces=("0006_assets_previews_quota",)),
    Migration("audio.0002_asset_removals", _asset_removals, replaces=("0009_blob_removals",)),
)

#: ``assets``: one row per prepared asset (a complete ingest or save).
ASSETS = Projection(assets.TABLE, assets.COLUMNS, assets.statements, job_column="origin_job_id")
#: ``previews``: the preview cache, recipe hash -> rendering job; renders of one recipe share its MP3.
PREVIEWS = Projection(previews.TABLE, previews.COLUMNS, previews.statements, blob_holder=previews.cache_holder)
#: The audio projections, written after ``jobs`` in each append's batch.
PROJECTIONS: tuple[Projection, ...] = (ASSETS, PREVIEWS)
