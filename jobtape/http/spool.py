"""The upload spool folder: files of uploads in flight, each owned by a live process, and nothing else.

An upload is written to ``DATA_DIR/upload-tmp/upload-<owner>-<random>.part`` while it
arrives and removed when its request ends, however it ends. A process killed with
``kill -9`` (or a power loss) cannot remove its files, so every process that spools
sweeps the folder at start-up and periodically, removing the files no live process owns.

How ownership is decided, soundly and without a clock or a pid check:

- Each process (each :class:`SpoolFolder`) picks an owner token, ``<pid>.<8 random hex>``,
  and holds an exclusive ``flock`` on ``owner-<token>.lock`` for as long as it spools.
  The kernel drops that lock when the process dies, whatever killed it; a reused pid
  cannot inherit it, and the random part keeps tokens unique across restarts and hosts.
  The lock's descriptor is not inheritable (PEP 446), so a child process (ffmpeg of an
  embedded worker) cannot keep a dead server's lock alive.
- The lock file is created under a temporary name (``owner-<token>.new``), locked, then
  renamed into place, so a sweeper never sees an ``owner-*.lock`` that is not yet locked
  (a ``.new`` file left by a process killed in that instant is removed after a minute).
- Every spool file names its owner's token. A sweep keeps the files of its own token and
  of every token whose lock file exists and is locked (``flock(LOCK_EX | LOCK_NB)`` fails);
  it removes the files of tokens whose lock it can take or that have no lock file (the
  owner creates its lock before its first spool file), then that dead owner's lock file.
  Files without a token (``upload-<random>.part``, written by jobtape before this scheme)
  are removed too.

Several ``jobtape serve`` processes may share one data folder on one host. ``flock`` is
not reliable on every network filesystem, so the folder should be on a local disk (it is
the data folder's ``upload-tmp``; on NFS give each host its own data folder).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

__all__ = ["UPLOAD_TEMP_DIR", "SpoolFolder", "sweeping"]

#: Folder (under ``Settings.data_dir``) holding uploads while they arrive.
UPLOAD_TEMP_DIR = "upload-tmp"

logger = logging.getLogger(__name__)

_PART = re.compile(r"upload-(?:(?P<token>\d+\.[0-9a-f]{8})-)?[^/]*\.part")
_LOCK = re.compile(r"owner-(?P<token>\d+\.[0-9a-f]{8})\.lock")
_NEW_LOCK = re.compile(r"owner-(?P<token>\d+\.[0-9a-f]{8})\.new")
#: Seconds a process may take between creating its lock file and renaming it into place.
_STARTING_S = 60.0


class SpoolFolder:
    """The spool folder of one process: its owner lock, its new spool files, and the sweep.

    Args:
        path: the folder (``DATA_DIR/upload-tmp``); created by :meth:`open` if missing.

    Attributes:
        path: the folder.
        token: this owner's token, ``<pid>.<8 hex digits>``; in the name of each file it spools.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.token = f"{os.getpid()}.{secrets.token_hex(4)}"
        self._lock_fd: int | None = None
        self._opening = threading.Lock()  # open() and close() run in worker threads

    @property
    def is_open(self) -> bool:
        """Whether this process holds its owner lock (after :meth:`open`, before :meth:`close`)."""
        return self._lock_fd is not None

    def open(self) -> int:
        """Create the folder, take this owner's lock, and sweep once. A no-op when already open.

        Returns:
            The number of files the sweep removed (0 when already open).

        Raises:
            OSError: the folder or the lock file cannot be created.
        """
        with self._opening:
            if self._lock_fd is not None:
                return 0
            self._lock_fd = self._take_own_lock()
        return self.sweep()

    def _take_own_lock(self) -> int:
        """Create, lock and publish ``owner-<token>.lock``; return its fd."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)  # uploads in flight are nobody else's
        new = self.path / f"owner-{self.token}.new"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(new, self.path / f"owner-{self.token}.lock")
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                new.unlink()
            raise
        return fd

    def close(self) -> None:
        """Remove this owner's lock file and release the lock. A no-op when not open.

        Spool files of requests still running are removed by their requests; any left
        (there should be none) are removed by the next sweep of any process.
        """
        with self._opening:
            if self._lock_fd is None:
                return
            with contextlib.suppress(FileNotFoundError):
                (self.path / f"owner-{self.token}.lock").unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def create_file(self) -> tuple[int, Path]:
        """Create a new, empty spool file of this owner (mode 0600), opening the folder first if needed.

        Returns:
            ``(fd, path)``: an open file descriptor for writing, and the file's path.

        Raises:
            OSError: the file cannot be created (``ENOSPC`` when the disk is full).
        """
        self.open()
        fd, name = tempfile.mkstemp(dir=self.path, prefix=f"upload-{self.token}-", suffix=".part")
        return fd, Path(name)

    def sweep(self) -> int:
        """Remove the spool files no live process owns, and the lock files of dead owners.

        Safe to run from several processes at once. Files of this owner are kept. Errors
        on single files are logged and skipped, so one unreadable file cannot stop a sweep.

        Returns:
            The number of spool files removed.
        """
        try:
            names = sorted(entry.name for entry in os.scandir(self.path))
        except FileNotFoundError:
            return 0
        verdicts: dict[str, int | None] = {self.token: None}  # token -> fd of its taken lock (dead) or None (alive)
        removed = 0
        try:
            for name in names:
                match = _PART.fullmatch(name)
                if match is None:
                    continue
                token = match["token"]
                if token is not None:
                    if token not in verdicts:
                        verdicts[token] = self._take_if_dead(token)
                    if verdicts[token] is None:
                        continue
                if _unlink(self.path / name):
                    removed += 1
            for name in names:  # dead owners without spool files
                match = _LOCK.fullmatch(name)
                if match is not None and match["token"] not in verdicts:
                    verdicts[match["token"]] = self._take_if_dead(match["token"])
            for token, fd in verdicts.items():
                if fd is not None:
                    _unlink(self.path / f"owner-{token}.lock")
            for name in names:  # a lock file of a process killed while it started (older than a minute)
                if _NEW_LOCK.fullmatch(name) and _older_than(self.path / name, _STARTING_S):
                    fd = self._take_if_dead(None, name)
                    if fd is not None:
                        _unlink(self.path / name)
                        os.close(fd)
        finally:
            for fd in verdicts.values():
                if fd is not None:
                    os.close(fd)
        if removed:
            logger.warning("removed %d upload spool file(s) that no live process owned", removed)
        return removed

    def _take_if_dead(self, token: str | None, name: str | None = None) -> int | None:
        """Take a dead owner's lock: its fd if the owner is dead, ``None`` if it is alive.

        An owner whose lock file is missing is dead (it creates the lock before any spool
        file); a sentinel fd on ``/dev/null`` stands for it so the caller's clean-up is uniform.
        """
        path = self.path / (name or f"owner-{token}.lock")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return os.open(os.devnull, os.O_RDONLY)
        except OSError:
            logger.exception("cannot read the upload spool lock %s; keeping its files", path.name)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                logger.warning("cannot lock the upload spool lock %s (%s); keeping its files", path.name, exc)
            return None
        return fd


def _older_than(path: Path, age_s: float) -> bool:
    """Whether ``path`` was last modified more than ``age_s`` seconds ago (``False`` if it is gone)."""
    try:
        return time.time() - path.stat().st_mtime > age_s
    except OSError:
        return False


def _unlink(path: Path) -> bool:
    """Remove a file; ``False`` if it was gone already or cannot be removed (logged)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("cannot remove %s from the upload spool: %s", path.name, exc)
        return False
    return True


@contextlib.asynccontextmanager
async def sweeping(folder: SpoolFolder, interval_s: float) -> AsyncIterator[None]:
    """Open ``folder`` (sweeping it once), sweep it every ``interval_s`` seconds, close it on exit.

    Meant as an application lifespan: the server's start sweeps away what a killed
    predecessor left, and the periodic sweeps what other processes sharing the folder left.

    Args:
        folder: the spool folder.
        interval_s: seconds between sweeps; 0 or less: only the one at start-up.

    Raises:
        OSError: the folder or its lock file cannot be created at start-up.
    """
    await anyio.to_thread.run_sync(folder.open)
    try:
        async with anyio.create_task_group() as group:
            if interval_s > 0:
                group.start_soon(_sweep_every, folder, interval_s)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(folder.close)


async def _sweep_every(folder: SpoolFolder, interval_s: float) -> None:
    while True:
        await anyio.sleep(interval_s)
        try:
            await anyio.to_thread.run_sync(folder.sweep)
        except Exception:  # a sweep that fails must not stop the server; the next one retries
            logger.exception("the upload spool sweep failed")
