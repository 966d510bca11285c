"""Who may call what (issue 11) on a real ``jobtape serve``: real API keys (``jobtape keys create``),
real JWTs (PyJWT, HS256 here; RS256 and EdDSA from a JWKS served by a real ``http.server``),
real peers for ``trusted-proxy`` (a client bound to 127.0.0.2), a real burst for the rate limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from polling import wait_for  # type: ignore[import-not-found]
from serving import jobtape_serve  # type: ignore[import-not-found]

import jobtape
from jobtape import errors

ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / "media"
SECRET = secrets.token_urlsafe(32)
ISSUER = "https://app.example.test"
AUDIENCE = "jobtape-test"
JWT_ENV = {"JOBTAPE_JWT_SECRET": SECRET, "JOBTAPE_JWT_ISSUER": ISSUER, "JOBTAPE_JWT_AUDIENCE": AUDIENCE}
MISSING_JOB = "0" * 32
ORIGIN = "https://app.example.test"


@dataclasses.dataclass(frozen=True)
class Key:
    key_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_key(data_dir: Path, owner: str, scopes: str) -> Key:
    done = subprocess.run(
        [sys.executable, "-m", "jobtape", "keys", "create", "--owner", owner, "--scope", scopes, "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    made = json.loads(done.stdout)
    return Key(made["keyId"], made["token"])


def make_jwt(sub: str | None, scope: str = "jobs:submit jobs:read jobs:cancel", **overrides: Any) -> str:
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "exp": now + dt.timedelta(minutes=5), "iat": now}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, algorithm="HS256")


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def complete() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/api/audio/jobs/{job_id}").json()
        assert view["status"] not in ("failed", "cancelled"), view
        return view if view["status"] == "complete" else None

    found: dict[str, Any] = wait_for(complete, timeout_s=120, what=f"job {job_id} to complete")
    return found


@dataclasses.dataclass(frozen=True)
class World:
    base_url: str
    data_dir: Path
    keys: dict[str, Key]
    ingest_id: str
    asset_id: str
    preview_id: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """``serve --auth required`` (the audio app, one worker, JWTs with an HS256 secret), API keys
    of alice, bob, an admin, a read-only caller and a revoked key; alice's ingest and preview, complete."""
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    keys = {
        "alice": make_key(data_dir, "alice", "jobs:submit,jobs:read,jobs:cancel"),
        "bob": make_key(data_dir, "bob", "jobs:submit,jobs:read,jobs:cancel"),
        "admin": make_key(data_dir, "ops", "admin"),
        "reader": make_key(data_dir, "alice", "jobs:read"),
        "revoked": make_key(data_dir, "alice", "jobs:read"),
    }
    subprocess.run(
        [sys.executable, "-m", "jobtape", "keys", "revoke", keys["revoked"].key_id, "--data-dir", str(data_dir)], check=True, timeout=60
    )
    with (
        jobtape_serve(data_dir, "--auth", "required", workers=1, env=JWT_ENV) as base_url,
        httpx.Client(base_url=base_url, headers=keys["alice"].headers, timeout=60) as alice,
    ):
        files = {"file": ("speech.wav", (MEDIA / "speech_ljspeech.wav").read_bytes(), "audio/wav")}
        # X-Client-Id is ignored with --auth required: the owner is the key's (alice)
        created = alice.post("/api/audio/ingest", files=files, headers={"X-Client-Id": "bob"})
        assert created.status_code == 202, created.text
        ingest = finished(alice, created.json()["data"]["jobId"])
        recipe = {"assetId": ingest["result"]["assetId"], "startSec": 0.5, "endSec": 1.5}
        preview = finished(alice, alice.post("/api/audio/edit/preview", json=recipe).json()["data"]["jobId"])
        yield World(base_url, data_dir, keys, ingest["jobId"], ingest["result"]["assetId"], preview["jobId"])


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "head", "post", "put", "patch", "delete")
    ]


