"""The job routes (poll, cancel, events), health, error bodies and OpenAPI, on a real SQLite file."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from freezegun import freeze_time
from litestar.testing import TestClient

from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections import state as job_state
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"
UNKNOWN_ID = "0" * 32


@dataclasses.dataclass
class Api:
    client: TestClient
    repository: JobRepository


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    app = create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        yield Api(client, repository)
    backend.close()


def upload(api: Api, **headers: str) -> str:
    response = api.client.post("/api/audio/ingest", files={"file": ("speech.wav", SPEECH.read_bytes(), "audio/wav")}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["jobId"])


def claim(api: Api, job_id: str) -> None:
    api.repository.append(job_id, [ev.JobClaimed(worker_id="host:1:0")], api.repository.get(job_id), actor="host:1:0")


def test_poll_pending_job_right_after_upload(api: Api) -> None:
    with freeze_time("2026-01-02T03:04:05Z", real_asyncio=True):
        first = upload(api)
        second = upload(api)

    body = api.client.get(f"/api/audio/jobs/{first}").json()

    assert body == {
        "jobId": first,
        "type": "ingest",
        "status": "pending",
        "progress": 0,
        "stage": None,
        "queuePosition": 1,
        "notBefore": None,
        "result": None,
        "error": None,
        "createdAt": "2026-01-02T03:04:05Z",
        "updatedAt": "2026-01-02T03:04:05Z",
    }
    assert api.client.get(f"/api/audio/jobs/{second}").json()["queuePosition"] == 2


def test_poll_is_not_cached(api: Api) -> None:
    response = api.client.get(f"/api/audio/jobs/{upload(api)}")

    assert response.headers["cache-control"] == "no-store"


def test_poll_processing_job_has_no_queue_position(api: Api) -> None:
    job_id = upload(api)
    claim(api, job_id)

    body = api.client.get(f"/api/audio/jobs/{job_id}").json()

    assert (body["status"], body["queuePosition"]) == ("processing", None)


def test_poll_backed_off_job_shows_not_before_until_claimed_again(api: Api) -> None:
    job_id = upload(api)
    claim(api, job_id)
    retry_at = dt.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=dt.UTC)
    retry = ev.JobRetryScheduled(error="connection reset", attempt=1, not_before=retry_at)
    api.repository.append(job_id, [retry], api.repository.get(job_id), actor="host:1:0")

    backed_off = api.client.get(f"/api/audio/jobs/{job_id}").json()
    with freeze_time(retry_at, real_asyncio=True):
        api.repository.append(job_id, [ev.JobClaimed(worker_id="host:2:0", attempt=2)], api.repository.get(job_id), actor="host:2:0")
    claimed_again = api.client.get(f"/api/audio/jobs/{job_id}").json()

    assert (backed_off["status"], backed_off["queuePosition"]) == ("pending", 1)
    assert backed_off["notBefore"] == "2026-01-02T03:04:05.250000Z"
    assert (claimed_again["status"], claimed_again["notBefore"]) == ("processing", None)


def test_poll_complete_job_shows_result(api: Api) -> None:
    job_id = upload(api)
    claim(api, job_id)
    api.repository.append(job_id, [ev.JobCompleted(result={"assetId": "a1"})], api.repository.get(job_id), actor="host:1:0")

    body = api.client.get(f"/api/audio/jobs/{job_id}").json()

    assert (body["status"], body["progress"], body["result"]) == ("complete", 100, {"assetId": "a1"})


def test_poll_unknown_job_is_404(api: Api) -> None:
    response = api.client.get(f"/api/audio/jobs/{UNKNOWN_ID}")

    assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


@pytest.mark.parametrize("bad_id", ["abc", "0" * 31, "0" * 33, "G" * 32, "A" * 32, "0" * 31 + "-"])
@pytest.mark.parametrize("suffix", ["", "/cancel", "/events"])
def test_malformed_job_id_is_400_on_every_route(api: Api, bad_id: str, suffix: str) -> None:
    method = api.client.post if suffix == "/cancel" else api.client.get

    response = method(f"/api/audio/jobs/{bad_id}{suffix}")

    assert (response.status_code, response.json()) == (400, {"error": "jobId must be 32 hexadecimal characters"})


def test_cancel_pending_job(api: Api) -> None:
    job_id = upload(api)

    response = api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    assert (response.status_code, response.json()) == (
        200,
        {"jobId": job_id, "status": "cancelled", "message": "Job cancellation requested"},
    )
    poll = api.client.get(f"/api/audio/jobs/{job_id}").json()
    assert (poll["status"], poll["stage"], poll["queuePosition"]) == ("cancelled", None, None)
    types = [item["type"] for item in api.client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]]
    assert types == ["job.created", "job.cancel_requested"]


def test_cancel_twice_is_409_with_status(api: Api) -> None:
    job_id = upload(api)
    api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    response = api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    assert (response.status_code, response.json()) == (
        409,
        {"error": "Job already in terminal state", "status": "cancelled"},
    )
    assert len(api.repository.store.read_stream(job_id)) == 2


def test_cancel_processing_job_shows_cancelling_until_the_worker_confirms(api: Api) -> None:
    job_id = upload(api)
    claim(api, job_id)

    assert api.client.post(f"/api/audio/jobs/{job_id}/cancel").status_code == 200

    poll = api.client.get(f"/api/audio/jobs/{job_id}").json()
    assert (poll["status"], poll["stage"]) == ("cancelled", "cancelling")
    assert api.repository.get(job_id).finished is False
    again = api.client.post(f"/api/audio/jobs/{job_id}/cancel")
    assert (again.status_code, again.json()["status"]) == (409, "cancelled")


@pytest.mark.parametrize(
    ("final", "status"),
    [(ev.JobCompleted(result={}), "complete"), (ev.JobFailed(error="ffmpeg exited with 1"), "failed")],
)
def test_cancel_finished_job_is_409(api: Api, final: ev.Event, status: str) -> None:
    job_id = upload(api)
    claim(api, job_id)
    api.repository.append(job_id, [final], api.repository.get(job_id), actor="host:1:0")

    response = api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    assert (response.status_code, response.json()) == (
        409,
        {"error": "Job already in terminal state", "status": status},
    )


def test_cancel_decides_on_the_state_it_appends_to(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job completing between the cancel's read and its append is answered 409, not cancelled."""
    job_id = upload(api)
    claim(api, job_id)
    real_load = api.repository.load
    loads: list[job_state.JobState | None] = []

    def load_then_worker_completes(requested: str) -> job_state.JobState | None:
        found = real_load(requested)
        if not loads:  # the worker finishes right after the API's first read
            api.repository.append(job_id, [ev.JobCompleted(result={})], found, actor="host:1:0")
        loads.append(found)
        return found

    monkeypatch.setattr(api.repository, "load", load_then_worker_completes)

    response = api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    assert (response.status_code, response.json()["status"]) == (409, "complete")
    assert [state.status for state in loads if state] == ["processing", "complete"]


