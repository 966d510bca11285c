"""Issue 10, "Done when": the examples app served with ``jobtape serve --app``, used over HTTP and through the client.

A real ``jobtape serve --app starter.jobs:app`` process on 127.0.0.1 runs both job types
of examples/starter, submitted over raw HTTP (httpx) and through ``jobtape.Client``; the
subprocess job is cancelled mid-run (its ``sleep`` child is dead, ``job.cancelled`` is in
the log), so is a pure-Python loop; then ``jobtape verify`` and ``jobtape rebuild
--verify`` read the log clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]

import jobtape

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_example_app_served_with_app_runs_cancels_and_audits_clean(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")])))
        patch.setenv("JOBTAPE_DATA_DIR", str(data_dir))
        with (
            jobtape_serve(data_dir, "--app", "starter.jobs:app", "--concurrency", "2") as base_url,
            httpx.Client(base_url=base_url, timeout=30) as http,
            jobtape.Client(base_url, client_id="ci") as client,
        ):
            # Both types over raw HTTP.
            raw = {}
            for job_type, params in (("primes", {"limit": 20_000}), ("sleep", {"seconds": 0.1})):
                answer = http.post("/api/jobs", json={"type": job_type, "params": params})
                assert answer.status_code == 202, answer.text
                body = answer.json()
                assert body["success"] is True and set(body["data"]) == {"jobId", "status"}
                raw[job_type] = body["data"]["jobId"]
            unknown = http.post("/api/jobs", json={"type": "convert", "params": {}})
            assert unknown.status_code == 422 and unknown.json()["error"].endswith("primes, sleep")

            # Both types through the client.
            via_client = {"primes": client.submit("primes", {"limit": 3000}), "sleep": client.submit("sleep", {"seconds": 0})}
            for job_id in [*raw.values(), *via_client.values()]:
                assert client.wait(job_id, timeout_s=120).status == "complete", client.get(job_id)
            polled = http.get(f"/api/jobs/{raw['primes']}").json()
            assert (polled["status"], polled["result"]) == ("complete", {"count": 2262, "largest": 19997})
            assert client.get(via_client["primes"]).result == {"count": 430, "largest": 2999}
            assert http.get(f"/api/jobs/{raw['sleep']}").json()["result"] == {"slept_s": 0.1}
            sleep_events = [e.type for e in client.events(via_client["sleep"])]
            assert ["job.child_started", "job.child_exited"] == [t for t in sleep_events if t.startswith("job.child_")]

            # The subprocess job, cancelled mid-run: its child is killed.
            sleeper = client.submit("sleep", {"seconds": 600})
            started = wait_for(lambda: [e for e in client.events(sleeper) if e.type == "job.child_started"], 60, "the sleep child to start")
            pid = started[0].data["pid"]
            assert started[0].data["argv"] == ["sleep", "600"] and alive(pid)
            cancelled = http.post(f"/api/jobs/{sleeper}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert client.wait(sleeper, timeout_s=60).status == "cancelled"
            wait_for(lambda: not alive(pid), 30, f"the sleep child {pid} to be gone")
            sleeper_events = [e.type for e in client.events(sleeper)]
            assert "job.cancelled" in sleeper_events and "job.child_exited" in sleeper_events

            # The pure-Python loop, cancelled mid-run: it stops at its next check.
            counter = client.submit("primes", {"limit": 100_000_000})
            wait_for(lambda: [e for e in client.events(counter) if e.type == "job.stage_changed"], 60, "the loop to start counting")
            client.cancel(counter)
            view = client.wait(counter, timeout_s=60)
            assert (view.status, view.result) == ("cancelled", None)
            assert "job.cancelled" in [e.type for e in client.events(counter)]

    for command in (["verify"], ["rebuild", "--verify"]):
        audit = subprocess.run(
            [sys.executable, "-m", "jobtape", *command, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audit.returncode == 0, f"jobtape {' '.join(command)}: {audit.stdout}{audit.stderr}"
