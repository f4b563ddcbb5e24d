"""RFC 3339 <-> nanosecond conversions (trioalpaca._time)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca._time import (
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    datetime_to_ns,
    format_rfc3339_ns,
    ns_to_datetime,
    parse_rfc3339_ns,
)
from trioalpaca.testing.strategies import timestamps_ns

UTC = timezone.utc


def test_range_is_years_0001_to_9999() -> None:
    assert format_rfc3339_ns(MIN_TIMESTAMP_NS) == "0001-01-01T00:00:00Z"
    assert format_rfc3339_ns(MAX_TIMESTAMP_NS) == "9999-12-31T23:59:59.999999999Z"
    assert parse_rfc3339_ns("0001-01-01T00:00:00Z") == MIN_TIMESTAMP_NS
    assert parse_rfc3339_ns("9999-12-31T23:59:59.999999999Z") == MAX_TIMESTAMP_NS


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.000000001Z", 1),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2021-02-22T15:51:44.208Z", 1_614_009_104_208_000_000),
        ("2021-02-22T19:15:00Z", 1_614_021_300_000_000_000),
        ("2024-03-12T10:27:48.858228144Z", 1_710_239_268_858_228_144),
        ("2000-02-29T12:00:00.5Z", 951_825_600_500_000_000),
    ],
)
def test_known_values_both_ways(text: str, ns: int) -> None:
    assert parse_rfc3339_ns(text) == ns
    assert format_rfc3339_ns(ns) == text


def test_format_drops_trailing_zeros_and_empty_fraction() -> None:
    base = parse_rfc3339_ns("2021-02-22T15:51:35Z")
    assert format_rfc3339_ns(base) == "2021-02-22T15:51:35Z"
    assert format_rfc3339_ns(base + 133_122_560) == "2021-02-22T15:51:35.13312256Z"
    assert format_rfc3339_ns(base + 100_000_000) == "2021-02-22T15:51:35.1Z"


@pytest.mark.parametrize(
    ("text", "expected_utc"),
    [
        ("2021-02-22T10:51:44.208-05:00", "2021-02-22T15:51:44.208Z"),
        ("2021-02-22T17:51:44+02:00", "2021-02-22T15:51:44Z"),
        ("2021-02-22t15:51:44z", "2021-02-22T15:51:44Z"),
        ("2021-02-22 15:51:44Z", "2021-02-22T15:51:44Z"),
        ("2021-02-22T15:51:44.2080Z", "2021-02-22T15:51:44.208Z"),
    ],
)
def test_parse_accepts_offsets_and_variants(text: str, expected_utc: str) -> None:
    assert format_rfc3339_ns(parse_rfc3339_ns(text)) == expected_utc


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021-02-22",
        "2021-02-22T15:51:44",  # no zone
        "2021-02-30T00:00:00Z",  # no such day
        "2021-13-01T00:00:00Z",
        "2021-02-22T24:00:00Z",
        "2021-02-22T23:60:00Z",
        "2021-02-22T23:59:60Z",  # leap seconds are not representable
        "2021-02-22T15:51:44.1234567890Z",  # 10 fractional digits
        "2021-02-22T15:51:44.Z",
        "2021-02-22T15:51:44+24:00",
        "0000-12-31T23:59:59Z",
        "0001-01-01T00:00:00+00:01",  # before year 1 after the offset
        "9999-12-31T23:59:59-00:01",  # after year 9999 after the offset
        "\uff12\uff10\uff12\uff11-02-22T15:51:44Z",  # non-ASCII (fullwidth) digits
        " 2021-02-22T15:51:44Z",
        "2021-02-22T15:51:44Z ",
    ],
)
def test_parse_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|0001-9999"):
        parse_rfc3339_ns(text)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339_ns(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("ns", [MIN_TIMESTAMP_NS - 1, MAX_TIMESTAMP_NS + 1, 10**30, -(10**30)])
def test_out_of_range_rejected(ns: int) -> None:
    with pytest.raises(ValueError, match="0001-9999"):
        format_rfc3339_ns(ns)
    with pytest.raises(ValueError, match="0001-9999"):
        ns_to_datetime(ns)


@settings(max_examples=300, deadline=None)
@given(timestamps_ns())
def test_roundtrip_whole_range(ns: int) -> None:
    text = format_rfc3339_ns(ns)
    assert parse_rfc3339_ns(text) == ns
    assert text.endswith("Z")
    if "." in text:
        fraction = text[text.index(".") + 1 : -1]
        assert 1 <= len(fraction) <= 9
        assert not fraction.endswith("0")
    else:
        assert ns % 1_000_000_000 == 0


@settings(max_examples=200, deadline=None)
@given(timestamps_ns())
def test_datetime_is_floored_to_microseconds(ns: int) -> None:
    dt = ns_to_datetime(ns)
    assert dt.tzinfo is UTC
    assert datetime_to_ns(dt) == ns - ns % 1000
    # consistent with the text form
    date_part = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    prefix = f"{date_part}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    assert format_rfc3339_ns(ns).startswith(prefix)


def test_datetime_examples() -> None:
    assert ns_to_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert ns_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert ns_to_datetime(1_614_009_104_208_123_456) == datetime(
        2021, 2, 22, 15, 51, 44, 208123, tzinfo=UTC
    )
    naive = datetime(2021, 2, 22, 15, 51, 44, 208000)
    assert datetime_to_ns(naive) == 1_614_009_104_208_000_000
    aware = datetime(2021, 2, 22, 10, 51, 44, 208000, tzinfo=timezone(timedelta(hours=-5)))
    assert datetime_to_ns(aware) == 1_614_009_104_208_000_000


@settings(max_examples=100, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))
def test_datetime_roundtrip(dt: datetime) -> None:
    assert ns_to_datetime(datetime_to_ns(dt)) == dt


@settings(max_examples=200, deadline=None)
@given(timestamps_ns(), st.integers(0, 10**9 - 1))
def test_cached_fast_path_agrees_with_full_parser(ns: int, other_fraction: int) -> None:
    from trioalpaca import _time

    text = format_rfc3339_ns(ns)
    assert parse_rfc3339_ns(text) == ns  # fills the cache for this second
    same_second = ns - ns % 1_000_000_000 + other_fraction
    variant = format_rfc3339_ns(same_second)
    assert parse_rfc3339_ns(variant) == _time._parse_slow(variant) == same_second
    # a cached second must not make malformed tails acceptable
    for bad in (text[:19] + ".Z", text[:19] + ".1234567890Z", text[:19] + ".12x4Z"):
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_rfc3339_ns(bad)