def test_cancel_unknown_job_is_404(api: Api) -> None:
    response = api.client.post(f"/api/audio/jobs/{UNKNOWN_ID}/cancel")

    assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


def test_events_route_lists_the_stream_in_version_order(api: Api) -> None:
    with freeze_time("2026-01-02T03:04:05.250000Z", real_asyncio=True):
        job_id = upload(api, **{"X-Client-Id": "client-7"})
    claim(api, job_id)

    body = api.client.get(f"/api/audio/jobs/{job_id}/events").json()

    assert body["jobId"] == job_id
    created, claimed = body["events"]
    assert set(created) == {"position", "version", "type", "data", "actor", "recordedAt"}
    assert (created["version"], created["type"], created["actor"]) == (1, "job.created", "api")
    assert created["recordedAt"] == "2026-01-02T03:04:05.250000Z"
    assert created["data"]["job_type"] == "ingest"
    assert created["data"]["owner"] == "client-7"
    assert created["data"]["params"]["sourceType"] == "upload"
    assert (claimed["version"], claimed["type"], claimed["actor"]) == (2, "job.claimed", "host:1:0")
    assert (claimed["data"]["worker_id"], claimed["data"]["attempt"]) == ("host:1:0", 1)
    assert claimed["position"] > created["position"]


def test_events_route_encodes_timestamps_in_data(api: Api) -> None:
    job_id = upload(api)
    lease = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    api.repository.append(job_id, [ev.JobClaimed(worker_id="w", lease_expires_at=lease)], api.repository.get(job_id), actor="w")

    events = api.client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]

    assert events[1]["data"]["lease_expires_at"] == "2026-01-02T03:04:05Z"


def test_events_of_unknown_job_is_404(api: Api) -> None:
    response = api.client.get(f"/api/audio/jobs/{UNKNOWN_ID}/events")

    assert (response.status_code, response.json()) == (404, {"error": "Job not found"})