def test_every_route_but_health_answers_401_without_credentials(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as anonymous:
        assert anonymous.get("/health").status_code == 200
        document = anonymous.get("/schema/openapi.json").json()  # the document is not secret (docs/security.md)
        operations = _operations(document)
        assert len(operations) >= 16
        for method, path in operations:
            if path == "/health":
                assert document["paths"][path][method.lower()]["security"] == []
                continue
            url = path.replace("{jobId}", world.ingest_id)  # a real job: the 401 is not a 404 in disguise
            for headers in ({}, {"X-Client-Id": "alice"}, bearer("not-a-token"), {"Authorization": f"Basic {world.keys['alice'].token}"}):
                answer = anonymous.request(method, url, headers=headers)
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
                if method != "HEAD":
                    assert set(answer.json()) == {"error"}, answer.text
            assert "401" in document["paths"][path][method.lower()]["responses"], (method, path)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }


def test_a_revoked_or_unknown_api_key_is_401(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as client:
        revoked = client.get(f"/api/jobs/{world.ingest_id}", headers=world.keys["revoked"].headers)
        assert revoked.status_code == 401
        assert revoked.json() == {"error": f"the API key {world.keys['revoked'].key_id} was revoked"}
        forged = world.keys["alice"].token[:-4] + "AAAA"
        assert client.get(f"/api/jobs/{world.ingest_id}", headers=bearer(forged)).status_code == 401
        assert client.get(f"/api/jobs/{world.ingest_id}", headers=world.keys["alice"].headers).status_code == 200


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired", lambda: make_jwt("alice", exp=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))),
        ("wrong audience", lambda: make_jwt("alice", aud="another-api")),
        ("wrong issuer", lambda: make_jwt("alice", iss="https://evil.example.test")),
        ("no expiry", lambda: make_jwt("alice", exp=None)),
        ("no subject", lambda: make_jwt(None)),
        (
            "wrong secret",
            lambda: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": 4102444800}, "x" * 40, algorithm="HS256"),
        ),
        (
            "alg none",
            lambda: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "admin", "exp": 4102444800}, None, algorithm="none"
            ),
        ),
    ],
)
def test_an_invalid_jwt_is_401(world: World, case: str, token: Any) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as client:
        answer = client.get(f"/api/jobs/{world.ingest_id}", headers=bearer(token()))
        assert answer.status_code == 401, (case, answer.text)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"].startswith("the token is not valid"), answer.text


