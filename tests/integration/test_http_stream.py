"""The live stream (SSE) and the asOf routes, end to end: a real uvicorn server on 127.0.0.1,
a real worker process running a real ingest, httpx as the client."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import clock
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"


@dataclasses.dataclass
class Served:
    base_url: str
    server: uvicorn.Server
    repository: JobRepository
    data_dir: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The API (no embedded worker) on a free loopback port, over a real SQLite file."""
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    app = create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout_s=30, what="uvicorn to start")
    try:
        yield Served(f"http://127.0.0.1:{listener.getsockname()[1]}", server, repository, tmp_path)
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
        backend.close()


def upload(client: httpx.Client) -> str:
    response = client.post("/api/audio/ingest", files={"file": ("speech.wav", SPEECH.read_bytes(), "audio/wav")})
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["jobId"])


def read_messages(lines: Iterator[str], limit: int | None = None) -> list[dict[str, Any]]:
    """Parse SSE lines into ``{"event", "id", "data"}`` messages (comments skipped)."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if current:
                messages.append(current)
                current = {}
                if limit is not None and len(messages) == limit:
                    break
            continue
        field, _, value = line.partition(": ")
        if field == "data":
            current["data"] = json.loads(value)
        elif field in ("event", "id"):
            current[field] = value
    return messages


@pytest.fixture
def worker_process(served: Served) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jobtape", "worker", "--data-dir", str(served.data_dir), "--poll-interval", "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield process
    process.terminate()
    process.wait(timeout=60)


@pytest.mark.slow
def test_stream_follows_a_real_ingest_run_by_a_separate_worker_process(served: Served, worker_process: subprocess.Popen[bytes]) -> None:
    with httpx.Client(base_url=served.base_url, timeout=60) as client:
        job_id = upload(client)
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = read_messages(response.iter_lines())  # returns when the server closes the stream
        events = client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]

    first, *rest = messages
    assert first["event"] == "state" and first["data"]["jobId"] == job_id
    assert first["data"]["status"] in ("pending", "processing")
    assert all(m["event"] == "event" for m in rest)
    assert rest[-1]["data"]["type"] == "job.completed"
    streamed = [m["data"] for m in rest]
    already = len(events) - len(streamed)  # the events the initial state folded
    assert streamed == events[already:]
    assert int(first["id"]) == already  # the version of the last event folded into the state
    assert [int(m["id"]) for m in rest] == [e["version"] for e in events[already:]]
    assert {"job.stage_changed", "job.child_started", "job.child_exited"} <= {e["type"] for e in streamed}


def test_stream_of_a_finished_job_is_its_state_alone(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        assert client.post(f"/api/audio/jobs/{job_id}/cancel").status_code == 200
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as response:
            messages = read_messages(response.iter_lines())

    assert [(m["event"], m["data"]["status"]) for m in messages] == [("state", "cancelled")]


def test_stream_ends_cleanly_when_the_client_goes_away(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)  # no worker: the job stays pending, the stream would run forever
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as response:
            lines = response.iter_lines()  # kept referenced: a collected iterator would close the response
            first = read_messages(lines, limit=1)[0]
            assert (first["event"], first["data"]["queuePosition"]) == ("state", 1)
            assert served.server.server_state.tasks  # the streaming request is running
    # The client closed the connection: the server cancels the generator and the request task ends.
    wait_for(lambda: not served.server.server_state.tasks, timeout_s=10, what="the stream's request task to end")
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"}


def append(served: Served, job_id: str, *events: ev.Event) -> None:
    """Append as the worker ``host:1:0`` would (the served app has no worker of its own)."""
    served.repository.append(job_id, events, served.repository.get(job_id), actor="host:1:0")


def test_a_reconnect_with_last_event_id_resumes_after_that_version(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)  # version 1: job.created
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as response:
            lines = response.iter_lines()
            state = read_messages(lines, limit=1)[0]
            append(served, job_id, ev.JobClaimed(worker_id="host:1:0"), ev.JobStageChanged(stage="measuring"))
            append(served, job_id, ev.JobProgress(percent=40))
            seen = read_messages(lines, limit=3)
        last_event_id = seen[-1]["id"]
        append(served, job_id, ev.JobProgress(percent=100))  # while the client is away

        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": last_event_id}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            missed = read_messages(lines, limit=1)
            append(served, job_id, ev.JobCompleted(result={"assetId": "a1"}))  # live, after the resume
            resumed = missed + read_messages(lines)  # returns when the server closes the stream
        finished = client.get(f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": resumed[-1]["id"]})
        events = client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]

    assert (state["event"], state["id"], state["data"]["status"]) == ("state", "1", "pending")
    assert [(m["event"], m["id"], m["data"]["type"]) for m in seen] == [
        ("event", "2", "job.claimed"),
        ("event", "3", "job.stage_changed"),
        ("event", "4", "job.progress"),
    ]
    assert [(m["event"], m["id"]) for m in resumed] == [("event", "5"), ("event", "6")]  # no state, nothing seen
    assert [m["data"] for m in resumed] == events[4:]
    assert events[-1]["type"] == "job.completed"
    assert (finished.status_code, finished.content) == (204, b"")  # EventSource stops reconnecting on 204


def test_last_event_id_of_a_finished_job_replays_only_the_later_events(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        assert client.post(f"/api/audio/jobs/{job_id}/cancel").status_code == 200
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": "0"}) as response:
            from_start = read_messages(response.iter_lines())
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": "1"}) as response:
            after_created = read_messages(response.iter_lines())

    assert [(m["event"], m["id"], m["data"]["type"]) for m in from_start] == [
        ("event", "1", "job.created"),
        ("event", "2", "job.cancel_requested"),
    ]
    assert [(m["id"], m["data"]["type"]) for m in after_created] == [("2", "job.cancel_requested")]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "1" * 19])
def test_a_malformed_last_event_id_is_400_and_says_what_to_send(served: Served, value: str) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        response = client.get(f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": value})

    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("Last-Event-ID must be the id of the last message received from this stream")
    assert repr(value) in message


def test_a_last_event_id_past_the_jobs_latest_version_is_409(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        response = client.get(f"/api/audio/jobs/{job_id}/stream", headers={"Last-Event-ID": "7"})

    assert (response.status_code, response.json()) == (
        409,
        {
            "error": "Last-Event-ID 7 is past this job's latest version 1; "
            "reconnect without Last-Event-ID to start from the job's current state"
        },
    )


@pytest.mark.parametrize("suffix", ["", "/events"])
def test_as_of_answers_as_the_job_was_then(served: Served, suffix: str) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        before_cancel = clock.format_timestamp(clock.utcnow())
        wait_for(lambda: clock.format_timestamp(clock.utcnow()) > before_cancel, what="the clock to move")
        assert client.post(f"/api/audio/jobs/{job_id}/cancel").status_code == 200

        now = client.get(f"/api/audio/jobs/{job_id}{suffix}").json()
        then = client.get(f"/api/audio/jobs/{job_id}{suffix}", params={"asOf": before_cancel}).json()
        relative = client.get(f"/api/audio/jobs/{job_id}{suffix}", params={"asOf": "-1d"})

    if suffix:
        assert [e["type"] for e in now["events"]] == ["job.created", "job.cancel_requested"]
        assert [e["type"] for e in then["events"]] == ["job.created"]
    else:
        assert (now["status"], then["status"], then["queuePosition"]) == ("cancelled", "pending", 1)
    assert (relative.status_code, relative.json()) == (404, {"error": "Job not found"})  # it did not exist a day ago


@pytest.mark.parametrize("suffix", ["", "/events"])
def test_a_bad_as_of_is_422_and_says_what_to_send(served: Served, suffix: str) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        job_id = upload(client)
        response = client.get(f"/api/audio/jobs/{job_id}{suffix}", params={"asOf": "yesterday"})

    assert response.status_code == 422
    message = response.json()["error"]
    assert "asOf=yesterday" in message and "ISO 8601" in message and "-10m" in message


def test_stream_of_an_unknown_or_malformed_job_is_an_error_before_streaming(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=30) as client:
        unknown = client.get(f"/api/audio/jobs/{'0' * 32}/stream")
        malformed = client.get("/api/audio/jobs/xyz/stream")

    assert (unknown.status_code, unknown.json()) == (404, {"error": "Job not found"})
    assert (malformed.status_code, malformed.json()) == (400, {"error": "jobId must be 32 hexadecimal characters"})
