"""A ``Storage`` backend on the local filesystem: one file per blob under a root folder.

Writes go to a temporary file in ``root/.tmp/`` and are published with ``os.replace``,
so readers see either the old blob or the whole new one, never a partial write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from jobtape import errors
from jobtape.storage import base

__all__ = ["TEMP_DIR_NAME", "LocalStorage"]

#: Folder under the root holding in-flight writes; keys may not start with it.
TEMP_DIR_NAME = ".tmp"
_PUBLISH_ATTEMPTS = 3


class LocalStorage(base.Storage):
    """Blobs stored as files at ``root/<key>``.

    Unlike object stores, a key cannot be both a blob and a "folder" of other blobs
    (``a`` and ``a/b``); such a write raises ``errors.StorageError``.

    Args:
        root: The folder holding the blobs; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._temp_dir = self.root / TEMP_DIR_NAME

    def _path(self, key: str) -> Path:
        base.validate_key(key)
        if key.split("/", 1)[0] == TEMP_DIR_NAME:
            raise errors.InvalidStorageKey(key, f"{TEMP_DIR_NAME!r} is reserved for temporary files")
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        """Return ``root/<key>``; the file may not exist.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        return self._path(key)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:  # noqa: D102
        target = self._path(key)
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=self._temp_dir, prefix="put-", suffix=".part")
        written = 0
        try:
            with os.fdopen(fd, "wb") as temp_file:
                for chunk in chunks:
                    temp_file.write(chunk)
                    written += len(chunk)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            self._publish(temp_name, target)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            if isinstance(exc, OSError):
                raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
            raise
        return written

    def open_stream(  # noqa: D102
        self, key: str, chunk_size: int = base.DEFAULT_CHUNK_SIZE, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        path = self._path(key)
        base.check_range(chunk_size, start, end)
        if not path.is_file():
            raise errors.BlobNotFound(key)
        # The file is opened lazily so an iterator that is never consumed leaks no handle.
        return _read_range(path, key, chunk_size, start, end)

    def size(self, key: str) -> int:  # noqa: D102
        path = self._path(key)
        try:
            if path.is_file():
                return path.stat().st_size
        except OSError:
            pass
        raise errors.BlobNotFound(key)

    def delete(self, key: str) -> None:  # noqa: D102
        path = self._path(key)
        if not path.is_file():
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune_empty_parents(path.parent)

    def delete_prefix(self, prefix: str) -> int:  # noqa: D102
        base.validate_prefix(prefix)
        folder = self.root / prefix.rpartition("/")[0]
        if not folder.is_dir():
            return 0
        removed = 0
        for dirpath, dirnames, filenames in os.walk(folder, topdown=True):
            current = Path(dirpath)
            if current == self.root:
                dirnames[:] = [name for name in dirnames if name != TEMP_DIR_NAME]
            for name in filenames:
                file_path = current / name
                if file_path.relative_to(self.root).as_posix().startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        file_path.unlink()
                        removed += 1
        for dirpath, _dirnames, _filenames in os.walk(folder, topdown=False):
            relative = Path(dirpath).relative_to(self.root).as_posix() + "/"
            if relative.startswith(TEMP_DIR_NAME + "/"):
                continue
            if relative.startswith(prefix):
                with contextlib.suppress(OSError):
                    Path(dirpath).rmdir()
        self._prune_empty_parents(folder)
        return removed

    def _publish(self, temp_name: str, target: Path) -> None:
        """Move the finished temp file to ``target``, creating its parent folders."""
        for attempt in range(_PUBLISH_ATTEMPTS):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(temp_name, target)
                return
            except FileNotFoundError:
                # A concurrent delete pruned the freshly created parent; make it again.
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise

    def _prune_empty_parents(self, folder: Path) -> None:
        """Remove ``folder`` and its ancestors below the root while they are empty."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return
            folder = folder.parent


def _read_range(path: Path, key: str, chunk_size: int, start: int, end: int | None) -> Iterator[bytes]:
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise errors.BlobNotFound(key) from None
    with handle:
        handle.seek(start)
        remaining = None if end is None else end - start + 1
        while remaining is None or remaining > 0:
            chunk = handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
