"""What a running job's handler sees: guarded appends, stages, progress, child processes.

Every append is guarded by the version the worker last saw. When the guard (or the fold)
refuses an append, the context re-reads the job: if the job is no longer this worker's it
raises :class:`JobLost`; if a cancel was requested it raises :class:`CancelRequested`;
otherwise it retries on the fresh state. The job handler never decides state itself.

The worker's loop thread may interrupt a running job (:meth:`JobContext.request_cancel`,
:meth:`~JobContext.request_timeout`, :meth:`~JobContext.request_release`,
:meth:`~JobContext.abandon`): the running child gets SIGTERM (SIGKILL after the grace) and
the handler's next step raises the matching control-flow exception, a
:class:`jobtape.errors.JobInterrupted` (a ``BaseException``: an ``except Exception`` in a
job handler does not swallow it; see :mod:`jobtape.errors`). It also appends the
job's heartbeats (:meth:`JobContext.heartbeat`); appends from both threads are serialised.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.worker import children, outage, policy

__all__ = ["CancelRequested", "ChildOutcome", "JobContext", "JobLost", "Released", "TimedOut"]


class CancelRequested(errors.JobInterrupted):
    """Control flow: the job's cancel was requested; the job handler must stop."""


class JobLost(errors.JobInterrupted):
    """Control flow: another actor took the job over (or ended it); stop without appending."""


