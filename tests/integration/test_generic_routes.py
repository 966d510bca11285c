"""The generic job routes (issue 10): ``POST /api/jobs`` for any registered job type, and the poll,
cancel, events and stream routes under ``/api/jobs/{jobId}``.

End to end on a real ``jobtape serve --app tests.apps.sums:app`` process (its embedded worker
runs the app's types), and in-process through Litestar's TestClient over a real SQLite log
where exact event counts matter (no worker appends meanwhile).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]

import jobtape
from jobtape import runtime
from jobtape.config import Settings
from jobtape.http import create_app

ROOT = Path(__file__).resolve().parents[2]
SUMS = "tests.apps.sums:app"


def _sums_app(settings: Settings) -> jobtape.App:
    """The job types of tests/apps/sums.py, registered on an app over ``settings`` (plus one not submittable over HTTP)."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.apps import sums  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT))
    made = jobtape.App(settings)
    for name, spec in sums.app.job_types.items():
        made.job_type(name, timeout_s=spec.timeout_s, max_attempts=spec.max_attempts, params=spec.params_type)(spec.handler)

    @made.job_type("internal", http_submit=False)
    def internal(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    return made


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[TestClient[Any], jobtape.App]]:
    """The API in-process with the sums app's types, no worker, max 3 active jobs per owner."""
    settings = Settings(data_dir=tmp_path, max_active_jobs=3)
    app = _sums_app(settings)
    api = create_app(app.repository, runtime.open_storage(settings), settings, job_types=app.job_types)
    with TestClient(api) as client:
        yield client, app
    app.close()


def _count_events(app: jobtape.App) -> int:
    return int(app.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix not in (".db", ".db-wal", ".db-shm"))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"type": "sum", "params": {"a": 1, "b": "two"}}', 422, "Expected `int`, got `str` - at `$.params.b`"),
        (b'{"type": "sum", "params": {"a": 1}}', 422, "Object missing required field `b` - at `$.params`"),
        (b'{"type": "sum", "params": {"a": 1, "b": 2, "c": 3}}', 422, "unknown field `c` - at `$.params`"),
        (b'{"type": "product", "params": {}}', 422, "send one of: sleep, spin, sum"),
        (b'{"type": "internal", "params": {}}', 422, "'internal' is not a job type this server accepts"),
        (b'{"type": "sum"}', 422, "missing required field `params`"),
        (b'{"type": "sum", "params": {"a": 1, "b": 2}, "extra": 1}', 422, "unknown field `extra`"),
        (b'{"type": "sum", "params": [1, 2]}', 422, "Expected `object`, got `array` - at `$.params`"),
        (b"[]", 422, "Expected `object`, got `array`"),
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "the body is empty"),
        (b'{"type": "sum", "params": {"a": "' + b"x" * 70_000 + b'", "b": 1}}', 413, "larger than 65536 bytes"),
    ],
)
def test_a_rejected_submission_says_what_to_fix_and_appends_nothing(
    local: tuple[TestClient[Any], jobtape.App], tmp_path: Path, body: bytes, status: int, message: str
) -> None:
    client, app = local
    before, files_before = _count_events(app), _files(tmp_path)
    response = client.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.text
    assert str(tmp_path) not in response.text
    assert (_count_events(app), _files(tmp_path)) == (before, files_before)


def test_an_unknown_type_is_the_unknown_job_type_error_with_the_body_the_route_always_sent(
    local: tuple[TestClient[Any], jobtape.App],
) -> None:
    client, _ = local
    for name in ("product", "internal"):  # unregistered; registered but not submittable over HTTP
        response = client.post("/api/jobs", json={"type": name, "params": {}})
        assert (response.status_code, response.headers["content-type"], response.content) == (
            422,
            "application/json",
            b'{"error":"type \'' + name.encode() + b"' is not a job type this server accepts at POST /api/jobs; "
            b'send one of: sleep, spin, sum"}',
        )


