"""The one place jobtape reads the wall clock (so tests can freeze it with freezegun)."""

from __future__ import annotations

import datetime as dt

__all__ = ["format_timestamp", "parse_timestamp", "real_datetime", "utcnow"]

# Kept inside a tuple so freezegun, which swaps module attributes that ARE the datetime
# class, leaves it alone: msgspec encodes only real datetimes, not freezegun's subclass.
_REAL_DATETIME = (dt.datetime,)


def _real(value: dt.datetime) -> dt.datetime:
    if type(value) is _REAL_DATETIME[0]:
        return value
    return _REAL_DATETIME[0](
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=value.tzinfo,
    )


def utcnow() -> dt.datetime:
    """Return the current UTC time as an aware datetime with microsecond precision."""
    return _real(dt.datetime.now(dt.UTC))


def format_timestamp(value: dt.datetime) -> str:
    """Format a UTC datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sortable as text).

    Naive datetimes are taken to be UTC; aware ones are converted to UTC.
    """
    global _last_formatted
    last = _last_formatted
    if last[0] is value:  # an append formats its one timestamp for the event and the row
        return last[1]
    utc = value.astimezone(dt.UTC) if value.tzinfo is not None and value.utcoffset() else value
    # isoformat is several times faster than strftime; this runs on every append.
    text = utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last_formatted = (value, text)
    return text


_last_formatted: tuple[object, str] = (None, "")


def real_datetime() -> type[dt.datetime]:
    """The real ``datetime.datetime`` class, even while freezegun has replaced ``dt.datetime``.

    For decoders that parse stored timestamps in a loop (``real_datetime().fromisoformat``
    gives the same value as :func:`parse_timestamp` on a ``...Z`` text, without its call).
    """
    return _REAL_DATETIME[0]


def parse_timestamp(text: str) -> dt.datetime:
    """Parse a timestamp written by :func:`format_timestamp` (or any ISO 8601 text) to aware UTC.

    Raises:
        ValueError: the text is not ISO 8601.
    """
    if len(text) == 27 and text[-1] == "Z":  # the stored form: fromisoformat reads "Z" as UTC (Python 3.11+)
        parsed = _REAL_DATETIME[0].fromisoformat(text)
        if parsed.tzinfo is dt.UTC:
            return parsed
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return _real(value.astimezone(dt.UTC))
