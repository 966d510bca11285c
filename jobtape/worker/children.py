"""Child processes (ffmpeg, yt-dlp): start in their own process group, identify, terminate.

A child is identified by ``(host_id, pid, started_at_ticks)``: the start time read from
``/proc/PID/stat`` (field 22, clock ticks since boot) means a reused pid is never mistaken
for one of ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "Child",
    "host_id",
    "kill_if_ours",
    "process_alive",
    "process_start_ticks",
    "signal_group",
    "start_child",
    "wait_gone",
]


def host_id() -> str:
    """This host's id: the hostname (``JOBTAPE_HOST_ID`` is read by the CLI to override it)."""
    return socket.gethostname()


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22).

    Returns:
        The ticks, or ``None`` when the process does not exist (or /proc is unavailable).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return stat[stat.rindex(")") + 2 :].split()


def process_alive(pid: int, started_at_ticks: int | None) -> bool:
    """``True`` if the process ``pid`` that started at ``started_at_ticks`` still runs.

    A zombie (exited, not yet reaped by its parent) counts as gone, and so does a pid now
    used by a process with another start time. With ``started_at_ticks=None`` any live
    process with that pid counts.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started_at_ticks is None or int(fields[19]) == started_at_ticks


def kill_if_ours(pid: int, started_at_ticks: int, grace_s: float) -> int | None:
    """Terminate a child that is not ours to wait for (an orphan of a dead worker).

    SIGTERM to its process group, then SIGKILL if it still runs after ``grace_s``
    seconds. Nothing is sent when the pid is gone or belongs to another process (another
    start time), so a reused pid is never killed.

    Returns:
        The signal's exit status as :class:`jobtape.eventlog.events.JobChildExited` records
        it (``-15`` or ``-9``), or ``None`` when the process was gone already.
    """
    if not process_alive(pid, started_at_ticks):
        return None
    signal_group(pid, signal.SIGTERM)
    if wait_gone(pid, started_at_ticks, grace_s):
        return -int(signal.SIGTERM)
    if process_alive(pid, started_at_ticks):
        signal_group(pid, signal.SIGKILL)
        wait_gone(pid, started_at_ticks, 5.0)
    return -int(signal.SIGKILL)


class Child:
    """A running child process started by :func:`start_child`.

    Attributes:
        process: the ``subprocess.Popen`` (stdout is a text pipe, stderr a binary pipe read
            by the caller or redirected to a file).
        argv: the command line.
        started_at_ticks: see :func:`process_start_ticks`.
    """

    def __init__(self, process: subprocess.Popen[str], argv: Sequence[str]) -> None:
        self.process = process
        self.argv = list(argv)
        self.started_at_ticks = process_start_ticks(process.pid)
        self.terminated_by_us = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def close(self) -> None:
        """Close this side of the child's stdout pipe (idempotent).

        Called once the child is reaped, so the descriptor goes back at once, not when the
        ``Popen`` happens to be collected (an exception's traceback may keep it alive until
        the cyclic garbage collector runs: a worker running for months would hold a pipe
        per such job meanwhile).
        """
        if self.process.stdout is not None:
            self.process.stdout.close()

    def terminate(self, grace_s: float) -> int:
        """Stop the child: SIGTERM to its process group, SIGKILL after ``grace_s`` seconds.

        Returns only once the process is gone (reaped), so the caller may then delete its
        partial output. Safe to call on an exited child (a no-op that returns its status).

        Returns:
            The exit status (negative: the signal that ended it).
        """
        self.terminated_by_us = True
        if self.process.poll() is None:
            signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return int(self.process.returncode)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``; a no-op when it is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - not our group; fall back to the process
        os.kill(pid, sig)


def start_child(argv: Sequence[str], *, stderr_path: Path, cwd: Path | None = None) -> Child:
    """Start ``argv`` in a new session (its own process group) with stdout as a text pipe.

    Args:
        argv: the command line; ``argv[0]`` is an executable path.
        stderr_path: file that receives the child's stderr (read afterwards for errors
            and for ffmpeg's loudnorm JSON); kept on disk so a chatty child never blocks on
            a full pipe.
        cwd: working directory.

    Raises:
        OSError: the executable cannot be started.
    """
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
    return Child(process, argv)


def wait_gone(pid: int, started_at_ticks: int | None, timeout_s: float) -> bool:
    """Poll until the process ``pid`` started at ``started_at_ticks`` is gone, up to ``timeout_s`` seconds.

    Returns:
        ``True`` when it is gone (a zombie counts as gone; so does a pid that now belongs
        to another process).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid, started_at_ticks):
            return True
        time.sleep(0.01)
    return False
