"""SQL shared by the row-per-key projections (``assets``, ``previews``): upsert one row, read one row or value.

A job type's package (``jobtape.audio``) reads its projections through these functions, so its
modules hold no SQL of their own beside their tables' definitions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from jobtape import clock
from jobtape.eventlog.store import EventStore, Statement

__all__ = ["select_row", "select_value", "upsert_row"]


def upsert_row(table: str, columns: Sequence[str], row: dict[str, Any], *, only_if: str = "") -> Statement:
    """``INSERT`` the row, or update every column but the first (the key) when the key exists.

    Args:
        table: the table (a rebuild passes its scratch table).
        columns: the table's columns, key first.
        row: column -> value.
        only_if: an optional SQL condition for the update (``excluded.x`` is the new row).
    """
    return Statement(_upsert_sql(table, tuple(columns), only_if), tuple(row[c] for c in columns))


@functools.cache
def _upsert_sql(table: str, columns: tuple[str, ...], only_if: str) -> str:
    """Built once per table (a rebuild writes one row per job through it)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({columns[0]}) DO UPDATE SET {updates}" + (f" WHERE {only_if}" if only_if else "")
    )


def select_row(store: EventStore, table: str, columns: Sequence[str], key: str) -> dict[str, Any] | None:
    """The row whose first column equals ``key`` as ``{column: value}`` with ``created_at``
    parsed to an aware UTC datetime; ``None`` if there is none."""
    rows = store.backend.query(f"SELECT {', '.join(columns)} FROM {table} WHERE {columns[0]} = ?", [key])
    if not rows:
        return None
    values = dict(zip(columns, rows[0], strict=True))
    values["created_at"] = clock.parse_timestamp(values["created_at"])
    return values


def select_value(store: EventStore, table: str, column: str, where: dict[str, str]) -> Any | None:
    """The ``column`` of the row of ``table`` whose columns equal ``where`` (``{column: value}``,
    joined by ``AND``), or ``None`` when no row matches. Meant for a lookup by a key (one row).

    Args:
        store: the event store whose database holds the projection.
        table: the projection's table.
        column: the column to read.
        where: the columns to match and their values; at least one.

    Raises:
        ValueError: ``where`` is empty.
    """
    if not where:
        raise ValueError("select_value needs at least one column to match")
    condition = " AND ".join(f"{name} = ?" for name in where)
    rows = store.backend.query(f"SELECT {column} FROM {table} WHERE {condition}", list(where.values()))
    return rows[0][0] if rows else None