class TimedOut(errors.JobInterrupted):
    """Control flow: the job ran past its type's timeout; it must fail with ``timed out after N s``."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(policy.timeout_error(timeout_s))


class Released(errors.JobInterrupted):
    """Control flow: the worker shuts down and gives the job back (``job.released``)."""


class ChildOutcome:
    """How a child ended: ``returncode`` (negative: killed by that signal), its ``stderr`` text,
    and ``timed_out`` (``True`` when ``run_child``'s ``timeout_s`` ended it)."""

    __slots__ = ("returncode", "stderr", "timed_out")

    def __init__(self, returncode: int, stderr: str, timed_out: bool = False) -> None:
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out


class JobContext:
    """The running job as its job handler sees it.

    Args:
        repository: where events go.
        state: the state right after this worker's ``job.claimed``.
        worker_id: this worker's id (the actor of every append).
        workdir: a private temp folder, removed when the job ends; or a function that makes
            one, called at the first use of :attr:`workdir` (a job handler that never uses
            it costs no folder: no ``mkdtemp``, no ``rmtree``).
        kill_grace_s: seconds from SIGTERM to SIGKILL when a child must stop.
        progress_interval_s: minimum seconds between two progress events.
        host_id: recorded in ``job.child_started`` (the orphan sweep matches it); ``None``
            uses :func:`children.host_id`.
    """

    def __init__(
        self,
        repository: JobRepository,
        state: job_state.JobState,
        *,
        worker_id: str,
        workdir: Path | Callable[[], Path],
        kill_grace_s: float = 5.0,
        progress_interval_s: float = 0.25,
        host_id: str | None = None,
    ) -> None:
        self.repository = repository
        self.state = state
        self.worker_id = worker_id
        self._make_workdir = workdir if callable(workdir) else None
        self._workdir = None if callable(workdir) else workdir
        self._workdir_lock = threading.Lock()
        self.kill_grace_s = kill_grace_s
        self.progress_interval_s = progress_interval_s
        self.cancel_event = threading.Event()
        #: storage keys this job wrote; removed if the job does not complete.
        self.written_keys: list[str] = []
        #: outputs the job owns once it completes (``job.completed``'s ``owned_keys``): the
        #: written keys plus those declared with ``owned=True`` in :attr:`download_key`'s setter.
        self.owned_outputs: list[str] = []
        #: the key a poll of the complete job links to (``job.completed``'s ``download_key``).
        self.download_key: str | None = None
        self._child: children.Child | None = None
        self._child_lock = threading.Lock()
        self._last_progress = (-1, 0.0)
        self._attempt = state.attempt
        self.host_id = host_id or children.host_id()
        #: UTC time of the claim (the job's timeout counts from here).
        self.claimed_at: dt.datetime = state.updated_at
        #: set by any interruption (cancel, timeout, release, loss): the child must stop.
        self.interrupt_event = threading.Event()
        self._cause: errors.JobInterrupted | None = None  # the TimedOut / Released / JobLost to raise
        self._append_lock = threading.RLock()

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.state.job_id

    @property
    def params(self) -> dict[str, Any]:
        """The job's parameters from ``job.created``."""
        return self.state.params

    @property
    def workdir(self) -> Path:
        """The job's private temp folder, made at the first use (removed by :meth:`cleanup`).

        Raises:
            OSError: the folder cannot be made (e.g. the disk is full).
        """
        with self._workdir_lock:
            if self._workdir is None:
                assert self._make_workdir is not None
                self._workdir = self._make_workdir()
            return self._workdir

    @property
    def workdir_made(self) -> Path | None:
        """The job's temp folder if one was made, else ``None`` (makes none)."""
        return self._workdir

    # -- appends ---------------------------------------------------------------------------

    def append(self, *events: ev.Event) -> None:
        """Append events guarded by the last seen version; see the module docstring.

        Raises:
            CancelRequested: a cancel was requested and the fold refuses these events.
            JobLost: the job is no longer this worker's.
        """
        with self._append_lock:
            self._append(events)

    def _append(self, events: Sequence[ev.Event]) -> None:
        while True:
            try:
                self.state = self.repository.append(self.job_id, events, self.state, actor=self.worker_id).state
                return
            except errors.StoreUnavailable:  # wait for the store; a lost answer must not look like a takeover
                landed = outage.resolve_in_doubt(self.repository, self.job_id, self.state, events, self.worker_id)
                if landed is not None:
                    self.state = landed
                    return
            except (errors.ConcurrencyError, errors.IllegalTransition) as exc:
                fresh = self.repository.load(self.job_id)
                if not self._still_ours(fresh):
                    raise JobLost(str(exc)) from exc
                assert fresh is not None
                stale = fresh.version != self.state.version
                self.state = fresh
                if not stale:
                    if fresh.cancel_requested:
                        self.cancel_event.set()
                        raise CancelRequested() from exc
                    raise

    def heartbeat(self, now: dt.datetime, lease_ttl_s: float) -> bool:
        """Append ``job.heartbeat`` if the lease was last renewed ``lease_ttl_s / 3`` seconds or more ago.

        Called by the worker's loop thread. If the append finds the job no longer ours,
        the job is abandoned (:meth:`abandon`: its child killed; the job handler stops on JobLost).

        Args:
            now: the current UTC time.
            lease_ttl_s: the lease length in seconds.

        Returns:
            ``True`` if a heartbeat was appended.
        """
        with self._append_lock:
            state = self.state
            if state.finished or state.status == "pending" or self._lost():
                return False
            renewed_at = (state.lease_expires_at - dt.timedelta(seconds=lease_ttl_s)) if state.lease_expires_at else state.updated_at
            if not policy.heartbeat_due(renewed_at, now, lease_ttl_s):
                return False
            try:
                self._append([ev.JobHeartbeat()])
            except JobLost as exc:
                self.abandon(exc)
                return False
            except CancelRequested:
                return False
            return True

    def observe(self, fresh: job_state.JobState | None) -> None:
        """Act on the job's current row, as the worker's watch reads it (every ``WATCH_INTERVAL_S``).

        A cancel request SIGTERMs the child (:meth:`request_cancel`). A job that is no longer
        this worker's (a reaper took it back, it was archived) is abandoned at once
        (:meth:`abandon`: the child is terminated, nothing more is appended), instead of at
        the job handler's next append, which may be a heartbeat a third of the lease away.
        """
        if fresh is not None and fresh.cancel_requested and not self.cancel_event.is_set():
            self.request_cancel()
        if not self._still_ours(fresh) and not self.interrupt_event.is_set():
            held = "gone" if fresh is None else f"{fresh.status}, held by {fresh.worker_id or 'no worker'}"
            self.abandon(JobLost(f"the job was taken over (now {held})"))

    def _still_ours(self, fresh: job_state.JobState | None) -> bool:
        return (
            fresh is not None
            and not fresh.finished
            and fresh.worker_id == self.worker_id
            and fresh.attempt == self._attempt
            and fresh.status in ("processing", "cancelled")
        )

    def stage(self, name: str) -> None:
        """Enter a stage (``job.stage_changed``); progress restarts at 0."""
        self.check_cancelled()
        self.append(ev.JobStageChanged(stage=name))
        self._last_progress = (0, time.monotonic())

    def progress(self, percent: int) -> None:
        """Report 0-100 percent within the stage; throttled to integer changes at most every ``progress_interval_s``."""
        last_percent, last_at = self._last_progress
        now = time.monotonic()
        if percent == last_percent or (now - last_at < self.progress_interval_s and percent < 100):
            return
        self._last_progress = (percent, now)
        self.append(ev.JobProgress(percent=max(0, min(100, percent))))

    def check_cancelled(self) -> None:
        """Raise the exception of an interruption the worker requested, if any.

        Raises:
            JobLost: the job is no longer this worker's (checked first: nothing may be appended).
            CancelRequested: a cancel was noticed.
            TimedOut: the job ran past its timeout.
            Released: the worker shuts down.
        """
        if self._lost():
            raise self._cause  # type: ignore[misc]
        if self.cancel_event.is_set():
            raise CancelRequested()
        if self._cause is not None:
            raise self._cause

    def _lost(self) -> bool:
        return isinstance(self._cause, JobLost)

    # -- children --------------------------------------------------------------------------

    def run_child(
        self,
        argv: Sequence[str],
        *,
        on_line: Callable[[str], None] | None = None,
        name: str = "child",
        timeout_s: float | None = None,
    ) -> ChildOutcome:
        """Run a child process to its end, recording ``child_started`` and ``child_exited``.

        Args:
            argv: the command line.
            on_line: called with each stdout line (stripped), e.g. ffmpeg ``-progress`` lines.
                If it raises, the child is terminated, its exit recorded, and the error re-raised.
            name: used for the stderr file name in the workdir.
            timeout_s: if set, the child is terminated (SIGTERM, SIGKILL after the grace)
                after this many seconds and the outcome says ``timed_out``.

        Returns:
            The outcome; a non-zero ``returncode`` is for the caller to judge.

        Raises:
            CancelRequested: a cancel arrived; the child is dead and its exit recorded.
            JobLost: the job was taken over; the child is dead.
            TimedOut, Released: the worker interrupted the job; the child is dead and its
                exit recorded.
        """
        self.check_cancelled()
        stderr_path = self.workdir / f"{name}.stderr"
        child = children.start_child(argv, stderr_path=stderr_path, cwd=self.workdir)
        with self._child_lock:
            self._child = child
        try:
            self.append(ev.JobChildStarted(pid=child.pid, argv=list(argv), host_id=self.host_id, started_at_ticks=child.started_at_ticks))
        except BaseException as exc:  # CancelRequested, JobLost, or a store that refuses us: no child left behind
            child.terminate(self.kill_grace_s)
            child.close()
            self._clear_child()
            if isinstance(exc, CancelRequested):
                self.append(ev.JobChildExited(pid=child.pid, exit_status=child.process.returncode))
            raise
        interrupted: BaseException | None = None
        timed_out = threading.Event()
        timer = threading.Timer(timeout_s or 0.0, self._expire, args=(child, timed_out))
        timer.daemon = True
        if timeout_s is not None:
            timer.start()
        try:
            assert child.process.stdout is not None
            for line in child.process.stdout:
                if self.interrupt_event.is_set():
                    break
                if on_line is not None:
                    on_line(line.strip())
        except (Exception, errors.JobInterrupted) as exc:  # noqa: BLE001 - CancelRequested, JobLost or the on_line's own error
            interrupted = exc
        try:
            if self.interrupt_event.is_set() or interrupted is not None:
                returncode = child.terminate(self.kill_grace_s)
            else:
                returncode = child.process.wait()
        finally:
            timer.cancel()
            child.close()
        self._clear_child()
        if not isinstance(interrupted, JobLost) and not self._lost():
            self.append(ev.JobChildExited(pid=child.pid, exit_status=returncode))
        if interrupted is not None:
            raise interrupted
        self.check_cancelled()
        return ChildOutcome(returncode, stderr_path.read_text(errors="replace"), timed_out.is_set())

    def _expire(self, child: children.Child, timed_out: threading.Event) -> None:
        if child.process.poll() is None:
            timed_out.set()
            children.signal_group(child.pid, signal.SIGTERM)
            killer = threading.Timer(self.kill_grace_s, self._kill_if_alive, args=(child,))
            killer.daemon = True
            killer.start()

    def _clear_child(self) -> None:
        with self._child_lock:
            self._child = None

    def request_cancel(self) -> None:
        """Called by the worker's monitor when it sees ``job.cancel_requested``: mark the job
        cancelled and SIGTERM the running child at once (SIGKILL follows after the grace)."""
        self.cancel_event.set()
        self._interrupt(None)

    def request_timeout(self, timeout_s: float) -> None:
        """The job ran past its ``timeout_s`` (seconds): stop its child; the job handler raises :class:`TimedOut`."""
        self._interrupt(TimedOut(timeout_s))

    def request_release(self) -> None:
        """The worker shuts down: stop the child; the job handler raises :class:`Released`."""
        self._interrupt(Released())

    def abandon(self, cause: JobLost | None = None) -> None:
        """The job is no longer ours: stop the child; the job handler raises :class:`JobLost` and appends nothing."""
        self._interrupt(cause or JobLost("the job was taken over"), force=True)

    def _interrupt(self, cause: errors.JobInterrupted | None, *, force: bool = False) -> None:
        if cause is not None and (self._cause is None or force):
            self._cause = cause
        self.interrupt_event.set()
        with self._child_lock:
            child = self._child
        if child is not None and child.process.poll() is None:
            children.signal_group(child.pid, signal.SIGTERM)
            timer = threading.Timer(self.kill_grace_s, self._kill_if_alive, args=(child,))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _kill_if_alive(child: children.Child) -> None:
        if child.process.poll() is None:
            children.signal_group(child.pid, signal.SIGKILL)

    def cleanup(self, storage_delete: Callable[[str], None] | None = None) -> None:
        """Remove the workdir (if one was made) and, if given a delete function, every key in :attr:`written_keys`."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if storage_delete is not None:
            for key in self.written_keys:
                storage_delete(key)
            self.written_keys.clear()
