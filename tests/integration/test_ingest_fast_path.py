"""The multipart ingest's fast path (``ingest_route``'s, called by the authentication middleware)
answers what the ingest handler answers: the same status, headers and body (but the new job
id), the same job and stored file, and for a rejected upload the same error with no event
appended and no file left. What it leaves to the handler (JSON, ``Idempotency-Key``, a long
``X-Client-Id``, no ``Content-Length``) the handler answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from configs import TABLES  # tests/ is on sys.path
from litestar import Litestar
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send
from test_http_ingest import BOUNDARY, FORM
from test_http_ingest import form as _form

from jobtape.auth.principal import Principal
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.http import auth as http_auth
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

__all__: list[str] = []

_JOB_ID = re.compile(rb'"jobId":"[0-9a-f]{32}"')


class Side:
    """One app (with or without the ingest's fast path) on its own data folder."""

    def __init__(self, folder: Path, *, fast_path: bool, max_upload_bytes: int = 1000) -> None:
        self.backend = SQLiteBackend(folder / "jobtape.db")
        self.backend.migrate(TABLES.migrations)
        self.repository = JobRepository(EventStore(self.backend), projections=TABLES.projections)
        self.storage = LocalStorage(folder / "storage")
        self.folder = folder
        self.answered = 0
        app = create_app(self.repository, self.storage, Settings(data_dir=folder, max_upload_bytes=max_upload_bytes, max_active_jobs=2))
        self._wire(app, fast_path)
        self.client = TestClient(app).__enter__()

    def _wire(self, app: Litestar, fast_path: bool) -> None:
        """Count the fast path's answers, or take it out (the handler then answers every request)."""
        handlers = [
            h
            for route in app.routes
            for h in getattr(route, "route_handlers", [])
            if route.path == "/api/audio/ingest" and "POST" in h.http_methods
        ]
        assert len(handlers) == 1 and handlers[0].opt[http_auth.FAST_PATH_OPT] is not None
        fast = handlers[0].opt[http_auth.FAST_PATH_OPT]

        async def counted(scope: Scope, receive: Receive, send: Send, principal: Principal) -> bool:
            done: bool = await fast(scope, receive, send, principal)
            self.answered += done
            return done

        handlers[0].opt[http_auth.FAST_PATH_OPT] = counted if fast_path else None

    def events(self) -> int:
        return int(self.backend.query("SELECT COUNT(*) FROM events")[0][0])

    def files(self) -> list[str]:
        found = [str(Path(d, n).relative_to(self.folder)) for d, _, names in os.walk(self.storage.root) for n in names]
        return sorted(found + [p.name for p in (self.folder / "upload-tmp").glob("upload-*")])

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.backend.close()


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    fast, handler = Side(tmp_path / "fast", fast_path=True), Side(tmp_path / "handler", fast_path=False)
    yield fast, handler
    fast.close()
    handler.close()


def _post(side: Side, body: bytes, headers: dict[str, str]) -> tuple[tuple[int, list[tuple[str, str]], bytes], str | None]:
    """``((status, headers, body with the job id replaced), job id or None)``."""
    response = side.client.post("/api/audio/ingest", content=body, headers=headers)
    found = _JOB_ID.search(response.content)
    job_id = found.group(0)[9:-1].decode() if found else None
    return (response.status_code, list(response.headers.multi_items()), _JOB_ID.sub(b'"jobId":"<id>"', response.content)), job_id


def _job(side: Side, job_id: str | None) -> tuple[object, ...]:
    """A created job as comparable across the two sides: its type, owner, status, params (key with ``<id>``) and stored bytes."""
    assert job_id is not None
    state = side.repository.get(job_id)
    key = state.params["storageKey"]
    assert key.startswith(f"ingest-uploads/{job_id}.")
    params = {**state.params, "storageKey": key.replace(job_id, "<id>")}
    return state.job_type, state.owner, state.status, params, b"".join(side.storage.open_stream(key))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_form(("file", "talk.wav", "audio/wav", b"RIFF....WAVE")), 202),
        (_form(("note", None, None, b"hi"), ("file", None, "audio/mpeg", b"ID3")), 202),
        (_form(("file", "notes.txt", "text/plain", b"hello")), 415),
        (_form(("file", "empty.wav", "audio/wav", b"")), 422),
        (_form(("other", "a.wav", "audio/wav", b"RIFF")), 400),
        (_form(("file", "a.wav", "audio/wav", b"RIFF"), ("file", "b.wav", "audio/wav", b"RIFF")), 400),
        (_form(("file", "a.wav", "audio/wav", b"RIFF"), closed=False), 400),
        (_form(("file", "big.wav", "audio/wav", b"x" * 1001)), 413),
        (b"--" + BOUNDARY.encode() + b"\r\nnot a header line\r\n\r\n", 400),
    ],
)
def test_the_fast_path_answers_what_the_handler_answers(sides: tuple[Side, Side], body: bytes, status: int) -> None:
    fast, handler = sides
    headers = {"Content-Type": FORM, "X-Client-Id": "alice"}
    (fast_answer, fast_id), (handler_answer, handler_id) = _post(fast, body, headers), _post(handler, body, headers)
    assert fast_answer == handler_answer
    assert fast_answer[0] == status
    assert fast.answered == (1 if status == 202 else 0) and handler.answered == 0  # an error is raised, then answered by the app
    if status == 202:
        assert _job(fast, fast_id) == _job(handler, handler_id)
        assert fast.events() == handler.events() > 0
    else:
        assert fast.events() == handler.events() == 0  # nothing appended
        assert fast.files() == handler.files() == []  # nothing kept


