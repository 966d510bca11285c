"""Turn a sqlite-utils migration into plain DDL statements a remote database can run.

The migrations in :mod:`jobtape.eventlog.schema` are functions over a
:class:`sqlite_utils.Database`, which needs a local sqlite3 connection. A remote libSQL
server gets the same schema as DDL: :func:`migration_statements` applies the earlier
migrations to an in-memory SQLite database, snapshots ``sqlite_master``, applies the one
migration, and diffs the snapshots:

- a new table, index, trigger or view -> its ``CREATE`` statement, as SQLite stored it;
- a table whose ``CREATE TABLE`` text changed only by added columns (``ALTER TABLE ADD
  COLUMN``) -> one ``ALTER TABLE ... ADD COLUMN`` per new column;
- a changed index, trigger or view -> ``DROP`` then its new ``CREATE``;
- a removed object -> ``DROP``.

A migration that rebuilds a table (sqlite-utils ``transform``) cannot be expressed this
way and raises :class:`ValueError` naming it; such a migration needs hand-written DDL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

import sqlite_utils

from jobtape.eventlog import schema

__all__ = ["migration_statements"]


class _Object(NamedTuple):
    type: str
    name: str
    sql: str | None


class _Column(NamedTuple):
    name: str
    type: str
    not_null: bool
    default: str | None
    primary_key: int


def _objects(conn: sqlite3.Connection) -> dict[str, _Object]:
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    return {name: _Object(type_, name, sql) for type_, name, sql in rows}


def _columns(conn: sqlite3.Connection, table: str) -> list[_Column]:
    rows = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
    return [_Column(name, type_, bool(not_null), default, pk) for _cid, name, type_, not_null, default, pk in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _add_column_sql(table: str, column: _Column) -> str:
    sql = f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(column.name)}"
    if column.type:
        sql += f" {column.type}"
    if column.not_null:
        sql += " NOT NULL"
    if column.default is not None:
        sql += f" DEFAULT {column.default}"
    return sql


def _table_change(name: str, before: list[_Column], after: list[_Column], migration: str) -> list[str]:
    if after[: len(before)] != before:
        raise ValueError(
            f"migration {migration} rebuilds table {name!r}; the DDL translation for libSQL only supports ADD COLUMN for tables"
        )
    return [_add_column_sql(name, column) for column in after[len(before) :]]


def migration_statements(migrations: Sequence[schema.Migration | tuple[str, schema.MigrationStep]], index: int) -> list[str]:
    """The DDL that migration ``migrations[index]`` runs, given that the earlier ones ran.

    Args:
        migrations: the ordered migrations (the engine's :data:`jobtape.eventlog.schema.MIGRATIONS`, then a package's).
        index: which one to translate (0-based).

    Returns:
        SQL statements without parameters, in the order to run them.

    Raises:
        ValueError: the migration rebuilds a table, which plain DDL cannot express.
        IndexError: ``index`` is out of range.
    """
    name, step, _replaces, _data = schema.as_migration(migrations[index])
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db = sqlite_utils.Database(conn)
        for earlier in migrations[:index]:
            schema.as_migration(earlier).step(db)
        before = _objects(conn)
        columns_before = {n: _columns(conn, n) for n, o in before.items() if o.type == "table"}
        step(db)
        after = _objects(conn)
        statements: list[str] = []
        for gone in before.values():
            if gone.name not in after:
                statements.append(f"DROP {gone.type.upper()} IF EXISTS {_quote(gone.name)}")
        for new in after.values():
            old = before.get(new.name)
            if old is not None and old.sql == new.sql:
                continue
            if old is not None and new.type == "table" and old.type == "table":
                statements += _table_change(new.name, columns_before[new.name], _columns(conn, new.name), name)
                continue
            if old is not None:
                statements.append(f"DROP {old.type.upper()} IF EXISTS {_quote(old.name)}")
            if new.sql is not None:  # automatic indexes (UNIQUE constraints) have no SQL
                statements.append(new.sql)
        return statements
    finally:
        conn.close()
