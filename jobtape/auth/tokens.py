"""API-key tokens and scopes (pure: no I/O, no clock).

A token is ``jtk_<key_id>_<secret>``:

- ``jtk_``: a fixed prefix, so a leaked token is recognisable (secret scanners, logs);
- ``<key_id>``: 16 lowercase hex digits (64 bits from :mod:`secrets`), the key's public
  id: ``jobtape keys list`` shows it, ``jobtape keys revoke KEY_ID`` takes it, and the
  actor of a request made with the key is ``key:<key_id>``;
- ``<secret>``: 43 URL-safe base64 characters, 256 bits from :func:`secrets.token_urlsafe`.

The log and the ``api_keys`` projection hold only :func:`token_hash` of the whole token,
never the token: ``jobtape keys create`` prints it once. A request's token is checked by
hashing it and reading the row with that hash (:func:`jobtape.projections.keys.lookup`,
which compares with :func:`hmac.compare_digest`).

Scopes (issue 11): ``jobs:submit``, ``jobs:read``, ``jobs:cancel`` and ``admin`` (any
owner's jobs, operator routes).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from jobtape import errors

__all__ = ["KEY_ID_PATTERN", "SCOPES", "TOKEN_PREFIX", "new_key_id", "new_token", "parse", "parse_scopes", "token_hash"]

#: Every scope a key may hold, in the order they are listed.
SCOPES: tuple[str, ...] = ("jobs:submit", "jobs:read", "jobs:cancel", "admin")
#: What every token starts with.
TOKEN_PREFIX = "jtk_"
#: A key id: 16 lowercase hex digits.
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
_KEY_ID_BYTES = 8
#: Bytes of randomness in a token's secret (256 bits).
_SECRET_BYTES = 32
_TOKEN = re.compile(rf"{TOKEN_PREFIX}(?P<key_id>[0-9a-f]{{16}})_(?P<secret>[A-Za-z0-9_-]{{43}})")


def new_key_id() -> str:
    """A new key id: 16 lowercase hex digits (64 bits from :func:`secrets.token_hex`)."""
    return secrets.token_hex(_KEY_ID_BYTES)


def new_token(key_id: str | None = None) -> tuple[str, str]:
    """A new API key's id and token.

    Args:
        key_id: the id to embed (16 lowercase hex digits); ``None``: a new one (:func:`new_key_id`).

    Returns:
        ``(key_id, token)``, the token being ``jtk_<key_id>_<secret>`` with a 256-bit secret
        (43 URL-safe characters; 64 characters in all).

    Raises:
        ValueError: ``key_id`` is not 16 lowercase hex digits.
    """
    key_id = new_key_id() if key_id is None else key_id
    if KEY_ID_PATTERN.fullmatch(key_id) is None:
        raise ValueError(f"a key id is 16 lowercase hex digits, not {key_id!r}")
    return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def token_hash(token: str) -> str:
    """The hash of a token as the log and ``api_keys.token_hash`` keep it: sha256, 64 hex digits.

    A fast, unsalted hash is right here, unlike for passwords: the secret has 256 bits
    of entropy, so someone holding the hash (a copy of the database) cannot guess the
    token back at any hashing speed, while a slow KDF (bcrypt, argon2) only protects
    low-entropy secrets and would cost tens of milliseconds on every request. Being
    deterministic, the hash is also the lookup key (an index read per request); a salt
    would need the row first. This is the scheme GitHub and Stripe use for their tokens.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def parse(token: str) -> str | None:
    """The key id of a well-formed token; ``None`` for anything else (wrong prefix, length or characters).

    Well-formed is not valid: only :func:`jobtape.projections.keys.lookup` knows whether
    the key exists and is not revoked.
    """
    found = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    return found["key_id"] if found is not None else None


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """Scope names from a comma-separated text (``"jobs:submit,jobs:read"``) or an iterable of names.

    Blanks around names and empty items are ignored; duplicates collapse.

    Raises:
        errors.UnknownScope: a name is not one of :data:`SCOPES`, or none is given; the
            message names the valid ones.
    """
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    found = frozenset(name.strip() for name in names if name.strip())
    unknown = sorted(found - set(SCOPES))
    if unknown or not found:
        raise errors.UnknownScope(unknown, SCOPES)
    return found
