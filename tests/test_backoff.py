"""Property tests for the pure reconnect delay schedule."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import Backoff, UsageError

EXAMPLES = settings(max_examples=60, deadline=None)

finite = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False, allow_infinity=False)
configs = st.builds(
    Backoff,
    initial=st.floats(min_value=0.0, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    cap=finite,
    jitter=st.sampled_from(["none", "full", "equal"]),
    connection_limit_floor=finite,
    seed=st.integers(min_value=0, max_value=2**32),
)
# per-attempt flag: did the previous attempt fail with 406?
flags = st.lists(st.booleans(), min_size=1, max_size=40)


def expected_base(cfg: Backoff, n: int) -> float:
    base = min(cfg.initial, cfg.cap)
    for _ in range(n):
        base = min(base * cfg.multiplier, cfg.cap)
    return base


@EXAMPLES
@given(configs, flags)
def test_never_above_cap_unless_floor(cfg: Backoff, limits: list[bool]) -> None:
    sched = cfg.schedule()
    for flag in limits:
        d = sched.next_delay(connection_limit=flag)
        bound = max(cfg.cap, cfg.connection_limit_floor) if flag else cfg.cap
        assert 0.0 <= d <= bound


@EXAMPLES
@given(configs, flags)
def test_never_below_floor_when_it_applies(cfg: Backoff, limits: list[bool]) -> None:
    sched = cfg.schedule()
    for flag in limits:
        d = sched.next_delay(connection_limit=flag)
        if flag:
            assert d >= cfg.connection_limit_floor


@EXAMPLES
@given(configs, st.integers(min_value=1, max_value=40))
def test_jitter_inside_its_band(cfg: Backoff, n: int) -> None:
    sched = cfg.schedule()
    for i in range(n):
        base = expected_base(cfg, i)
        d = sched.next_delay()
        if cfg.jitter == "none":
            assert d == base
        elif cfg.jitter == "full":
            assert 0.0 <= d <= base
        else:
            assert base / 2 <= d <= base


@EXAMPLES
@given(configs, flags)
def test_deterministic_for_a_seed(cfg: Backoff, limits: list[bool]) -> None:
    a, b = cfg.schedule(), cfg.schedule()
    assert [a.next_delay(connection_limit=f) for f in limits] == [
        b.next_delay(connection_limit=f) for f in limits
    ]


def test_different_seeds_differ() -> None:
    a = Backoff(seed=1).schedule()
    b = Backoff(seed=2).schedule()
    assert [a.next_delay() for _ in range(10)] != [b.next_delay() for _ in range(10)]


@EXAMPLES
@given(
    st.floats(min_value=0.01, max_value=10.0),
    st.floats(min_value=1.1, max_value=4.0),
    st.floats(min_value=0.01, max_value=500.0),
)
def test_grows_until_cap(initial: float, multiplier: float, cap: float) -> None:
    sched = Backoff(initial, multiplier, cap, jitter="none").schedule()
    delays = [sched.next_delay() for _ in range(80)]
    for prev, cur in itertools.pairwise(delays):
        assert cur >= prev
        if prev < cap:
            assert cur == pytest.approx(min(prev * multiplier, cap))
    assert delays[-1] == cap or initial * multiplier**79 < cap


def test_exact_default_sequence_without_jitter() -> None:
    sched = Backoff(jitter="none").schedule()
    assert [sched.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert sched.attempts == 8


@EXAMPLES
@given(configs, st.integers(min_value=1, max_value=30))
def test_reset_starts_over(cfg: Backoff, n: int) -> None:
    sched = cfg.schedule()
    for _ in range(n):
        sched.next_delay()
    assert sched.attempts == n
    sched.reset()
    assert sched.attempts == 0
    first = sched.next_delay()
    base = expected_base(cfg, 0)
    if cfg.jitter == "none":
        assert first == base
    elif cfg.jitter == "equal":
        assert base / 2 <= first <= base
    else:
        assert 0.0 <= first <= base


def test_floor_wins_over_cap() -> None:
    sched = Backoff(cap=30.0, connection_limit_floor=90.0, jitter="none").schedule()
    assert sched.next_delay(connection_limit=True) == 90.0
    assert sched.next_delay() == 2.0  # the floor applies to the delay after a 406 only
    for _ in range(10):
        sched.next_delay()
    assert sched.next_delay() == 30.0
    assert sched.next_delay(connection_limit=True) == 90.0


def test_floor_below_jittered_delay_keeps_the_delay() -> None:
    sched = Backoff(initial=100.0, cap=200.0, connection_limit_floor=10.0, jitter="none").schedule()
    assert sched.next_delay(connection_limit=True) == 100.0


def test_zero_floor_disables_it() -> None:
    sched = Backoff(connection_limit_floor=0.0, jitter="none").schedule()
    assert sched.next_delay(connection_limit=True) == 1.0


def test_no_overflow_after_many_attempts() -> None:
    sched = Backoff(multiplier=10.0, cap=60.0, jitter="full", seed=3).schedule()
    for _ in range(5000):
        d = sched.next_delay()
        assert math.isfinite(d) and d <= 60.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"multiplier": 0.5},
        {"cap": math.inf},
        {"cap": -1.0},
        {"connection_limit_floor": math.nan},
        {"jitter": "decorrelated"},
    ],
)
def test_invalid_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_config_is_immutable_and_hashable() -> None:
    cfg = Backoff(seed=5)
    assert hash(cfg) == hash(Backoff(seed=5))
    with pytest.raises(AttributeError):
        cfg.cap = 1.0  # type: ignore[misc]
