"""The pure rules of issue 11: principals and scopes, what an owner sees of the events
(redaction per event type), the rate-limit and host rules of ``serve``, and the JWT verifier
with a real PEM key file (RS256, EdDSA) and real tokens (PyJWT).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from jobtape.auth import jwts, redaction
from jobtape.auth import principal as auth
from jobtape.cli.main import check_auth_host
from jobtape.config import Settings, parse_rate_limit
from jobtape.eventlog import events as ev

ALICE = auth.Principal(id="key:0123456789abcdef", owner="alice", scopes=frozenset({auth.JOBS_READ}))
ADMIN = auth.Principal(id="jwt:ops", owner="ops", scopes=frozenset({auth.ADMIN}))


def test_a_principal_sees_its_own_owner_and_admin_sees_all_and_holds_every_scope() -> None:
    assert ALICE.may_see("alice") and not ALICE.may_see("bob")
    assert ALICE.allows(auth.JOBS_READ) and not ALICE.allows(auth.JOBS_CANCEL)
    assert ADMIN.may_see("bob") and all(ADMIN.allows(scope) for scope in auth.ALL_SCOPES)
    assert ALICE.actor == ALICE.id
    local = auth.local("anonymous")
    assert (local.id, local.actor, local.scopes) == ("local:anonymous", "api", frozenset(auth.ALL_SCOPES))
    proxy = auth.proxy("alice")
    assert (proxy.id, proxy.is_admin) == ("proxy:alice", False)
    assert auth.parse_scopes("jobs:read  openid admin,jobs:submit") == {"jobs:read", "admin", "jobs:submit"}


def _data(event: ev.Event) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(ev.event_fields(event))
    return fields


@pytest.mark.parametrize(
    ("event", "hidden"),
    [
        (ev.JobClaimed(worker_id="host-a:100:1", attempt=2), {"worker_id"}),
        (ev.JobLeaseExpired(worker_id="host-a:100:1", attempt=1, orphaned_pids=[12]), {"worker_id", "orphaned_pids"}),
        (ev.JobReleased(worker_id="host-a:100:1", orphaned_pids=[12]), {"worker_id", "orphaned_pids"}),
        (
            ev.JobChildStarted(pid=42, argv=["/usr/bin/ffmpeg", "-i", "/srv/x"], host_id="host-a", started_at_ticks=9),
            {"pid", "argv", "host_id", "started_at_ticks"},
        ),
        (ev.JobChildExited(pid=42, exit_status=0), {"pid"}),
        (ev.JobProgress(percent=50), set()),
        (ev.JobCreated(job_type="ingest", params={"storageKey": "ingest-uploads/x/original.wav"}, owner="alice"), set()),
    ],
)
def test_an_owner_does_not_see_host_ids_pids_or_argv(event: ev.Event, hidden: set[str]) -> None:
    data = _data(event)
    shown = redaction.redact_data(ev.event_type(event), data)
    assert set(data) - set(shown) == hidden
    assert {k: v for k, v in data.items() if k not in hidden} == shown


def test_actors_of_callers_stay_and_server_processes_become_server() -> None:
    for caller in ("key:0123456789abcdef", "jwt:alice", "proxy:alice", "local:bob", "api", "app"):
        assert redaction.redact_actor(caller) == caller
    for server in ("host-a:100:1", "reaper", "cli:root"):
        assert redaction.redact_actor(server) == "server"


def test_rate_limits_parse_and_bad_ones_are_refused_naming_the_variable() -> None:
    assert parse_rate_limit("60/minute") == ("minute", 60)
    assert parse_rate_limit(" 2/hours ") == ("hour", 2)
    for bad in ("60", "0/minute", "x/minute", "5/week", "-1/second"):
        with pytest.raises(ValueError, match="JOBTAPE_RATE_LIMIT"):
            parse_rate_limit(bad)
    assert Settings(rate_limit="10/second").rate_limit_rule == ("second", 10)


def test_auth_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="JOBTAPE_AUTH"):
        Settings(auth_mode="maybe")
    with pytest.raises(ValueError, match="--trusted-proxy"):
        Settings(auth_mode="trusted-proxy")
    with pytest.raises(ValueError, match="not an address or CIDR"):
        Settings(auth_mode="trusted-proxy", trusted_proxies=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="JOBTAPE_JWT_ISSUER"):
        Settings(auth_mode="required", jwt_secret="s" * 40)
    with pytest.raises(ValueError, match="only one"):
        Settings(jwt_secret="s" * 40, jwt_jwks_url="http://x", jwt_issuer="i", jwt_audience="a")
    env = Settings.from_env(
        {"JOBTAPE_AUTH": "Trusted-Proxy", "JOBTAPE_TRUSTED_PROXY": "10.0.0.0/8, 127.0.0.1", "JOBTAPE_CORS_ORIGINS": "https://a.test"}
    )
    assert (env.auth_mode, env.trusted_proxies, env.cors_origins) == ("trusted-proxy", ("10.0.0.0/8", "127.0.0.1"), ("https://a.test",))


def test_auth_off_is_allowed_on_loopback_only() -> None:
    for host in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"):
        check_auth_host("off", host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(click.UsageError, match="--auth required"):
            check_auth_host("off", host)
        check_auth_host("required", host)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "iss": "https://issuer.test",
        "aud": "jobtape",
        "sub": "alice",
        "scope": "jobs:read",
        "exp": now + dt.timedelta(minutes=1),
        **overrides,
    }


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_public_key_file_verifies_its_algorithm_only(tmp_path: Path, kind: str) -> None:
    key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else ed25519.Ed25519PrivateKey.generate()
    algorithm = "RS256" if kind == "rsa" else "EdDSA"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "key.pem").write_bytes(pem)
    verifier = jwts.JwtVerifier.from_settings(issuer="https://issuer.test", audience="jobtape", public_key_file=tmp_path / "key.pem")
    assert verifier.algorithms == (algorithm,)
    principal = verifier.verify(jwt.encode(_claims(), key, algorithm=algorithm))
    assert (principal.id, principal.owner, principal.scopes) == ("jwt:alice", "alice", frozenset({"jobs:read"}))
    # the public key used as an HMAC secret (the classic algorithm confusion), alg none, and a late token
    for token in (
        jwt.encode(_claims(), "x" * 64, algorithm="HS256"),
        jwt.encode(_claims(), None, algorithm="none"),
        jwt.encode(_claims(exp=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)), key, algorithm=algorithm),
        jwt.encode(_claims(aud="other"), key, algorithm=algorithm),
    ):
        with pytest.raises(jwts.InvalidToken):
            verifier.verify(token)


def test_a_verifier_needs_one_key_source_and_a_long_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        jwts.JwtVerifier.from_settings(issuer="i", audience="a")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        jwts.JwtVerifier.from_settings(issuer="i", audience="a", secret="short")
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="PEM public key"):
        jwts.JwtVerifier.from_settings(issuer="i", audience="a", public_key_file=tmp_path / "bad.pem")
