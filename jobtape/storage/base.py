"""The blob storage port: validated keys and the ``Storage`` ABC.

A key is a relative, ``/``-separated path such as ``jobs/01HX/source.mp3``. Blobs are
written from and read into chunk streams, so no backend method needs the whole blob in
memory (``MemoryStorage`` keeps it there by design, for unit tests only).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from jobtape import errors

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_KEY_BYTES",
    "BlobInfo",
    "Storage",
    "check_range",
    "validate_key",
    "validate_prefix",
]

#: Default size of the chunks yielded by ``Storage.open_stream``, in bytes.
DEFAULT_CHUNK_SIZE = 65536
#: Longest key accepted, in UTF-8 bytes (the S3 limit).
MAX_KEY_BYTES = 1024
#: A NUL or control character (U+0000-U+001F, U+007F), refused in keys.
_CONTROL_CHAR = re.compile("[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Check that ``key`` is a safe, relative, ``/``-separated storage key.

    Args:
        key: The candidate key, e.g. ``"jobs/abc/source.mp3"``.

    Returns:
        The key, unchanged.

    Raises:
        errors.InvalidStorageKey: If the key is empty, longer than 1024 UTF-8 bytes,
            absolute, contains a backslash, a NUL or control character, an empty
            segment (``a//b``, trailing ``/``), or a ``.``/``..`` segment.
    """
    if not isinstance(key, str) or not key:
        raise errors.InvalidStorageKey(str(key), "empty key")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise errors.InvalidStorageKey(key, f"longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL_CHAR.search(key) is not None:
        raise errors.InvalidStorageKey(key, "contains a NUL or control character")
    if "\\" in key:
        raise errors.InvalidStorageKey(key, "contains a backslash")
    if key.startswith("/"):
        raise errors.InvalidStorageKey(key, "absolute path")
    if key.endswith("/"):
        raise errors.InvalidStorageKey(key, "trailing slash")
    for segment in key.split("/"):
        if segment == "":
            raise errors.InvalidStorageKey(key, "empty path segment")
        if segment in (".", ".."):
            raise errors.InvalidStorageKey(key, f"{segment!r} path segment")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a key prefix for ``delete_prefix``: a valid key, optionally ending in ``/``.

    Raises:
        errors.InvalidStorageKey: If the prefix without its trailing ``/`` is not a valid key.
    """
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    """One stored blob as :meth:`Storage.list_blobs` lists it.

    Attributes:
        key: the storage key.
        size: bytes.
        modified: when the blob was last written (aware UTC): a file's mtime, an object's ``LastModified``.
    """

    key: str
    size: int
    modified: dt.datetime


class Storage(abc.ABC):
    """A store of immutable-by-convention blobs addressed by validated keys.

    Subclasses implement the streaming primitives; ``put_file``, ``get_to_file`` and
    ``exists`` are built on them here and may be overridden for speed.

    Attributes:
        local_files: ``True`` when :meth:`exists` and :meth:`signed_url` touch only the local
            file system (a ``stat``, an HMAC), short enough for an HTTP handler to call inline
            on the event loop; ``False`` (default: object storage asks the network) keeps them
            in a worker thread.
    """

    local_files: ClassVar[bool] = False

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of ``chunks`` under ``key``, replacing any blob there.

        The chunks are consumed one at a time; the blob is never held whole in memory
        (except by ``MemoryStorage``). If iterating ``chunks`` or writing raises, the
        exception propagates and the key keeps its previous content (or stays absent).

        Args:
            key: The storage key.
            chunks: The blob's bytes, in order; empty chunks are allowed.

        Returns:
            The number of bytes written.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.StorageError: If the backend fails.
        """

    @abc.abstractmethod
    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Read the blob under ``key`` as chunks of at most ``chunk_size`` bytes.

        The key is checked eagerly: ``BlobNotFound`` is raised by this call, not on the
        first ``next()``.

        Args:
            key: The storage key.
            chunk_size: Largest chunk yielded, in bytes (> 0).
            start: First byte offset to read (0-based, >= 0).
            end: Last byte offset to read, inclusive as in an HTTP ``Range`` header;
                ``None`` means the end of the blob. Clamped to the blob's last byte.
                A range starting at or past the end of the blob yields nothing.

        Returns:
            An iterator of non-empty byte chunks.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.BlobNotFound: If no blob is stored under ``key``.
            ValueError: If ``chunk_size`` <= 0, ``start`` < 0 or ``end`` < ``start``.
        """

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Return the size of the blob under ``key``, in bytes.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.BlobNotFound: If no blob is stored under ``key``.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob under ``key``. If no such blob exists, this is a no-op.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key starts with ``prefix`` (plain string prefix).

        Pass ``"jobs/abc/"`` to remove one "folder"; ``"jobs/abc"`` also matches
        ``"jobs/abcd/..."``.

        Returns:
            The number of blobs removed (0 if none matched).

        Raises:
            errors.InvalidStorageKey: If ``prefix`` minus a trailing ``/`` is not a valid key.
        """

    def sweep_partial_writes(self, older_than_s: float = 3600.0) -> int:
        """Remove what writes of killed processes left behind; return how many items went.

        A write in flight is never removed: the local backend removes only temporary files
        unmodified for ``older_than_s`` seconds (a live write appends continuously). The
        default is a no-op: on S3/R2 an upload interrupted by a killed process leaves an
        incomplete multipart upload, which a bucket lifecycle rule
        (``AbortIncompleteMultipartUpload``) removes (docs/deploy.md).

        Args:
            older_than_s: age past which an untouched temporary file is a leftover, in seconds.
        """
        return 0

    def list_blobs(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[BlobInfo]:
        """List up to ``limit`` blobs whose key starts with ``prefix``, in key order, after ``start_after``.

        For maintenance sweeps (:class:`jobtape.blobs.OrphanUploadSweeper`): a caller pages
        through a large prefix by passing the last key it got as ``start_after``.

        Args:
            prefix: plain string prefix of the keys (``"ingest-uploads/"``).
            start_after: only keys sorting after this one; ``None``: from the first.
            limit: most blobs returned (> 0).

        Returns:
            The blobs, sorted by key (code point order, as S3 lists ASCII keys).

        Raises:
            errors.InvalidStorageKey: If ``prefix`` minus a trailing ``/`` is not a valid key.
            errors.StorageError: If the backend fails.
            NotImplementedError: the backend cannot list (this default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its blobs")

    def exists(self, key: str) -> bool:
        """Return whether a blob is stored under ``key``.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        try:
            self.size(key)
        except errors.BlobNotFound:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        """Return a filesystem path holding the blob, or ``None`` if the backend has none.

        The path may not exist yet (check ``exists``); treat it as read-only.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        validate_key(key)
        return None

    def signed_url(self, key: str, expires_in_s: int) -> str | None:
        """Return a URL a client can GET the blob from for ``expires_in_s`` seconds, or ``None``.

        ``None`` (this default) means the backend has no URL of its own, and the API serves
        the bytes itself; object stores return a presigned URL. ``LocalStorage`` with a
        signer returns a path on this API (``/api/storage/download?key=...&expires=...&
        signature=...``, HMAC-SHA256: :mod:`jobtape.storage.signing`). Callers leave the link
        out on ``None`` (seed 001: a poll must not fail for want of a link). The blob is not checked.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        validate_key(key)
        return None

    def upload_url(self, key: str, expires_in_s: int) -> str | None:
        """Return a URL a client can PUT the blob to for ``expires_in_s`` seconds, or ``None``.

        ``None`` (this default) means clients cannot upload directly; they send the file
        through the API instead.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        validate_key(key)
        return None

    def put_file(self, key: str, path: Path) -> int:
        """Store the content of the local file ``path`` under ``key``.

        Returns:
            The number of bytes written.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            FileNotFoundError: If ``path`` does not exist.
        """
        validate_key(key)
        with open(path, "rb") as source:
            return self.put_stream(key, iter(lambda: source.read(DEFAULT_CHUNK_SIZE), b""))

    def put_new(self, key: str, data: bytes) -> int:
        """Store ``data`` under a new ``key`` that nobody reads before the caller publishes it.

        For a blob named by an event the caller appends next (an upload ingest's original,
        under a key made of a fresh job id): until that event exists nothing names the key,
        so a backend may write the final key directly instead of a temporary one that it
        renames into place (:class:`~jobtape.storage.local.LocalStorage` does: one file
        created exclusively, written and fsynced). The default is :meth:`put_stream`. The
        blob is durable when this returns; on an error nothing is left under ``key``.

        Args:
            key: The storage key; must not hold a blob yet.
            data: The blob's bytes.

        Returns:
            The number of bytes written.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.StorageError: If the backend fails (on local storage also when ``key``
                already exists).
        """
        return self.put_stream(key, [data])

    def move_file(self, key: str, path: Path) -> int:
        """Store the local file ``path`` under ``key`` and remove ``path``: the file is given up.

        The default stores a copy (:meth:`put_file`) and then removes ``path``; a backend that
        can take the file itself overrides it (:class:`~jobtape.storage.local.LocalStorage`
        renames it into place, so an upload's bytes are written to disk once). Either way the
        blob is durable when this returns, and ``path`` is gone whether it succeeds or not.

        Returns:
            The number of bytes stored.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.StorageError: the blob could not be written.
            FileNotFoundError: If ``path`` does not exist.
        """
        try:
            return self.put_file(key, path)
        finally:
            path.unlink(missing_ok=True)

    def get_to_file(self, key: str, path: Path) -> int:
        """Copy the blob under ``key`` into the local file ``path`` (created or truncated).

        If reading fails midway, the partial file is removed.

        Returns:
            The number of bytes written.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.BlobNotFound: If no blob is stored under ``key``.
        """
        stream = self.open_stream(key)
        written = 0
        try:
            with open(path, "wb") as target:
                for chunk in stream:
                    target.write(chunk)
                    written += len(chunk)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        return written


def check_range(chunk_size: int, start: int, end: int | None) -> None:
    """Validate ``open_stream`` arguments shared by every backend.

    Raises:
        ValueError: If ``chunk_size`` <= 0, ``start`` < 0 or ``end`` < ``start``.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"end ({end}) must be >= start ({start})")