def test_the_same_idempotency_key_replays_the_job_and_another_request_with_it_is_refused(
    local: tuple[TestClient[Any], jobtape.App],
) -> None:
    client, app = local
    headers = {"Idempotency-Key": " k1 ", "X-Client-Id": "alice"}
    first = client.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}, headers=headers)
    assert first.status_code == 202 and first.json()["data"]["status"] == "pending", first.text
    job_id = first.json()["data"]["jobId"]
    events = _count_events(app)
    again = client.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    other_params = client.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 3}}, headers=headers)
    other_type = client.post("/api/jobs", json={"type": "sleep", "params": {}}, headers=headers)
    assert other_params.status_code == other_type.status_code == 422
    assert f"a sum job ({job_id}) of other params" in other_params.json()["error"]
    assert f"a sum job ({job_id}) of another request" in other_type.json()["error"]
    assert _count_events(app) == events
    # the key is per owner, stripped as the audio routes strip it
    state = app.repository.get(job_id)
    assert (state.owner, state.job_type, state.params) == ("alice", "sum", {"a": 1, "b": 2})
    assert app.repository.find_by_idempotency_key("alice", "k1") is not None
    bob = client.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}, headers={"Idempotency-Key": "k1"})
    assert bob.status_code == 202 and bob.json()["data"]["jobId"] != job_id


def test_the_per_owner_quota_applies_with_retry_after(local: tuple[TestClient[Any], jobtape.App]) -> None:
    client, app = local
    for _ in range(3):
        assert client.post("/api/jobs", json={"type": "spin", "params": {}}).status_code == 202
    events = _count_events(app)
    refused = client.post("/api/jobs", json={"type": "spin", "params": {}})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "10", refused.text
    assert "3 active" in refused.json()["error"]
    assert _count_events(app) == events
    assert client.post("/api/jobs", json={"type": "spin", "params": {}}, headers={"X-Client-Id": "bob"}).status_code == 202


