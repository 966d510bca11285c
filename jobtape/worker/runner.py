"""The worker: claims pending jobs, runs their job handlers in threads, watches over them.

One :class:`Worker` runs up to ``concurrency`` jobs at once, on as many long-lived job
threads (slots; made as needed, ended when the loop ends). When it starts it sweeps
this host's orphaned children (:meth:`Reaper.sweep_orphans`). Then its loop, once per
cycle (the poll interval, at most a sixth of the lease TTL; or at once when
:meth:`Worker.wake` is called, as the embedded worker is on every new job and cancel):

1. watches its running jobs (:meth:`Worker.watch_running`): SIGTERMs the children of
   those with a ``job.cancel_requested``, interrupts those past their timeout, and
   appends a ``job.heartbeat`` for those with nothing appended for a third of the lease TTL.
   It runs every :data:`WATCH_INTERVAL_S` (0.25 s) while jobs run, between cycles when
   the poll interval is longer (a cancel does not wait for a long poll interval) and not
   in every cycle when it is shorter (each watch reads every running job's row), and at
   once when the worker is woken;
2. every half lease TTL, reaps expired leases and sweeps orphans (:mod:`jobtape.worker.reaper`);
3. reads the oldest claimable pending jobs (``not_before`` passed) for its free slots, in
   one query with their states, and hands each to a free slot, which appends ``job.claimed``
   with a lease guarded by the version read, so of two workers racing for a job exactly one
   wins; the slot then runs the job. The slots' claims and terminal appends, made at the
   same moment, share one transaction (the SQLite backend's group commit). A worker alone
   takes the oldest; with other claiming workers, the oldest of its own share (created
   position modulo their number = its rank), so workers sharing one log do not race for
   the same rows (:meth:`Worker._candidates_for`).

:meth:`Worker.stop` is the graceful shutdown: no more claims, running jobs get the grace
period to finish, then their children are terminated and the jobs released
(``job.released``, no attempt used). Rules and a real takeover: docs/worker.md.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import itertools
import logging
import os
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from jobtape import blobs, clock, errors
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.storage.base import Storage
from jobtape.worker import children, messages, outage, policy, workdirs
from jobtape.worker.context import (
    CancelRequested,
    JobContext,
    JobLost,
    Released,
    TimedOut,
)
from jobtape.worker.reaper import Reaper

__all__ = ["JobHandler", "Worker"]

log = logging.getLogger(__name__)

#: A job handler runs one job type: given the context, the storage and the settings, it
#: returns the job's result (camelCase keys) or raises errors.JobFailed.
JobHandler = Callable[[JobContext, Storage, Settings], dict[str, Any]]

_counter = itertools.count(1)

#: Seconds between two looks at the running jobs (cancel requests, timeouts, heartbeats)
#: while any runs, when the poll interval is longer: one read of each running job's
#: ``jobs`` row. Bounds a separate worker's cancel latency (``bench/cancel_latency.py``).
WATCH_INTERVAL_S = 0.25

#: How many finished job ids :attr:`Worker.finished` keeps (for tests and tools).
FINISHED_KEPT = 1000

#: A worker taking jobs of other shares (its own is empty) reads them from a random offset
#: (in jobs, past those their owners read next) below a spread that starts at
#: :data:`SPREAD_MIN`, doubles per lost claim up to :data:`SPREAD_MAX`, and loses
#: 1/:data:`SPREAD_DECAY` per won claim, down to :data:`SPREAD_MIN`.
SPREAD_MIN = 256
SPREAD_MAX = 4096
SPREAD_DECAY = 1024

#: Seconds a worker that held a job is still counted among the claiming workers after it
#: holds none (between two jobs, or idle near the end of the queue), so that the shares
#: of the others do not change with every gap.
CLAIMERS_KEPT_S = 2.0

#: Seconds between two looks at the oldest claimable job of any share by a worker sharing the
#: queue with others: one still oldest at the next look (its owner did not take it: it cannot
#: run its type, or it stopped claiming) is taken, so no job waits on a share forever.
OLDEST_CHECK_S = 1.0

#: Candidates a busy worker reads at once for the slots that finish their jobs (one query
#: per this many jobs, not one per job), or the concurrency if more. A candidate another
#: actor changed meanwhile costs a lost claim (the version guard refuses it); after one, the
#: candidates read before it are dropped unclaimed (another worker reads the same rows).
READ_AHEAD = 8


class Worker:
    """Claims and runs jobs.

    Args:
        repository: the job log.
        storage: blob storage for inputs and outputs.
        settings: poll interval, concurrency, lease TTL, timeouts, retries, shutdown grace,
            kill grace, host id.
        handlers: job type -> job handler (an app's: :meth:`jobtape.App.job_handlers`). The worker
            claims only these types.
        limits: job type -> its own timeout and ``max_attempts`` (:class:`policy.TypeLimits`);
            a type without an entry uses the settings'.
        worker_id: defaults to ``host:pid:n`` (host: ``settings.host_id`` or the hostname).
        rng: jitter source for retry backoff; defaults to a fresh ``random.Random``.
    """

    def __init__(
        self,
        repository: JobRepository,
        storage: Storage,
        settings: Settings,
        *,
        handlers: Mapping[str, JobHandler],
        limits: Mapping[str, policy.TypeLimits] | None = None,
        worker_id: str | None = None,
        rng: policy.Random | None = None,
    ) -> None:
        self.repository = repository
        self.storage = storage
        self.settings = settings
        self.handlers = dict(handlers)
        self.limits = dict(limits or {})
        self.host_id = settings.host_id or children.host_id()
        self.worker_id = worker_id or f"{self.host_id}:{os.getpid()}:{next(_counter)}"
        self.rng = rng or random.Random()
        self.reaper = Reaper(
            repository,
            settings,
            actor=self.worker_id,
            host_id=self.host_id,
            live_worker_ids={self.worker_id},
            rng=self.rng,
            limits=self.limits,
        )
        #: This worker's job work folders under ``settings.work_parent`` (swept with the reaper).
        self.workdirs = workdirs.WorkArea(settings.work_parent)
        self.blob_sweeper = blobs.BlobSweeper(repository, storage, retention_s=settings.failed_upload_retention_s, actor=self.worker_id)
        self.upload_sweeper = blobs.OrphanUploadSweeper(repository, storage, grace_s=settings.orphan_upload_grace_s)
        self._wake = threading.Event()
        self._stop = threading.Event()  # no more claims
        self._halt = threading.Event()  # the loop ends
        self._grace_cut = False  # a plain flag: set from a signal handler, so it takes no lock
        self._next_reap = 0.0
        self._running: dict[str, tuple[JobContext, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a slot became free
        self._slots: list[threading.Thread] = []
        self._candidates: queue.SimpleQueue[job_state.JobState | None] = queue.SimpleQueue()
        self._busy = 0  # slots holding a candidate or running a job
        self._inflight: set[str] = set()  # their job ids
        self._spread = 0  # jobs of other shares are read from a random offset below this (_steal)
        self._spread_rng = random.Random()
        self._share = (1, 0)  # (claiming workers, this one's rank) at the last read of candidates
        self._oldest_id: str | None = None  # the oldest claimable job at the last look (_oldest_left)
        self._oldest_at = 0.0  # when (time.monotonic())
        self._claimers: dict[str, float] = {}  # worker id -> when last seen claiming (time.monotonic())
        self._read_ahead: collections.deque[job_state.JobState] = collections.deque()
        self._read_ahead_lock = threading.Lock()
        self._losses = 0  # lost claims so far: a candidate read before the last one is dropped
        self._read_at: dict[str, int] = {}  # candidate -> self._losses when it was read
        self._thread: threading.Thread | None = None
        #: ids of the last :data:`FINISHED_KEPT` jobs this worker finished (completed, failed,
        #: cancelled or lost), oldest first; bounded, so a worker that runs for months holds no more.
        self.finished: collections.deque[str] = collections.deque(maxlen=FINISHED_KEPT)
        #: how many jobs this worker finished since it started.
        self.finished_count = 0
        #: claims this worker appended, and claims it lost to another actor (the version guard
        #: or the fold refused its ``job.claimed``: another worker, or a cancel, got there
        #: first). ``jobtape worker`` prints both when it exits; ``bench/throughput.py`` reads them.
        self.claims_won = 0
        self.claims_lost = 0
        #: Set when the embedded loop (:meth:`start`) ended because the store refused the credentials.
        self.fatal_error: errors.StoreAuthRejected | None = None
        #: Called (from the loop's thread) with that error, e.g. to stop the API serving this worker.
        self.on_fatal: Callable[[errors.StoreAuthRejected], None] | None = None

    # -- control ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the loop's next cycle now instead of after the poll interval."""
        self._wake.set()

    def on_append(self, result: AppendResult) -> None:
        """Repository callback for the embedded worker: wake on new jobs and on cancels."""
        if any(isinstance(r.event, (ev.JobCreated, ev.JobCancelRequested)) for r in result.recorded):
            self.wake()

    def start(self) -> None:
        """Run the loop in a background thread (the embedded mode).

        If the store refuses the credentials the thread ends after :meth:`run` logged it
        and abandoned the running jobs; :attr:`fatal_error` holds the error then, and
        :attr:`on_fatal` is called with it.
        """
        self._thread = threading.Thread(target=self._run_in_thread, name=f"worker {self.worker_id}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the loop started by :meth:`start` ends (after :meth:`stop`, or a fatal error).

        Signal handlers still run while it waits (it joins in 0.5 s slices).

        Raises:
            errors.StoreAuthRejected: the store refused the credentials and the loop stopped.
        """
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)
        if self.fatal_error is not None:
            raise self.fatal_error

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except errors.StoreAuthRejected as exc:  # logged by run()
            self.fatal_error = exc
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: stop claiming, let running jobs finish, release the rest, stop the loop.

        Running jobs get ``grace_s`` seconds (default ``settings.shutdown_grace_s``; cut to
        zero by :meth:`cut_grace`) to finish while the loop keeps heartbeating them. Then each
        job still running has its child terminated (SIGTERM, SIGKILL after
        ``settings.kill_grace_s``) and ``job.released`` appended (no attempt used), or
        ``job.cancelled`` if a cancel came first. Returns when the job threads and the loop ended.
        """
        self._stop.set()
        self._wake.set()
        self._wait_slots_free((self.settings.shutdown_grace_s if grace_s is None else grace_s), cuttable=True)
        with self._lock:
            running = [context for context, _ in self._running.values()]
        for context in running:
            log.warning("worker %s: releasing job %s at shutdown", self.worker_id, context.job_id)
            context.request_release()
        self._wait_slots_free(self.settings.kill_grace_s + 30.0)
        self._halt.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30.0)
        self._end_slots()
        # Here too, not only when the loop ends: a signal that interrupted a join of the loop
        # thread (CPython < 3.13) makes join() return at once, and the daemon loop dies at exit.
        if not self.running_job_ids():
            self.workdirs.release()

    def cut_grace(self) -> None:
        """Cut the shutdown grace to zero (a second SIGTERM/SIGINT); safe to call from a signal handler."""
        self._grace_cut = True

    def _wait_slots_free(self, timeout_s: float, *, cuttable: bool = False) -> None:
        """Wait until no slot holds a job, at most ``timeout_s`` seconds (in 0.1 s slices, so
        signal handlers run; with ``cuttable``, :meth:`cut_grace` ends the wait)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._busy and not (cuttable and self._grace_cut) and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(0.1, left))

    def _end_slots(self) -> None:
        """End the idle job threads (called when the loop ends; :meth:`claim_available` makes new ones)."""
        with self._lock:
            if self._busy:
                return
            slots, self._slots = self._slots, []
        for _ in slots:
            self._candidates.put(None)
        for slot in slots:
            if slot is not threading.current_thread():
                slot.join(30.0)

    def run(self, *, until_idle: bool = False) -> None:
        """The loop; returns after :meth:`stop`, or with ``until_idle`` once no job is running or claimable.

        Raises:
            errors.StoreAuthRejected: the event store refused the credentials (a revoked or
                rotated token). Waiting cannot help and nothing more can be recorded, so the
                worker abandons its running jobs first (:meth:`abandon_all`: children
                terminated, temp files removed, no event appended); their leases expire and
                a worker with valid credentials takes them back.
        """
        try:
            self._loop(until_idle)
        except errors.StoreAuthRejected as exc:
            log.error("worker %s: %s; abandoning %d running job(s) and stopping", self.worker_id, exc.message, len(self.running_job_ids()))
            self.abandon_all(str(exc))
            raise
        finally:
            if not self.running_job_ids():
                self._end_slots()
                self.workdirs.release()

    def abandon_all(self, reason: str) -> None:
        """Stop every running job without appending anything: children terminated (SIGTERM,
        SIGKILL after ``settings.kill_grace_s``), workdirs and partial output removed.

        For when the log cannot be written at all; the jobs keep their lease until it
        expires, then the reaper of any worker returns them to pending. Returns when the job
        threads ended (or after ``kill_grace_s + 30`` seconds each).
        """
        self._stop.set()
        self._halt.set()
        with self._lock:
            running = [context for context, _ in self._running.values()]
        for context in running:
            context.abandon(JobLost(f"abandoned: {reason}"))
        self._wait_slots_free(self.settings.kill_grace_s + 30.0)

    def _loop(self, until_idle: bool) -> None:
        """Claim every poll interval (or at once when woken); watch running jobs every
        :data:`WATCH_INTERVAL_S` (and at once when woken), so a cancel reaches a separate
        worker's child within about that, whatever the poll interval: with a poll interval
        shorter than that, not every cycle (each watch reads every running job's row)."""
        backoff = outage.Backoff()
        cycle_s = min(self.settings.poll_interval_s, self.settings.lease_ttl_s / 6)
        next_claim = next_watch = 0.0
        while not self._halt.is_set():
            claimed = 0
            self._wake.clear()  # before the work: a wake() during it makes the wait below return at once
            try:
                if until_idle or time.monotonic() >= next_watch:  # not every short poll cycle: a read per running job
                    next_watch = time.monotonic() + WATCH_INTERVAL_S
                    self.watch_running()
                self._reap_if_due()
                if until_idle or time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + cycle_s
                    claimed = self.claim_available()
            except errors.StoreUnavailable as exc:  # the store restarts: back off, then poll again
                delay = backoff.next()
                log.warning("worker %s: %s; next try in %.1f s", self.worker_id, exc.message, delay)
                self._halt.wait(delay)
                continue
            backoff.reset()
            if (
                until_idle
                and not claimed
                and not self._busy
                and not self.repository.claimable_states(self.handlers, clock.utcnow(), limit=1)
            ):
                return  # none left to claim, in any worker's share
            if until_idle and self._stop.is_set() and not self._busy:
                return
            if until_idle:
                wait_s = 0.05
            elif self._busy:
                wait_s = min(WATCH_INTERVAL_S, max(0.0, next_claim - time.monotonic()))
            else:
                wait_s = max(0.0, next_claim - time.monotonic())
            if self._wake.wait(wait_s):  # a new job, a cancel, a finished job or stop(): claim and watch now
                next_claim = next_watch = 0.0

    def _reap_if_due(self) -> None:
        """Every half lease TTL (and in the first cycle): sweep orphans, reap expired leases, then
        sweep work folders (dead workers' folders, and its own of jobs it no longer runs)."""
        if time.monotonic() < self._next_reap:
            return
        self._next_reap = time.monotonic() + self.settings.lease_ttl_s / 2
        report = self.reaper.sweep_orphans()
        if report.killed or report.reaped:
            log.warning("worker %s: orphan sweep killed %s, took back %s", self.worker_id, report.killed, report.reaped)
        self.reaper.reap_expired()
        self.workdirs.sweep(keep=self.running_job_ids)  # after the orphan sweep killed the dead workers' children
        self.blob_sweeper.sweep()  # failed-upload retention (jobtape.blobs)
        self.upload_sweeper.sweep_if_due()  # uploads of a process killed before their job.created (jobtape.blobs)
        self.storage.sweep_partial_writes()  # temporary files of a killed process's writes

    def running_job_ids(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._running)

    # -- one cycle -------------------------------------------------------------------------

    def watch_running(self) -> None:
        """For each running job: SIGTERM its children on a cancel request, abandon it if another
        actor took it over (:meth:`JobContext.observe`), interrupt it past its timeout
        (:func:`policy.job_timeout_s`), append a heartbeat when one is due."""
        with self._lock:
            running = list(self._running.items())
        for job_id, (context, _) in running:
            context.observe(self.repository.load(job_id))  # a cancel request, or a takeover
            now = clock.utcnow()
            timeout_s = policy.job_timeout_s(context.state.job_type, self.settings, self.limits.get(context.state.job_type))
            if not context.interrupt_event.is_set() and policy.timed_out(context.claimed_at, now, timeout_s):
                log.warning("worker %s: job %s timed out after %g s", self.worker_id, job_id, timeout_s)
                context.request_timeout(timeout_s)
            context.heartbeat(now, self.settings.lease_ttl_s)

    def claim_available(self) -> int:
        """Hand claimable jobs to the free slots, which claim and run them; return how many were handed out.

        One query reads the candidates with their states (:meth:`JobRepository.claimable_states`),
        skipping those a slot already holds; each slot appends its claim guarded by the version
        read (:meth:`_claim`).
        """
        if self._stop.is_set():
            return 0
        with self._lock:
            free = self.settings.concurrency - self._busy
            held = set(self._inflight)
        if free <= 0:
            return 0
        candidates = self._candidates_for(free, held)
        with self._lock:
            for state in candidates:
                self._inflight.add(state.job_id)
            self._busy += len(candidates)
            while len(self._slots) < min(self.settings.concurrency, self._busy):
                slot = threading.Thread(target=self._slot, name=f"worker {self.worker_id} slot {len(self._slots) + 1}", daemon=True)
                self._slots.append(slot)
                slot.start()
        for state in candidates:
            self._candidates.put(state)
        return len(candidates)

    def _candidates_for(self, free: int, held: set[str]) -> list[job_state.JobState]:
        """Up to ``free`` claimable jobs not in ``held`` (only one before this worker's first won claim).

        Alone (no other worker held a job of its types under a live lease in the last
        :data:`CLAIMERS_KEPT_S`), the oldest. With others (:meth:`JobRepository.claimers`,
        read each time), the oldest of its own share: the jobs whose created position modulo
        the number of claiming workers (itself counted) is its rank among their sorted ids,
        so workers that agree on who claims read disjoint rows; when that count or its rank
        changes, the candidates it read for the old share are dropped unclaimed. When its
        share holds none, it takes jobs of the other shares that lie past the ones their
        owners read next (:meth:`_steal`), and the oldest job of any share once it stayed the
        oldest for :data:`OLDEST_CHECK_S` (:meth:`_oldest_left`); with none of those and no
        job held, one of the newest (:meth:`_newest_left`).
        """
        now = clock.utcnow()
        if not self.claims_won:  # until its first claim lands, other workers do not count it
            free = min(free, 1)
        size = free + len(held)
        seen = self.repository.claimers(self.handlers, now)
        seen_at = time.monotonic()
        with self._lock:
            for worker_id in [*seen, self.worker_id]:
                self._claimers[worker_id] = seen_at
            for worker_id in [w for w, at in self._claimers.items() if seen_at - at > CLAIMERS_KEPT_S]:
                del self._claimers[worker_id]
            claimers = sorted(self._claimers)
            share = (len(claimers), claimers.index(self.worker_id))
            if share != self._share:
                self._share = share
                self._losses += 1  # drop the candidates read for the old share
        if share[0] == 1:
            found = self.repository.claimable_states(self.handlers, now, limit=size)
        else:
            found = self.repository.claimable_states(self.handlers, now, limit=size, partition=share)
            found = [*self._oldest_left(now), *found]
            if not any(state.job_id not in held for state in found):
                found = self._steal(size, now, share[0])
                if not found and not held:
                    found = self._newest_left(now, share[0])
        chosen: dict[str, job_state.JobState] = {}
        for state in found:
            if state.job_id not in held and len(chosen) < free:
                chosen.setdefault(state.job_id, state)
        with self._lock:
            for job_id in chosen:
                self._read_at[job_id] = self._losses
        return list(chosen.values())

    def _steal(self, size: int, now: dt.datetime, claimers: int) -> list[job_state.JobState]:
        """Up to ``size`` claimable jobs of any share from past the oldest ``2 * claimers * size``
        (which their owners read next), at a random offset below the spread (:data:`SPREAD_MIN` at
        least) beyond them, or below half that offset while nothing is there; none when no job lies
        past them (the last jobs are left to their owners, and to :meth:`_oldest_left`)."""
        with self._lock:
            self._spread = max(self._spread, SPREAD_MIN)
            spread = self._spread
        owners = 2 * claimers * size
        offset = self._spread_rng.randrange(spread)
        found = self.repository.claimable_states(self.handlers, now, limit=size, offset=owners + offset)
        while not found and offset:  # fewer claimable jobs than the offset: look below it
            offset = self._spread_rng.randrange(offset // 2) if offset > 1 else 0
            found = self.repository.claimable_states(self.handlers, now, limit=size, offset=owners + offset)
        return found

    def _newest_left(self, now: dt.datetime, claimers: int) -> list[job_state.JobState]:
        """For a worker with nothing to run (its share empty, no job held) near the end of the
        queue: one of the ``claimers`` newest claimable jobs, at random, or none. Their owners
        read their shares oldest first, so they reach it last: the first worker done does not
        stand idle while the others still have several jobs each (the drain tail; shares by
        created position are uneven when other appends interleave with the creates). A
        candidate its owner had read ahead costs the owner one lost claim."""
        newest = self.repository.claimable_states(self.handlers, now, limit=claimers, newest_first=True)
        return [self._spread_rng.choice(newest)] if newest else []

    def _oldest_left(self, now: dt.datetime) -> list[job_state.JobState]:
        """The oldest claimable job of any share if it already was at the previous look, at least
        :data:`OLDEST_CHECK_S` ago (its owner did not take it: it cannot run its type, or it stopped
        claiming); else nothing. Looks at most once per :data:`OLDEST_CHECK_S`."""
        with self._lock:
            seen_at = time.monotonic()
            if seen_at - self._oldest_at < OLDEST_CHECK_S:
                return []
            self._oldest_at, previous = seen_at, self._oldest_id
        oldest = self.repository.claimable_states(self.handlers, now, limit=1)
        with self._lock:
            self._oldest_id = oldest[0].job_id if oldest else None
        return [state for state in oldest if state.job_id == previous]

    def _slot(self) -> None:
        """A job thread: claims and runs the candidates the loop hands it, until handed ``None``.

        After each job it takes the next candidate itself (:meth:`_next_candidate`), so a
        busy worker's jobs follow each other without a round trip through the loop; it
        returns to waiting for the loop when no job is claimable.
        """
        candidate = self._candidates.get()
        while candidate is not None:
            try:
                if not self._stop.is_set() and self._read_at.get(candidate.job_id, 0) == self._losses:
                    claimed = self._claim(candidate)
                    if claimed is not None:
                        self._run_job(claimed)
            except Exception:  # a bug must not end the slot with the slot counted busy
                log.exception("worker %s: job %s", self.worker_id, candidate.job_id)
            finally:
                with self._lock:
                    self._inflight.discard(candidate.job_id)
                    self._read_at.pop(candidate.job_id, None)
            try:
                candidate = self._next_candidate()
            except Exception:  # the loop's next read meets the same error and handles it
                log.exception("worker %s: reading the next candidate", self.worker_id)
                candidate = None
            if candidate is None:
                with self._changed:
                    self._busy -= 1
                    if not self._busy:
                        self._changed.notify_all()
                self._wake.set()  # the loop may hand out more at once
                candidate = self._candidates.get()

    def _next_candidate(self) -> job_state.JobState | None:
        """The next candidate for a slot that just finished a job: one of those read ahead, or of
        a new read (:data:`READ_AHEAD`); ``None`` once
        the worker stops, when nothing is claimable, or when the read fails."""
        if self._stop.is_set():
            return None
        with self._read_ahead_lock:
            if not self._read_ahead:
                with self._lock:
                    held = set(self._inflight)
                try:
                    found = self._candidates_for(max(READ_AHEAD, self.settings.concurrency), held)
                except errors.JobtapeError:  # the loop's next query meets it too, and waits
                    return None
                with self._lock:
                    self._inflight.update(state.job_id for state in found)
                self._read_ahead.extend(found)
            return self._read_ahead.popleft() if self._read_ahead else None

    def _claim(self, current: job_state.JobState) -> job_state.JobState | None:
        """Append ``job.claimed`` guarded by ``current``'s version; the claimed state, or ``None`` if
        another actor got there first (or the store failed: the loop's next query meets it too)."""
        job_id = current.job_id
        claim = ev.JobClaimed(worker_id=self.worker_id, attempt=current.attempt + 1, lease_ttl_s=self.settings.lease_ttl_s)
        try:
            won = self.repository.append(job_id, [claim], current, actor=self.worker_id).state
        except (errors.ConcurrencyError, errors.IllegalTransition):
            with self._lock:
                self.claims_lost += 1
                self._losses += 1
                self._spread = min(max(2 * self._spread, SPREAD_MIN), SPREAD_MAX)
            return None
        except errors.StoreUnavailable as exc:
            landed = None
            if exc.in_doubt:  # the claim may have landed: a claimed job must not be left unrun
                landed = outage.resolve_in_doubt(self.repository, job_id, current, [claim], self.worker_id, stop=self._stop)
            if landed is None:
                log.warning("worker %s: claim of job %s not made: %s", self.worker_id, job_id, exc.message)
                return None
            won = landed
        except errors.StoreAuthRejected as exc:
            log.error("worker %s: claim of job %s refused: %s", self.worker_id, job_id, exc.message)
            return None
        with self._lock:
            self.claims_won += 1
            self._spread = max(self._spread - self._spread // SPREAD_DECAY, SPREAD_MIN) if self._spread else 0
        return won

    def _run_job(self, state: job_state.JobState) -> None:
        context = JobContext(
            self.repository,
            state,
            worker_id=self.worker_id,
            workdir=functools.partial(self.workdirs.job_dir, state.job_id),  # made at the first use
            kill_grace_s=self.settings.kill_grace_s,
            host_id=self.host_id,
        )
        with self._lock:
            self._running[state.job_id] = (context, threading.current_thread())
        try:
            self.execute(context)
        finally:
            with self._lock:
                self._running.pop(context.job_id, None)
                self.finished.append(context.job_id)
                self.finished_count += 1

    def execute(self, context: JobContext) -> None:
        """Run a claimed job's handler and append its terminal event (or nothing, if lost).

        Outcomes: a result -> ``job.completed``; a cancel -> partial output removed, then
        ``job.cancelled``; a timeout -> ``job.failed`` ``timed out after N s``; a shutdown
        -> ``job.released``; a failure -> :func:`policy.failure_events` (a retryable one is
        retried with backoff until ``max_attempts``); a takeover -> nothing.
        """
        try:
            outcome = self._run_handler(context)
            for _ in range(3):  # a cancel or a takeover may overtake the terminal append
                try:
                    self._finish(context, outcome)
                    return
                except (CancelRequested, JobLost) as exc:
                    outcome = exc
        except errors.StoreAuthRejected as exc:  # the loop sees it too, and stops the worker
            log.error("job %s: its outcome cannot be recorded: %s", context.job_id, exc.message)
            context.abandon(JobLost(f"abandoned: {exc}"))
        finally:
            context.cleanup(self.storage.delete)

    def _run_handler(self, context: JobContext) -> dict[str, Any] | Exception | errors.JobInterrupted:
        try:
            return self.handlers[context.state.job_type](context, self.storage, self.settings)
        except (CancelRequested, JobLost, TimedOut, Released, errors.StorageError, errors.JobFailed) as exc:
            return exc
        except errors.StoreAuthRejected:
            raise  # not the job's fault: nothing can be appended (see execute)
        except Exception as exc:  # a bug must fail the job, not the worker
            log.exception("job %s crashed", context.job_id)
            return exc

    def _settings_of(self, job_type: str) -> Settings:
        """The settings with the job type's own ``max_attempts``, if it has one (:func:`policy.type_settings`)."""
        return policy.type_settings(self.settings, self.limits.get(job_type))

    def _client_text(self, context: JobContext, message: str) -> str:
        """A failure's message as recorded in the log (which the API serves): no server paths.

        The full message goes to this process's log first (:func:`messages.scrub_paths`).
        """
        log.warning("job %s failed: %s", context.job_id, message)
        roots: list[tuple[str | os.PathLike[str], str]] = [
            (self.settings.work_parent, "<work-dir>"),
            (self.settings.data_dir, "<data-dir>"),
        ]
        if context.workdir_made is not None:
            roots.append((context.workdir_made, "<workdir>"))
        return messages.scrub_paths(message, roots)

    def _finish(self, context: JobContext, outcome: dict[str, Any] | Exception | errors.JobInterrupted) -> None:
        if isinstance(outcome, JobLost):
            log.warning("job %s is no longer ours; stopped without appending (%s)", context.job_id, outcome)
            return
        if isinstance(outcome, dict):
            owned = list(dict.fromkeys((*context.written_keys, *context.owned_outputs)))
            context.append(ev.JobCompleted(result=outcome, owned_keys=owned or None, download_key=context.download_key))
            context.written_keys.clear()  # the result owns them now
            return
        context.cleanup(self.storage.delete)  # partial output goes before the terminal event
        events: list[ev.Event]
        match outcome:
            case CancelRequested():
                events = [ev.JobCancelled()]
            case TimedOut():
                events = [ev.JobFailed(error=str(outcome), retryable=False)]
            case Released():
                events = [ev.JobReleased(worker_id=self.worker_id, reason="shutdown")]
            case errors.JobFailed():
                events = policy.failure_events(
                    context.state,
                    self._client_text(context, outcome.message),
                    retryable=outcome.retryable,
                    now=clock.utcnow(),
                    settings=self._settings_of(context.state.job_type),
                    rng=self.rng,
                )
            case errors.StorageError():  # e.g. the bucket unreachable: retried with backoff when it may pass
                events = policy.failure_events(
                    context.state,
                    self._client_text(context, f"storage failed: {outcome.message}"),
                    retryable=outcome.retryable,
                    now=clock.utcnow(),
                    settings=self._settings_of(context.state.job_type),
                    rng=self.rng,
                )
            case _:
                detail = "".join(traceback.format_exception_only(outcome)).strip()
                events = [ev.JobFailed(error=self._client_text(context, f"internal error: {detail}"), retryable=False)]
        context.append(*events)
