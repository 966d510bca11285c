"""The HTTP contract against a real ``jobtape serve`` (one embedded worker, real ffmpeg):
HEAD on the byte routes, ``downloadUrl`` in the SSE state, the docs page offline, no server
paths in a failed job's error, range-checked ``asOf``, and an OpenAPI document whose every
error body is ``{"error"}``. Also the CLI's range checks (exit 2, never a traceback)."""

from __future__ import annotations

import dataclasses
import html.parser
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from configs import TABLES  # tests/ is on sys.path
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]

MEDIA = Path(__file__).resolve().parents[2] / "media"
OUT_OF_RANGE = ["-99999999d", "-1e400d", "0001-01-01T00:00:00+01:00"]


@dataclasses.dataclass
class Served:
    client: httpx.Client
    data_dir: Path
    log: Path
    ingest: dict[str, Any]  # the poll body of a complete ingest of speech_ljspeech.wav
    preview: dict[str, Any]  # the poll body of a complete preview of it


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/api/audio/jobs/{job_id}").json()
        return view if view["status"] in ("complete", "failed", "cancelled") else None

    view = wait_for(done, timeout_s=120, what=f"job {job_id} to finish")
    return view


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("contracts")
    with jobtape_serve(root / "data") as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        files = {"file": ("speech.wav", (MEDIA / "speech_ljspeech.wav").read_bytes(), "audio/wav")}
        ingest = _finished(client, client.post("/api/audio/ingest", files=files).json()["data"]["jobId"])
        assert ingest["status"] == "complete", ingest
        recipe = {"assetId": ingest["result"]["assetId"], "startSec": 0.5, "endSec": 2.5}
        preview = _finished(client, client.post("/api/audio/edit/preview", json=recipe).json()["data"]["jobId"])
        assert preview["status"] == "complete", preview
        yield Served(client, root / "data", next(root.glob("serve-*.log")), ingest, preview)


def _same_headers(get: httpx.Response, head: httpx.Response) -> None:
    assert head.status_code == get.status_code
    for name in ("content-length", "accept-ranges", "content-type", "content-range"):
        assert head.headers.get(name) == get.headers.get(name), name
    assert head.content == b""
    assert int(get.headers["content-length"]) == len(get.content) > 0


@pytest.mark.slow
@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=10-99"}])
def test_head_on_the_preview_audio_answers_the_get_headers_without_a_body(served: Served, headers: dict[str, str]) -> None:
    path = f"/api/audio/edit/preview/{served.preview['jobId']}/audio"
    _same_headers(served.client.get(path, headers=headers), served.client.head(path, headers=headers))
    assert served.client.head(path).headers["content-type"] == "audio/mpeg"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["ingest", "preview"])
def test_head_on_a_signed_download_answers_the_get_headers_without_a_body(served: Served, which: str) -> None:
    url = getattr(served, which)["downloadUrl"]
    _same_headers(served.client.get(url), served.client.head(url))
    _same_headers(served.client.get(url, headers={"Range": "bytes=0-3"}), served.client.head(url, headers={"Range": "bytes=0-3"}))
    forged = served.client.head(url.replace("signature=", "signature=0"))
    assert forged.status_code == 403  # as for GET


@pytest.mark.slow
def test_the_sse_state_message_is_the_poll_body_with_its_download_url(served: Served) -> None:
    job_id = served.preview["jobId"]
    with served.client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as response:
        lines = list(response.iter_lines())  # a finished job: the state, then the stream closes
    state = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: ") :])
    poll = served.client.get(f"/api/audio/jobs/{job_id}").json()
    assert state["downloadUrl"].startswith("/api/storage/download?")
    assert {k: v for k, v in state.items() if k != "downloadUrl"} == {k: v for k, v in poll.items() if k != "downloadUrl"}
    assert served.client.get(state["downloadUrl"]).status_code == 200


class _Assets(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if (tag, name) in (("script", "src"), ("link", "href")) and value:
                self.urls.append(value)


@pytest.mark.slow
def test_the_docs_page_loads_every_asset_from_this_server(served: Served) -> None:
    page = served.client.get("/schema")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) >= 3, parser.urls  # the CSS, the bundle, the preset (and the icon)
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served by jobtape"
        asset = served.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    assert "SwaggerUIBundle" in served.client.get(next(u for u in parser.urls if u.endswith("bundle.js"))).text