def test_the_openapi_document_has_each_submittable_types_params_schema(local: tuple[TestClient[Any], jobtape.App]) -> None:
    client, _ = local
    document = client.get("/schema/openapi.json").json()
    body = document["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"] == {
        "propertyName": "type",
        "mapping": {name: f"#/components/schemas/JobRequest.{name}" for name in ("sleep", "spin", "sum")},
    }
    assert [item["$ref"] for item in body["oneOf"]] == list(body["discriminator"]["mapping"].values())
    schemas = document["components"]["schemas"]
    assert "JobRequest.internal" not in schemas  # http_submit=False
    sum_request = schemas["JobRequest.sum"]
    assert sum_request["required"] == ["type", "params"] and sum_request["additionalProperties"] is False
    assert sum_request["properties"]["type"] == {"type": "string", "const": "sum"}
    assert sum_request["properties"]["params"] == {"$ref": "#/components/schemas/JobParams.Sum"}
    assert schemas["JobParams.Sum"] == {
        "title": "Sum",
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert schemas["JobRequest.sleep"]["properties"]["params"] == {"type": "object"}  # a plain dict: any object
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {
        "ApiJobsJobidGetJob",
        "ApiJobsJobidCancelCancelJob",
        "ApiJobsJobidEventsListJobEvents",
        "ApiJobsJobidStreamStreamJob",
        "ApiAudioJobsJobidGetJob",
        "ApiAudioJobsJobidCancelCancelJob",
        "ApiAudioJobsJobidEventsListJobEvents",
        "ApiAudioJobsJobidStreamStreamJob",
    } <= operations


def test_without_job_types_post_api_jobs_accepts_none_and_is_not_documented(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    repository = runtime.open_repository(settings)
    try:
        with TestClient(create_app(repository, runtime.open_storage(settings), settings)) as client:
            response = client.post("/api/jobs", json={"type": "ingest", "params": {}})
            assert response.status_code == 422 and "send one of: none" in response.json()["error"], response.text
            paths = client.get("/schema/openapi.json").json()["paths"]
            assert "/api/jobs" not in paths and "/api/jobs/{jobId}" in paths
        assert repository.store.backend.query("SELECT COUNT(*) FROM events") == [(0,)]
    finally:
        repository.store.close()


# --- a real `jobtape serve --app tests.apps.sums:app` ---------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[httpx.Client]:
    with (
        jobtape_serve(tmp_path / "data", "--app", SUMS, "--grace", "0", workers=1, cwd=ROOT) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        yield client


def _submit(client: httpx.Client, job_type: str, params: dict[str, Any]) -> str:
    response = client.post("/api/jobs", json={"type": job_type, "params": params})
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "pending"
    return str(response.json()["data"]["jobId"])


def _poll_until(client: httpx.Client, job_id: str, *statuses: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        return view if view["status"] in statuses else None

    found: dict[str, Any] = wait_for(reached, timeout_s=60, what=f"job {job_id} to be {' or '.join(statuses)}")
    return found


def _sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if not line:
            if current:
                messages.append(current)
            current = {}
            continue
        field, _, value = line.partition(": ")
        if field in ("event", "id"):
            current[field] = value
        elif field == "data":
            current["data"] = json.loads(value)
    return messages


def test_serve_app_runs_a_submitted_job_and_the_generic_routes_read_it(served: httpx.Client) -> None:
    client = served
    job_id = _submit(client, "sum", {"a": 20, "b": 22})
    view = _poll_until(client, job_id, "complete", "failed")
    assert (view["type"], view["status"], view["result"]) == ("sum", "complete", {"sum": 42, "attempt": 1}), view
    # the generic and the audio routes are one handler: the same answer, byte for byte
    assert client.get(f"/api/jobs/{job_id}").content == client.get(f"/api/audio/jobs/{job_id}").content
    events = client.get(f"/api/jobs/{job_id}/events").json()
    assert events["jobId"] == job_id
    types = [item["type"] for item in events["events"]]
    assert types[0] == "job.created" and types[-1] == "job.completed" and "job.claimed" in types
    assert "job.stage_changed" in types  # ctx.stage("adding"), run by serve's embedded worker
    assert events["events"][0]["data"]["params"] == {"a": 20, "b": 22}
    assert client.get(f"/api/jobs/{job_id}/events").content == client.get(f"/api/audio/jobs/{job_id}/events").content
    created_at = events["events"][0]["recordedAt"]
    then = client.get(f"/api/jobs/{job_id}/events", params={"asOf": created_at}).json()
    assert [item["type"] for item in then["events"]] == ["job.created"]
    past = client.get(f"/api/jobs/{job_id}", params={"asOf": created_at}).json()
    assert (past["status"], past["result"], past["queuePosition"]) == ("pending", None, 1)
    assert client.get(f"/api/jobs/{job_id}", params={"asOf": "yesterday-ish"}).status_code == 422
    assert client.get(f"/api/jobs/{job_id}", params={"asOf": "2000-01-01T00:00:00Z"}).status_code == 404
    # a finished job cannot be cancelled
    refused = client.post(f"/api/jobs/{job_id}/cancel")
    assert refused.status_code == 409 and refused.json() == {"error": "Job already in terminal state", "status": "complete"}


def test_the_stream_follows_a_job_to_its_end_and_resumes_after_last_event_id(served: httpx.Client) -> None:
    client = served
    job_id = _submit(client, "sum", {"a": 1, "b": 2})
    with client.stream("GET", f"/api/jobs/{job_id}/stream") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        messages = _sse(response.iter_lines())
    assert messages[0]["event"] == "state" and messages[0]["data"]["jobId"] == job_id
    if len(messages) == 1:  # the embedded worker finished the job before the stream began: the state says so, then it ends
        assert messages[0]["data"]["status"] == "complete"
    else:
        assert messages[-1]["event"] == "event" and messages[-1]["data"]["type"] == "job.completed"
    last = messages[-1]["id"]
    with client.stream("GET", f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "1"}) as response:
        resumed = _sse(response.iter_lines())
    assert [m["id"] for m in resumed] == [str(v) for v in range(2, int(last) + 1)]
    assert all(m["event"] == "event" for m in resumed)
    assert client.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": last}).status_code == 204
    assert client.get(f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": "999"}).status_code == 409


def test_a_running_job_is_cancelled_through_the_generic_route(served: httpx.Client) -> None:
    client = served
    job_id = _submit(client, "sleep", {"seconds": 60})

    def child_started() -> bool:
        events = client.get(f"/api/jobs/{job_id}/events").json()["events"]
        return any(item["type"] == "job.child_started" for item in events)

    wait_for(child_started, timeout_s=60, what="the sleep child to start")
    accepted = client.post(f"/api/jobs/{job_id}/cancel")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"jobId": job_id, "status": "cancelled", "message": "Job cancellation requested"}
    wait_for(
        lambda: "job.cancelled" in [e["type"] for e in client.get(f"/api/jobs/{job_id}/events").json()["events"]],
        timeout_s=60,
        what="job.cancelled",
    )
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
    again = client.post(f"/api/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["status"] == "cancelled"


def test_unknown_and_malformed_job_ids(served: httpx.Client) -> None:
    client = served
    unknown = "0" * 32
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/stream")):
        response = client.request(method, f"/api/jobs/{unknown}{path}")
        assert (response.status_code, response.json()) == (404, {"error": "Job not found"}), (method, path)
        malformed = client.request(method, f"/api/jobs/NOT-AN-ID{path}")
        assert malformed.status_code == 400 and "32 hexadecimal" in malformed.json()["error"], (method, path)
    refused = client.post("/api/jobs", json={"type": "ingest", "params": {}})
    assert refused.status_code == 422 and "send one of: sleep, spin, sum" in refused.json()["error"]


def test_serve_app_with_a_reference_that_names_no_app_is_a_usage_error(tmp_path: Path) -> None:
    for reference, message in (("tests.apps.sums:nothing", "does not name a jobtape.App"), ("no_such_module:app", "cannot import")):
        done = subprocess.run(
            [sys.executable, "-m", "jobtape", "serve", "--data-dir", str(tmp_path), "--app", reference],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_params_struct_is_stored_as_sent_and_decoded_by_the_handler(local: tuple[TestClient[Any], jobtape.App]) -> None:
    client, app = local
    response = client.post("/api/jobs", json={"type": "sum", "params": {"a": 5, "b": 6}})
    job_id = response.json()["data"]["jobId"]
    app.worker().run(until_idle=True)
    assert app.repository.get(job_id).result == {"sum": 11, "attempt": 1}
    assert msgspec.json.decode(client.get(f"/api/jobs/{job_id}").content)["status"] == "complete"


class Inner(msgspec.Struct):
    x: int


class Outer(msgspec.Struct, forbid_unknown_fields=True):
    inner: list[Inner]
    mode: Literal["fast", "slow"] = "fast"
    note: str | None = None


def test_nested_params_are_documented_as_components_and_checked_to_the_nested_field(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    app = jobtape.App(settings)

    @app.job_type("nested")
    def nested(ctx: jobtape.JobContext, params: Outer) -> dict[str, Any]:
        return {"count": len(params.inner)}

    try:
        api = create_app(app.repository, runtime.open_storage(settings), settings, job_types=app.job_types)
        with TestClient(api) as client:
            schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
            assert schemas["JobRequest.nested"]["properties"]["params"] == {"$ref": "#/components/schemas/JobParams.Outer"}
            outer = schemas["JobParams.Outer"]
            assert outer["properties"]["inner"] == {"type": "array", "items": {"$ref": "#/components/schemas/JobParams.Inner"}}
            assert outer["properties"]["mode"] == {"enum": ["fast", "slow"], "default": "fast"}
            assert outer["required"] == ["inner"] and outer["additionalProperties"] is False
            assert schemas["JobParams.Inner"]["required"] == ["x"]
            refused = client.post("/api/jobs", json={"type": "nested", "params": {"inner": [{"x": 1}, {"x": "2"}]}})
            assert refused.status_code == 422 and "at `$.params.inner[1].x`" in refused.json()["error"], refused.text
            refused = client.post("/api/jobs", json={"type": "nested", "params": {"inner": [], "mode": "medium"}})
            assert refused.status_code == 422 and "`$.params.mode`" in refused.json()["error"], refused.text
            accepted = client.post("/api/jobs", json={"type": "nested", "params": {"inner": [{"x": 1}], "note": None}})
            assert accepted.status_code == 202, accepted.text
    finally:
        app.close()
