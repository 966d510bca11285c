"""Job work folders of killed workers are swept; a live worker's never are (real processes, kill -9, ffmpeg)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_worker import upload, wait_for

from jobtape import errors
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.eventlog import events as ev
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage
from jobtape.worker import children, workdirs

#: A process that makes a WorkArea with one job folder under argv[1], prints the job
#: folder, then holds its lock until its stdin closes (or it is killed).
_HOLDER = (
    "import sys; from pathlib import Path; from jobtape.worker import workdirs;"
    "area = workdirs.WorkArea(Path(sys.argv[1])); print(area.job_dir('f' * 32), flush=True); sys.stdin.read()"
)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed (SIGKILL) and reaped afterwards if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _holder(parent: Path, processes: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(parent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    assert process.stdout is not None
    job_dir = Path(process.stdout.readline().strip())
    assert job_dir.is_dir() and job_dir.parent.name.startswith(f"worker-{process.pid}-")
    return process, job_dir


def _job_dirs(work: Path, pid: int, job_id: str) -> list[Path]:
    return sorted(work.glob(f"worker-{pid}-*/{job_id}-*"))


def _worker(tmp_path: Path, work: Path, processes: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    env = {**os.environ, "JOBTAPE_WORK_DIR": str(work)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobtape",
            "worker",
            "--data-dir",
            str(tmp_path),
            "--poll-interval",
            "0.05",
            "--lease-ttl",
            "60",
            "--grace",
            "0",
            "--ffmpeg-readrate",
            "1",
            "--backoff-base",
            "60",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.append(process)
    return process


def test_a_killed_workers_folder_is_swept_by_the_next_worker_and_a_live_ones_is_not(
    tmp_path: Path,
    repository: JobRepository,
    storage: LocalStorage,
    media_dir: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    work = tmp_path / "work"
    # Worker A runs a long real ffmpeg job (music at real time: the loudness pass takes 45 s).
    first = upload(repository, storage, media_dir / "music_strings.ogg")
    doomed = _worker(tmp_path, work, processes)
    doomed_dir = wait_for(lambda: _job_dirs(work, doomed.pid, first), timeout_s=30, what="A's job folder")[0]
    wait_for(lambda: (doomed_dir / "measure.stderr").is_file(), timeout_s=30, what="A's loudness pass")
    # Worker B runs another one; it must outlive every sweep below.
    second = upload(repository, storage, media_dir / "music_strings.ogg")
    live = _worker(tmp_path, work, processes)
    live_dir = wait_for(lambda: _job_dirs(work, live.pid, second), timeout_s=30, what="B's job folder")[0]
    wait_for(lambda: (live_dir / "measure.stderr").is_file(), timeout_s=30, what="B's loudness pass")

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    assert doomed_dir.is_dir()  # a dead process removes nothing
    orphan = next(
        r.event
        for r in repository.store.read_stream(first)
        if isinstance(r.event, ev.JobChildStarted) and "loudnorm" in " ".join(r.event.argv)
    )
    try:
        _worker(tmp_path, work, processes)  # C: its start-up orphan sweep kills A's ffmpeg, then sweeps
        wait_for(lambda: not doomed_dir.parent.exists(), timeout_s=30, what="the dead worker's folder to go")
    finally:
        children.kill_if_ours(orphan.pid, orphan.started_at_ticks, 2.0)
    assert (live_dir / "measure.stderr").is_file()  # B's folder and its job's files are untouched
    state = repository.get(second)
    assert state.status == "processing" and state.worker_id and f":{live.pid}:" in state.worker_id

    live.send_signal(signal.SIGTERM)  # B releases its job and removes its own folder on the way out
    assert live.wait(30) == 0
    assert not live_dir.parent.exists()


def test_a_sweep_removes_only_folders_whose_owner_is_gone(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    parent = tmp_path / "work"
    alive, alive_job = _holder(parent, processes)
    killed, killed_job = _holder(parent, processes)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    unlocked = parent / "worker-1-unlocked"  # an owner between making its folder and its lock
    unlocked.mkdir()
    area = workdirs.WorkArea(parent)
    running = area.job_dir("a" * 32)
    finished = area.job_dir("b" * 32)  # a job folder this worker should have removed itself

    report = area.sweep(keep={"a" * 32})

    assert report.dead_owners == [killed_job.parent] and report.stale_jobs == [finished]
    assert not killed_job.parent.exists() and not finished.exists()
    assert alive_job.is_dir() and running.is_dir() and unlocked.is_dir()
    old = unlocked.stat().st_mtime - workdirs.UNLOCKED_GRACE_S - 1
    os.utime(unlocked, (old, old))  # its owner died before taking the lock, long ago
    assert area.sweep(keep={"a" * 32}).dead_owners == [unlocked]
    assert (os.stat(parent).st_mode & 0o777, os.stat(running).st_mode & 0o777) == (0o700, 0o700)

    area.release()
    assert not running.parent.exists()
    assert alive_job.is_dir()
    assert alive.stdin is not None
    alive.stdin.close()  # the live holder exits; now its folder may go too
    alive.wait(10)
    assert workdirs.WorkArea(parent).sweep().dead_owners == [alive_job.parent]


def test_a_running_worker_sweeps_periodically(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, processes: list[subprocess.Popen[str]]
) -> None:
    parent = tmp_path / "work"
    worker = Worker(repository, storage, Settings(data_dir=tmp_path, work_dir=parent, lease_ttl_s=0.6, poll_interval_s=0.05))
    worker.start()
    try:
        killed, killed_job = _holder(parent, processes)  # appears after the worker's start-up sweep
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        wait_for(lambda: not killed_job.parent.exists(), timeout_s=10, what="the periodic sweep")
    finally:
        worker.stop()


def test_an_unsafe_parent_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(errors.StorageError, match="not a folder of this user"):
        workdirs.WorkArea(tmp_path / "link")


def test_jobtape_worker_with_an_unsafe_parent_says_so_without_a_traceback(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    done = subprocess.run(
        [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(tmp_path / "data")],
        env={**os.environ, "JOBTAPE_WORK_DIR": str(tmp_path / "link")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "not a folder of this user" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_killed_writers_temporary_blob_is_removed_by_the_next_start_and_a_fresh_one_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    writer = subprocess.Popen(  # a put_stream that never ends: its process is killed mid-write
        [
            sys.executable,
            "-c",
            (
                "import sys; from pathlib import Path; from jobtape.storage.local import LocalStorage\n"
                "def chunks():\n    yield b'x' * 65536\n    print('writing', flush=True)\n    sys.stdin.read()\n    yield b''\n"
                "LocalStorage(Path(sys.argv[1])).put_stream('assets/a/prepared.flac', chunks())"
            ),
            str(root),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait(10)
    (left,) = (root / ".tmp").glob("put-*.part")
    fresh = root / ".tmp" / "put-fresh.part"  # a write in flight in another process
    fresh.write_bytes(b"y")
    LocalStorage(root)  # start-up: the killed write is recent, so it is kept too
    assert left.exists() and fresh.exists()
    two_hours_ago = time.time() - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))  # an hour without a write: nobody owns it
    assert LocalStorage(root).exists("assets/a/prepared.flac") is False
    assert not left.exists() and fresh.exists()
