"""The log key: the HMAC key of the whole-log chain, kept outside the database.

Every process that appends (``serve``, workers, the CLI) holds the current key; verify and
import also accept older keys (rotation). The key is text of at least 32 bytes; its id is
the first 8 hex digits of sha256(key) unless given. Where it comes from
(:func:`jobtape.runtime.log_keys`): ``JOBTAPE_LOG_KEY`` (+ ``JOBTAPE_LOG_KEY_ID``,
``JOBTAPE_LOG_KEYS``), else the file ``data_dir/log-key`` (generated once, mode 0600).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from jobtape import errors, filemodes

__all__ = ["KEY_FILE_NAME", "MIN_KEY_BYTES", "LogKeys", "key_id_of", "load_key_file", "parse_key_list"]

#: The key file of the embedded default, under the data dir.
KEY_FILE_NAME = "log-key"
#: The shortest key accepted, in bytes.
MIN_KEY_BYTES = 32


def key_id_of(key: bytes) -> str:
    """The default id of ``key``: the first 8 hex digits of its sha256."""
    return hashlib.sha256(key).hexdigest()[:8]


@dataclasses.dataclass(frozen=True, repr=False)
class LogKeys:
    """The current log key (appends and keyed records use it) and older ones (verification only).

    Attributes:
        current_id: the id stored with every event and record made under :attr:`current`.
        current: the key's bytes (>= :data:`MIN_KEY_BYTES`).
        older: ``{key id: key bytes}`` of rotated-out keys that verify and import still accept.
    """

    current_id: str
    current: bytes
    older: Mapping[str, bytes] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for key_id, key in ((self.current_id, self.current), *self.older.items()):
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"log key {key_id!r} has {len(key)} bytes; a log key needs at least {MIN_KEY_BYTES}")

    def __repr__(self) -> str:
        return f"LogKeys(current_id={self.current_id!r}, older={sorted(self.older)!r})"

    @classmethod
    def from_secret(cls, key: bytes, key_id: str | None = None, older: Mapping[str, bytes] | None = None) -> LogKeys:
        """Keys from the secret's bytes; ``key_id`` defaults to :func:`key_id_of`.

        Raises:
            ValueError: a key shorter than :data:`MIN_KEY_BYTES`.
        """
        return cls(key_id or key_id_of(key), key, dict(older or {}))

    @classmethod
    def ephemeral(cls) -> LogKeys:
        """A random key for this process only (an :class:`~jobtape.eventlog.store.EventStore`
        built without keys, as tests do): its chains verify only in this process."""
        return cls.from_secret(secrets.token_hex(32).encode())

    def get(self, key_id: str) -> bytes | None:
        """The key with id ``key_id`` (current or older), ``None`` if not held."""
        if key_id == self.current_id:
            return self.current
        return self.older.get(key_id)

    @property
    def ids(self) -> list[str]:
        """Every id held: the current one first."""
        return [self.current_id, *sorted(k for k in self.older if k != self.current_id)]


def parse_key_list(text: str) -> dict[str, bytes]:
    """``JOBTAPE_LOG_KEYS``: ``id:key`` items separated by commas or whitespace -> ``{id: key bytes}``.

    Raises:
        ValueError: an item without ``:``, an empty id, or a key shorter than :data:`MIN_KEY_BYTES`.
    """
    keys: dict[str, bytes] = {}
    for item in text.replace(",", " ").split():
        key_id, sep, key = item.partition(":")
        if not sep or not key_id:
            raise ValueError("JOBTAPE_LOG_KEYS must list id:key items separated by commas")
        if len(key.encode()) < MIN_KEY_BYTES:
            raise ValueError(f"JOBTAPE_LOG_KEYS: key {key_id!r} has fewer than {MIN_KEY_BYTES} bytes")
        keys[key_id] = key.encode()
    return keys


def load_key_file(path: Path, *, create: bool, dir_mode: int = 0o700) -> bytes | None:
    """Read the key kept at ``path``; create it first (32 random bytes as hex, mode 0600) when ``create``.

    Creation is ``O_EXCL``: of two processes racing, one writes and both read the same key.

    Returns:
        The key (the file's stripped text, UTF-8), or ``None`` when the file is absent and
        ``create`` is false, or cannot be read (a read-only tool then reports the log as unkeyed).

    Raises:
        errors.StoreUnavailable: ``create`` and the file cannot be written.
    """
    path = Path(path)
    if create:
        try:
            filemodes.make_dirs(path.parent, dir_mode)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise errors.StoreUnavailable(f"the log key file cannot be created ({exc.strerror})") from exc
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
    for _ in range(50):  # a racing creator may not have written its line yet
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        if text:
            return text.encode()
        os.sched_yield()
    return None
