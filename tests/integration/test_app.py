"""The engine as a library (issue 10, first steps): job types registered on a ``jobtape.App``,
submitted in-process, run by a worker that claims only them, failed on purpose with ``JobFailed``."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

import jobtape
from jobtape import errors
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections.rebuild import rebuild

APPS = Path(__file__).resolve().parents[1] / "apps"


class Pair(msgspec.Struct):
    a: int
    b: int


@pytest.fixture
def app(tmp_path: Path) -> Any:
    made = jobtape.App(Settings(data_dir=tmp_path, poll_interval_s=0.02, backoff_base_s=0.01, backoff_cap_s=0.02))
    yield made
    made.close()


def types(app: jobtape.App, job_id: str) -> list[str]:
    return [r.type for r in app.repository.store.read_stream(job_id)]


def test_a_registered_type_is_submitted_run_and_recorded(app: jobtape.App) -> None:
    @app.job_type("sum", timeout_s=60)
    def add(ctx: jobtape.JobContext, params: Pair) -> dict[str, Any]:
        assert isinstance(params, Pair) and ctx.params is params and ctx.workdir.is_dir() and ctx.attempt == 1
        ctx.stage("adding")
        ctx.progress(50)
        return {"sum": params.a + params.b}

    job_id = app.submit("sum", {"a": 2, "b": 3}, owner="alice")
    also = app.submit("sum", Pair(a=1, b=1))
    app.worker().run(until_idle=True)
    state = app.repository.get(job_id)
    assert (state.status, state.result, state.owner) == ("complete", {"sum": 5}, "alice")
    assert app.repository.get(also).result == {"sum": 2}
    # (the progress report came within 0.25 s of the stage, so it was throttled away)
    assert types(app, job_id) == ["job.created", "job.claimed", "job.stage_changed", "job.completed"]
    assert app.repository.store.read_stream(job_id)[0].actor == "app"
    assert rebuild(app.repository.store, apply_changes=False, tables=app.tables).differences == []


def test_bad_params_an_unknown_type_and_a_duplicate_name_are_refused_with_nothing_written(app: jobtape.App) -> None:
    @app.job_type("sum")
    def add(ctx: jobtape.JobContext, params: Pair) -> dict[str, Any]:
        return {}

    with pytest.raises(errors.InvalidParams, match=r"\$\.b"):
        app.submit("sum", {"a": 1, "b": "two"})
    with pytest.raises(errors.InvalidParams, match="b"):
        app.submit("sum", {"a": 1})
    with pytest.raises(errors.UnknownJobType, match="registered: sum"):
        app.submit("product", {})
    with pytest.raises(errors.JobTypeAlreadyRegistered):
        app.job_type("sum")(add)
    with pytest.raises(ValueError, match="lowercase"):
        app.job_type("Sum")
    assert list(app.job_types) == ["sum"]
    assert app.repository.store.backend.query("SELECT COUNT(*) FROM events") == [(0,)]


def test_job_failed_is_retried_when_retryable_up_to_the_types_attempts_and_a_crash_is_not(app: jobtape.App) -> None:
    @app.job_type("flaky", max_attempts=2)
    def flaky(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        raise jobtape.JobFailed(f"upstream busy (attempt {ctx.attempt})", retryable=True)

    @app.job_type("refused")
    def refused(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        raise jobtape.JobFailed("the input is not a number")

    @app.job_type("buggy")
    def buggy(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"value": 1 / params["zero"]}

    flaky_id, refused_id, buggy_id = (app.submit(name, {"zero": 0}) for name in ("flaky", "refused", "buggy"))
    worker = app.worker()
    wait_for(lambda: worker.run(until_idle=True) or app.repository.get(flaky_id).finished, 30, "flaky to give up")
    flaky_state = app.repository.get(flaky_id)
    assert flaky_state.status == "failed" and flaky_state.attempt == 2  # the type's max_attempts, not the settings' 3
    assert types(app, flaky_id).count("job.retry_scheduled") == 1
    assert (app.repository.get(refused_id).status, app.repository.get(refused_id).error) == ("failed", "the input is not a number")
    buggy_state = app.repository.get(buggy_id)
    assert buggy_state.status == "failed" and buggy_state.attempt == 1
    assert buggy_state.error is not None and buggy_state.error.startswith("internal error: ZeroDivisionError")


def _worker_process(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "JOBTAPE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(APPS), "JOBTAPE_APP": "sums:app"}
    return subprocess.Popen(
        [sys.executable, "-m", "jobtape", "worker", "--poll-interval", "0.05", "--grace", "0", *flags],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sums() -> Any:
    """The ``tests/apps/sums.py`` module (its job handlers: ``sum``, ``sleep``, ``spin``)."""
    sys.path.insert(0, str(APPS))
    try:
        import sums  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(APPS))
    return sums


def test_jobtape_worker_app_runs_a_users_types_kills_a_cancelled_child_and_claims_no_audio_job(tmp_path: Path) -> None:
    sums = _sums()
    user = jobtape.App(Settings(data_dir=tmp_path))
    for name, spec in sums.app.job_types.items():  # the same registrations, on this test's data dir
        user.job_type(name, timeout_s=spec.timeout_s, max_attempts=spec.max_attempts, params=spec.params_type)(spec.handler)
    audio_job = user.repository.create("ingest", {"sourceType": "upload", "storageKey": "ingest-uploads/x/original.wav"})
    sum_id = user.submit("sum", {"a": 20, "b": 22})
    sleep_id = user.submit("sleep", {"seconds": 60})
    process = _worker_process(tmp_path, "--concurrency", "2")
    try:
        wait_for(lambda: user.repository.get(sum_id).status == "complete", 30, "the sum")
        assert user.repository.get(sum_id).result == {"sum": 42, "attempt": 1}
        started = wait_for(
            lambda: [r for r in user.repository.store.read_stream(sleep_id) if r.type == "job.child_started"], 30, "the sleep child"
        )
        pid = started[0].event.pid  # type: ignore[attr-defined]
        user.repository.append(sleep_id, [ev.JobCancelRequested(reason="test")], user.repository.get(sleep_id), actor="test")
        wait_for(lambda: user.repository.get(sleep_id).finished, 30, "job.cancelled")
        assert user.repository.get(sleep_id).status == "cancelled"
        assert "job.child_exited" in types(user, sleep_id)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert user.repository.get(audio_job.state.job_id).status == "pending"  # not a type of this app
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        user.close()
    assert process.returncode == 0, stderr


def test_a_pure_python_loop_stops_within_one_check_of_a_cancel(app: jobtape.App) -> None:
    sums = _sums()
    app.job_type("spin")(sums.spin)
    job_id = app.submit("spin", {})
    worker = app.worker()
    worker.start()
    try:
        wait_for(lambda: "job.progress" in types(app, job_id), 30, "the loop to run")
        app.repository.append(job_id, [ev.JobCancelRequested(reason="test")], app.repository.get(job_id), actor="test")
        wait_for(lambda: app.repository.get(job_id).finished, 10, "job.cancelled")
    finally:
        worker.stop(grace_s=5)
    assert app.repository.get(job_id).status == "cancelled"


def _pipes() -> int:
    """Pipe descriptors this process holds."""
    found = 0
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed between listdir and readlink
            found += os.readlink(f"/proc/self/fd/{entry}").startswith("pipe:")
    return found


def test_a_childs_stdout_pipe_is_closed_when_it_exits_or_is_killed_not_when_collected(app: jobtape.App) -> None:
    """A worker that runs for months gives each child's pipe back at once (the soak counts them)."""
    sums = _sums()
    app.job_type("sleep")(sums.sleep)
    gc.collect()
    gc.disable()  # a pipe kept alive by a reference cycle (an exception's traceback) would stay open
    worker = app.worker()
    try:
        before = _pipes()
        worker.start()
        quick = [app.submit("sleep", {"seconds": 0}) for _ in range(3)]
        wait_for(lambda: all(app.repository.get(job_id).status == "complete" for job_id in quick), 30, "the quick children")
        for _ in range(3):
            job_id = app.submit("sleep", {"seconds": 60})
            wait_for(lambda job_id=job_id: "job.child_started" in types(app, job_id), 30, "the child to start")
            app.repository.append(job_id, [ev.JobCancelRequested(reason="test")], app.repository.get(job_id), actor="test")
            wait_for(lambda job_id=job_id: app.repository.get(job_id).finished, 30, "job.cancelled")
        assert _pipes() == before
    finally:
        worker.stop(grace_s=5)
        gc.enable()


