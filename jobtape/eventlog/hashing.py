"""The per-stream hash chain that makes tampering with stored events evident (pure).

Each event's ``hash`` is sha256 over the previous event's hash in the same job stream and
the event's stored content (job id, version, type, data, actor, recorded_at), joined with
the ASCII unit separator. The first event of a stream chains from :func:`genesis_hash`.
Changing any stored byte of an event breaks its hash and every later hash of the stream.

That chain is unkeyed: anyone who can write the file can recompute it. The keyed
whole-log chain (:func:`chain_link`, HMAC under the log key across every stream in
position order) and the keyed records (:func:`record_mac`) are what tamper evidence
rests on (docs/audit.md, "Tamper evidence").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["GENESIS_CHAIN", "chain_link", "event_hash", "genesis_hash", "record_mac"]

_SEPARATOR = "\x1f"


def genesis_hash(job_id: str) -> str:
    """The hash the first event of ``job_id``'s stream chains from (64 hex digits)."""
    return hashlib.sha256(f"jobtape-stream{_SEPARATOR}{job_id}".encode()).hexdigest()


def event_hash(previous: str, job_id: str, version: int, type_: str, data: str, actor: str, recorded_at: str) -> str:
    """The hash of one stored event (64 hex digits).

    Args:
        previous: the previous event's hash, or :func:`genesis_hash` for version 1.
        job_id, version, type_, data, actor, recorded_at: the stored columns, as text
            exactly as stored (``data`` is the JSON text, ``recorded_at`` the timestamp text).
    """
    text = _SEPARATOR.join((previous, job_id, str(version), type_, data, actor, recorded_at))
    return hashlib.sha256(text.encode()).hexdigest()


#: The chain value the log's first event links from (64 zero digits).
GENESIS_CHAIN = "0" * 64


def chain_link(key: bytes, key_id: str, previous: str, position: int, event_hash: str | None) -> str:
    """The keyed whole-log chain value of the event at global ``position`` (64 hex digits).

    HMAC-SHA256 under the log key over the previous event's chain value (in position
    order across every stream; :data:`GENESIS_CHAIN` for the log's first event), the
    position, the key id and the event's per-stream :func:`event_hash` (which covers its
    content). Recomputing it needs the key, so someone who can write the database file but
    does not hold the key cannot edit, remove or re-chain an event unnoticed.

    Args:
        key: the log key's bytes (>= 32).
        key_id: the key's id, as stored in the event's ``key_id`` column.
        previous: the chain value of the event before it in the log.
        position: the event's global position.
        event_hash: the event's stored ``hash`` (``None`` for events written before migration 0003).
    """
    text = _SEPARATOR.join(("jobtape-chain", previous, str(position), key_id, event_hash or ""))
    states = _KEYED.get(key) or _keyed_states(key)
    inner = states[0].copy()
    inner.update(text.encode())
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def _keyed_states(key: bytes) -> tuple[HASH, HASH]:
    """HMAC-SHA256's two keyed states of ``key`` (RFC 2104), made once and kept in :data:`_KEYED`.

    ``(sha256(K ^ ipad), sha256(K ^ opad))`` with ``K`` the key padded with zeros to the
    64-byte block (a longer key is hashed first, as HMAC does): a link copies both and
    hashes the text into the inner one, the inner digest into the outer one, which gives
    ``hmac.new(key, text, sha256)`` (tested) at about half the cost of copying an
    ``hmac.HMAC`` (whose ``copy`` and ``hexdigest`` run in Python).
    """
    block = key if len(key) <= _BLOCK else hashlib.sha256(key).digest()
    block = block.ljust(_BLOCK, b"\0")
    states = (hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD)))
    if len(_KEYED) >= _KEYED_KEPT:
        _KEYED.clear()
    _KEYED[key] = states
    return states


#: sha256's block size in bytes, and the byte maps of ``x ^ 0x36`` and ``x ^ 0x5c`` (HMAC's pads).
_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
#: key -> its two keyed sha256 states with nothing hashed yet, copied by :func:`chain_link`.
_KEYED: dict[bytes, tuple[HASH, HASH]] = {}
#: How many keys :data:`_KEYED` holds before it is emptied (a process holds a few: current and older).
_KEYED_KEPT = 16


def record_mac(key: bytes, kind: str, fields: Sequence[object]) -> str:
    """HMAC-SHA256 (64 hex digits) of a keyed record: an archive record, an upgrade record, a checkpoint, an export trailer.

    Args:
        key: the log key's bytes.
        kind: what the record is (``archive``, ``upgrade``, ``checkpoint``, ``export``), so a
            MAC of one kind never passes as another.
        fields: the record's fields in a fixed order; each is written as ``str(field)``.
    """
    text = _SEPARATOR.join((f"jobtape-{kind}", *(str(field) for field in fields)))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
