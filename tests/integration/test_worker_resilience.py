"""The worker surviving crashes, restarts and its own children, on real SQLite, ffmpeg and processes.

Leases and heartbeats, retries with backoff, timeouts, the orphan sweep of a dead
worker's ffmpeg, and the graceful shutdown of a ``jobtape worker`` process.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import configs  # tests/ is on sys.path
import pytest
from test_worker import blobs, upload, wait_for

from jobtape.audio import media
from jobtape.audio.errors import MediaError
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children
from jobtape.worker.context import JobContext

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def types(repository: JobRepository, job_id: str) -> list[str]:
    return [r.type for r in repository.store.read_stream(job_id)]


def test_heartbeats_keep_a_quiet_job_leased_and_stop_when_it_appends(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage
) -> None:
    release = threading.Event()

    def quiet(context: JobContext, storage_: Any, settings: Settings) -> dict[str, Any]:
        release.wait(30)  # a job handler step that appends nothing (a long upload, say)
        return {"ok": True}

    worker = Worker(repository, storage, Settings(data_dir=tmp_path, lease_ttl_s=1.5, poll_interval_s=0.05), handlers={"ingest": quiet})
    job_id = repository.create("ingest", {}).state.job_id
    worker.start()
    try:
        wait_for(lambda: types(repository, job_id).count("job.heartbeat") >= 3, timeout_s=10, what="three heartbeats")
        state = repository.get(job_id)
        assert state.status == "processing" and state.lease_expires_at is not None
        stream = repository.store.read_stream(job_id)
        beats = [r.recorded_at for r in stream if r.type in ("job.claimed", "job.heartbeat")]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats)]
        assert all(0.49 <= gap < 1.5 for gap in gaps), gaps  # after TTL/3, before the TTL
        release.set()
        wait_for(lambda: repository.get(job_id).status == "complete", timeout_s=10, what="completion")
    finally:
        release.set()
        worker.stop(grace_s=5)
    assert all(r.actor == worker.worker_id for r in repository.store.read_stream(job_id)[1:])


def test_a_retryable_failure_is_retried_with_backoff_then_fails_after_max_attempts(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage
) -> None:
    def flaky(context: JobContext, storage_: Any, settings: Settings) -> dict[str, Any]:
        raise MediaError("download reset by peer", retryable=True)

    settings = Settings(data_dir=tmp_path, max_attempts=3, backoff_base_s=0.2, backoff_cap_s=0.3, poll_interval_s=0.02)
    job_id = repository.create("ingest", {}).state.job_id
    worker = Worker(repository, storage, settings, handlers={"ingest": flaky})
    worker.start()
    try:
        wait_for(lambda: repository.get(job_id).finished, timeout_s=15, what="the job to fail")
    finally:
        worker.stop(grace_s=5)
    stream = repository.store.read_stream(job_id)
    assert [r.type for r in stream] == [
        "job.created",
        "job.claimed",
        "job.retry_scheduled",
        "job.claimed",
        "job.retry_scheduled",
        "job.claimed",
        "job.failed",
    ]
    for scheduled, claim in ((stream[2], stream[3]), (stream[4], stream[5])):
        assert isinstance(scheduled.event, ev.JobRetryScheduled) and scheduled.event.not_before is not None
        assert claim.recorded_at >= scheduled.event.not_before  # never claimed early
        # equal jitter: at least half of min(cap, base) = 0.1 s from the decision, which precedes recorded_at by
        # the append's own time (the batch is built in the write turn): a margin for that, not for the backoff
        assert (scheduled.event.not_before - scheduled.recorded_at).total_seconds() >= 0.08
    state = repository.get(job_id)
    assert (state.status, state.attempt) == ("failed", 3)
    assert state.error == "download reset by peer (gave up after 3 attempts)"


def test_a_job_past_its_timeout_has_its_ffmpeg_killed_and_fails(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    settings, settings_audio = configs.split(
        data_dir=tmp_path, ffmpeg_readrate=1.0, timeout_ingest_s=1.5, poll_interval_s=0.05, kill_grace_s=2
    )
    job_id = upload(repository, storage, media_dir / "music_strings.ogg")  # 45 s at real time
    Worker(repository, storage, settings, settings_audio).run(until_idle=True)
    state = repository.get(job_id)
    assert (state.status, state.error) == ("failed", "timed out after 1.5 s")
    assert (state.updated_at - state.created_at).total_seconds() < 6
    stream = repository.store.read_stream(job_id)
    started = [r.event for r in stream if isinstance(r.event, ev.JobChildStarted)]
    exited = [r.event for r in stream if isinstance(r.event, ev.JobChildExited)]
    assert [e.pid for e in exited] == [s.pid for s in started] and exited[-1].exit_status not in (0, None)  # ffmpeg exits 255 on SIGTERM
    assert not any(children.process_alive(s.pid, s.started_at_ticks) for s in started)
    assert blobs(storage, "assets") == []


def test_a_separate_worker_answers_a_cancel_between_its_polls(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    """Nothing wakes this worker (as with a worker in another process): it sees the cancel by
    watching its running job every WATCH_INTERVAL_S, long before its next claim cycle (5 s)."""
    settings, settings_audio = configs.split(data_dir=tmp_path, ffmpeg_readrate=1.0, poll_interval_s=60.0, kill_grace_s=2)
    job_id = upload(repository, storage, media_dir / "music_strings.ogg")  # 45 s at real time
    worker = Worker(repository, storage, settings, settings_audio)
    worker.start()
    try:
        wait_for(lambda: types(repository, job_id).count("job.child_started") >= 2, timeout_s=10, what="the loudnorm ffmpeg to start")
        repository.execute(job_id, lambda s: [ev.JobCancelRequested(reason="test")], actor="api")
        wait_for(lambda: repository.get(job_id).finished, timeout_s=3, what="the cancel, well before the next poll")
    finally:
        worker.stop(grace_s=5)
    assert repository.get(job_id).status == "cancelled"
    assert types(repository, job_id)[-2:] == ["job.child_exited", "job.cancelled"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _orphaned_job(
    repository: JobRepository, storage: LocalStorage, media_dir: Path, tmp_path: Path, *, cancel: bool
) -> tuple[str, children.Child]:
    """A job whose worker (on this host) died while its ffmpeg runs on, like after a SIGKILL."""
    job_id = upload(repository, storage, media_dir / "speech_ljspeech.wav")
    ghost = f"{children.host_id()}:{_dead_pid()}:1"
    state = repository.get(job_id)
    state = repository.append(job_id, [ev.JobClaimed(worker_id=ghost, lease_ttl_s=3600)], state, actor=ghost).state
    argv = [media.ffmpeg_executable(), "-nostdin", "-readrate", "1", "-i", str(media_dir / "music_strings.ogg"), "-f", "null", "-"]
    child = children.start_child(argv, stderr_path=tmp_path / "orphan.stderr")
    started = ev.JobChildStarted(pid=child.pid, argv=argv, host_id=children.host_id(), started_at_ticks=child.started_at_ticks)
    state = repository.append(job_id, [ev.JobStageChanged(stage="measuring"), started], state, actor=ghost).state
    if cancel:
        repository.append(job_id, [ev.JobCancelRequested(reason="while the worker was down")], state, actor="api")
    return job_id, child


def _ended_by_the_sweep(orphan: children.Child) -> None:
    """The orphan (45 s of work) was already gone before the test's own clean-up ran.

    How ffmpeg ends on SIGTERM depends on when it arrives, which is up to the scheduler:
    before ffmpeg installs its handler it dies of the signal (-15); while it opens its input
    the handler turns the open into AVERROR_EXIT, which ffmpeg's main() reports as 0; once it
    transcodes it exits 255. All three are the sweep's SIGTERM (measured: -15 within ~5 ms
    of the start, 255 after ~10 ms; 0 seen about once in 70 runs of this test).
    """
    assert orphan.process.poll() in (-signal.SIGTERM, 0, 255), orphan.process.returncode


def test_a_starting_worker_kills_a_dead_workers_ffmpeg_and_takes_the_job_back(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    job_id, orphan = _orphaned_job(repository, storage, media_dir, tmp_path, cancel=False)
    settings = Settings(data_dir=tmp_path, backoff_base_s=0.05, backoff_cap_s=0.1, kill_grace_s=2, poll_interval_s=0.02)
    worker = Worker(repository, storage, settings)
    worker.start()
    try:
        wait_for(lambda: repository.get(job_id).finished, timeout_s=30, what="the job to be taken back and completed")
        _ended_by_the_sweep(orphan)  # killed by the sweep, long before its 45 s
    finally:
        worker.stop(grace_s=5)
        orphan.terminate(1.0)
    assert types(repository, job_id)[:7] == [
        "job.created",
        "job.claimed",
        "job.stage_changed",
        "job.child_started",
        "job.lease_expired",
        "job.child_exited",
        "job.claimed",
    ]
    state = repository.get(job_id)
    assert (state.status, state.attempt, state.orphaned_children) == ("complete", 2, ())


def test_a_cancel_that_arrived_while_the_worker_was_down_is_answered_at_start(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    job_id, orphan = _orphaned_job(repository, storage, media_dir, tmp_path, cancel=True)
    try:
        Worker(repository, storage, Settings(data_dir=tmp_path, kill_grace_s=2)).run(until_idle=True)
        _ended_by_the_sweep(orphan)
    finally:
        orphan.terminate(1.0)
    assert types(repository, job_id)[-4:] == ["job.cancel_requested", "job.lease_expired", "job.child_exited", "job.cancelled"]
    state = repository.get(job_id)
    assert (state.status, state.finished, state.stage) == ("cancelled", True, None)


def test_a_reused_pid_is_never_killed(tmp_path: Path, repository: JobRepository, storage: LocalStorage) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        job_id = repository.create("ingest", {}).state.job_id
        ghost = f"{children.host_id()}:{_dead_pid()}:1"
        state = repository.append(job_id, [ev.JobClaimed(worker_id=ghost, lease_ttl_s=3600)], repository.get(job_id), actor=ghost).state
        ticks = children.process_start_ticks(bystander.pid)
        assert ticks is not None
        old_child = ev.JobChildStarted(
            pid=bystander.pid, argv=["ffmpeg"], host_id=children.host_id(), started_at_ticks=ticks - 1
        )  # same pid, another start time
        repository.append(job_id, [old_child], state, actor=ghost)
        worker = Worker(repository, storage, Settings(data_dir=tmp_path), handlers={"ingest": lambda c, s, t: {}})
        report = worker.reaper.sweep_orphans()
        assert report.killed == [] and report.reaped == [job_id]
        assert bystander.poll() is None
        assert types(repository, job_id)[-2:] == ["job.lease_expired", "job.child_exited"]
    finally:
        bystander.kill()
        bystander.wait()


def _worker_process(data_dir: Path, *extra: str, readrate: str = "1") -> subprocess.Popen[bytes]:
    with open(data_dir / "worker.stderr", "ab") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobtape",
                "worker",
                "--data-dir",
                str(data_dir),
                "--poll-interval",
                "0.05",
                "--ffmpeg-readrate",
                readrate,
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _stderr(data_dir: Path) -> str:
    return (data_dir / "worker.stderr").read_text(errors="replace")


def _wait_loudnorm(repository: JobRepository, job_id: str, data_dir: Path) -> ev.JobChildStarted:
    def started() -> ev.JobChildStarted | None:
        for r in repository.store.read_stream(job_id):
            if isinstance(r.event, ev.JobChildStarted) and "loudnorm" in " ".join(r.event.argv):
                return r.event
        return None

    try:
        return wait_for(started, timeout_s=60, what="the loudnorm ffmpeg")  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; events {types(repository, job_id)}; worker stderr:\n{_stderr(data_dir)}") from exc


@pytest.mark.parametrize("signals", [1, 2], ids=["sigterm-after-grace", "second-sigterm-cuts-grace"])
def test_sigterm_mid_job_releases_it_and_another_worker_completes_it(
    tmp_path: Path, repository: JobRepository, media_dir: Path, signals: int
) -> None:
    storage = LocalStorage(tmp_path / "storage")  # the data dir's storage, shared with the worker process
    job_id = upload(repository, storage, media_dir / "speech_ljspeech.wav")  # 9.7 s at real time
    process = _worker_process(tmp_path, "--grace", "0.3" if signals == 1 else "60")
    try:
        child = _wait_loudnorm(repository, job_id, tmp_path)
        process.send_signal(signal.SIGTERM)
        if signals == 2:
            wait_for(lambda: "stopping" in _stderr(tmp_path), timeout_s=10, what="the first signal to be handled")
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not children.process_alive(child.pid, child.started_at_ticks)
    stream = repository.store.read_stream(job_id)
    assert [r.type for r in stream][-2:] == ["job.child_exited", "job.released"]
    assert (stream[-1].recorded_at - stream[0].recorded_at).total_seconds() < 9  # before the job could finish
    state = repository.get(job_id)
    assert (state.status, state.attempt, state.worker_id) == ("pending", 0, None)

    Worker(repository, storage, Settings(data_dir=tmp_path)).run(until_idle=True)
    state = repository.get(job_id)
    assert (state.status, state.attempt) == ("complete", 1)
    claims = [r.event for r in repository.store.read_stream(job_id) if isinstance(r.event, ev.JobClaimed)]
    assert len(claims) == 2 and claims[0].worker_id != claims[1].worker_id


def test_sigterm_lets_a_running_job_finish_within_the_grace(tmp_path: Path, repository: JobRepository, media_dir: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    job_id = upload(repository, storage, media_dir / "awkward_short_id3v1.mp3")  # 4.2 s: about 1 s per pass at 4x
    process = _worker_process(tmp_path, "--grace", "30", readrate="4")
    try:
        _wait_loudnorm(repository, job_id, tmp_path)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert types(repository, job_id)[-1] == "job.completed"
    assert "job.released" not in types(repository, job_id)


def test_os_pid_helpers_treat_zombies_as_gone(tmp_path: Path) -> None:
    child = children.start_child([sys.executable, "-c", "pass"], stderr_path=tmp_path / "z.stderr")
    wait_for(lambda: not children.process_alive(child.pid, child.started_at_ticks), timeout_s=10, what="exit")
    assert Path(f"/proc/{child.pid}").exists()  # not reaped yet: a zombie
    assert children.kill_if_ours(child.pid, child.started_at_ticks or 0, 1.0) is None
    child.process.wait()
