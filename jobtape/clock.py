"""The one place jobtape reads the wall clock (so tests can freeze it with freezegun)."""

from __future__ import annotations

import datetime as dt

import msgspec

__all__ = ["format_timestamp", "format_uncached", "parse_timestamp", "real_datetime", "utcnow"]

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
    text = format_uncached(value)
    _last_formatted = (value, text)
    return text


def format_uncached(value: dt.datetime) -> str:
    """:func:`format_timestamp` without its one-entry cache: for a row's other times (a lease's
    expiry, a job's creation), which would otherwise evict the event's own time from it.

    One msgspec encode when it gives that text (a real datetime in UTC, or at offset 0, with
    microseconds: RFC 3339 with ``Z``, 29 bytes with its quotes), a third to a seventh of the
    cost of the %-format of the fields that every other value takes (no microseconds: msgspec
    leaves the fraction out; another offset, converted to UTC first; naive; freezegun's
    class, which msgspec does not encode); this runs for every append.
    """
    if type(value) is _REAL_DATETIME[0]:
        encoded = _ENCODE(value)
        if len(encoded) == _ENCODED_LENGTH and encoded[-2] == _Z:
            return encoded[1:-1].decode()
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(dt.UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - faster than an f-string or isoformat here
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


_last_formatted: tuple[object, str] = (None, "")
_ENCODE = msgspec.json.Encoder().encode
#: ``len(b'"YYYY-MM-DDTHH:MM:SS.ffffffZ"')`` and ``ord("Z")``: :func:`format_uncached`'s msgspec text.
_ENCODED_LENGTH = 29
_Z = ord("Z")


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
