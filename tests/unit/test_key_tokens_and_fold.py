"""API keys, the pure parts: tokens and scopes (jobtape.auth.tokens), key events, the key fold, verify of key streams."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

from jobtape import errors
from jobtape.audit import exchange, verify
from jobtape.auth import tokens
from jobtape.eventlog import hashing
from jobtape.eventlog import key_events as kev
from jobtape.eventlog.stored import StoredEvent
from jobtape.projections import key_state

__all__: list[str] = []

AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
KEY_ID = "0123456789abcdef"
STREAM = kev.key_stream(KEY_ID)


# -- tokens ------------------------------------------------------------------------------------------


def test_a_new_token_embeds_its_key_id_and_a_256_bit_url_safe_secret() -> None:
    key_id, token = tokens.new_token()
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    prefix, _, secret = token.partition(f"jtk_{key_id}_")
    assert prefix == "" and re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)  # 43 base64 characters carry 256 bits
    assert tokens.parse(token) == key_id
    assert len({tokens.new_token()[1] for _ in range(200)}) == 200


def test_a_given_key_id_must_be_16_hex_digits() -> None:
    assert tokens.new_token(KEY_ID)[0] == KEY_ID
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        tokens.new_token("KEY")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "jtk_",
        "Bearer jtk_0123456789abcdef_" + "a" * 43,
        "jtk_0123456789abcdef_" + "a" * 42,  # one character short
        "jtk_0123456789abcdef_" + "a" * 44,
        "jtk_0123456789ABCDEF_" + "a" * 43,  # upper-case key id
        "jtk_0123456789abcde_" + "a" * 44,
        "jtx_0123456789abcdef_" + "a" * 43,
        "jtk_0123456789abcdef_" + "a" * 42 + "=",
        "jtk_0123456789abcdef_" + "a" * 43 + "\n",
    ],
)
def test_parse_refuses_anything_but_a_well_formed_token(text: str) -> None:
    assert tokens.parse(text) is None


def test_the_token_hash_is_the_sha256_hex_of_the_whole_token() -> None:
    _, token = tokens.new_token()
    assert tokens.token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token not in tokens.token_hash(token)


def test_scopes_parse_from_comma_separated_text_or_names() -> None:
    assert tokens.parse_scopes("jobs:submit, jobs:read,,jobs:read") == {"jobs:submit", "jobs:read"}
    assert tokens.parse_scopes(["admin"]) == {"admin"}
    assert set(tokens.SCOPES) == {"jobs:submit", "jobs:read", "jobs:cancel", "admin"}


@pytest.mark.parametrize(("text", "named"), [("jobs:write,admin", "'jobs:write'"), ("", "no scope given"), (" , ", "no scope given")])
def test_an_unknown_or_missing_scope_names_the_valid_ones(text: str, named: str) -> None:
    with pytest.raises(errors.UnknownScope) as caught:
        tokens.parse_scopes(text)
    assert named in caught.value.message
    assert "jobs:submit, jobs:read, jobs:cancel, admin" in caught.value.message
    assert caught.value.http_status == 422


# -- events and the fold ---------------------------------------------------------------------------


def _created(**changes: object) -> kev.KeyCreated:
    fields: dict[str, object] = {"key_id": KEY_ID, "owner": "alice", "scopes": ["jobs:read"], "token_hash": "ab" * 32, "name": "ci"}
    fields.update(changes)
    return kev.KeyCreated(**fields)  # type: ignore[arg-type]


def test_key_events_round_trip_through_their_stored_form() -> None:
    for event in (_created(), kev.KeyRevoked(key_id=KEY_ID)):
        type_, data = kev.encode_key_event(event)
        assert kev.decode_key_event(7, type_, data) == event
    assert kev.encode_key_event(kev.KeyRevoked(key_id=KEY_ID)) == ("key.revoked", '{"key_id":"0123456789abcdef"}')


def test_a_job_event_type_does_not_decode_as_a_key_event() -> None:
    with pytest.raises(errors.MalformedEvent, match="position 7.*not a key event type"):
        kev.decode_key_event(7, "job.created", "{}")


def test_key_streams_are_told_apart_from_job_streams() -> None:
    assert STREAM == "key-0123456789abcdef" and kev.is_key_stream(STREAM) and kev.key_id_of(STREAM) == KEY_ID
    assert not kev.is_key_stream("0123456789abcdef0123456789abcdef")
    assert not kev.is_key_stream("KEY-0123456789abcdef")
    with pytest.raises(ValueError, match="not a key stream"):
        kev.key_id_of("0123456789abcdef0123456789abcdef")


def test_the_fold_creates_then_revokes_a_key() -> None:
    created = key_state.apply(None, _created(scopes=["jobs:submit", "admin"]), stream=STREAM, version=1, recorded_at=AT)
    assert (created.owner, created.scopes, created.name, created.revoked, created.version) == (
        "alice",
        ("admin", "jobs:submit"),
        "ci",
        False,
        1,
    )
    later = AT + dt.timedelta(minutes=5)
    revoked = key_state.apply(created, kev.KeyRevoked(key_id=KEY_ID), stream=STREAM, version=2, recorded_at=later)
    assert revoked.revoked and revoked.revoked_at == later and revoked.version == 2 and revoked.created_at == AT


@pytest.mark.parametrize(
    ("before", "event", "version", "reason"),
    [
        (None, kev.KeyRevoked(key_id=KEY_ID), 1, "the key does not exist"),
        ("active", _created(), 2, "the key exists already"),
        ("revoked", kev.KeyRevoked(key_id=KEY_ID), 3, "the key is revoked already"),
        ("active", kev.KeyRevoked(key_id=KEY_ID), 3, "version 3 does not follow 1"),
        (None, _created(), 2, "starts at version 1"),
        (None, _created(key_id="fedcba9876543210"), 1, "names key fedcba9876543210"),
    ],
)
def test_the_fold_refuses_what_a_key_stream_may_not_hold(before: str | None, event: kev.KeyEvent, version: int, reason: str) -> None:
    state = None
    if before is not None:
        state = key_state.apply(None, _created(), stream=STREAM, version=1, recorded_at=AT)
        if before == "revoked":
            state = key_state.apply(state, kev.KeyRevoked(key_id=KEY_ID), stream=STREAM, version=2, recorded_at=AT)
    with pytest.raises(errors.IllegalTransition, match=reason) as caught:
        key_state.apply(state, event, stream=STREAM, version=version, recorded_at=AT)
    assert caught.value.job_id == STREAM and caught.value.event_type == kev.key_event_type(event)


# -- verify and the export checks on key streams ---------------------------------------------------


def _chain(stream: str, events: list[tuple[str, str]], first_position: int = 1) -> list[StoredEvent]:
    """Stored events of one stream with a correct hash chain."""
    previous, rows = hashing.genesis_hash(stream), []
    for version, (type_, data) in enumerate(events, start=1):
        stamp = f"2026-01-02T03:04:0{version}.000000Z"
        previous = hashing.event_hash(previous, stream, version, type_, data, "cli:op", stamp)
        rows.append(StoredEvent(position=first_position + version - 1, job_id=stream, version=version, type=type_, data=data,
                                actor="cli:op", recorded_at=stamp, hash=previous))  # fmt: skip
    return rows


def test_verify_checks_a_key_stream_with_the_key_fold_and_the_same_hash_chain() -> None:
    created, revoked = kev.encode_key_event(_created()), kev.encode_key_event(kev.KeyRevoked(key_id=KEY_ID))
    sound = verify.verify(_chain(STREAM, [created, revoked]))
    assert (sound.violations, sound.events_checked, sound.jobs_checked, sound.keys_checked) == ([], 2, 0, 1)

    twice = verify.verify(_chain(STREAM, [created, revoked, revoked]))
    assert [(v.position, v.rule) for v in twice.violations] == [(3, "fold")]
    assert "revoked already" in twice.violations[0].message

    edited = _chain(STREAM, [created, revoked])
    forged = edited[0].data.replace('"jobs:read"', '"admin"')
    tampered = [StoredEvent(**{**{f: getattr(edited[0], f) for f in edited[0].__struct_fields__}, "data": forged}), edited[1]]
    assert [(v.position, v.rule) for v in verify.verify(tampered).violations] == [(1, "hash")]

    job_event_in_key_stream = verify.verify(_chain(STREAM, [("job.created", '{"job_type":"ingest"}')]))
    assert [v.rule for v in job_event_in_key_stream.violations] == ["malformed"]


def test_the_export_checks_fold_key_streams_and_refuse_a_second_revoke() -> None:
    created, revoked = kev.encode_key_event(_created()), kev.encode_key_event(kev.KeyRevoked(key_id=KEY_ID))
    lines = [exchange.encode_line(row) for row in _chain(STREAM, [created, revoked])]
    checked = list(exchange.check_lines(lines))
    assert isinstance(checked[-1].state, key_state.KeyState) and checked[-1].state.revoked
    with pytest.raises(errors.InvalidExport, match="line 3: .*revoked already"):
        list(exchange.check_lines([exchange.encode_line(row) for row in _chain(STREAM, [created, revoked, revoked])]))
