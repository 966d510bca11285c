"""The ``assets`` projection: one row per prepared asset, folded from completed ingest and save jobs.

An asset exists once an ``ingest`` or ``save`` job completes with ``result.assetId``; its
row is written in the SAME batch as that ``job.completed`` event (see
:mod:`jobtape.projections.registry`), so "does this asset exist, how long is it" is
answered from here, never by asking storage.

The mapping from a job's state to the row (:func:`asset_row`) is pure. Result fields read
(as written by :func:`jobtape.audio.jobs.ingest.normalize_to_asset` and the save job handler)::

    {"assetId": str, "preparedKey": str, "durationSec": float, "sampleRate": int,
     "channels": int, "outputLoudness": {"integratedLufs": float | None,
     "truePeakDb": float | None, ...} | None, "inputLoudness": {...}}

Loudness is the output's when measured, else the input's (a silent input keeps ``None``).
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

__all__ = ["ASSET_JOB_TYPES", "COLUMNS", "TABLE", "Asset", "asset_row", "owner_of_key", "select_asset", "statements"]

_ASSET_KEY = re.compile(r"assets/([0-9a-f]{1,64})/prepared\.flac")

#: The live table.
TABLE = "assets"
#: Columns in table order; the first is the row key.
COLUMNS = (
    "asset_id",
    "storage_key",
    "duration_sec",
    "sample_rate",
    "channels",
    "integrated_lufs",
    "true_peak_db",
    "origin_job_id",
    "owner",
    "created_at",
    "removed_at",
)
#: Job types whose completion produces an asset.
ASSET_JOB_TYPES = frozenset({"ingest", "save"})


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``assets``.

    Attributes:
        asset_id: 32 lowercase hex digits.
        storage_key: the prepared FLAC's key, ``assets/{assetId}/prepared.flac``.
        duration_sec: length in seconds.
        sample_rate: Hz (48000 for prepared assets).
        channels: channel count.
        integrated_lufs: integrated loudness in LUFS (EBU R128); ``None`` for silence or unknown.
        true_peak_db: true peak in dBTP; ``None`` when unknown.
        origin_job_id: the ingest or save job that produced it.
        owner: that job's owner.
        created_at: UTC time of the job's completion.
        removed_at: UTC time its prepared file was recorded as removed (``job.blobs_deleted``
            of the origin job); ``None`` while it is stored.
    """

    asset_id: str
    storage_key: str
    duration_sec: float
    sample_rate: int | None
    channels: int | None
    integrated_lufs: float | None
    true_peak_db: float | None
    origin_job_id: str
    owner: str
    created_at: dt.datetime
    removed_at: dt.datetime | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _loudness(result: dict[str, Any], name: str) -> float | None:
    for block in ("outputLoudness", "inputLoudness"):
        values = result.get(block)
        if isinstance(values, dict) and _number(values.get(name)) is not None:
            return _number(values.get(name))
    return None


def asset_row(state: JobState) -> dict[str, Any] | None:
    """The ``assets`` row a job's state yields, as ``{column: value}``; ``None`` if it yields none.

    A row comes from a complete ``ingest`` or ``save`` job whose result carries ``assetId``
    and ``preparedKey``. ``created_at`` is the completion time as stored text.
    """
    result = state.result
    if state.job_type not in ASSET_JOB_TYPES or state.status != "complete" or not result:
        return None
    asset_id, key = result.get("assetId"), result.get("preparedKey")
    if not isinstance(asset_id, str) or not isinstance(key, str):
        return None
    sample_rate, channels = result.get("sampleRate"), result.get("channels")
    return {
        "asset_id": asset_id,
        "storage_key": key,
        "duration_sec": _number(result.get("durationSec")) or 0.0,
        "sample_rate": sample_rate if isinstance(sample_rate, int) else None,
        "channels": channels if isinstance(channels, int) else None,
        "integrated_lufs": _loudness(result, "integratedLufs"),
        "true_peak_db": _loudness(result, "truePeakDb"),
        "origin_job_id": state.job_id,
        "owner": state.owner,
        "created_at": clock.format_timestamp(state.updated_at),
        "removed_at": clock.format_timestamp(state.blobs_removed_at)
        if key in state.removed_keys and state.blobs_removed_at is not None
        else None,
    }


def statements(before: JobState | None, after: JobState, table: str = TABLE) -> list[Statement]:
    """The statements an append from ``before`` to ``after`` runs on ``table`` (empty unless an asset appears).

    Written on the transition to ``complete`` (``before`` is ``None`` when a rebuild
    folds a whole stream), as an upsert so a rebuild may write a row twice, and again
    when a ``job.blobs_deleted`` of the finished job sets ``removed_at``.
    """
    if before is not None and before.finished and before.removed_keys == after.removed_keys:
        return []
    row = asset_row(after)
    if row is None:
        return []
    return [rows.upsert_row(table, COLUMNS, row)]


def owner_of_key(store: EventStore, key: str) -> str | None:
    """The owner of the asset whose prepared file is ``key`` (``assets/<assetId>/prepared.flac``),
    or ``None`` for a key no asset holds. One primary-key lookup."""
    found = _ASSET_KEY.fullmatch(key)
    if found is None:
        return None
    owner = rows.select_value(store, TABLE, "owner", {"asset_id": found[1], "storage_key": key})
    return None if owner is None else str(owner)


def select_asset(store: EventStore, asset_id: str) -> Asset | None:
    """Read one asset from the projection; ``None`` if there is no such asset."""
    values = rows.select_row(store, TABLE, COLUMNS, asset_id)
    if values is None:
        return None
    if values["removed_at"] is not None:
        values["removed_at"] = clock.parse_timestamp(values["removed_at"])
    return Asset(**values)
