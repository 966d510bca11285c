"""A map that keeps its most recently used entries in memory and spills the rest to a temporary SQLite file.

An import keeps one entry per stream (its last version, hash and state) while it reads an
export of any size; :class:`SpillMap` bounds the memory that takes (issue 12: import in
flat memory) at ``capacity`` entries plus SQLite's page cache, whatever the number of
streams. The file lives in the system's temp folder and is removed by :meth:`SpillMap.close`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["SpillMap"]

V = TypeVar("V")

#: Entries kept in memory by default: ~1.5 KB each for a job's state, so ~30 MB.
DEFAULT_CAPACITY = 20_000


class SpillMap(Generic[V]):
    """``str`` -> ``V``, the ``capacity`` most recently used in memory, older ones encoded in a temp SQLite file.

    Args:
        encode: a value -> bytes (called when an entry spills).
        decode: bytes -> the value (called when a spilled entry is read back).
        capacity: entries kept in memory (at least 1).
    """

    def __init__(self, encode: Callable[[V], bytes], decode: Callable[[bytes], V], capacity: int = DEFAULT_CAPACITY) -> None:
        """See the class docstring."""
        self._encode, self._decode, self._capacity = encode, decode, max(1, capacity)
        self._recent: OrderedDict[str, V] = OrderedDict()
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._connection: sqlite3.Connection | None = None
        self.spilled = 0

    def get(self, key: str) -> V | None:
        """The value of ``key``, or ``None``; a spilled entry is read back (it stays spilled too)."""
        value = self._recent.get(key)
        if value is not None:
            self._recent.move_to_end(key)
            return value
        if self._connection is None:
            return None
        row = self._connection.execute("SELECT value FROM spill WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._decode(row[0])

    def put(self, key: str, value: V) -> None:
        """Set ``key``; the least recently used entry spills when more than ``capacity`` are in memory."""
        self._recent[key] = value
        self._recent.move_to_end(key)
        if len(self._recent) > self._capacity:
            old_key, old_value = self._recent.popitem(last=False)
            connection = self._connection or self._open()
            connection.execute("INSERT OR REPLACE INTO spill (key, value) VALUES (?, ?)", (old_key, self._encode(old_value)))
            self.spilled += 1

    def _open(self) -> sqlite3.Connection:
        self._folder = tempfile.TemporaryDirectory(prefix="jobtape-spill-")
        # a scratch file: nothing in it must survive a crash, so no journal and no fsync
        connection = sqlite3.connect(Path(self._folder.name) / "spill.db", isolation_level=None)
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("CREATE TABLE spill (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        self._connection = connection
        return connection

    def close(self) -> None:
        """Forget every entry and remove the temp file."""
        self._recent.clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
