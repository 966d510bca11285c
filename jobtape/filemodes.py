"""Permission bits of the files and folders jobtape creates: private unless configured otherwise.

The event log, the stored blobs and the job work folders hold users' recordings, so
jobtape creates files ``0600`` and folders ``0700`` by default, like the signing secret.
``JOBTAPE_FILE_MODE`` (:attr:`jobtape.config.Settings.file_mode`) widens that for a setup
where another account must read them, e.g. ``0640`` for a web server in the same group;
folders then get the matching search bits (``0750``). The mode is applied with
``chmod`` as given, so the process umask neither widens nor narrows it. Files and folders
that exist already keep their mode (``chmod -R go-rwx DATA_DIR`` tightens an old one).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["DEFAULT_FILE_MODE", "check_file_mode", "dir_mode", "make_dirs", "parse_file_mode"]

#: Files readable and writable by the owner only.
DEFAULT_FILE_MODE = 0o600


def parse_file_mode(text: str) -> int:
    """Parse an octal file mode such as ``"600"``, ``"0640"`` or ``"0o640"``.

    Returns:
        The permission bits, e.g. ``0o640``.

    Raises:
        ValueError: not octal, or not a valid file mode (see :func:`check_file_mode`).
    """
    digits = text.strip().lower().removeprefix("0o")
    if not digits or any(c not in "01234567" for c in digits):
        raise ValueError(f"{text!r} is not an octal file mode such as 0600 or 0640")
    mode = int(digits, 8)
    check_file_mode(mode)
    return mode


def check_file_mode(mode: int) -> None:
    """Check that ``mode`` is read/write bits only and lets the owner read and write.

    Raises:
        ValueError: execute, setuid/setgid/sticky bits, or the owner cannot read and write.
    """
    if mode & ~0o666 or mode & 0o600 != 0o600:
        raise ValueError(
            f"file mode {mode:04o} must give the owner read and write (0600) and may add only read/write"
            " bits for group and others (e.g. 0640, 0660, 0644)"
        )


def dir_mode(file_mode: int) -> int:
    """The folder mode matching ``file_mode``: a search bit wherever a read bit is set (0600 -> 0700, 0640 -> 0750)."""
    return file_mode | ((file_mode & 0o444) >> 2)


def make_dirs(path: str | os.PathLike[str], mode: int) -> None:
    """Create ``path`` and its missing parents, each with exactly ``mode``; existing folders are left alone.

    Safe against a concurrent creator (whoever creates a folder sets its mode).

    Raises:
        OSError: a folder cannot be created (a parent is a file, no permission, ...).
    """
    missing: list[Path] = []
    current = Path(path).absolute()
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue
        with contextlib.suppress(FileNotFoundError):  # removed by a concurrent prune: the caller retries
            os.chmod(folder, mode)
