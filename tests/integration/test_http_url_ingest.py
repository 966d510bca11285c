"""The JSON ingest route: URL/YouTube jobs created without fetching, refusals that append nothing (SSRF guard)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar.testing import TestClient

from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage


class Api:
    def __init__(self, client: TestClient, repository: JobRepository) -> None:
        self.client = client
        self.repository = repository

    def post(self, body: Any, **headers: str) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post("/api/audio/ingest", content=content, headers={"Content-Type": "application/json", **headers})

    def event_count(self) -> int:
        return int(self.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    opened: list[tuple[SQLiteBackend, TestClient]] = []

    def make(*, allow_private_urls: bool, allowed_private_networks: tuple[str, ...] = ()) -> Api:
        backend = SQLiteBackend(tmp_path / "jobtape.db")
        backend.migrate(TABLES.migrations)
        repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        audio = AudioSettings(allow_private_urls=allow_private_urls, allowed_private_networks=allowed_private_networks)
        client = TestClient(create_app(repository, LocalStorage(tmp_path / "storage"), Settings(data_dir=tmp_path), audio)).__enter__()
        opened.append((backend, client))
        return Api(client, repository)

    yield make
    for backend, client in opened:
        client.__exit__(None, None, None)
        backend.close()


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that records the paths it is asked for (and answers 404)."""
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/talk.mp3", requested
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_url_ingest_creates_a_pending_job_without_fetching(make_api: Callable[..., Api], loopback_server: tuple[str, list[str]]) -> None:
    url, requested = loopback_server
    api = make_api(allow_private_urls=True)

    response = api.post({"sourceType": "url", "url": f" {url} ", "rightsAttested": True}, **{"X-Client-Id": "alice"})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is True and body["data"]["status"] == "pending"
    state = api.repository.get(body["data"]["jobId"])
    assert (state.job_type, state.owner) == ("ingest", "alice")
    assert state.params == {"sourceType": "url", "url": url, "rightsAttested": True}
    assert requested == []  # nothing is downloaded in the request


def test_youtube_ingest_is_accepted_and_replayed_by_idempotency_key(make_api: Callable[..., Api]) -> None:
    api = make_api(allow_private_urls=True)  # youtu.be is not resolved when the allowance is on: no traffic
    body = {"sourceType": "youtube", "url": "https://youtu.be/dQw4w9WgXcQ", "rightsAttested": True}

    first = api.post(body, **{"Idempotency-Key": "k1"})
    replay = api.post(body, **{"Idempotency-Key": "k1"})

    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["data"]["jobId"] == first.json()["data"]["jobId"]
    assert api.event_count() == 1
    other_video = api.post({**body, "url": "https://youtu.be/9bZkp7q19f0"}, **{"Idempotency-Key": "k1"})
    as_url = api.post({**body, "sourceType": "url"}, **{"Idempotency-Key": "k1"})
    for refused in (other_video, as_url):
        assert refused.status_code == 422 and "of another source" in refused.json()["error"], refused.text
    assert api.event_count() == 1


REFUSALS = {
    "rights not attested": (
        {"sourceType": "url", "url": "https://media.example/a.mp3", "rightsAttested": False},
        422,
        "rightsAttested must be true: confirm you have the rights to ingest this media",
    ),
    "rights missing": (
        {"sourceType": "url", "url": "https://media.example/a.mp3"},
        422,
        "rightsAttested must be true: confirm you have the rights to ingest this media",
    ),
    "not http": (
        {"sourceType": "url", "url": "file:///etc/passwd", "rightsAttested": True},
        422,
        "url has scheme 'file'; only http:// and https:// URLs can be ingested",
    ),
    "youtube source, other host": (
        {"sourceType": "youtube", "url": "https://vimeo.com/1", "rightsAttested": True},
        422,
        (
            "url host 'vimeo.com' is not a YouTube address (youtube.com, youtu.be, youtube-nocookie.com);"
            ' use sourceType "url" for other sites'
        ),
    ),
    "unknown source type": (
        {"sourceType": "ftp", "url": "https://media.example/a.mp3", "rightsAttested": True},
        422,
        (
            "invalid ingest body: Invalid enum value 'ftp' - at `$.sourceType`; send "
            '{"sourceType": "url" | "youtube", "url": "https://...", "rightsAttested": true}'
        ),
    ),
    "no url": (
        {"sourceType": "url", "rightsAttested": True},
        422,
        (
            "invalid ingest body: Object missing required field `url`; send "
            '{"sourceType": "url" | "youtube", "url": "https://...", "rightsAttested": true}'
        ),
    ),
    "malformed json": (
        b'{"sourceType": "url",',
        400,
        "the body is not valid JSON",
    ),
    "body too large": (
        {"sourceType": "url", "url": "https://media.example/" + "a" * 20_000, "rightsAttested": True},
        413,
        "the JSON body is larger than 16384 bytes",
    ),
}


@pytest.mark.parametrize(("body", "status", "message"), REFUSALS.values(), ids=REFUSALS.keys())
def test_bad_json_ingest_is_refused_and_appends_nothing(make_api: Callable[..., Api], body: Any, status: int, message: str) -> None:
    api = make_api(allow_private_urls=True)

    response = api.post(body)

    assert response.status_code == status
    assert response.json()["error"].startswith(message), response.json()
    assert api.event_count() == 0


def test_loopback_url_is_refused_when_private_urls_are_not_allowed(
    make_api: Callable[..., Api], loopback_server: tuple[str, list[str]]
) -> None:
    url, requested = loopback_server
    api = make_api(allow_private_urls=False)

    response = api.post({"sourceType": "url", "url": url, "rightsAttested": True})

    assert response.status_code == 422
    assert response.json() == {
        "error": "url host '127.0.0.1' resolves to 127.0.0.1, a loopback address; only public addresses can be"
        " ingested (an operator may allow this network with --allow-private-network, or every address with"
        " --allow-private-urls)"
    }
    assert api.event_count() == 0 and requested == []


def test_an_allowlisted_network_passes_and_its_neighbours_do_not(
    make_api: Callable[..., Api], loopback_server: tuple[str, list[str]]
) -> None:
    url, requested = loopback_server
    api = make_api(allow_private_urls=False, allowed_private_networks=("127.0.0.1/32",))

    accepted = api.post({"sourceType": "url", "url": url, "rightsAttested": True})
    neighbour = api.post({"sourceType": "url", "url": url.replace("127.0.0.1", "127.0.0.2"), "rightsAttested": True})
    metadata = api.post({"sourceType": "url", "url": "http://169.254.169.254/latest/meta-data/", "rightsAttested": True})

    assert accepted.status_code == 202, accepted.text
    assert neighbour.status_code == 422 and "127.0.0.2, a loopback address" in neighbour.json()["error"]
    assert metadata.status_code == 422 and "cloud metadata" in metadata.json()["error"]
    assert api.event_count() == 1 and requested == []  # the API only checks; the worker downloads


def test_openapi_documents_the_json_body(make_api: Callable[..., Api]) -> None:
    api = make_api(allow_private_urls=False)

    operation = api.client.get("/schema/openapi.json").json()["paths"]["/api/audio/ingest"]["post"]

    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["sourceType", "url"]
    assert schema["properties"]["sourceType"]["enum"] == ["url", "youtube"]
    assert set(schema["properties"]) == {"sourceType", "url", "rightsAttested"}
    assert "multipart/form-data" in operation["requestBody"]["content"]
