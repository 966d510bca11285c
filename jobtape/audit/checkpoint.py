"""Signed log heads (checkpoints): what ``jobtape checkpoint`` prints and ``verify --against`` checks (pure).

A checkpoint is one JSON line::

    {"position": 812, "chain": "…64 hex…", "at": "2026-01-02T14:02:03.123456Z",
     "keyId": "3f2a9c1e", "mac": "…64 hex…"}

``mac`` is :func:`jobtape.eventlog.hashing.record_mac` of kind ``checkpoint`` over the
other fields, under the log key ``keyId`` names. The operator keeps it away from the
database (a file, an S3 object, a ticket): a log that no longer holds the event at
``position`` with that ``chain`` (or an archive record bridging it) was cut back or
rewritten after the checkpoint, even by someone who can write the database file.
"""

from __future__ import annotations

import hmac

import msgspec

from jobtape.eventlog import hashing
from jobtape.eventlog.logkey import LogKeys

__all__ = ["Checkpoint", "CheckpointError", "decode_checkpoint", "encode_checkpoint", "make_checkpoint"]


class Checkpoint(msgspec.Struct, rename="camel", kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A signed log head.

    Attributes:
        position: the head's global position (0: an empty log).
        chain: the keyed chain value at that position (``None`` for an empty log).
        at: when it was made, UTC timestamp text.
        key_id: the id of the key :attr:`mac` was made with.
        mac: 64 hex digits.
    """

    position: int
    chain: str | None
    at: str
    key_id: str
    mac: str

    def signed_fields(self) -> tuple[object, ...]:
        """The fields the MAC covers, in order."""
        return (self.position, self.chain, self.at, self.key_id)


class CheckpointError(ValueError):
    """The checkpoint text is not a checkpoint, or its MAC does not verify under the keys held."""


def make_checkpoint(keys: LogKeys, *, position: int, chain: str | None, at: str) -> Checkpoint:
    """A checkpoint of the head (``position``, ``chain``) signed with the current key at ``at`` (UTC text)."""
    unsigned = Checkpoint(position=position, chain=chain, at=at, key_id=keys.current_id, mac="")
    return msgspec.structs.replace(unsigned, mac=hashing.record_mac(keys.current, "checkpoint", unsigned.signed_fields()))


def encode_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint as one JSON line (no newline)."""
    return msgspec.json.encode(checkpoint).decode()


def decode_checkpoint(text: str, keys: LogKeys) -> Checkpoint:
    """Parse a checkpoint line and check its MAC.

    Args:
        text: the JSON line (surrounding whitespace is fine).
        keys: the log keys; the checkpoint's ``keyId`` must be one of them.

    Raises:
        CheckpointError: not a checkpoint, an unknown key id, or a MAC that does not verify (forged or edited).
    """
    try:
        checkpoint = msgspec.json.decode(text.strip().encode(), type=Checkpoint)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"not a checkpoint line (the output of `jobtape checkpoint`): {exc}") from exc
    key = keys.get(checkpoint.key_id)
    if key is None:
        raise CheckpointError(
            f"the checkpoint was signed with log key {checkpoint.key_id!r}, which this process does not hold (JOBTAPE_LOG_KEYS)"
        )
    if not hmac.compare_digest(hashing.record_mac(key, "checkpoint", checkpoint.signed_fields()), checkpoint.mac):
        raise CheckpointError("the checkpoint's MAC does not verify: it was edited, or made with another key")
    return checkpoint