def test_a_valid_jwt_acts_for_its_subject(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as client:
        assert client.get(f"/api/jobs/{world.ingest_id}", headers=bearer(make_jwt("alice"))).status_code == 200
        assert client.get(f"/api/jobs/{world.ingest_id}", headers=bearer(make_jwt("bob"))).status_code == 404


def test_another_owners_job_asset_and_preview_are_404_on_every_route(world: World) -> None:
    job, preview = world.ingest_id, world.preview_id
    with httpx.Client(base_url=world.base_url, headers=world.keys["bob"].headers, timeout=30) as bob:

        def same_as_missing(method: str, path: str, real: str, missing: str, **options: Any) -> None:
            answer = bob.request(method, path.format(id=real), **options)
            absent = bob.request(method, path.format(id=missing), **options)
            assert absent.status_code == 404, (path, absent.text)
            assert answer.status_code == 404, (method, path, answer.text)
            if method != "HEAD":
                assert answer.json() == {"error": absent.json()["error"].replace(missing, real)}, (path, answer.text)

        for prefix in ("/api/jobs", "/api/audio/jobs"):
            same_as_missing("GET", prefix + "/{id}", job, MISSING_JOB)
            same_as_missing("GET", prefix + "/{id}", job, MISSING_JOB, params={"asOf": "now"})
            same_as_missing("POST", prefix + "/{id}/cancel", job, MISSING_JOB)
            same_as_missing("GET", prefix + "/{id}/events", job, MISSING_JOB)
            same_as_missing("GET", prefix + "/{id}/events", job, MISSING_JOB, params={"asOf": "now"})
            same_as_missing("GET", prefix + "/{id}/stream", job, MISSING_JOB)
        same_as_missing("GET", "/api/audio/edit/preview/{id}/audio", preview, MISSING_JOB)
        same_as_missing("HEAD", "/api/audio/edit/preview/{id}/audio", preview, MISSING_JOB)
        for route in ("/api/audio/edit/preview", "/api/audio/edit/save"):
            mine = bob.post(route, json={"assetId": world.asset_id, "startSec": 0.5, "endSec": 1.5})
            absent = bob.post(route, json={"assetId": "f" * 32, "startSec": 0.5, "endSec": 1.5})
            assert (mine.status_code, absent.status_code) == (404, 404), (mine.text, absent.text)
            assert mine.json() == absent.json()  # "Asset not found": the id is not echoed
    with httpx.Client(base_url=world.base_url, headers=world.keys["alice"].headers, timeout=30) as alice:
        events = alice.get(f"/api/jobs/{job}/events").json()["events"]
        assert [e["type"] for e in events].count("job.cancel_requested") == 0  # bob's cancel appended nothing
        assert alice.get(f"/api/audio/edit/preview/{preview}/audio").status_code == 200


def test_a_missing_scope_is_403_naming_it(world: World) -> None:
    reader = world.keys["reader"].headers
    with httpx.Client(base_url=world.base_url, timeout=30) as client:
        assert client.get(f"/api/jobs/{world.ingest_id}", headers=reader).status_code == 200
        cancel = client.post(f"/api/jobs/{world.ingest_id}/cancel", headers=reader)
        assert cancel.status_code == 403
        assert "'jobs:cancel'" in cancel.json()["error"], cancel.text
        for route, body in (("/api/audio/edit/preview", {"assetId": world.asset_id, "startSec": 0.5, "endSec": 1.5}), ("/api/jobs", {})):
            refused = client.post(route, json=body, headers=reader)
            assert refused.status_code == 403, refused.text
            assert "'jobs:submit'" in refused.json()["error"]
        read_only_jwt = bearer(make_jwt("alice", scope="jobs:read other:scope"))
        assert client.post(f"/api/jobs/{world.ingest_id}/cancel", headers=read_only_jwt).status_code == 403
        assert client.get(f"/api/jobs/{world.ingest_id}/events", headers=read_only_jwt).status_code == 200


def test_admin_reads_any_job_and_its_events_as_recorded_while_the_owner_sees_them_redacted(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=30) as client:
        assert client.get(f"/api/audio/jobs/{world.ingest_id}", headers=world.keys["admin"].headers).json()["status"] == "complete"
        full = client.get(f"/api/jobs/{world.ingest_id}/events", headers=world.keys["admin"].headers).json()["events"]
        owned = client.get(f"/api/jobs/{world.ingest_id}/events", headers=world.keys["alice"].headers).json()["events"]
    assert [e["type"] for e in full] == [e["type"] for e in owned]
    started = [e for e in full if e["type"] == "job.child_started"]
    assert started and all(e["data"]["argv"] for e in started)  # admin: as recorded
    claimed = next(e for e in full if e["type"] == "job.claimed")
    assert claimed["data"]["worker_id"] == claimed["actor"]
    for event in owned:
        assert not {"argv", "host_id", "pid", "worker_id", "started_at_ticks", "orphaned_pids"} & set(event["data"]), event
        assert event["actor"] in ("server", f"key:{world.keys['alice'].key_id}"), event
        assert "/" + "tmp" not in json.dumps(event)
    created = owned[0]
    assert (created["type"], created["actor"], created["data"]["owner"]) == ("job.created", f"key:{world.keys['alice'].key_id}", "alice")


# ---------------------------------------------------------------- a user's app: cancel, rate limit


@pytest.fixture(scope="module")
def sums(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve --app tests.apps.sums:app --auth required --rate-limit 4/minute``, CORS for one origin, no worker (jobs stay pending)."""
    data_dir = tmp_path_factory.mktemp("sums") / "data"
    extra = ("--app", "tests.apps.sums:app", "--auth", "required", "--rate-limit", "4/minute", "--max-active-jobs", "100")
    env = {**JWT_ENV, "JOBTAPE_CORS_ORIGINS": f"{ORIGIN}, https://other.example.test"}
    with jobtape_serve(data_dir, *extra, workers=0, cwd=ROOT, env=env) as base_url:
        yield base_url


def test_the_cancel_event_names_the_principal(sums: str) -> None:
    with httpx.Client(base_url=sums, headers=bearer(make_jwt("alice")), timeout=30) as alice:
        created = alice.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}})
        assert created.status_code == 202, created.text
        job_id = created.json()["data"]["jobId"]
        assert alice.post(f"/api/jobs/{job_id}/cancel", headers=bearer(make_jwt("bob"))).status_code == 404
        assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        events = alice.get(f"/api/jobs/{job_id}/events").json()["events"]
    assert [(e["type"], e["actor"]) for e in events] == [("job.created", "jwt:alice"), ("job.cancel_requested", "jwt:alice")]


def test_a_burst_over_the_rate_limit_is_429_with_retry_after(sums: str) -> None:
    with httpx.Client(base_url=sums, headers=bearer(make_jwt("carol")), timeout=30) as carol:
        answers = [carol.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": n}}) for n in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 202, 429], [a.text for a in answers]
        assert answers[0].headers["ratelimit-limit"] == "4"
        refused = answers[-1]
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-remaining"] == "0"
        assert "at most 4 per minute" in refused.json()["error"]
        assert carol.get(f"/api/jobs/{answers[0].json()['data']['jobId']}").status_code == 200  # reads are not limited
    with httpx.Client(base_url=sums, headers=bearer(make_jwt("dave")), timeout=30) as dave:  # per principal
        assert dave.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 1}}).status_code == 202


# ---------------------------------------------------------------- JWKS (RS256, EdDSA)


@pytest.fixture(scope="module")
def jwks_keys() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS document of an RSA and an Ed25519 key, served by a real http.server on 127.0.0.1."""
    private = {"rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048), "ed-1": ed25519.Ed25519PrivateKey.generate()}
    keys = []
    for kid, key in private.items():
        algorithm = RSAAlgorithm if kid.startswith("rsa") else OKPAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))  # type: ignore[attr-defined]
        keys.append({**jwk, "kid": kid, "use": "sig"})
    body = json.dumps({"keys": keys}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", private
    finally:
        server.shutdown()
        server.server_close()


def test_rs256_and_eddsa_tokens_from_a_jwks(jwks_keys: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, private = jwks_keys
    env = {"JOBTAPE_JWT_JWKS_URL": url, "JOBTAPE_JWT_ISSUER": ISSUER, "JOBTAPE_JWT_AUDIENCE": AUDIENCE}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "jobs:read", "exp": 4102444800}
    with jobtape_serve(tmp_path / "data", "--auth", "required", workers=0, env=env) as base_url, httpx.Client(base_url=base_url) as client:
        for kid, algorithm in (("rsa-1", "RS256"), ("ed-1", "EdDSA")):
            token = jwt.encode(claims, private[kid], algorithm=algorithm, headers={"kid": kid})
            assert client.get(f"/api/jobs/{MISSING_JOB}", headers=bearer(token)).status_code == 404  # authenticated: no such job
        stranger = ed25519.Ed25519PrivateKey.generate()
        forged = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "ed-1"})
        assert client.get(f"/api/jobs/{MISSING_JOB}", headers=bearer(forged)).status_code == 401
        unknown_kid = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "nope"})
        assert client.get(f"/api/jobs/{MISSING_JOB}", headers=bearer(unknown_kid)).status_code == 401
        hs_with_public_jwk = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "rsa-1"})
        assert client.get(f"/api/jobs/{MISSING_JOB}", headers=bearer(hs_with_public_jwk)).status_code == 401