def test_over_the_quota_both_answer_429_and_keep_nothing_of_the_refused_upload(sides: tuple[Side, Side]) -> None:
    fast, handler = sides
    body, headers = _form(("file", "a.wav", "audio/wav", b"RIFF")), {"Content-Type": FORM, "X-Client-Id": "bob"}
    answers = [(_post(fast, body, headers)[0], _post(handler, body, headers)[0]) for _ in range(3)]  # the quota is 2
    assert [a[0] for a, _ in answers] == [202, 202, 429]
    assert all(fast_answer == handler_answer for fast_answer, handler_answer in answers)
    assert fast.answered == 2  # the third was refused (raised), then answered by the app's handler
    assert len(fast.files()) == len(handler.files()) == 2 and fast.events() == handler.events()


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"sourceType": "url", "url": "http://10.0.0.1/a.mp3", "rightsAttested": true}', {"Content-Type": "application/json"}),
        (_form(("file", "a.wav", "audio/wav", b"RIFF")), {"Content-Type": FORM, "Idempotency-Key": "k1"}),
        (_form(("file", "a.wav", "audio/wav", b"RIFF")), {"Content-Type": FORM, "X-Client-Id": "x" * 201}),
        (_form(("file", "a.wav", "audio/wav", b"RIFF")), {"Content-Type": "multipart/form-data"}),
        (_form(("file", "a.wav", "audio/wav", b"RIFF")), {"Content-Type": "text/plain"}),
    ],
)
def test_what_the_fast_path_leaves_the_handler_answers(sides: tuple[Side, Side], body: bytes, headers: dict[str, str]) -> None:
    fast, handler = sides
    assert _post(fast, body, headers)[0] == _post(handler, body, headers)[0]
    assert fast.answered == 0


def test_a_body_without_content_length_is_left_to_the_handler(sides: tuple[Side, Side]) -> None:
    fast, _handler = sides
    body = _form(("file", "a.wav", "audio/wav", b"RIFF"))

    def chunked() -> Iterator[bytes]:
        yield body

    response = fast.client.post("/api/audio/ingest", content=chunked(), headers={"Content-Type": FORM})
    assert response.status_code == 202
    assert fast.answered == 0


def test_a_repeated_client_id_is_left_to_the_handler_which_checks_the_first(sides: tuple[Side, Side]) -> None:
    """TestClient merges repeated headers, so the request goes to the ASGI app as a server would send it."""
    body = _form(("file", "a.wav", "audio/wav", b"RIFF0000"))
    headers = [(b"host", b"t"), (b"content-type", FORM.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(b"X-Client-Id", b"a" * 201), (b"x-client-id", b"bob")]  # the first is too long; names in any case
    answers = []
    for side in sides:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http"}
        scope |= {"path": "/api/audio/ingest", "raw_path": b"/api/audio/ingest", "query_string": b"", "root_path": ""}
        scope |= {"headers": headers, "client": ("127.0.0.1", 1), "server": ("t", 80), "state": {}}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        anyio.run(side.client.app, scope, receive, send)
        answers.append((sent[0]["status"], sent[1]["body"]))
        assert side.events() == 0 and side.files() == []
    assert answers[0] == answers[1] and answers[0][0] == 400
    assert sides[0].answered == 0
