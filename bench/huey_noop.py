"""The baseline of ``bench/throughput.py``: Huey's ``SqliteHuey`` with a no-op task.

Loaded by Huey's real consumer the bench starts:
``PYTHONPATH=bench HUEY_DB=... HUEY_SYNCHRONOUS=FULL huey_consumer huey_noop.huey -w N -k thread``.
``SqliteHuey`` only offers ``synchronous`` OFF or FULL (its ``fsync`` flag); the subclass
sets the same value jobtape runs with (``FULL`` or ``NORMAL``) on every connection, in WAL
mode (SqliteHuey's default) like jobtape.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Any

from huey import Huey
from huey.storage import SqliteStorage

__all__ = ["SynchronousSqliteStorage", "huey", "make_huey", "noop", "register_noop"]


class SynchronousSqliteStorage(SqliteStorage):
    """``SqliteStorage`` whose connections run ``PRAGMA synchronous=<synchronous>``."""

    def __init__(self, *args: object, synchronous: str = "FULL", **kwargs: object) -> None:
        self.synchronous = synchronous
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn


class SynchronousSqliteHuey(Huey):
    """``SqliteHuey`` with :class:`SynchronousSqliteStorage`."""

    storage_class = SynchronousSqliteStorage


def make_huey(filename: str, synchronous: str) -> Huey:
    """A Huey on the SQLite file ``filename`` (WAL) with ``PRAGMA synchronous=<synchronous>``."""
    return SynchronousSqliteHuey("bench", filename=filename, synchronous=synchronous)


def _noop() -> None:
    """Do nothing."""


def register_noop(on: Huey) -> Any:
    """Register the no-op task on ``on`` (as ``huey_noop.noop``, the name the consumer's registry knows) and return it."""
    return on.task(name="noop")(_noop)


# The bench always sets HUEY_DB; without it (an import by hand) the file goes to the temp dir, never the checkout.
huey = make_huey(
    os.environ.get("HUEY_DB") or os.path.join(tempfile.gettempdir(), "huey-bench.db"), os.environ.get("HUEY_SYNCHRONOUS", "FULL")
)
noop = register_noop(huey)
