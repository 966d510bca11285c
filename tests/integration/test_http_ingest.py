"""The upload route: streaming into LocalStorage, rejections that leave nothing behind, idempotency."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar import Litestar
from litestar.testing import TestClient

from jobtape.audio.http.ingest import extension_for
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"
BOUNDARY = "jobtape-test-boundary"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


@dataclasses.dataclass
class Api:
    app: Litestar
    client: TestClient
    repository: JobRepository
    storage: LocalStorage
    data_dir: Path

    def event_count(self) -> int:
        return int(self.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])

    def stored_files(self) -> list[Path]:
        """Every file under the storage root, and the spool files in the upload temp folder."""
        found = []
        for folder, _dirs, files in os.walk(self.storage.root):
            found.extend(Path(folder) / name for name in files)
        return found + sorted((self.data_dir / "upload-tmp").glob("upload-*"))


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    opened: list[tuple[SQLiteBackend, TestClient]] = []

    def make(max_upload_bytes: int = 50 * 1000 * 1000) -> Api:
        backend = SQLiteBackend(tmp_path / "jobtape.db")
        backend.migrate(TABLES.migrations)
        repository = JobRepository(EventStore(backend), projections=TABLES.projections)
        storage = LocalStorage(tmp_path / "storage")
        app = create_app(repository, storage, Settings(data_dir=tmp_path, max_upload_bytes=max_upload_bytes))
        client = TestClient(app).__enter__()
        opened.append((backend, client))
        return Api(app, client, repository, storage, tmp_path)

    yield make
    for backend, client in opened:
        client.__exit__(None, None, None)
        backend.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def form(*parts: tuple[str, str | None, str | None, bytes], closed: bool = True) -> bytes:
    """A multipart body from ``(field, filename, content_type, data)`` parts."""
    out = b""
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


def test_upload_stores_the_file_then_creates_a_pending_job(api: Api) -> None:
    original = SPEECH.read_bytes()

    response = api.client.post("/api/audio/ingest", files={"file": ("LJ Speech.WAV", original, "audio/wav")}, headers={"X-Client-Id": "c1"})

    assert response.status_code == 202
    body = response.json()
    job_id = body["data"]["jobId"]
    assert body == {"success": True, "data": {"jobId": job_id, "status": "pending"}}
    state = api.repository.get(job_id)
    assert (state.job_type, state.owner, state.status, state.idempotency_key) == ("ingest", "c1", "pending", None)
    assert state.params == {
        "sourceType": "upload",
        "storageKey": f"ingest-uploads/{job_id}.wav",  # one flat folder (issue 12)
        "originalFilename": "LJ Speech.WAV",
        "contentType": "audio/wav",
        "sizeBytes": len(original),
        "sha256": hashlib.sha256(original).hexdigest(),
    }
    assert b"".join(api.storage.open_stream(state.params["storageKey"])) == original
    assert api.client.get(f"/api/audio/jobs/{job_id}").json()["queuePosition"] == 1
    assert api.stored_files() == [api.storage.root / state.params["storageKey"]]


def test_upload_without_client_id_is_owned_by_anonymous(api: Api) -> None:
    response = api.client.post("/api/audio/ingest", files={"file": ("a.mp3", b"ID3...", "audio/mpeg")})

    assert api.repository.get(response.json()["data"]["jobId"]).owner == "anonymous"


def test_extension_falls_back_to_content_type_then_bin(api: Api) -> None:
    response = api.client.post("/api/audio/ingest", content=form(("file", "noext", "audio/mpeg", b"ID3")), headers={"Content-Type": FORM})

    job_id = response.json()["data"]["jobId"]
    state = api.repository.get(job_id)
    assert state.params["storageKey"] == f"ingest-uploads/{job_id}.mp3"
    assert state.params["originalFilename"] == "noext"


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("talk.MP3", "audio/mpeg", "mp3"),
        ("talk.tar.gz", "audio/wav", "gz"),
        ("weird.m p3", "audio/wav", "wav"),
        ("x.", "video/mp4", "mp4"),
        (".hidden", "audio/flac", "flac"),
        (None, "audio/x-aiff", "bin"),
        (None, "audio/aiff", "aiff"),
        ("clip", "application/octet-stream", "bin"),
        ("a." + "b" * 17, "application/octet-stream", "bin"),
    ],
)
def test_extension_for(filename: str | None, content_type: str, expected: str) -> None:
    assert extension_for(filename, content_type) == expected


def test_other_form_fields_are_ignored_and_directories_dropped_from_the_name(api: Api) -> None:
    body = form(
        ("title", None, None, b"My talk"),
        ("file", "C:\\Users\\me\\talk.ogg", "audio/ogg", b"OggS"),
        ("rightsAttested", None, None, b"true"),
    )

    response = api.client.post("/api/audio/ingest", content=body, headers={"Content-Type": FORM})

    assert response.status_code == 202, response.text
    params = api.repository.get(response.json()["data"]["jobId"]).params
    assert (params["originalFilename"], params["sizeBytes"]) == ("talk.ogg", 4)


def test_part_without_content_type_is_taken_as_octet_stream(api: Api) -> None:
    response = api.client.post("/api/audio/ingest", content=form(("file", "a.flac", None, b"fLaC")), headers={"Content-Type": FORM})

    params = api.repository.get(response.json()["data"]["jobId"]).params
    assert (params["contentType"], params["storageKey"][-5:]) == ("application/octet-stream", ".flac")


def test_idempotency_key_replay_answers_the_first_job(api: Api) -> None:
    headers = {"X-Client-Id": "c1", "Idempotency-Key": "upload-42"}
    files = {"file": ("a.wav", SPEECH.read_bytes(), "audio/wav")}
    first = api.client.post("/api/audio/ingest", files=files, headers=headers)

    replay = api.client.post("/api/audio/ingest", files=files, headers=headers)

    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json() == first.json()
    assert api.event_count() == 1
    assert len(api.stored_files()) == 1
    other_owner = api.client.post("/api/audio/ingest", files=files, headers={"X-Client-Id": "c2", "Idempotency-Key": "upload-42"})
    assert other_owner.status_code == 202
    assert other_owner.json()["data"]["jobId"] != first.json()["data"]["jobId"]


def test_an_idempotency_key_reused_for_another_file_is_422_and_leaves_nothing(api: Api) -> None:
    headers = {"X-Client-Id": "c1", "Idempotency-Key": "upload-43"}
    first = api.client.post("/api/audio/ingest", files={"file": ("a.wav", SPEECH.read_bytes(), "audio/wav")}, headers=headers)
    renamed = api.client.post(
        "/api/audio/ingest", files={"file": ("b.wav", SPEECH.read_bytes(), "audio/wav")}, headers=headers
    )  # the same bytes under another name: the same request
    assert (first.status_code, renamed.status_code) == (202, 200)

    other = api.client.post("/api/audio/ingest", files={"file": ("a.wav", SPEECH.read_bytes()[:-1000], "audio/wav")}, headers=headers)

    assert other.status_code == 422
    job_id = first.json()["data"]["jobId"]
    assert other.json()["error"].startswith(f"Idempotency-Key 'upload-43' was already used for an ingest job ({job_id}) of another source")
    assert api.event_count() == 1 and len(api.stored_files()) == 1  # the refused upload's blob is gone
    assert api.repository.get(job_id).params["sha256"] == hashlib.sha256(SPEECH.read_bytes()).hexdigest()


def test_idempotency_replay_reports_the_current_status(api: Api) -> None:
    headers = {"Idempotency-Key": "k"}
    files = {"file": ("a.wav", b"RIFF", "audio/wav")}
    job_id = api.client.post("/api/audio/ingest", files=files, headers=headers).json()["data"]["jobId"]
    api.client.post(f"/api/audio/jobs/{job_id}/cancel")

    replay = api.client.post("/api/audio/ingest", files=files, headers=headers)

    assert (replay.status_code, replay.json()["data"]) == (200, {"jobId": job_id, "status": "cancelled"})


BAD_INPUTS = {
    "json body without rightsAttested": (
        {
            "content": b'{"sourceType": "youtube", "url": "https://youtu.be/x"}',
            "headers": {"Content-Type": "application/json"},
        },
        422,
        "rightsAttested must be true: confirm you have the rights to ingest this media",
    ),
    "plain text body": (
        {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "Content-Type 'text/plain' is not supported; send multipart/form-data with a 'file' field, or JSON naming a URL",
    ),
    "no content type": (
        {"content": b"hello", "headers": {"Content-Type": ""}},
        415,
        "Content-Type missing is not supported; send multipart/form-data with a 'file' field, or JSON naming a URL",
    ),
    "no boundary": (
        {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "the multipart/form-data Content-Type has no boundary parameter",
    ),
    "no file field": (
        {"content": form(("title", None, None, b"talk")), "headers": {"Content-Type": FORM}},
        400,
        "the form has no 'file' field; send the audio as a multipart/form-data field named 'file'",
    ),
    "empty file": (
        {"content": form(("file", "a.wav", "audio/wav", b"")), "headers": {"Content-Type": FORM}},
        422,
        "the uploaded file is empty",
    ),
    "text file": (
        {"content": form(("file", "a.txt", "text/plain", b"hi")), "headers": {"Content-Type": FORM}},
        415,
        "unsupported file type 'text/plain': upload audio/*, video/* or application/octet-stream",
    ),
    "two files": (
        {
            "content": form(("file", "a.wav", "audio/wav", b"a"), ("file", "b.wav", "audio/wav", b"b")),
            "headers": {"Content-Type": FORM},
        },
        400,
        "send exactly one 'file' field; the form has several",
    ),
    "truncated body": (
        {"content": form(("file", "a.wav", "audio/wav", b"RIFF"), closed=False), "headers": {"Content-Type": FORM}},
        400,
        "the multipart body ends before its closing boundary; send the whole form",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_appends_nothing_and_stores_nothing(api: Api, case: str) -> None:
    request, status, message = BAD_INPUTS[case]

    response = api.client.post("/api/audio/ingest", **request)  # type: ignore[arg-type]

    assert (response.status_code, response.json()) == (status, {"error": message})
    assert api.event_count() == 0
    assert api.stored_files() == []


def test_malformed_multipart_is_400(api: Api) -> None:
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\nno-colon-header\r\n\r\nx'.encode()

    response = api.client.post("/api/audio/ingest", content=body, headers={"Content-Type": FORM})

    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed multipart/form-data body")
    assert (api.event_count(), api.stored_files()) == (0, [])


def test_too_large_with_content_length_is_413_before_reading(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=1000)

    response = api.client.post("/api/audio/ingest", files={"file": ("a.wav", b"x" * 200_000, "audio/wav")})

    assert (response.status_code, response.json()) == (
        413,
        {"error": "the upload is larger than the limit of 1000 bytes"},
    )
    assert (api.event_count(), api.stored_files()) == (0, [])


def test_too_large_file_just_over_the_limit_is_413(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=1000)

    response = api.client.post("/api/audio/ingest", files={"file": ("a.wav", b"x" * 1001, "audio/wav")})

    assert (response.status_code, response.json()) == (
        413,
        {"error": "the file is larger than the upload limit of 1000 bytes"},
    )
    assert (api.event_count(), api.stored_files()) == (0, [])
    at_limit = api.client.post("/api/audio/ingest", files={"file": ("a.wav", b"x" * 1000, "audio/wav")})
    assert at_limit.status_code == 202


def _chunked_form(head: bytes, chunk: bytes, count: int, sent: list[int]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(count):
            sent.append(len(chunk))
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body()


def _head(filename: str = "big.wav", content_type: str = "audio/wav") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()


async def _post_streaming(app: Litestar, body: AsyncIterator[bytes]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post("/api/audio/ingest", content=body, headers={"Content-Type": FORM})


def test_streamed_upload_over_the_limit_stops_reading_early(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=1_000_000)
    sent: list[int] = []

    response = anyio.run(_post_streaming, api.app, _chunked_form(_head(), b"x" * 65536, 100, sent))

    assert response.status_code == 413
    assert sum(sent) < 2_000_000, "the server kept reading after the limit"
    assert (api.event_count(), api.stored_files()) == (0, [])


def test_large_upload_streams_without_holding_the_file_in_memory(api: Api) -> None:
    chunk = os.urandom(65536)
    count = 320  # 20 MiB
    sent: list[int] = []
    expected = hashlib.sha256(chunk * count).hexdigest()

    tracemalloc.start()
    try:
        response = anyio.run(_post_streaming, api.app, _chunked_form(_head(), chunk, count, sent))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 202, response.text
    assert peak < 10 * 1024 * 1024, f"peak Python allocations {peak} bytes for a {len(chunk) * count} byte upload"
    params = api.repository.get(response.json()["data"]["jobId"]).params
    assert params["sizeBytes"] == len(chunk) * count
    digest = hashlib.sha256()
    for part in api.storage.open_stream(params["storageKey"]):
        digest.update(part)
    assert digest.hexdigest() == expected


def test_failure_after_storing_deletes_the_blob(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_create(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(api.repository, "create", broken_create)

    response = api.client.post("/api/audio/ingest", files={"file": ("a.wav", SPEECH.read_bytes(), "audio/wav")})

    assert response.status_code == 500
    assert (api.event_count(), api.stored_files()) == (0, [])


def test_invalid_header_rejected_before_anything_is_stored(api: Api) -> None:
    response = api.client.post(
        "/api/audio/ingest",
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
        headers={"Idempotency-Key": "k" * 256},
    )

    assert response.status_code == 400
    assert (api.event_count(), api.stored_files()) == (0, [])
