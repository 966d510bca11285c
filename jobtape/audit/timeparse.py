"""Times and durations typed by operators: ISO 8601, relative (``-10m``), durations (``30d``) (pure).

Relative times count back from ``now`` (passed in; the CLI and HTTP layer read the
clock with :func:`jobtape.clock.utcnow`). Units: ``s`` seconds, ``m`` minutes, ``h``
hours, ``d`` days, ``w`` weeks. ISO 8601 text without an offset is taken as UTC.

Every value is range-checked, so no input reaches ``datetime`` arithmetic or SQLite
outside what they can hold (an ``OverflowError`` would be a 500 or a traceback):

- an absolute time lies in :data:`EARLIEST` .. :data:`LATEST` (0001-01-01T00:00:00Z to
  9999-12-31T23:59:59.999999Z, what ``datetime`` holds in UTC);
- a duration, and the offset of a relative time, is a number below :data:`MAX_AMOUNT`
  (100000) of its unit: at most ``99999.999999w`` (about 1,917 years);
- a global position lies in 0 .. :data:`MAX_POSITION` (SQLite's largest integer).

:data:`RELATIVE_PATTERN` states the relative form as a regular expression (the OpenAPI
document of ``asOf`` quotes it); a text it matches is always in range.
"""

from __future__ import annotations

import datetime as dt
import math
import re

from jobtape import clock, errors

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_AMOUNT",
    "MAX_POSITION",
    "RELATIVE_PATTERN",
    "TIME_RANGE",
    "parse_duration",
    "parse_position_or_time",
    "parse_time",
    "shown",
]

#: The earliest absolute time accepted (the first ``datetime`` can hold).
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
#: The latest absolute time accepted (the last ``datetime`` can hold).
LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
#: A duration, or a relative time's offset, is a number below this many of its unit.
MAX_AMOUNT = 100000
#: The relative forms ``now`` and ``-<number><unit>`` as a regular expression (always in range).
RELATIVE_PATTERN = r"^(now|-[0-9]{1,5}(\.[0-9]{1,6})?[smhdw])$"
#: The largest global position (SQLite's INTEGER is 64-bit signed).
MAX_POSITION = 2**63 - 1
#: The accepted range of times, as quoted in error messages.
TIME_RANGE = (
    "an ISO 8601 time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (2026-01-02T14:02:00Z), or a "
    "relative time of less than 100000 units back (-10m, -2h, -1d, at most -99999.999999w)"
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_RANGE = "a number below 100000 and a unit: 45s, 90m, 12h, 30d or 2w (at most 99999.999999w)"


def shown(text: str, limit: int = 40) -> str:
    """``text`` as quoted back in an error message: at most ``limit`` characters, then an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "..."


def _seconds(match: re.Match[str]) -> float | None:
    """The duration a match of :data:`_DURATION` names, in seconds, or ``None`` when out of range."""
    amount = float(match.group(1))  # a huge digit string becomes inf, not an error
    if not math.isfinite(amount) or amount >= MAX_AMOUNT:
        return None
    return amount * _UNITS[match.group(2)]


def parse_duration(text: str) -> dt.timedelta:
    """Parse a duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``.

    Returns:
        The duration: below :data:`MAX_AMOUNT` (100000) of its unit.

    Raises:
        errors.InvalidTimeSpec: the text is not a number followed by one of s, m, h, d, w,
            or the number is :data:`MAX_AMOUNT` or more (the message states the accepted range).
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
        text: ``now``, a relative time (``-10m``, ``-2h``, ``-1d``, ``-1.5h``; below
            :data:`MAX_AMOUNT` units back) or ISO 8601 (``2026-01-02T14:02:00Z``,
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
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise errors.InvalidTimeSpec(shown(text), f"it is out of range; use {TIME_RANGE}") from exc
    except ValueError as exc:
        raise errors.InvalidTimeSpec(shown(text), f"use {TIME_RANGE}") from exc
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
