"""The poll's fast path (:data:`jobtape.http.jobs.FastPath`, called by the authentication
middleware) answers the same status, headers and body bytes as the poll's Litestar handler:
a pending job with its queue position, a complete one with its signed ``downloadUrl``, a
missing id, another owner's job, a malformed id and ``asOf`` (the last four left to the handler).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send

from jobtape.auth.principal import Principal
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.http import auth as http_auth
from jobtape.http import errors as http_errors
from jobtape.http import jobs
from jobtape.projections import keys
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage, signing


def _client(
    repository: JobRepository, storage: LocalStorage, *, fast_path: bool, mode: str = "off", answered: list[str] | None = None
) -> TestClient[Litestar]:
    """The poll app; with ``answered``, the path of every request its fast path answered is appended to it."""
    sources = jobs.PollSources(repository, storage, 600)
    authenticator = http_auth.Authenticator(Settings(auth_mode=mode), functools.partial(keys.lookup, repository))
    route = jobs.poll_route(sources, fast_path=fast_path)
    fast = route.opt[jobs.FAST_PATH_OPT]
    if fast is not None and answered is not None:

        async def counted(scope: Scope, receive: Receive, send: Send, principal: Principal) -> bool:
            done: bool = await fast(scope, receive, send, principal)
            if done:
                answered.append(scope["path"])
            return done

        route.opt[jobs.FAST_PATH_OPT] = counted
    app = Litestar(
        [route],
        middleware=[http_auth.auth_middleware(authenticator)],
        cors_config=CORSConfig(allow_origins=["https://app.example"]),  # its headers wrap the fast path's answer too
        exception_handlers=http_errors.exception_handlers(),  # type: ignore[arg-type]
    )
    return TestClient(app)


_ANSWERED: list[str] = []


@pytest.fixture(params=["off", "required"])
def clients(
    repository: JobRepository, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient[Litestar], TestClient[Litestar], str]]:
    """The poll with and without its fast path, ``--auth off`` and ``required`` (API keys, verified ones cached)."""
    storage = LocalStorage(tmp_path / "storage", signing.URLSigner(b"s" * 32))
    mode = request.param
    _ANSWERED.clear()
    with (
        _client(repository, storage, fast_path=True, mode=mode, answered=_ANSWERED) as fast,
        _client(repository, storage, fast_path=False, mode=mode) as handler,
    ):
        yield fast, handler, mode


@freeze_time("2026-12-01T05:00:00Z")
def test_the_fast_path_answers_the_handlers_bytes(
    repository: JobRepository, clients: tuple[TestClient[Litestar], TestClient[Litestar], str], tmp_path: Path
) -> None:
    fast, handler, mode = clients
    first = repository.create("noop", {}, owner="alice").state.job_id
    pending = repository.create("noop", {"n": 1}, owner="alice").state.job_id
    key = "assets/out.mp3"
    (tmp_path / "storage" / "assets").mkdir(parents=True)
    (tmp_path / "storage" / key).write_bytes(b"ID3 test")
    complete = repository.create(
        "noop",
        {},
        owner="alice",
        extra_events=[ev.JobClaimed(worker_id="test:1:1"), ev.JobCompleted(result={"outputKey": key}, owned_keys=[key], download_key=key)],
    ).state.job_id
    make = keys.KeyRepository(repository.store)
    alice = {
        "X-Client-Id": "alice",
        "Origin": "https://app.example",
        "Authorization": f"Bearer {make.create('alice', 'jobs:read', actor='cli:test')[1]}",
    }
    bob = {"X-Client-Id": "bob", "Authorization": f"Bearer {make.create('bob', 'jobs:read', actor='cli:test')[1]}"}
    no_read = {"X-Client-Id": "carol", "Authorization": f"Bearer {make.create('carol', 'jobs:submit', actor='cli:test')[1]}"}
    unknown = {"X-Client-Id": "dave", "Authorization": "Bearer jtk_" + "x" * 43}
    required = mode == "required"
    cases = [
        ("GET", f"/api/audio/jobs/{first}", alice, 200),
        ("GET", f"/api/jobs/{pending}", alice, 200),
        ("GET", f"/api/audio/jobs/{complete}", alice, 200),
        ("GET", f"/api/audio/jobs/{complete}/", alice, 200),  # a trailing slash routes to the same handler
        ("GET", f"/api/audio/jobs/{complete}", bob, 404 if required else 200),  # --auth off: every caller is admin
        ("GET", f"/api/audio/jobs/{'0' * 32}", alice, 404),
        ("GET", f"/api/audio/jobs/{pending.upper()}", alice, 400),
        ("GET", "/api/audio/jobs/NOT-AN-ID", alice, 400),
        ("GET", f"/api/audio/jobs/{pending}?asOf=now", alice, 200),
        ("GET", f"/api/audio/jobs/{pending}?unknown=1", alice, 200),  # a query string: left to the handler
        ("GET", f"/api/audio/jobs/{pending}", no_read, 403 if required else 200),  # no jobs:read scope
        ("GET", f"/api/audio/jobs/{pending}", unknown, 401 if required else 200),
        ("HEAD", f"/api/audio/jobs/{pending}", alice, 405),
    ]
    for method, path, headers, status in cases * 2:  # with --auth required the first of each token is a lookup, then cached
        got, expected = fast.request(method, path, headers=headers), handler.request(method, path, headers=headers)
        assert (got.status_code, got.content, got.headers.multi_items()) == (
            expected.status_code,
            expected.content,
            expected.headers.multi_items(),
        ), path
        assert got.status_code == status, (method, path, got.text)
    # the fast path answered the visible jobs' plain GETs (with --auth required: once their key was
    # cached; the trailing slash arrives without it), and none of the errors
    visible = {f"/api/audio/jobs/{first}", f"/api/jobs/{pending}", f"/api/audio/jobs/{complete}"}
    errors = {f"/api/audio/jobs/{'0' * 32}", f"/api/audio/jobs/{pending.upper()}", "/api/audio/jobs/NOT-AN-ID"}
    assert visible <= set(_ANSWERED) and not errors & set(_ANSWERED), _ANSWERED
    answer = fast.get(f"/api/audio/jobs/{complete}", headers=alice)
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    body = answer.json()
    assert body["status"] == "complete" and body["downloadUrl"].startswith(signing.DOWNLOAD_PATH)
    assert fast.get(f"/api/jobs/{pending}", headers=alice).json()["queuePosition"] == 2
