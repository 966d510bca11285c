"""Job work folders under one jobtape-owned parent, and the sweep that removes a dead worker's.

A job's temporary files (a downloaded or copied input, ffmpeg's stderr, the rendered
output before it is stored) live in a work folder that the job removes when it ends. A
worker killed with ``kill -9`` removes nothing, so every worker keeps its job folders in
one folder of its own, and every worker of the host removes the folders whose owner is gone::

    <parent>/                                  Settings.work_parent (default $TMPDIR/jobtape-work-<uid>), 0700
    <parent>/worker-<pid>-<random>/            one per Worker object, 0700
    <parent>/worker-<pid>-<random>/owner.lock  held with fcntl.flock(LOCK_EX) while the worker lives
    <parent>/worker-<pid>-<random>/<job id>-<random>/   one per running job

The kernel drops an flock when its holder's last descriptor closes, which a process's
death does whatever the signal, so "the lock can be taken" means "the owner is dead"
without trusting pids (which are reused) or clocks. :meth:`WorkArea.sweep` (at start-up
and every half lease TTL, after the orphan sweep killed the dead worker's children):

- another worker's folder whose lock it can take: the owner is dead, the folder goes
  (removed while holding the lock, so two sweepers never race the owner);
- a worker folder without ``owner.lock`` older than :data:`UNLOCKED_GRACE_S`: an owner
  killed between creating its folder and its lock;
- in its own folder, the job folders of jobs it no longer runs (a job removes its folder
  itself; this catches any it missed).

The lock file is created with ``O_CLOEXEC`` (Python's default), so ffmpeg and yt-dlp
children do not inherit it and do not keep a dead worker's folder alive. flock needs a
local filesystem: put the parent on local disk or tmpfs, not NFS.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from jobtape import errors, filemodes

__all__ = ["LOCK_NAME", "OWNER_PREFIX", "UNLOCKED_GRACE_S", "SweepReport", "WorkArea"]

log = logging.getLogger(__name__)

#: The lock file in each worker's folder.
LOCK_NAME = "owner.lock"
#: Names of worker folders start with it; the sweep looks at nothing else in the parent.
OWNER_PREFIX = "worker-"
#: A worker folder without a lock file is left alone this many seconds (its owner may be
#: between creating the folder and the lock), then removed.
UNLOCKED_GRACE_S = 60.0


@dataclasses.dataclass
class SweepReport:
    """What one sweep removed.

    Attributes:
        dead_owners: worker folders removed because their owner is gone.
        stale_jobs: job folders of this worker removed because it no longer runs the job.
    """

    dead_owners: list[Path] = dataclasses.field(default_factory=list)
    stale_jobs: list[Path] = dataclasses.field(default_factory=list)


class WorkArea:
    """One worker's folder of job work folders under a shared parent.

    The worker folder and its lock are made at the first :meth:`job_dir` and kept until
    :meth:`release`. :meth:`job_dir` (called by a job's thread at its first use of the
    workdir) and :meth:`sweep` (the worker's loop) take one lock, so a sweep never sees a
    job folder before it is registered with its job's id; the job is running by then, so
    the sweep's ``keep`` holds it.

    Args:
        parent: the shared parent; created 0700 if missing.

    Raises:
        errors.StorageError: ``parent`` is not a folder owned by this user (a symlink, or
            another user's folder: set ``JOBTAPE_WORK_DIR``).
    """

    def __init__(self, parent: Path) -> None:
        self.parent = Path(parent).absolute()
        _check_parent(self.parent)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._jobs: dict[str, str] = {}  # job folder name -> job id
        self._jobs_lock = threading.Lock()  # job_dir against sweep
        self.folder: Path | None = None

    def job_dir(self, job_id: str) -> Path:
        """Create a new, empty work folder for ``job_id`` (mode 0700) and return it.

        Raises:
            OSError: the folder cannot be created (e.g. the disk is full).
        """
        with self._jobs_lock:
            made = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self._own_folder()))
            self._jobs[made.name] = job_id
        return made

    def _own_folder(self) -> Path:
        with self._lock:
            if self.folder is not None and self.folder.is_dir():
                return self.folder
            self._close()
            for _ in range(5):  # a sweeper may remove a folder created a moment ago: make another
                folder = Path(tempfile.mkdtemp(prefix=f"{OWNER_PREFIX}{os.getpid()}-", dir=self.parent))
                try:
                    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
                except FileNotFoundError:
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweeper removes it
                if _same_file(fd, folder / LOCK_NAME):
                    self._fd, self.folder = fd, folder
                    return folder
                os.close(fd)
            raise OSError(f"could not make a work folder under {self.parent}: it is removed as it is made")

    def sweep(self, keep: Collection[str] | Callable[[], Collection[str]] = ()) -> SweepReport:
        """Remove dead workers' folders and this worker's job folders of jobs not in ``keep``.

        Args:
            keep: ids of the jobs this worker is running now, or a function returning them,
                called under the lock :meth:`job_dir` takes (so a job that started after the
                sweep began, and made its folder, is in it).

        Returns:
            What was removed. Errors on single entries are logged and skipped.
        """
        report = SweepReport()
        try:
            entries = sorted(os.scandir(self.parent), key=lambda entry: entry.name)
        except OSError as exc:
            log.warning("work folder sweep: cannot list %s: %s", self.parent, exc)
            return report
        for entry in entries:
            if not entry.name.startswith(OWNER_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            if path == self.folder:
                continue
            try:
                if _remove_if_dead(path):
                    report.dead_owners.append(path)
            except OSError as exc:
                log.warning("work folder sweep: cannot check %s: %s", path, exc)
        with self._jobs_lock:
            with self._lock:
                own = self.folder
            kept = keep() if callable(keep) else keep
            if own is not None:
                try:
                    names = [name for name in os.listdir(own) if name != LOCK_NAME]
                except OSError:
                    names = []
                for name in names:
                    if self._jobs.get(name) not in kept:
                        shutil.rmtree(own / name, ignore_errors=True)
                        self._jobs.pop(name, None)
                        report.stale_jobs.append(own / name)
        if report.dead_owners or report.stale_jobs:
            log.warning(
                "work folder sweep: removed %d folder(s) of dead workers, %d stale job folder(s)",
                len(report.dead_owners),
                len(report.stale_jobs),
            )
        return report

    def release(self) -> None:
        """Remove this worker's folder and drop its lock (a no-op if it has none).

        Call it when the worker has no running job; a later :meth:`job_dir` makes a new folder.
        """
        with self._lock:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.folder = None, None
        self._jobs.clear()


def _check_parent(parent: Path) -> None:
    try:
        filemodes.make_dirs(parent, 0o700)
        status = os.lstat(parent)
    except OSError as exc:
        raise errors.StorageError(f"cannot make the job work folder parent {parent}: {exc}") from exc
    if not os.path.isdir(parent) or os.path.islink(parent) or status.st_uid != os.getuid():
        raise errors.StorageError(
            f"the job work folder parent {parent} is not a folder of this user (uid {os.getuid()}); set JOBTAPE_WORK_DIR to one that is"
        )


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _remove_if_dead(folder: Path) -> bool:
    """Remove another worker's ``folder`` if its lock can be taken (its owner is gone); return whether it went."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        if not folder.is_dir() or time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S:
            return False  # gone already, or an owner between making its folder and its lock
        shutil.rmtree(folder, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live worker holds it (or another sweeper is removing it)
        if not _same_file(fd, folder / LOCK_NAME):
            return False  # another sweeper removed it between our open and our lock
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)
