"""Times and durations typed by operators: ISO 8601, relative (``-10m``), durations (``30d``) (pure).

Relative times count back from ``now`` (passed in; the CLI and HTTP layer read the
clock with :func:`jobtape.clock.utcnow`). Units: ``s`` seconds, ``m`` minutes, ``h``
hours, ``d`` days, ``w`` weeks. ISO 8601 text without an offset is taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import re

from jobtape import clock, errors

__all__ = ["parse_duration", "parse_position_or_time", "parse_time"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_HINT = "use ISO 8601 (2026-01-02T14:02:00Z) or a relative time such as -10m, -2h, -1d"


def parse_duration(text: str) -> dt.timedelta:
    """Parse a duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``.

    Raises:
        errors.InvalidTimeSpec: the text is not a number followed by one of s, m, h, d, w.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise errors.InvalidTimeSpec(text, "use a number and a unit: 45s, 90m, 12h, 30d or 2w")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """Parse an absolute or relative time to an aware UTC datetime.

    Args:
        text: ``now``, a relative time (``-10m``, ``-2h``, ``-1d``, ``-1.5h``) or ISO 8601
            (``2026-01-02T14:02:00Z``, ``2026-01-02 14:02``, ``2026-01-02``; no offset means UTC).
        now: the current UTC time relative times count back from.

    Raises:
        errors.InvalidTimeSpec: the text is neither (the message says what is accepted).
    """
    stripped = text.strip()
    if not stripped:
        raise errors.InvalidTimeSpec(text, f"it is empty; {_HINT}")
    if stripped == "now":
        return now
    if stripped.startswith("-"):
        match = _DURATION.fullmatch(stripped[1:].strip())
        if match is None:
            raise errors.InvalidTimeSpec(text, _HINT)
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        return clock.parse_timestamp(stripped)
    except ValueError as exc:
        raise errors.InvalidTimeSpec(text, _HINT) from exc


def parse_position_or_time(text: str, now: dt.datetime) -> int | dt.datetime:
    """Parse a global position (digits only, e.g. ``1200``) or else a time as in :func:`parse_time`.

    Raises:
        errors.InvalidTimeSpec: neither a position nor a time.
    """
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    return parse_time(stripped, now)