def test_an_unreachable_jwks_is_503_with_retry_after_not_401(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the identity provider is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"JOBTAPE_JWT_JWKS_URL": f"http://127.0.0.1:{port}/jwks.json", "JOBTAPE_JWT_ISSUER": ISSUER, "JOBTAPE_JWT_AUDIENCE": AUDIENCE}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": "jobs:read", "exp": 4102444800}
    token = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "ed-1"})
    with jobtape_serve(tmp_path / "data", "--auth", "required", workers=0, env=env) as base_url, httpx.Client(base_url=base_url) as client:
        answer = client.get(f"/api/jobs/{MISSING_JOB}", headers=bearer(token))
        assert client.get(f"/api/jobs/{MISSING_JOB}").status_code == 401  # no token is still the caller's fault
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert "retry later" in answer.json()["error"] and str(port) not in answer.text  # names no URL


# ---------------------------------------------------------------- trusted proxy, and --auth off on a public host


def test_trusted_proxy_accepts_x_client_id_only_from_a_trusted_peer(tmp_path: Path) -> None:
    extra = ("--auth", "trusted-proxy", "--trusted-proxy", "127.0.0.2/32", "--app", "tests.apps.sums:app")
    with jobtape_serve(tmp_path / "data", *extra, workers=0, cwd=ROOT) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as untrusted:  # peer 127.0.0.1
            refused = untrusted.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}, headers={"X-Client-Id": "alice"})
            assert refused.status_code == 401
            assert refused.json() == {"error": "this server accepts requests only from its trusted proxies"}
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=base_url, transport=transport, timeout=30) as proxy:
            assert proxy.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}).status_code == 401  # no owner named
            created = proxy.post("/api/jobs", json={"type": "sum", "params": {"a": 1, "b": 2}}, headers={"X-Client-Id": "alice"})
            assert created.status_code == 202, created.text
            job_id = created.json()["data"]["jobId"]
            assert proxy.get(f"/api/jobs/{job_id}", headers={"X-Client-Id": "bob"}).status_code == 404
            events = proxy.get(f"/api/jobs/{job_id}/events", headers={"X-Client-Id": "alice"}).json()["events"]
            assert events[0]["actor"] == "proxy:alice"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("auth", [("--auth", "off"), ()])
