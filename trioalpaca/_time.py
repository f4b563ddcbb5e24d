"""Nanosecond timestamps: RFC 3339 text and :class:`~datetime.datetime` conversion.

Every timestamp inside trioalpaca is an ``int`` of nanoseconds since the Unix epoch (UTC). This
module converts those integers to and from the RFC 3339 text used by Alpaca's JSON streams
(Go ``RFC3339Nano`` style: up to 9 fractional digits, trailing zeros dropped, no fraction when it is
zero, ``Z`` suffix).

Supported range: the years 0001 to 9999 inclusive, i.e. ``MIN_TIMESTAMP_NS`` to
``MAX_TIMESTAMP_NS``. That is everything RFC 3339 can express and everything
:class:`datetime.datetime` can hold; the msgpack timestamp extension (int64 seconds) covers it
too, so both encodings round-trip every value in the range exactly. Values outside it raise
:class:`ValueError`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

__all__ = [
    "MAX_TIMESTAMP_NS",
    "MIN_TIMESTAMP_NS",
    "datetime_to_ns",
    "format_rfc3339_ns",
    "ns_to_datetime",
    "parse_rfc3339_ns",
]

_NS = 1_000_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: Smallest supported timestamp: 0001-01-01T00:00:00Z in nanoseconds since the epoch.
MIN_TIMESTAMP_NS = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * _NS
#: Largest supported timestamp: 9999-12-31T23:59:59.999999999Z in nanoseconds since the epoch.
MAX_TIMESTAMP_NS = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * _NS - 1

# ASCII digits only (a plain \d would also accept other Unicode digits).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_FRAC_SCALE: tuple[int, ...] = tuple(10 ** (9 - n) for n in range(10))

# Streams carry many timestamps within the same second: remember the date-and-time part.
_CACHE_SIZE = 4096
_PARSE_CACHE: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> seconds since the epoch (UTC)
_FORMAT_CACHE: dict[int, str] = {}  # seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS"


def parse_rfc3339_ns(s: str) -> int:
    """Parse an RFC 3339 timestamp into nanoseconds since the epoch.

    Accepts ``Z`` (or ``z``) and numeric ``+HH:MM`` / ``-HH:MM`` offsets, ``T``, ``t`` or a space
    as the separator, and 0 to 9 fractional digits.

    Raises:
        ValueError: ``s`` is not a valid RFC 3339 timestamp or lies outside the supported range.
    """
    # Fast path: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" whose seconds part was seen recently.
    if type(s) is str and s[-1:] == "Z":
        secs = _PARSE_CACHE.get(s[:19])
        if secs is not None:
            n = len(s)
            if n == 20:
                return secs * _NS
            frac = s[20:-1]
            if 22 <= n <= 30 and s[19] == "." and frac.isascii() and frac.isdigit():
                return secs * _NS + int(frac) * _FRAC_SCALE[n - 21]
    ns = _parse_slow(s)
    if type(s) is str and len(s) >= 20 and s[-1] == "Z" and s[19] in ".Z" and s[10] == "T":
        if len(_PARSE_CACHE) >= _CACHE_SIZE:
            _PARSE_CACHE.clear()
        _PARSE_CACHE[s[:19]] = ns // _NS
    return ns


def _parse_slow(s: str) -> int:
    m = _RFC3339.fullmatch(s) if isinstance(s, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {s!r:.60}")
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError(f"invalid date in RFC 3339 timestamp: {s!r:.60}") from None
    h, mi, sec = int(hour), int(minute), int(second)
    if h > 23 or mi > 59 or sec > 59:
        raise ValueError(f"invalid time of day in RFC 3339 timestamp: {s!r:.60}")
    secs = days * 86_400 + h * 3600 + mi * 60 + sec
    if z is None:
        offset_h, offset_m = int(oh), int(om)
        if offset_h > 23 or offset_m > 59:
            raise ValueError(f"invalid UTC offset in RFC 3339 timestamp: {s!r:.60}")
        offset = offset_h * 3600 + offset_m * 60
        secs = secs - offset if sign == "+" else secs + offset
    ns = secs * _NS
    if frac is not None:
        ns += int(frac) * _FRAC_SCALE[len(frac)]
    if not MIN_TIMESTAMP_NS <= ns <= MAX_TIMESTAMP_NS:
        raise ValueError(f"timestamp outside the years 0001-9999: {s!r:.60}")
    return ns


def format_rfc3339_ns(ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 UTC text (``2024-01-02T03:04:05.5Z``).

    Fractional seconds carry up to 9 digits with trailing zeros dropped and are left out when zero.

    Raises:
        ValueError: ``ns`` is outside ``MIN_TIMESTAMP_NS`` .. ``MAX_TIMESTAMP_NS``.
    """
    if not MIN_TIMESTAMP_NS <= ns <= MAX_TIMESTAMP_NS:
        raise ValueError(f"timestamp {ns} ns is outside the years 0001-9999")
    secs, frac = divmod(ns, _NS)
    prefix = _FORMAT_CACHE.get(secs)
    if prefix is None:
        days, sod = divmod(secs, 86_400)
        d = date.fromordinal(days + _EPOCH_ORDINAL)
        hour, rem = divmod(sod, 3600)
        minute, second = divmod(rem, 60)
        prefix = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        if len(_FORMAT_CACHE) >= _CACHE_SIZE:
            _FORMAT_CACHE.clear()
        _FORMAT_CACHE[secs] = prefix
    if frac:
        return f"{prefix}.{frac:09d}".rstrip("0") + "Z"
    return prefix + "Z"


def ns_to_datetime(ns: int) -> datetime:
    """Convert nanoseconds since the epoch to an aware UTC :class:`~datetime.datetime`.

    ``datetime`` holds microseconds, so the value is floored to the microsecond; keep the integer
    when you need full precision.

    Raises:
        ValueError: ``ns`` is outside the supported range.
    """
    if not MIN_TIMESTAMP_NS <= ns <= MAX_TIMESTAMP_NS:
        raise ValueError(f"timestamp {ns} ns is outside the years 0001-9999")
    return _EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(dt: datetime) -> int:
    """Convert a :class:`~datetime.datetime` to nanoseconds since the epoch.

    Naive datetimes are taken to be UTC.
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000
