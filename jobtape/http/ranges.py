"""HTTP byte ranges (RFC 9110 §14): parse a ``Range`` header against a representation's size (pure).

Only single ranges are served: ``bytes=first-last``, ``bytes=first-`` and the suffix form
``bytes=-length``. As RFC 9110 §14.2 allows, a header that is not a valid ``bytes`` range
or that asks for several ranges is ignored (the whole representation is sent with 200).
A valid range that starts past the end (or a zero-length suffix) is unsatisfiable: 416
with ``Content-Range: bytes */<size>``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["UNSATISFIABLE", "ByteRange", "content_range", "parse_range"]

_SINGLE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


class ByteRange(NamedTuple):
    """A satisfiable range: ``start`` and ``end`` are inclusive byte offsets (0-based)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """Bytes in the range."""
        return self.end - self.start + 1


class _Unsatisfiable:
    def __repr__(self) -> str:
        return "UNSATISFIABLE"


#: Returned by :func:`parse_range` for a valid range that selects no byte of the representation.
UNSATISFIABLE = _Unsatisfiable()


def parse_range(header: str | None, size: int) -> ByteRange | _Unsatisfiable | None:
    """Interpret a ``Range`` header for a representation of ``size`` bytes.

    Args:
        header: the ``Range`` header's value, or ``None`` when absent.
        size: the representation's length in bytes.

    Returns:
        ``None`` to send the whole representation (no header, an invalid one, several
        ranges, or a non-``bytes`` unit); a :class:`ByteRange` clamped to the last byte;
        or :data:`UNSATISFIABLE`.
    """
    if header is None:
        return None
    match = _SINGLE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored like any malformed header
    if start >= size:
        return UNSATISFIABLE
    return ByteRange(start, min(end, size - 1))


def content_range(byte_range: ByteRange | None, size: int) -> str:
    """The ``Content-Range`` value: ``bytes 0-99/1234``, or ``bytes */1234`` for a 416 (``None``)."""
    if byte_range is None:
        return f"bytes */{size}"
    return f"bytes {byte_range.start}-{byte_range.end}/{size}"
