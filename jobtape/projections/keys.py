"""The ``api_keys`` projection, the API-key lookup, and the commands that create and revoke keys.

``api_keys`` has one row per key stream (``key-<key_id>``, :mod:`jobtape.eventlog.key_events`),
folded by :mod:`jobtape.projections.key_state` and written in the same batch as the key's
event. The guards are SQL: a key id created twice is refused by the ``events`` version
guard (``UNIQUE (job_id, version)`` and the gapless trigger), a token hash used twice by
``api_keys.token_hash UNIQUE``, a revoke of an unknown or revoked key by the version guard
(the fold refuses both before anything is written; the guard decides a race).
``jobtape rebuild`` rebuilds it from the key streams like every projection (it is
:data:`jobtape.projections.registry.KEYS`), and ``rebuild --verify`` compares it.

:func:`lookup` is what authentication calls per request: the token's sha256, one indexed
read by ``token_hash``, a constant-time comparison, and the key (revoked or not: the caller
refuses a revoked one).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from jobtape import clock, errors
from jobtape.auth import tokens
from jobtape.eventlog import key_events as kev
from jobtape.eventlog.store import EventStore, Statement
from jobtape.projections import key_state
from jobtape.projections.key_state import KeyState

__all__ = ["COLUMNS", "TABLE", "ApiKey", "KeyRecord", "KeyRepository", "list_keys", "lookup", "statements"]

#: The projection's table.
TABLE = "api_keys"
#: Columns of ``api_keys`` in table order (migration ``0011_api_keys``).
COLUMNS = ("key_id", "owner", "scopes", "name", "token_hash", "created_at", "revoked_at", "created_position")
#: ``created_position``: the position of the key's ``key.created``, looked up by the statement.
_CREATED_POSITION = "(SELECT position FROM events WHERE job_id = ? AND version = 1)"
_MAX_ATTEMPTS = 3


def _scopes_text(scopes: Iterable[str]) -> str:
    """Scopes as ``api_keys.scopes`` holds them: sorted, space-separated (like OAuth's ``scope``, RFC 6749 §3.3)."""
    return " ".join(sorted(scopes))


def _stamp(value: Any) -> str | None:
    return clock.format_timestamp(value) if value is not None else None


def statements(before: KeyState | None, after: KeyState, table: str = TABLE) -> list[Statement]:
    """The SQL that writes a key's transition ``before`` -> ``after`` (``None``: a new or re-folded key) on ``table``.

    Args:
        before: the state before the append; ``None`` writes the whole row (a create, an
            import or a rebuild's scratch table; an upsert, since an import or a rebuild may
            write a key again after a later event of its stream).
        after: the state after it.
        table: ``api_keys``, or a rebuild's scratch copy.
    """
    if before is None:
        values = (
            after.key_id,
            after.owner,
            _scopes_text(after.scopes),
            after.name,
            after.token_hash,
            _stamp(after.created_at),
            _stamp(after.revoked_at),
            kev.key_stream(after.key_id),
        )
        placeholders = ", ".join(_CREATED_POSITION if c == "created_position" else "?" for c in COLUMNS)
        sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders}) ON CONFLICT (key_id) DO UPDATE SET revoked_at = excluded.revoked_at"
        return [Statement(sql, values)]
    return [Statement(f"UPDATE {table} SET revoked_at = ? WHERE key_id = ?", (_stamp(after.revoked_at), after.key_id))]


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as authentication sees it (never its token or hash).

    Attributes:
        key_id: 16 hex digits; the principal of its requests is ``key:<key_id>``.
        owner: whose jobs it acts on.
        scopes: the scopes it grants (:data:`jobtape.auth.tokens.SCOPES`).
        revoked: the key was revoked: refuse it (401).
        name: its label (``""``: none).
    """

    key_id: str
    owner: str
    scopes: frozenset[str]
    revoked: bool
    name: str = ""


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``api_keys`` as ``jobtape keys list`` shows it (never the token hash).

    Attributes:
        key_id: the key's id.
        owner: whose jobs it acts on.
        scopes: the scopes it grants, sorted.
        name: its label.
        created_at: UTC time of ``key.created``.
        revoked_at: UTC time of ``key.revoked``; ``None`` while active.
        created_position: global position of its ``key.created``.
    """

    key_id: str
    owner: str
    scopes: list[str]
    name: str
    created_at: str
    revoked_at: str | None
    created_position: int


class _HasStore(Protocol):
    @property
    def store(self) -> EventStore: ...


def _store_of(source: EventStore | _HasStore) -> EventStore:
    return source if isinstance(source, EventStore) else source.store


