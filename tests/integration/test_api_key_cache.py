"""The verified-API-key cache of ``--auth required`` (:meth:`jobtape.http.auth.Authenticator.cached_key`):
a key is looked up again by one request once its entry is half the TTL old (refreshed ahead,
the others served meanwhile), and a revoked key is refused once its entry is older than the
TTL (docs/security.md), with real keys in a real store and a fake monotonic clock.
"""

from __future__ import annotations

import functools

import anyio
import pytest
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException

from jobtape.auth import principal as auth
from jobtape.config import Settings
from jobtape.http import auth as http_auth
from jobtape.projections import keys
from jobtape.projections.repository import JobRepository


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _principal(authenticator: http_auth.Authenticator, header: str) -> auth.Principal:
    scope = {"type": "http", "headers": [(b"authorization", header.encode())], "path": "/", "query_string": b""}
    return anyio.run(authenticator.principal, ASGIConnection(scope))  # type: ignore[arg-type]


def test_a_verified_key_is_reused_for_the_ttl_and_a_revoked_one_is_refused_after_it(repository: JobRepository) -> None:
    state, token = keys.KeyRepository(repository.store).create("alice", "jobs:read", actor="cli:test")
    lookups: list[str] = []

    def counting_lookup(sent: str) -> keys.ApiKey | None:
        lookups.append(sent)
        return keys.lookup(repository, sent)

    clock = _Clock()
    authenticator = http_auth.Authenticator(Settings(auth_mode="required"), counting_lookup, key_cache_ttl_s=1.0, clock=clock)
    header = f"Bearer {token}"
    assert authenticator.cached_key(header) is None  # nothing verified yet
    first = _principal(authenticator, header)
    assert (first.id, first.owner, first.scopes) == (f"key:{state.key_id}", "alice", frozenset({auth.JOBS_READ}))
    assert authenticator.cached_key(header) == first and len(lookups) == 1
    assert authenticator.cached_key(f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}") is None  # another token: no entry
    assert authenticator.cached_key("Bearer not-a-key") is None and authenticator.cached_key(None) is None

    keys.KeyRepository(repository.store).revoke(state.key_id, actor="cli:test")
    clock.now += 0.4
    assert authenticator.cached_key(header) == first  # within the TTL: still served (the documented window)
    clock.now += 0.7
    assert authenticator.cached_key(header) is None  # the TTL is up: the next request looks it up
    with pytest.raises(NotAuthorizedException, match="was revoked"):
        _principal(authenticator, header)
    assert len(lookups) == 2 and authenticator.cached_key(header) is None  # a revoked key is never kept


def test_past_half_the_ttl_one_request_looks_the_key_up_and_the_others_are_served(repository: JobRepository) -> None:
    """Refresh ahead: one lookup per half TTL for a key in steady use, never a herd of lookups at expiry."""
    state, token = keys.KeyRepository(repository.store).create("alice", "jobs:read", actor="cli:test")
    lookups: list[float] = []
    clock = _Clock()

    def counting_lookup(sent: str) -> keys.ApiKey | None:
        lookups.append(clock.now)
        return keys.lookup(repository, sent)

    authenticator = http_auth.Authenticator(Settings(auth_mode="required"), counting_lookup, key_cache_ttl_s=1.0, clock=clock)
    header = f"Bearer {token}"
    first = _principal(authenticator, header)  # looked up at 100.0: served until 101.0, refreshed from 100.5
    clock.now = 100.45
    assert [authenticator.cached_key(header) for _ in range(3)] == [first] * 3
    clock.now = 100.6
    assert [authenticator.cached_key(header) for _ in range(5)] == [None, first, first, first, first]  # the first refreshes
    assert _principal(authenticator, header) == first and lookups == [100.0, 100.6]  # its lookup
    clock.now = 101.05  # past the first entry's deadline (101.0), before the refreshed one's refresh (101.1)
    assert authenticator.cached_key(header) == first and len(lookups) == 2

    # a refresh that never looks the key up (its request failed first) leaves the deadline as it was
    clock.now = 101.15  # the refreshed entry: refresh due at 101.1, deadline 101.6
    assert authenticator.cached_key(header) is None  # this request was to refresh, and never does
    clock.now = 101.59
    assert authenticator.cached_key(header) == first
    clock.now = 101.6
    assert authenticator.cached_key(header) is None and authenticator.cached_key(header) is None

    # a key revoked meanwhile is refused by the refreshing request, and dropped at once
    assert _principal(authenticator, header) == first  # looked up at 101.6
    keys.KeyRepository(repository.store).revoke(state.key_id, actor="cli:test")
    clock.now = 102.2
    assert authenticator.cached_key(header) is None  # the refreshing request
    assert authenticator.cached_key(header) == first  # the others, within the documented window
    with pytest.raises(NotAuthorizedException, match="was revoked"):
        _principal(authenticator, header)
    assert authenticator.cached_key(header) is None and authenticator.cached_key(header) is None
    assert lookups == [100.0, 100.6, 101.6, 102.2]


def test_a_ttl_of_zero_looks_every_request_up(repository: JobRepository) -> None:
    _, token = keys.KeyRepository(repository.store).create("bob", "jobs:read", actor="cli:test")
    authenticator = http_auth.Authenticator(
        Settings(auth_mode="required"), functools.partial(keys.lookup, repository), key_cache_ttl_s=0, clock=_Clock()
    )
    assert _principal(authenticator, f"Bearer {token}").owner == "bob"
    assert authenticator.cached_key(f"Bearer {token}") is None


def test_the_ttl_counts_from_the_start_of_the_lookup(repository: JobRepository) -> None:
    """A revoke that commits while a lookup that read the key as valid is still in flight is honoured
    within the TTL of the lookup's start, however long the answer takes to reach the event loop."""
    state, token = keys.KeyRepository(repository.store).create("alice", "jobs:read", actor="cli:test")
    clock = _Clock()

    def slow_lookup(sent: str) -> keys.ApiKey | None:
        found = keys.lookup(repository, sent)  # read while valid
        keys.KeyRepository(repository.store).revoke(state.key_id, actor="cli:test")  # the revoke commits now
        clock.now += 0.8  # the answer reaches the event loop 0.8 s after the lookup started
        return found

    authenticator = http_auth.Authenticator(Settings(auth_mode="required"), slow_lookup, key_cache_ttl_s=1.0, clock=clock)
    header = f"Bearer {token}"
    assert _principal(authenticator, header).owner == "alice"  # the request that read it valid is served
    assert authenticator.cached_key(header) is None  # 0.8 s after the lookup's start: this request refreshes
    assert authenticator.cached_key(header) is not None  # the others are served, until 1 s after the start
    clock.now += 0.25  # 1.05 s after the lookup started (and the revoke): gone, where 1 s from the answer would keep it
    assert authenticator.cached_key(header) is None

    clock.now = 500.0

    def late_lookup(sent: str) -> keys.ApiKey | None:
        clock.now += 1.5  # longer than the TTL: the answer is used once and never kept
        return keys.ApiKey(key_id="x", owner="carol", scopes=frozenset({auth.JOBS_READ}), revoked=False)

    late = http_auth.Authenticator(Settings(auth_mode="required"), late_lookup, key_cache_ttl_s=1.0, clock=clock)
    assert _principal(late, "Bearer jtk_late").owner == "carol"
    assert late.cached_key("Bearer jtk_late") is None
