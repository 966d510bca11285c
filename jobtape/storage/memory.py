"""An in-memory ``Storage`` backend: a dict of bytes, for unit tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from jobtape import clock, errors
from jobtape.storage import base

__all__ = ["MemoryStorage"]


class MemoryStorage(base.Storage):
    """Blobs kept in a ``dict[str, bytes]``; not shared between instances.

    ``put_stream`` buffers the chunks before publishing them, so a failing stream
    leaves the previous content (or absence) untouched, as on real backends.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._modified: dict[str, dt.datetime] = {}  # when each blob was written (the clock's time)

    def reset(self) -> None:
        """Remove every blob."""
        self._blobs.clear()
        self._modified.clear()

    def keys(self) -> list[str]:
        """Return every stored key, sorted."""
        return sorted(self._blobs)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:  # noqa: D102
        base.validate_key(key)
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
        self._blobs[key] = bytes(buffer)
        self._modified[key] = clock.utcnow()
        return len(buffer)

    def open_stream(  # noqa: D102
        self, key: str, chunk_size: int = base.DEFAULT_CHUNK_SIZE, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        base.validate_key(key)
        base.check_range(chunk_size, start, end)
        try:
            blob = self._blobs[key]
        except KeyError:
            raise errors.BlobNotFound(key) from None
        stop = len(blob) if end is None else min(end + 1, len(blob))
        return _chunks(blob, chunk_size, start, stop)

    def size(self, key: str) -> int:  # noqa: D102
        base.validate_key(key)
        try:
            return len(self._blobs[key])
        except KeyError:
            raise errors.BlobNotFound(key) from None

    def delete(self, key: str) -> None:  # noqa: D102
        base.validate_key(key)
        self._blobs.pop(key, None)
        self._modified.pop(key, None)

    def list_blobs(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[base.BlobInfo]:  # noqa: D102
        base.validate_prefix(prefix)
        keys = sorted(key for key in self._blobs if key.startswith(prefix) and (start_after is None or key > start_after))
        return [base.BlobInfo(key, len(self._blobs[key]), self._modified[key]) for key in keys[:limit]]

    def delete_prefix(self, prefix: str) -> int:  # noqa: D102
        base.validate_prefix(prefix)
        doomed = [key for key in self._blobs if key.startswith(prefix)]
        for key in doomed:
            del self._blobs[key]
            self._modified.pop(key, None)
        return len(doomed)


def _chunks(blob: bytes, chunk_size: int, start: int, stop: int) -> Iterator[bytes]:
    view = memoryview(blob)
    for offset in range(start, stop, chunk_size):
        yield bytes(view[offset : min(offset + chunk_size, stop)])
