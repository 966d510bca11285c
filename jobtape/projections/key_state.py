"""An API key's state: a pure fold over its key stream's events (no I/O).

The one place that decides what a key is (the key-stream counterpart of
:mod:`jobtape.projections.state`, which never sees a key stream)::

    (absent) ──key.created──▶ active ──key.revoked──▶ revoked   (nothing follows)

:class:`jobtape.projections.keys.KeyRepository` runs a revoke through :func:`apply` before
appending it, so revoking an unknown or revoked key is refused before anything is
written; the batch's version guard refuses the same when two revokes race.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from jobtape import errors
from jobtape.eventlog import key_events as kev

__all__ = ["KeyState", "apply", "fold"]


class KeyState(msgspec.Struct, frozen=True, kw_only=True):
    """An API key after folding its events.

    Attributes:
        key_id: the key's id (16 hex digits).
        owner: whose jobs it acts on.
        scopes: the scopes it grants, sorted.
        name: the label given at creation (``""``: none).
        token_hash: sha256 of its token, 64 hex digits.
        created_at: UTC time of ``key.created``.
        revoked_at: UTC time of ``key.revoked``; ``None`` while the key is active.
        version: the version of the last event folded in (1 or 2).
    """

    key_id: str
    owner: str
    scopes: tuple[str, ...]
    name: str = ""
    token_hash: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    version: int = 1

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked."""
        return self.revoked_at is not None


def _refuse(stream: str, status: str, event: kev.KeyEvent, reason: str) -> errors.IllegalTransition:
    return errors.IllegalTransition(stream, status, kev.key_event_type(event), reason)


def apply(state: KeyState | None, event: kev.KeyEvent, *, stream: str, version: int, recorded_at: dt.datetime) -> KeyState:
    """Fold one key event into a key's state.

    Args:
        state: the state before the event; ``None`` for an empty stream.
        event: the event.
        stream: the key stream (``key-<key_id>``).
        version: the event's version in the stream (``state.version + 1``, or 1).
        recorded_at: the event's UTC time.

    Returns:
        The new state.

    Raises:
        errors.IllegalTransition: ``key.created`` on a stream that has one, or whose
            ``key_id`` is not the stream's; ``key.revoked`` of an absent or revoked key;
            a version that does not follow (the error's ``job_id`` is the stream).
    """
    key_id = kev.key_id_of(stream)
    if event.key_id != key_id:
        raise _refuse(stream, "absent" if state is None else "active", event, f"the event names key {event.key_id}, not {key_id}")
    if state is None:
        if not isinstance(event, kev.KeyCreated):
            raise _refuse(stream, "absent", event, "the key does not exist")
        if version != 1:
            raise _refuse(stream, "absent", event, f"a key stream starts at version 1, not {version}")
        return KeyState(
            key_id=event.key_id,
            owner=event.owner,
            scopes=tuple(sorted(event.scopes)),
            name=event.name,
            token_hash=event.token_hash,
            created_at=recorded_at,
            version=version,
        )
    status = "revoked" if state.revoked else "active"
    if version != state.version + 1:
        raise _refuse(stream, status, event, f"version {version} does not follow {state.version}")
    match event:
        case kev.KeyCreated():
            raise _refuse(stream, status, event, "the key exists already")
        case kev.KeyRevoked():
            if state.revoked:
                raise _refuse(stream, status, event, "the key is revoked already")
            return msgspec.structs.replace(state, revoked_at=recorded_at, version=version)
    raise _refuse(stream, status, event, "unknown event")  # pragma: no cover - the union is exhaustive


def fold(recorded: Iterable[kev.RecordedKeyEvent], state: KeyState | None = None) -> KeyState | None:
    """Fold one key stream's recorded events (version order) into a state.

    Raises:
        errors.IllegalTransition: the stored stream breaks the rules of :func:`apply`.
    """
    for item in recorded:
        state = apply(state, item.event, stream=item.stream, version=item.version, recorded_at=item.recorded_at)
    return state
