"""A ``Storage`` backend on the local filesystem: one file per blob under a root folder.

Writes go to a temporary file in ``root/.tmp/`` and are published with ``os.replace``,
so readers see either the old blob or the whole new one, never a partial write. Blobs are
created with ``file_mode`` (default 0600) and the folders this backend creates with the
matching folder mode (0700); see :mod:`jobtape.filemodes`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from jobtape import clock, errors, filemodes
from jobtape.storage import base, signing

log = logging.getLogger(__name__)

__all__ = ["SECRET_FILE_NAME", "TEMP_DIR_NAME", "LocalStorage", "load_or_create_secret"]

#: File (under the data dir) keeping the generated signing secret when none is configured.
SECRET_FILE_NAME = "signing-secret"

#: Folder under the root holding in-flight writes; keys may not start with it.
TEMP_DIR_NAME = ".tmp"
_PUBLISH_ATTEMPTS = 3


class LocalStorage(base.Storage):
    """Blobs stored as files at ``root/<key>``.

    Unlike object stores, a key cannot be both a blob and a "folder" of other blobs
    (``a`` and ``a/b``); such a write raises ``errors.StorageError``.

    Args:
        root: The folder holding the blobs; created if missing.
        signer: Issues the signed download URLs of :meth:`signed_url`; ``None``: no URLs.
        file_mode: permission bits of the blobs it writes (default 0o600); folders it
            creates get :func:`filemodes.dir_mode` of it (0o700).

    Raises:
        ValueError: ``file_mode`` is not a valid file mode (:func:`filemodes.check_file_mode`).
    """

    local_files: ClassVar[bool] = True

    def __init__(self, root: Path, signer: signing.URLSigner | None = None, *, file_mode: int = filemodes.DEFAULT_FILE_MODE) -> None:
        filemodes.check_file_mode(file_mode)
        self.root = Path(root).absolute()
        self.file_mode = file_mode
        self._dir_mode = filemodes.dir_mode(file_mode)
        filemodes.make_dirs(self.root, self._dir_mode)
        self._temp_dir = self.root / TEMP_DIR_NAME
        self.signer = signer
        self.sweep_partial_writes()  # at start-up: the temporary files of a killed process

    def sweep_partial_writes(self, older_than_s: float = 3600.0) -> int:
        """Remove ``root/.tmp/put-*.part`` files unmodified for ``older_than_s`` seconds; return how many.

        :meth:`put_stream` writes a blob to such a file and renames it into place, or
        removes it on any error; only a killed process leaves one. A put in flight writes
        to its file continuously, so an hour without a write means nobody owns it.
        """
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self._temp_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not (entry.name.startswith("put-") and entry.name.endswith(".part")):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                    os.unlink(entry.path)
                    removed += 1
        if removed:
            log.warning("removed %d temporary file(s) left in %s by a killed process", removed, self._temp_dir)
        return removed

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

    def signed_url(self, key: str, expires_in_s: int) -> str | None:
        """Return ``/api/storage/download?key=...&expires=...&signature=...``, or ``None`` without a signer.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        self._path(key)
        if self.signer is None:
            return None
        return self.signer.sign(key, expires_in_s, clock.utcnow().timestamp())

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:  # noqa: D102
        target = self._path(key)
        filemodes.make_dirs(self._temp_dir, self._dir_mode)
        fd, temp_name = tempfile.mkstemp(dir=self._temp_dir, prefix="put-", suffix=".part")
        written = 0
        try:
            if self.file_mode != 0o600:  # mkstemp creates 0600
                os.fchmod(fd, self.file_mode)
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

    def put_new(self, key: str, data: bytes) -> int:
        """Create the file ``root/<key>`` exclusively, write ``data`` and fsync it: no temporary file, no rename.

        Missing parent folders are created (with the folder mode) only when the create finds
        none. See :meth:`Storage.put_new`: nobody reads the key before the caller publishes
        it, so a reader never sees the partial file; a write that fails removes it.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.StorageError: ``key`` exists already, or the file cannot be written.
        """
        target = self._path(key)
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileNotFoundError as exc:
                # No parent folder yet (or a concurrent delete pruned it): make it, try again.
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
                try:
                    filemodes.make_dirs(target.parent, self._dir_mode)
                except OSError as exc:
                    raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
            except OSError as exc:
                raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
        try:
            try:
                if self.file_mode != 0o600:  # created 0600, as put_stream's mkstemp does
                    os.fchmod(fd, self.file_mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            if isinstance(exc, OSError):
                raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
            raise
        return len(data)

    def move_file(self, key: str, path: Path) -> int:
        """Take the local file ``path`` as the blob ``key``: fsync it and rename it into place.

        The bytes are written once (by whoever wrote ``path``) and made durable once (this
        fsync), instead of copied into a second file. ``path`` must be on the storage's file
        system (the data dir's ``upload-tmp`` spool folder is); on another one (``EXDEV``)
        it is copied as :meth:`Storage.move_file` does. The file gets the storage's file mode.
        See :meth:`Storage.move_file`.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
            errors.StorageError: the file could not be synced or renamed.
            FileNotFoundError: If ``path`` does not exist.
        """
        target = self._path(key)
        fd = os.open(path, os.O_RDONLY)  # FileNotFoundError as documented
        try:
            size = os.fstat(fd).st_size
            os.fchmod(fd, self.file_mode)
            os.fsync(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
        finally:
            os.close(fd)
        try:
            self._publish(str(path), target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another file system: copy
                return super().move_file(key, path)
            path.unlink(missing_ok=True)
            raise errors.StorageError(f"cannot write blob {key!r}: {exc}") from exc
        return size

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

    def list_blobs(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[base.BlobInfo]:
        """List the files under ``prefix`` (``root/.tmp`` left out); see :meth:`Storage.list_blobs`."""
        base.validate_prefix(prefix)
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        folder = self.root / prefix.rpartition("/")[0]
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(folder):
                current = Path(dirpath)
                if current == self.root:
                    dirnames[:] = [name for name in dirnames if name != TEMP_DIR_NAME]
                for name in filenames:
                    key = (current / name).relative_to(self.root).as_posix()
                    if key.startswith(prefix) and (start_after is None or key > start_after):
                        keys.append(key)
        except OSError as exc:
            raise errors.StorageError(f"cannot list blobs under {prefix!r}: {exc}") from exc
        listed = []
        for key in sorted(keys):
            try:
                info = (self.root / key).stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            modified = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC)
            listed.append(base.BlobInfo(key, info.st_size, modified))
            if len(listed) == limit:
                break
        return listed

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
            filemodes.make_dirs(target.parent, self._dir_mode)
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
        handle = open(path, "rb")
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


def load_or_create_secret(path: Path, dir_mode: int = 0o700) -> bytes:
    """Read the signing secret kept at ``path``, creating it (32 random bytes, hex, mode 0600) if absent.

    A missing parent folder (the data dir) is created with ``dir_mode``; the secret itself
    is always 0600, whatever ``JOBTAPE_FILE_MODE`` says.

    Used when ``JOBTAPE_SIGNING_SECRET`` is unset, so signed URLs survive restarts and are
    shared by every process on the same data dir. Creation is ``O_EXCL``: of two processes
    racing, one writes and both read the same secret.

    Returns:
        The secret as bytes (the file's stripped text, UTF-8).

    Raises:
        errors.StorageError: the file cannot be read or written.
    """
    path = Path(path)
    try:
        filemodes.make_dirs(path.parent, dir_mode)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
        for _ in range(50):  # a racing creator may not have written its line yet
            text = path.read_text().strip()
            if text:
                return text.encode()
            os.sched_yield()
    except OSError as exc:
        raise errors.StorageError(f"cannot keep the signing secret in {path}: {exc}") from exc
    raise errors.StorageError(f"the signing secret file {path} is empty; delete it to generate a new one")
