"""Times and durations typed by operators: ISO 8601, relative (``-10m``), durations (``30d``) (pure).

Relative times count back from ``now`` (passed in; the CLI and HTTP layer read the
clock with :func:`jobtape.clock.utcnow`). Units: ``s`` seconds, ``m`` minutes, ``h``
hours, ``d`` days, ``w`` weeks. ISO 8601 text without an offset is taken as UTC.

Every value is range-checked, so no input reaches ``datetime`` arithmetic or SQLite
outside what they can hold (an ``OverflowError`` would be a 500 or a traceback):

- an absolute time lies in :data:`EARLIEST` .. :data:`LATEST` (1970-01-01T00:00:00Z to
  9999-12-31T23:59:59Z, both included);
- a duration, and the offset of a relative time, lies in 0 .. :data:`MAX_DURATION`
  (36,525 days, 100 years);
- a global position lies in 0 .. :data:`MAX_POSITION` (SQLite's largest integer).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from jobtape import clock, errors

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_DURATION",
    "MAX_POSITION",
    "TIME_RANGE",
    "parse_duration",
    "parse_position_or_time",
    "parse_time",
    "shown",
]

#: The earliest absolute time accepted (no event is older than the Unix epoch).
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: The latest absolute time accepted (the last second ``datetime`` can hold).
LATEST = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
#: The longest duration, and the furthest back a relative time may count: 100 years.
MAX_DURATION = dt.timedelta(days=36525)
#: The largest global position (SQLite's INTEGER is 64-bit signed).
MAX_POSITION = 2**63 - 1
#: The accepted range of times, as quoted in error messages.
TIME_RANGE = ("an ISO 8601 time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, or a relative time "
              "from -0s to -36525d (100 years) such as -10m, -2h, -1d")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_RANGE = "a number and a unit from 0s to 36525d (100 years): 45s, 90m, 12h, 30d or 2w"


def shown(text: str, limit: int = 40) -> str:
    """``text`` as quoted back in an error message: at most ``limit`` characters, then an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "..."


def _seconds(match: re.Match[str]) -> float | None:
    """The duration a match of :data:`_DURATION` names, in seconds, or ``None`` when out of range."""
    seconds = float(match.group(1)) * _UNITS[match.group(2)]  # huge digit strings become inf, not an error
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        return None
    return seconds


def parse_duration(text: str) -> dt.timedelta:
    """Parse a duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``.

    Returns:
        The duration, from 0 to :data:`MAX_DURATION` (100 years).

    Raises:
        errors.InvalidTimeSpec: the text is not a number followed by one of s, m, h, d, w,
            or names more than :data:`MAX_DURATION` (the message states the accepted range).
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise errors.InvalidTimeSpec(shown(text), f"use {_DURATION_RANGE}")
    seconds = _seconds(match)
    if seconds is None:
        raise errors.InvalidTimeSpec(shown(text), f"it is out of range; use {_DURATION_RANGE}")
    return dt.timedelta(seconds=seconds)


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """Parse an absolute or relative time to an aware UTC datetime.

    Args:
        text: ``now``, a relative time (``-10m``, ``-2h``, ``-1d``, ``-1.5h``; at most
            :data:`MAX_DURATION` back) or ISO 8601 (``2026-01-02T14:02:00Z``,
            ``2026-01-02 14:02``, ``2026-01-02``; no offset means UTC) from :data:`EARLIEST`
            to :data:`LATEST`.
        now: the current UTC time relative times count back from.

    Raises:
        errors.InvalidTimeSpec: the text is neither, or out of range (the message states
            the accepted forms and range, :data:`TIME_RANGE`).
    """
    stripped = text.strip()
    if not stripped:
        raise errors.InvalidTimeSpec(shown(text), f"it is empty; use {TIME_RANGE}")
    if stripped == "now":
        return now
    if stripped.startswith("-"):
        match = _DURATION.fullmatch(stripped[1:].strip())
        if match is None:
            raise errors.InvalidTimeSpec(shown(text), f"use {TIME_RANGE}")
        seconds = _seconds(match)
        if seconds is None:
            raise errors.InvalidTimeSpec(shown(text), f"it is out of range; use {TIME_RANGE}")
        return now - dt.timedelta(seconds=seconds)
    try:
        parsed = clock.parse_timestamp(stripped)
    except (ValueError, OverflowError) as exc:  # OverflowError: 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise errors.InvalidTimeSpec(shown(text), f"use {TIME_RANGE}") from exc
    if not EARLIEST <= parsed <= LATEST:
        raise errors.InvalidTimeSpec(shown(text), f"it is out of range; use {TIME_RANGE}")
    return parsed


def parse_position_or_time(text: str, now: dt.datetime) -> int | dt.datetime:
    """Parse a global position (digits only, e.g. ``1200``) or else a time as in :func:`parse_time`.

    Raises:
        errors.InvalidTimeSpec: neither a position (0 to :data:`MAX_POSITION`) nor a time.
    """
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit():
        position = int(stripped)
        if position > MAX_POSITION:
            raise errors.InvalidTimeSpec(shown(text), f"a global position runs from 0 to {MAX_POSITION}")
        return position
    return parse_time(stripped, now)
