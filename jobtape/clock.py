"""The one place jobtape reads the wall clock (so tests can freeze it with freezegun)."""

from __future__ import annotations

import datetime as dt

__all__ = ["format_timestamp", "parse_timestamp", "utcnow"]

# Kept inside a tuple so freezegun, which swaps module attributes that ARE the datetime
# class, leaves it alone: msgspec encodes only real datetimes, not freezegun's subclass.
_REAL_DATETIME = (dt.datetime,)


def _real(value: dt.datetime) -> dt.datetime:
    if type(value) is _REAL_DATETIME[0]:
        return value
    return _REAL_DATETIME[0](
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond,
        tzinfo=value.tzinfo,
    )


def utcnow() -> dt.datetime:
    """Return the current UTC time as an aware datetime with microsecond precision."""
    return _real(dt.datetime.now(dt.timezone.utc))


def format_timestamp(value: dt.datetime) -> str:
    """Format a UTC datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sortable as text).

    Naive datetimes are taken to be UTC; aware ones are converted to UTC.
    """
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(dt.timezone.utc)
    # isoformat is several times faster than strftime; this runs on every append.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_timestamp` (or any ISO 8601 text) to aware UTC.

    Raises:
        ValueError: the text is not ISO 8601.
    """
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return _real(value.astimezone(dt.timezone.utc))