@pytest.mark.slow
def test_a_failed_jobs_error_names_no_server_path(served: Served) -> None:
    files = {"file": ("noise.wav", b"RIFF this is not audio at all" * 100, "audio/wav")}
    job_id = served.client.post("/api/audio/ingest", files=files).json()["data"]["jobId"]
    view = _finished(served.client, job_id)
    assert view["status"] == "failed", view
    error = view["error"]
    assert "Invalid data" in error or "not a readable media file" in error, error
    assert str(served.data_dir) not in error and "/tmp/" not in error, error
    assert not re.search(r"(?<![\w:/.~>-])/[^\s/]+/", error), f"an absolute path leaks: {error}"
    events = served.client.get(f"/api/audio/jobs/{job_id}/events").json()["events"]
    recorded = [e["data"]["error"] for e in events if e["type"] in ("job.failed", "job.retry_scheduled")]
    assert recorded and all("/tmp/" not in text and str(served.data_dir) not in text for text in recorded)
    logged = wait_for(lambda: f"job {job_id} failed" in served.log.read_text(), timeout_s=30, what="the log line")
    assert logged  # the server log keeps the full message


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["", "/events"])
@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_as_of_out_of_range_is_422_naming_the_range(served: Served, suffix: str, value: str) -> None:
    response = served.client.get(f"/api/audio/jobs/{served.ingest['jobId']}{suffix}", params={"asOf": value})
    assert response.status_code == 422, response.text
    assert "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z" in response.json()["error"]


@pytest.mark.slow
def test_every_error_response_in_the_openapi_document_is_the_error_body(served: Served) -> None:
    document = served.client.get("/schema/openapi.json").json()
    errors_seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                errors_seen += 1
                schema = response["content"]["application/json"]["schema"]
                assert schema.get("$ref") in ("#/components/schemas/ErrorBody", "#/components/schemas/TerminalConflict"), (
                    method,
                    path,
                    status,
                )
    assert errors_seen > 30
    components = document["components"]["schemas"]
    assert components["ErrorBody"]["required"] == ["error"] and "TerminalConflict" in components
    poll = document["paths"]["/api/audio/jobs/{jobId}"]["get"]
    job_id = next(p for p in poll["parameters"] if p["name"] == "jobId")
    assert job_id["schema"]["pattern"] == "^[0-9a-f]{32}$"
    download = {p["name"]: p for p in document["paths"]["/api/storage/download"]["get"]["parameters"]}
    assert all(download[name]["required"] for name in ("key", "expires", "signature"))
    assert download["signature"]["schema"]["pattern"] == "^[0-9a-f]{64}$"
    assert "head" in document["paths"]["/api/storage/download"]
    assert "/api/storage/upload" not in document["paths"]  # local storage issues no upload URLs


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["status", "0" * 32, "--as-of=-99999999d"], None),
        (["jobs", "--as-of=0001-01-01T00:00:00+01:00"], None),
        (["tail", "--since=-1e400d"], None),
        (["tail", "--since", str(2**63)], None),
        (["stats", "--since=-99999999d"], None),
        (["export", "--since=-99999999d"], "--since"),
        (["archive", "--older-than", "99999999999d", "--to", "x.jsonl"], "--older-than"),
        (["worker", "--poll-interval", "nan"], "--poll-interval"),
        (["worker", "--lease-ttl", "inf"], "--lease-ttl"),
        (["serve", "--upload-idle-timeout", "nan"], "--upload-idle-timeout"),
        (["serve", "--upload-min-rate", "1e400"], "--upload-min-rate"),
    ],
)
def test_cli_times_and_durations_out_of_range_are_usage_errors(tmp_path: Path, args: list[str], option: str | None) -> None:
    from jobtape import runtime
    from jobtape.config import Settings

    runtime.open_repository(Settings(data_dir=tmp_path), tables=TABLES).store.close()  # an empty log to read
    done = subprocess.run(
        [sys.executable, "-m", "jobtape", *args, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Error: Invalid value" in done.stderr, done.stderr
    assert option is None or option in done.stderr