def test_serve_refuses_auth_off_on_a_public_host(tmp_path: Path, auth: tuple[str, ...]) -> None:
    command = [
        sys.executable,
        "-m",
        "jobtape",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    done = subprocess.run([*command, *auth], capture_output=True, text=True, timeout=60)  # exits by itself; the timeout is the deadline
    assert done.returncode == 2, done.stderr
    assert "--auth off" in done.stderr and "--auth required" in done.stderr and "--auth trusted-proxy" in done.stderr, done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was opened


def test_the_client_sends_its_token_and_maps_401_and_403(sums: str) -> None:
    with jobtape.Client(sums, token=make_jwt("erin")) as erin:
        job_id = erin.submit("sum", {"a": 1, "b": 2})
        assert erin.get(job_id).status == "pending"
    with jobtape.Client(sums, client_id="erin") as anonymous, pytest.raises(errors.Unauthenticated, match="needs a token") as raised:
        anonymous.get(job_id)
    assert raised.value.status_code == 401
    with jobtape.Client(sums, token=make_jwt("erin", scope="jobs:read")) as reader, pytest.raises(errors.Forbidden, match="jobs:submit"):
        reader.submit("sum", {"a": 1, "b": 2})

    async def read_async() -> str:
        async with jobtape.AsyncClient(sums, token=make_jwt("erin")) as client:
            return (await client.get(job_id)).status

    assert asyncio.run(read_async()) == "pending"


def test_cors_for_the_configured_origins_only(sums: str) -> None:
    with httpx.Client(base_url=sums, timeout=30) as browser:
        preflight = browser.options(
            "/api/jobs",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204), preflight.text  # a preflight carries no token: not a 401
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        answer = browser.get(f"/api/jobs/{MISSING_JOB}", headers={"Origin": ORIGIN, **bearer(make_jwt("alice"))})
        assert answer.status_code == 404 and answer.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in answer.headers["access-control-expose-headers"].lower()
        stranger = browser.get(f"/api/jobs/{MISSING_JOB}", headers={"Origin": "https://evil.example.test", **bearer(make_jwt("alice"))})
        assert "access-control-allow-origin" not in stranger.headers