def test_health(api: Api) -> None:
    response = api.client.get("/health")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_unknown_route_is_json_404(api: Api) -> None:
    response = api.client.get("/api/audio/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"error": "no route matches GET /api/audio/nothing-here; the API is described at /schema"}


def test_wrong_method_is_json_405_naming_the_allowed_ones(api: Api) -> None:
    response = api.client.delete(f"/api/audio/jobs/{UNKNOWN_ID}")

    assert response.status_code == 405
    assert response.json()["error"].startswith(f"DELETE is not allowed on /api/audio/jobs/{UNKNOWN_ID}; use ")
    assert "GET" in response.headers["allow"]


def test_validation_error_is_json_naming_the_field(api: Api) -> None:
    response = api.client.post(
        "/api/audio/ingest",
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
        headers={"X-Client-Id": "c" * 201},
    )

    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert "client_id" in response.json()["error"]


def test_unexpected_error_is_json_500_without_internals(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(job_id: str) -> None:
        raise RuntimeError("secret database path /var/x")

    monkeypatch.setattr(api.repository, "load", explode)
    monkeypatch.setattr(api.repository, "get_with_position", explode)  # the poll's read

    response = api.client.get(f"/api/audio/jobs/{UNKNOWN_ID}")

    assert (response.status_code, response.json()) == (
        500,
        {"error": "internal server error; the server log has the details"},
    )


def test_openapi_document_lists_routes_and_response_schemas(api: Api) -> None:
    response = api.client.get("/schema/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert set(document["paths"]) >= {
        "/health",
        "/api/audio/ingest",
        "/api/audio/jobs/{jobId}",
        "/api/audio/jobs/{jobId}/cancel",
        "/api/audio/jobs/{jobId}/events",
        "/api/audio/jobs/{jobId}/stream",
        "/api/audio/edit/preview/{jobId}/audio",
    }
    assert not any("job_id" in path for path in document["paths"])  # the seed's names, for generated clients
    for path, operations in document["paths"].items():
        for operation in operations.values():
            path_parameters = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert path_parameters == (["jobId"] if "{jobId}" in path else []), path
    poll_ok = document["paths"]["/api/audio/jobs/{jobId}"]["get"]["responses"]["200"]
    assert poll_ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobView"}
    job_view = document["components"]["schemas"]["JobView"]["properties"]
    assert {"jobId", "queuePosition", "notBefore", "createdAt", "updatedAt"} <= set(job_view)
    assert {"type": "string", "format": "date-time"} in job_view["notBefore"]["oneOf"]
    ingest = document["paths"]["/api/audio/ingest"]["post"]
    assert "multipart/form-data" in ingest["requestBody"]["content"]
    assert {"202", "413", "415", "422"} <= set(ingest["responses"])
    assert {"EventList", "CancelAccepted", "TerminalConflict", "ErrorBody"} <= set(document["components"]["schemas"])


def test_a_real_upload_comes_back_through_the_api_normalised(tmp_path: Path) -> None:
    """Issue 2's end-to-end check: upload over HTTP, a real worker, poll over HTTP, download the
    prepared file over its signed link, and measure it with an independent ffmpeg ebur128 pass."""
    from jobtape import runtime
    from jobtape.audio import media
    from jobtape.defaults import worker as Worker

    source = SPEECH.parent / "music_strings.ogg"
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    settings = Settings(data_dir=tmp_path)
    storage = runtime.open_storage(settings)  # as `jobtape serve` opens it: local, with the signing secret
    try:
        with TestClient(create_app(repository, storage, settings)) as client:
            created = client.post("/api/audio/ingest", files={"file": (source.name, source.read_bytes(), "audio/ogg")})
            assert created.status_code == 202, created.text
            job_id = created.json()["data"]["jobId"]
            Worker(repository, storage, settings).run(until_idle=True)
            view = client.get(f"/api/audio/jobs/{job_id}").json()
            assert (view["status"], view["progress"], view["error"]) == ("complete", 100, None)
            download = client.get(view["downloadUrl"])
            assert download.status_code == 200 and download.headers["content-type"].startswith("audio/flac")
    finally:
        backend.close()
    prepared = tmp_path / "downloaded.flac"
    prepared.write_bytes(download.content)
    info = media.probe(prepared)
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 48000, 2)
    assert abs(info.duration_sec - 45.84) < 0.1
    assert abs(media.measure_integrated_loudness(prepared) - (-16.0)) <= 1.0  # target -16 LUFS, within 1 LU
    assert view["result"]["outputLoudness"]["integratedLufs"] == pytest.approx(-16.0, abs=1.0)


def test_a_download_link_that_cannot_be_made_leaves_the_poll_answering(tmp_path: Path) -> None:
    """Seed 001: generating downloadUrl may fail without failing the poll. A result whose key the
    storage refuses to sign (here: a key that climbs out of the storage folder) is served without it."""
    from jobtape import runtime

    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    repository = JobRepository(EventStore(backend), projections=TABLES.projections)
    settings = Settings(data_dir=tmp_path)
    job_id = repository.create("ingest", {"sourceType": "upload", "storageKey": "ingest-uploads/x/original.wav"}).state.job_id
    state = repository.append(job_id, [ev.JobClaimed(worker_id="host:1:0")], repository.get(job_id), actor="host:1:0").state
    repository.append(job_id, [ev.JobCompleted(result={"preparedKey": "../outside/prepared.flac"})], state, actor="host:1:0")
    try:
        with TestClient(create_app(repository, runtime.open_storage(settings), settings)) as client:
            view = client.get(f"/api/audio/jobs/{job_id}")
    finally:
        backend.close()
    assert view.status_code == 200
    assert view.json()["status"] == "complete" and "downloadUrl" not in view.json()
    assert view.json()["result"] == {"preparedKey": "../outside/prepared.flac"}