def lookup(source: EventStore | _HasStore, token: str) -> ApiKey | None:
    """The API key a bearer token belongs to, or ``None`` for a token that matches none.

    Steps: :func:`jobtape.auth.tokens.parse` (a malformed token costs no read), its sha256
    (:func:`jobtape.auth.tokens.token_hash`), one read of ``api_keys`` by the ``token_hash``
    index, then :func:`hmac.compare_digest` of the stored and computed hashes and a check
    that the row's key id is the token's. The index lookup compares hashes, never the
    token; what its timing could leak is a prefix of a sha256 of a 256-bit secret, which
    does not help anyone forge a token.

    Args:
        source: the event store, or anything with a ``store`` (a :class:`jobtape.projections.repository.JobRepository`).
        token: the bearer token as sent (``jtk_<key_id>_<secret>``).

    Returns:
        The key, ``revoked`` set when it was revoked (the caller answers 401); ``None`` for
        a malformed, unknown or wrong token.

    Raises:
        errors.StoreError: the store cannot be read now.
    """
    key_id = tokens.parse(token)
    if key_id is None:
        return None
    digest = tokens.token_hash(token)
    rows = _store_of(source).backend.query(
        f"SELECT key_id, owner, scopes, name, token_hash, revoked_at FROM {TABLE} WHERE token_hash = ?", [digest]
    )
    if not rows:
        return None
    found_id, owner, scopes, name, stored_hash, revoked_at = rows[0]
    if not hmac.compare_digest(str(stored_hash).encode(), digest.encode()) or found_id != key_id:
        return None
    return ApiKey(
        key_id=str(found_id), owner=str(owner), scopes=frozenset(str(scopes).split()), revoked=revoked_at is not None, name=str(name)
    )


def list_keys(source: EventStore | _HasStore) -> list[KeyRecord]:
    """Every API key, active and revoked, in created order (never a token or its hash)."""
    rows = _store_of(source).backend.query(
        f"SELECT key_id, owner, scopes, name, created_at, revoked_at, created_position FROM {TABLE} ORDER BY created_position"
    )
    return [
        KeyRecord(
            key_id=str(key_id),
            owner=str(owner),
            scopes=str(scopes).split(),
            name=str(name),
            created_at=str(created_at),
            revoked_at=None if revoked_at is None else str(revoked_at),
            created_position=int(position),
        )
        for key_id, owner, scopes, name, created_at, revoked_at, position in rows
    ]


class KeyRepository:
    """Creates and revokes API keys: fold to decide, then append the key event and its ``api_keys`` row in ONE batch.

    Args:
        store: the event store.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, key_id: str) -> KeyState | None:
        """The key's state folded from its stream; ``None`` if there is no such key.

        Raises:
            errors.IllegalTransition: the stored stream breaks the key rules.
        """
        if tokens.KEY_ID_PATTERN.fullmatch(key_id) is None:
            return None
        return key_state.fold(self.store.read_key_stream(kev.key_stream(key_id)))

    def create(self, owner: str, scopes: str | Iterable[str], *, name: str = "", actor: str) -> tuple[KeyState, str]:
        """Create an API key: append ``key.created`` and insert its ``api_keys`` row.

        Args:
            owner: whose jobs the key acts on (1-200 characters, no control characters).
            scopes: the scopes, as ``"jobs:submit,jobs:read"`` or names (:func:`jobtape.auth.tokens.parse_scopes`).
            name: a label for people (at most 200 characters; ``""``: none).
            actor: who creates it (``cli:<os user>``).

        Returns:
            ``(state, token)``: the key and its token, which is stored nowhere (only its hash):
            show it once.

        Raises:
            errors.UnknownScope: a scope is not valid, or none is given (names the valid ones).
            ValueError: a bad ``owner`` or ``name``.
            errors.ConcurrencyError: the new key id exists already (64 random bits: in practice never).
            errors.ConstraintViolation: the token hash exists already; nothing was written.
        """
        granted = tokens.parse_scopes(scopes)
        _check_label("owner", owner, required=True)
        _check_label("name", name, required=False)
        key_id, token = tokens.new_token()
        event = kev.KeyCreated(key_id=key_id, owner=owner, scopes=sorted(granted), name=name, token_hash=tokens.token_hash(token))
        stream = kev.key_stream(key_id)
        at = clock.utcnow()
        state = key_state.apply(None, event, stream=stream, version=1, recorded_at=at)
        self.store.append_key_events(stream, [event], 0, actor=actor, extra=statements(None, state), recorded_at=at)
        return state, token

    def revoke(self, key_id: str, *, actor: str) -> KeyState:
        """Revoke an API key: append ``key.revoked`` and set ``api_keys.revoked_at``, guarded by the stream's version.

        Args:
            key_id: the key's id (``jobtape keys list``).
            actor: who revokes it.

        Returns:
            The revoked key.

        Raises:
            errors.KeyNotFound: no key has that id.
            errors.IllegalTransition: the key is revoked already (also when another revoke
                won a race: the version guard refused this one, and the fold then says so).
        """
        for attempt in range(_MAX_ATTEMPTS):
            current = self.load(key_id)
            if current is None:
                raise errors.KeyNotFound(key_id)
            event = kev.KeyRevoked(key_id=key_id)
            stream = kev.key_stream(key_id)
            at = clock.utcnow()
            after = key_state.apply(current, event, stream=stream, version=current.version + 1, recorded_at=at)
            try:
                self.store.append_key_events(
                    stream, [event], current.version, actor=actor, extra=statements(current, after), recorded_at=at
                )
            except errors.ConcurrencyError:
                if attempt == _MAX_ATTEMPTS - 1:
                    raise
                continue
            return after
        raise AssertionError("unreachable")  # pragma: no cover


def _check_label(field: str, value: str, *, required: bool) -> None:
    if required and not value.strip():
        raise ValueError(f"{field} must not be empty")
    if len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{field} must be at most 200 characters without control characters")
