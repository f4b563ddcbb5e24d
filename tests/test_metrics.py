"""Tests for trioalpaca.metrics: counters, sliding-window rates and latency histograms."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca.metrics import (
    LatencyHistogram,
    LatencySnapshot,
    RateMeter,
    RateSnapshot,
)

# ---------------------------------------------------------------- RateMeter


def test_rate_meter_validates_arguments() -> None:
    with pytest.raises(ValueError):
        RateMeter(0)
    with pytest.raises(ValueError):
        RateMeter(-1.0)
    with pytest.raises(ValueError):
        RateMeter(math.inf)
    with pytest.raises(ValueError):
        RateMeter(1.0, resolution=0)


def test_rate_meter_steady_rate() -> None:
    m = RateMeter(10.0)
    # 100 events per second for 30 s, at 10 ms spacing.
    for k in range(3000):
        m.add(1, k * 0.01)
    assert m.total == 3000
    # The window ending at 29.995 holds events of the last ~10 s (bucket granularity 0.5 s).
    assert 95.0 <= m.rate(29.995) <= 100.0
    # Nothing happens afterwards: the window drains completely after window_s.
    assert m.rate(29.99 + 10.0 + 1e-6) == 0.0
    assert m.total == 3000


def test_rate_meter_ramps_up_from_zero() -> None:
    m = RateMeter(10.0, resolution=10)
    m.add(50, 0.0)
    assert m.rate(0.0) == 5.0  # divisor is the full window even right after the first event
    assert m.count(9.5) == 50
    assert m.count(10.0) == 0


def test_rate_meter_old_event_only_counts_in_total() -> None:
    m = RateMeter(1.0, resolution=10)
    m.add(1, 100.0)
    m.add(7, 50.0)  # far in the past: outside the window
    assert m.total == 8
    assert m.count(100.0) == 1
    m.add(3, 99.95)  # slightly in the past but inside the window
    assert m.count(100.0) == 4


def test_rate_snapshot_is_frozen() -> None:
    m = RateMeter(2.0)
    m.add(4, 1.0)
    snap = m.snapshot(1.0)
    assert snap == RateSnapshot(total=4, rate=2.0, window_s=2.0)
    assert snap.as_dict() == {"total": 4, "rate": 2.0, "window_s": 2.0}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snap.rate = 3.0  # type: ignore[misc]


_times = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=1000.0, allow_nan=False),
        st.integers(min_value=1, max_value=50),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    events=_times,
    window=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    resolution=st.integers(min_value=1, max_value=25),
    sort=st.booleans(),
    query_delta=st.floats(min_value=0.0, max_value=30.0, allow_nan=False),
)
def test_rate_meter_window_bounds(
    events: list[tuple[float, int]],
    window: float,
    resolution: int,
    sort: bool,
    query_delta: float,
) -> None:
    """Whatever the arrival order, the windowed count obeys the documented bounds."""
    if sort:
        events = sorted(events)
    m = RateMeter(window, resolution=resolution)
    width = window / resolution
    latest = -math.inf
    for t, n in events:
        m.add(n, t)
        latest = max(latest, t)
    assert m.total == sum(n for _, n in events)
    if not events:
        assert m.count(query_delta) == 0
        return
    now = latest + query_delta
    got = m.count(now)
    # Events that can never be in the window (age >= window) or that may be dropped because
    # they arrived after newer ones had already pushed their bucket out, are excluded from the
    # lower bound; the upper bound holds for all.
    upper = sum(n for t, n in events if now - t < window + 1e-9)
    assert got <= upper
    if sort:
        lower = sum(n for t, n in events if now - t < window - width - 1e-9)
        assert got >= lower
        # Exact model for the in-order case: same bucket formula.
        idx_now = math.floor(now / width)
        exact = sum(n for t, n in events if math.floor(t / width) > idx_now - resolution)
        assert got == exact
    assert m.rate(now) == pytest.approx(got / window)


# ---------------------------------------------------------------- LatencyHistogram


def test_histogram_validates_arguments() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram(accuracy=0.0)
    with pytest.raises(ValueError):
        LatencyHistogram(accuracy=1.0)
    with pytest.raises(ValueError):
        LatencyHistogram(min_value=1.0, max_value=0.5)
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(101)


def test_histogram_empty() -> None:
    h = LatencyHistogram()
    assert h.count == 0
    assert h.mean == 0.0
    assert h.percentile(50) == 0.0
    assert h.snapshot() == LatencySnapshot(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_histogram_basic() -> None:
    h = LatencyHistogram()
    for ms in range(1, 101):
        h.record(ms / 1000)
    assert h.count == 100
    assert h.mean == pytest.approx(0.0505)
    assert h.percentile(50) == pytest.approx(0.050, rel=0.01)
    assert h.percentile(99) == pytest.approx(0.099, rel=0.01)
    assert h.percentile(100) == pytest.approx(0.100, rel=0.01)
    assert h.percentile(0) == pytest.approx(0.001, rel=0.01)
    snap = h.snapshot()
    assert snap.min == 0.001
    assert snap.max == 0.1
    assert snap.as_dict()["count"] == 100


def test_histogram_underflow_and_overflow() -> None:
    h = LatencyHistogram(min_value=1e-6, max_value=1.0)
    h.record(-0.5)  # clock skew: counted, reported as the exact minimum
    h.record(0.0)
    h.record(5.0)
    h.record(7.0)
    assert h.count == 4
    assert h.percentile(25) == -0.5
    assert h.percentile(100) == 7.0
    assert h.percentile(75) == 7.0  # overflow bucket is reported as the exact max
    assert h.min == -0.5


def _exact_nearest_rank(values: list[float], p: float) -> float:
    s = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(s)))
    return s[rank - 1]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=1e-8, max_value=1000.0, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=200,
    ),
    p=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    accuracy=st.sampled_from([0.001, 0.01, 0.05]),
)
def test_histogram_percentile_relative_accuracy(
    values: list[float], p: float, accuracy: float
) -> None:
    h = LatencyHistogram(accuracy=accuracy)
    for v in values:
        h.record(v)
    exact = _exact_nearest_rank(values, p)
    got = h.percentile(p)
    assert abs(got - exact) <= accuracy * exact * (1 + 1e-9)
    assert min(values) <= got <= max(values)
    assert h.mean == pytest.approx(sum(values) / len(values))


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.floats(min_value=1e-6, max_value=10.0), max_size=50),
    b=st.lists(st.floats(min_value=1e-6, max_value=10.0), max_size=50),
    p=st.sampled_from([0.0, 50.0, 90.0, 99.0, 100.0]),
)
def test_histogram_merge_equals_recording_all(a: list[float], b: list[float], p: float) -> None:
    ha, hb, hall = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for v in a:
        ha.record(v)
        hall.record(v)
    for v in b:
        hb.record(v)
        hall.record(v)
    merged = LatencyHistogram.merged([ha, hb])
    assert merged.count == hall.count
    assert merged.percentile(p) == hall.percentile(p)
    assert merged.mean == pytest.approx(hall.mean)


def test_histogram_merge_layout_mismatch() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram().merge(LatencyHistogram(accuracy=0.02))
    assert LatencyHistogram.merged([]).count == 0
