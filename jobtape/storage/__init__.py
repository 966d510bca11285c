"""Blob storage: the ``Storage`` port and its backends.

``LocalStorage`` keeps blobs as files; ``MemoryStorage`` keeps them in a dict for unit
tests. Keys are relative ``/``-separated paths checked by ``validate_key``.
"""

from __future__ import annotations

from jobtape.storage.base import Storage, validate_key
from jobtape.storage.local import LocalStorage
from jobtape.storage.memory import MemoryStorage

__all__ = ["LocalStorage", "MemoryStorage", "Storage", "validate_key"]
