"""The worker: claims pending jobs, runs their pipelines in threads, watches for cancels.

One :class:`Worker` runs up to ``concurrency`` jobs at once. Its loop, once per poll
cycle (or at once when :meth:`Worker.wake` is called, as the embedded worker is on every
new job and cancel):

1. looks at the log for ``job.cancel_requested`` on its running jobs and SIGTERMs their
   children (:meth:`JobContext.request_cancel`);
2. claims the oldest pending jobs while it has capacity: ``job.claimed`` appended with
   the version it read, so of two workers racing for a job exactly one wins.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jobtape import errors
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.storage.base import Storage
from jobtape.worker import children, outage
from jobtape.worker.context import CancelRequested, JobContext, JobLost

__all__ = ["Pipeline", "Worker"]

log = logging.getLogger(__name__)

#: A pipeline runs one job type: given the context, the storage and the settings, it
#: returns the job's result (camelCase keys) or raises errors.MediaError.
Pipeline = Callable[[JobContext, Storage, Settings], dict[str, Any]]

_counter = itertools.count(1)


class Worker:
    """Claims and runs jobs.

    Args:
        repository: the job log.
        storage: blob storage for inputs and outputs.
        settings: poll interval, concurrency, kill grace, loudness target.
        pipelines: job type -> pipeline; defaults to :data:`jobtape.worker.pipelines.PIPELINES`.
        worker_id: defaults to ``host:pid:n``.
    """

    def __init__(
        self,
        repository: JobRepository,
        storage: Storage,
        settings: Settings,
        *,
        pipelines: Mapping[str, Pipeline] | None = None,
        worker_id: str | None = None,
    ) -> None:
        if pipelines is None:
            from jobtape.worker.pipelines import PIPELINES

            pipelines = PIPELINES
        self.repository = repository
        self.storage = storage
        self.settings = settings
        self.pipelines = dict(pipelines)
        self.worker_id = worker_id or f"{children.host_id()}:{os.getpid()}:{next(_counter)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._running: dict[str, tuple[JobContext, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: job ids this worker finished (completed, failed, cancelled or lost), in order.
        self.finished: list[str] = []

    # -- control ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the loop's next cycle now instead of after the poll interval."""
        self._wake.set()

    def on_append(self, result: AppendResult) -> None:
        """Repository callback for the embedded worker: wake on new jobs and on cancels."""
        if any(isinstance(r.event, (ev.JobCreated, ev.JobCancelRequested)) for r in result.recorded):
            self.wake()

    def start(self) -> None:
        """Run the loop in a background thread (the embedded mode)."""
        self._thread = threading.Thread(target=self.run, name=f"worker {self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop claiming, wait for running jobs to end (up to ``timeout_s`` seconds), stop the loop."""
        self._stop.set()
        self._wake.set()
        for _, thread in list(self._running.values()):
            thread.join(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self, *, until_idle: bool = False) -> None:
        """The loop; returns after :meth:`stop`, or with ``until_idle`` once no job is running or claimable."""
        backoff = outage.Backoff()
        while not self._stop.is_set():
            try:
                self.watch_cancels()
                claimed = self.claim_available()
            except errors.StoreUnavailable as exc:  # the store restarts: back off, then poll again
                delay = backoff.next()
                log.warning("worker %s: %s; next try in %.1f s", self.worker_id, exc.message, delay)
                self._stop.wait(delay)
                continue
            backoff.reset()
            if until_idle and not claimed and not self._running:
                return
            self._wake.wait(self.settings.poll_interval_s if not until_idle else 0.05)
            self._wake.clear()

    def running_job_ids(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._running)

    # -- one cycle -------------------------------------------------------------------------

    def watch_cancels(self) -> None:
        """Read the state of each running job; SIGTERM the children of those with a cancel request."""
        with self._lock:
            running = list(self._running.items())
        for job_id, (context, _) in running:
            if context.cancel_event.is_set():
                continue
            current = self.repository.load(job_id)
            if current is not None and current.cancel_requested:
                context.request_cancel()

    def claim_available(self) -> int:
        """Claim pending jobs up to the free capacity and start them; return how many were claimed."""
        claimed = 0
        while not self._stop.is_set():
            with self._lock:
                free = self.settings.concurrency - len(self._running)
            if free <= 0:
                break
            state = self.claim_one()
            if state is None:
                break
            claimed += 1
            self._start_job(state)
        return claimed

    def claim_one(self) -> job_state.JobState | None:
        """Claim the oldest pending job of a type this worker runs; ``None`` when there is none.

        Racing workers are resolved by the version guard: the loser moves to the next candidate.
        """
        types = sorted(self.pipelines)
        rows = self.repository.store.backend.query(
            f"SELECT job_id FROM jobs WHERE status = 'pending' AND job_type IN ({', '.join('?' * len(types))})"
            " ORDER BY created_position LIMIT 16",
            types,
        )
        for (job_id,) in rows:
            current = self.repository.load(job_id)
            if current is None or current.status != "pending":
                continue
            claim = ev.JobClaimed(worker_id=self.worker_id, attempt=current.attempt + 1)
            try:
                return self.repository.append(job_id, [claim], current, actor=self.worker_id).state
            except (errors.ConcurrencyError, errors.IllegalTransition):
                continue
            except errors.StoreUnavailable as exc:
                if exc.in_doubt:  # the claim may have landed: a claimed job must not be left unrun
                    landed = outage.resolve_in_doubt(self.repository, job_id, current, [claim], self.worker_id, stop=self._stop)
                    if landed is not None:
                        return landed
                raise
        return None

    def _start_job(self, state: job_state.JobState) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"jobtape-{state.job_id[:8]}-"))
        context = JobContext(
            self.repository, state, worker_id=self.worker_id, workdir=workdir, kill_grace_s=self.settings.kill_grace_s
        )
        thread = threading.Thread(target=self._run_job, args=(context,), name=f"job {state.job_id}", daemon=True)
        with self._lock:
            self._running[state.job_id] = (context, thread)
        thread.start()

    def _run_job(self, context: JobContext) -> None:
        try:
            self.execute(context)
        finally:
            with self._lock:
                self._running.pop(context.job_id, None)
            self.finished.append(context.job_id)
            self._wake.set()

    def execute(self, context: JobContext) -> None:
        """Run a claimed job's pipeline and append its terminal event (or nothing, if lost)."""
        pipeline = self.pipelines[context.state.job_type]
        try:
            try:
                result = pipeline(context, self.storage, self.settings)
                context.append(ev.JobCompleted(result=result))
                context.written_keys.clear()  # the result owns them now
            except errors.MediaError as exc:
                context.append(ev.JobFailed(error=exc.message, retryable=exc.retryable))
            except (CancelRequested, JobLost):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not the worker
                log.exception("job %s crashed", context.job_id)
                detail = "".join(traceback.format_exception_only(exc)).strip()
                context.append(ev.JobFailed(error=f"internal error: {detail}", retryable=False))
        except CancelRequested:
            context.cleanup(self.storage.delete)
            context.append(ev.JobCancelled())
        except JobLost:
            log.warning("job %s was taken over; stopped without appending", context.job_id)
        finally:
            context.cleanup(self.storage.delete)
