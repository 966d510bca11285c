"""API-key event types and key streams (pure; no I/O).

An API key's life is a stream of its own in the ``events`` table, ``key-<key_id>``
(:func:`key_stream`), beside the job streams (32 hex digits, never with that prefix):

- ``key.created`` (version 1): the key's owner, scopes, name and the sha256 of its token
  (:func:`jobtape.auth.tokens.token_hash`; the token itself is never stored);
- ``key.revoked`` (version 2): the key no longer authenticates anyone.

Key events are appended by the same store, with the same rules as job events (one atomic
batch with the ``api_keys`` projection row, the version guard, the hash chain), so the
audit trail covers who could act. Migration ``0011_api_keys`` adds a trigger that keeps
key events in key streams and job events out of them. The job fold
(:mod:`jobtape.projections.state`) never sees a key stream: the store's job reads skip
them, and every tool that reads the whole log tells the two apart with
:func:`is_key_stream`. Their fold is :mod:`jobtape.projections.key_state`.

Schema evolution as for job events (:mod:`jobtape.eventlog.events`): a new field gets a default.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

import msgspec

from jobtape import errors

__all__ = [
    "KEY_EVENT_TYPES",
    "KEY_STREAM_PREFIX",
    "KeyCreated",
    "KeyEvent",
    "KeyRevoked",
    "RecordedKeyEvent",
    "decode_key_event",
    "encode_key_event",
    "is_key_stream",
    "key_event_type",
    "key_id_of",
    "key_stream",
]

#: The prefix of every key stream's id (``events.job_id``); a job id never has it.
KEY_STREAM_PREFIX = "key-"


class _KeyBase(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    pass


class KeyCreated(_KeyBase, frozen=True, tag="key.created"):
    """An API key was created (``jobtape keys create``).

    Attributes:
        key_id: the key's id, 16 lowercase hex digits (also in the stream id).
        owner: whose jobs the key acts on (the owner of the jobs it submits).
        scopes: the scopes it grants, sorted (:data:`jobtape.auth.tokens.SCOPES`).
        token_hash: sha256 of the token, 64 hex digits (:func:`jobtape.auth.tokens.token_hash`).
        name: a label for people (``""``: none).
    """

    key_id: str
    owner: str
    scopes: list[str]
    token_hash: str
    name: str = ""


class KeyRevoked(_KeyBase, frozen=True, tag="key.revoked"):
    """The API key was revoked (``jobtape keys revoke``): it authenticates no one from now on.

    Attributes:
        key_id: the key's id.
    """

    key_id: str


KeyEvent = KeyCreated | KeyRevoked

#: tag -> struct class, for every key event type.
KEY_EVENT_TYPES: dict[str, type[_KeyBase]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (KeyCreated, KeyRevoked)
}

_ENCODER = msgspec.json.Encoder()
_DECODERS = {tag: msgspec.json.Decoder(cls) for tag, cls in KEY_EVENT_TYPES.items()}


def key_stream(key_id: str) -> str:
    """The stream id of key ``key_id``: ``key-<key_id>``."""
    return KEY_STREAM_PREFIX + key_id


def is_key_stream(stream: str) -> bool:
    """Whether ``stream`` (an ``events.job_id``) is a key stream rather than a job's."""
    return stream.startswith(KEY_STREAM_PREFIX)


def key_id_of(stream: str) -> str:
    """The key id of key stream ``stream`` (``key-<key_id>`` -> ``<key_id>``).

    Raises:
        ValueError: ``stream`` is not a key stream.
    """
    if not is_key_stream(stream):
        raise ValueError(f"{stream!r} is not a key stream")
    return stream[len(KEY_STREAM_PREFIX) :]


def key_event_type(event: KeyEvent) -> str:
    """Return the tag of a key event, e.g. ``"key.created"``."""
    return event.__struct_config__.tag  # type: ignore[return-value]


def encode_key_event(event: KeyEvent) -> tuple[str, str]:
    """Encode a key event for storage: ``(type, data)``, the tag and the fields as JSON text (without the tag)."""
    return key_event_type(event), _ENCODER.encode(msgspec.structs.asdict(event)).decode()


def decode_key_event(position: int, type_: str, data: str | bytes) -> KeyEvent:
    """Decode a stored key event.

    Args:
        position: the event's global position (only used in the error).
        type_: the ``type`` column.
        data: the ``data`` column (JSON object).

    Raises:
        errors.MalformedEvent: not a key event type, or data that does not match it (names the position).
    """
    decoder = _DECODERS.get(type_)
    if decoder is None:
        raise errors.MalformedEvent(position, type_, "not a key event type (a key stream holds key.created and key.revoked only)")
    try:
        return cast(KeyEvent, decoder.decode(data))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MalformedEvent(position, type_, str(exc)) from exc


class RecordedKeyEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A key event as stored in the log (the key-stream counterpart of :class:`jobtape.eventlog.events.RecordedEvent`).

    Attributes:
        position: global position.
        stream: the key stream, ``key-<key_id>`` (the ``events.job_id`` column).
        version: 1 for ``key.created``, 2 for ``key.revoked``.
        event: the decoded event.
        actor: who appended it (``cli:<os user>``, or ``cli``).
        recorded_at: UTC time of the append.
    """

    position: int
    stream: str
    version: int
    event: KeyEvent
    actor: str
    recorded_at: dt.datetime

    @property
    def type(self) -> str:
        """The event's tag, e.g. ``key.revoked``."""
        return key_event_type(self.event)

    @property
    def key_id(self) -> str:
        """The key's id."""
        return key_id_of(self.stream)