def test_a_handlers_broad_except_does_not_swallow_a_cancel(app: jobtape.App) -> None:
    """A cancel is a ``JobInterrupted`` (a BaseException): ``except Exception`` around ``check_cancelled`` lets it through."""
    swallowed: list[BaseException] = []

    @app.job_type("careless")
    def careless(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        ctx.stage("looping")
        turns = 0
        while len(swallowed) < 100:
            try:
                ctx.check_cancelled()
            except Exception as exc:  # the blanket except a handler may have around each item of its work
                swallowed.append(exc)
                continue
            turns += 1
            if turns % 1000 == 0:
                ctx.progress(min(99, turns // 1000))
        return {"swallowed": len(swallowed)}

    job_id = app.submit("careless", {})
    worker = app.worker()
    worker.start()
    try:
        wait_for(lambda: "job.progress" in types(app, job_id), 30, "the loop to run")
        app.repository.append(job_id, [ev.JobCancelRequested(reason="test")], app.repository.get(job_id), actor="test")
        wait_for(lambda: app.repository.get(job_id).finished, 10, "the job to finish")
    finally:
        worker.stop(grace_s=5)
    assert swallowed == []
    state = app.repository.get(job_id)
    assert (state.status, state.result) == ("cancelled", None)


def test_an_app_reference_that_names_no_app_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "JOBTAPE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(APPS)}
    for reference, message in (("sums:nothing", "does not name a jobtape.App"), ("no_such_module:app", "cannot import")):
        done = subprocess.run(
            [sys.executable, "-m", "jobtape", "worker", "--app", reference],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
