"""The per-stream hash chain that makes tampering with stored events evident (pure).

Each event's ``hash`` is sha256 over the previous event's hash in the same job stream and
the event's stored content (job id, version, type, data, actor, recorded_at), joined with
the ASCII unit separator. The first event of a stream chains from :func:`genesis_hash`.
Changing any stored byte of an event breaks its hash and every later hash of the stream.
"""

from __future__ import annotations

import hashlib

__all__ = ["event_hash", "genesis_hash"]

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
