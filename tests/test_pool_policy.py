"""Property tests for the pure pool policy (placement, failover, rebalancing, health, rotation)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca._errors import TrioAlpacaError, UsageError
from trioalpaca._pool_policy import (
    Health,
    HealthSample,
    HealthThresholds,
    PoolCapacityError,
    PoolConfigError,
    RotationMode,
    SlotSpec,
    assess_health,
    check_capacity,
    default_rebalance_threshold,
    plan_failover,
    plan_placement,
    plan_rebalance,
    plan_rotation,
    plan_slots,
    should_fail_over,
)

settings.register_profile("pool", max_examples=150, deadline=None)
settings.load_profile("pool")

symbols_st = st.lists(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=4), max_size=60
)


# ---------------------------------------------------------------------------------- slots


@given(
    pool_size=st.integers(1, 12),
    n_cred=st.integers(1, 4),
    n_end=st.integers(1, 3),
    per_key=st.integers(1, 3),
)
def test_plan_slots_respects_per_key_limit(
    pool_size: int, n_cred: int, n_end: int, per_key: int
) -> None:
    capacity = n_cred * n_end * per_key
    if pool_size > capacity:
        with pytest.raises(PoolConfigError, match="406"):
            plan_slots(pool_size, n_cred, n_end, per_key)
        return
    specs = plan_slots(pool_size, n_cred, n_end, per_key)
    assert [s.index for s in specs] == list(range(pool_size))
    per_pair = Counter((s.credential, s.endpoint) for s in specs)
    assert max(per_pair.values()) <= per_key
    assert all(0 <= s.credential < n_cred and 0 <= s.endpoint < n_end for s in specs)
    # Spread evenly: pair counts differ by at most one.
    if len(per_pair) == n_cred * n_end:
        assert max(per_pair.values()) - min(per_pair.values()) <= 1


def test_plan_slots_error_message_is_actionable() -> None:
    with pytest.raises(PoolConfigError) as info:
        plan_slots(3, 1)
    text = str(info.value)
    assert "pool_size=3" in text and "allow only 1" in text and "max_connections_per_key" in text
    assert isinstance(info.value, UsageError) and isinstance(info.value, TrioAlpacaError)
    with pytest.raises(PoolConfigError, match="pool_size must be at least 1"):
        plan_slots(0, 1)


def test_plan_slots_two_keys() -> None:
    assert plan_slots(2, 2) == (SlotSpec(0, 0, 0), SlotSpec(1, 1, 0))


# ---------------------------------------------------------------------------------- placement


@given(
    n_slots=st.integers(1, 6),
    limit=st.integers(1, 30),
    initial=st.lists(st.integers(0, 30), min_size=6, max_size=6),
    healthy_mask=st.lists(st.booleans(), min_size=6, max_size=6),
    symbols=symbols_st,
)
def test_placement_respects_limits(
    n_slots: int,
    limit: int,
    initial: list[int],
    healthy_mask: list[bool],
    symbols: list[str],
) -> None:
    loads = {i: min(initial[i], limit) for i in range(n_slots)}
    eligible = [i for i in range(n_slots) if healthy_mask[i]]
    wanted = list(dict.fromkeys(symbols))
    room = sum(limit - loads[i] for i in eligible)
    if wanted and room < len(wanted):
        with pytest.raises(PoolCapacityError):
            plan_placement(symbols, loads, eligible, limit)
        return
    plan = plan_placement(symbols, loads, eligible, limit)
    placed = [s for syms in plan.values() for s in syms]
    # Every requested symbol placed exactly once, only on eligible connections.
    assert sorted(placed) == sorted(wanted)
    assert set(plan) <= set(eligible)
    for slot, syms in plan.items():
        assert loads[slot] + len(syms) <= limit
    if not wanted:
        return
    candidates = [i for i in eligible if loads[i] < limit]
    least = min(candidates, key=lambda i: (loads[i], i))
    if limit - loads[least] >= len(wanted):
        # Everything went together to the least-loaded connection.
        assert plan == {least: wanted}
    else:
        # Spread: afterwards no connection that received symbols is more than one above a
        # candidate that still has room.
        after = {i: loads[i] + len(plan.get(i, ())) for i in candidates}
        for slot in plan:
            for other in candidates:
                if after[other] < limit:
                    assert after[slot] <= after[other] + 1


def test_placement_least_loaded_and_tie_break() -> None:
    assert plan_placement(["A", "B"], {0: 5, 1: 2, 2: 2}, [0, 1, 2], 10) == {1: ["A", "B"]}
    # Unhealthy connection 1 is skipped even though it is the least loaded.
    assert plan_placement(["A"], {0: 5, 1: 0, 2: 3}, [0, 2], 10) == {2: ["A"]}
    # Duplicates collapse.
    assert plan_placement(["A", "A"], {0: 0}, [0], 1) == {0: ["A"]}
    assert plan_placement([], {0: 1}, [], 1) == {}


def test_placement_spreads_when_nothing_fits_whole() -> None:
    plan = plan_placement(["A", "B", "C", "D"], {0: 8, 1: 7}, [0, 1], 10)
    assert plan == {1: ["A", "C"], 0: ["B", "D"]}


def test_placement_capacity_error_is_all_or_nothing() -> None:
    with pytest.raises(PoolCapacityError, match="room for 1 more"):
        plan_placement(["A", "B"], {0: 9}, [0], 10)


def test_check_capacity() -> None:
    check_capacity(600, 3, 200)
    with pytest.raises(PoolCapacityError, match="room for only 600"):
        check_capacity(601, 3, 200)


# ---------------------------------------------------------------------------------- failover


@given(
    moving=st.sets(st.text(alphabet="ABCDEFGH", min_size=1, max_size=3), max_size=40),
    loads=st.lists(st.integers(0, 20), min_size=0, max_size=5),
    limit=st.integers(1, 20),
)
def test_failover_moves_everything_that_fits(
    moving: set[str], loads: list[int], limit: int
) -> None:
    load_map = {i + 1: min(v, limit) for i, v in enumerate(loads)}
    eligible = list(load_map)
    moves, left = plan_failover(moving, load_map, eligible, limit)
    moved = [s for syms in moves.values() for s in syms]
    assert sorted(moved + left) == sorted(moving)
    assert len(set(moved)) == len(moved)
    room = sum(limit - v for v in load_map.values())
    assert len(moved) == min(room, len(moving))
    for slot, syms in moves.items():
        assert load_map[slot] + len(syms) <= limit
    # Balanced: a target never ends more than one above another target that still has room.
    after = {s: load_map[s] + len(moves.get(s, ())) for s in eligible}
    for slot in moves:
        for other in eligible:
            if after[other] < limit:
                assert after[slot] <= after[other] + 1


def test_failover_three_connections() -> None:
    moves, left = plan_failover(["AAPL", "MSFT", "SPY", "QQQ"], {1: 2, 2: 2}, [1, 2], 200)
    assert moves == {1: ["AAPL", "QQQ"], 2: ["MSFT", "SPY"]}
    assert left == []
    moves, left = plan_failover(["A", "B"], {}, [], 10)
    assert moves == {} and left == ["A", "B"]


# ---------------------------------------------------------------------------------- rebalancing


@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    limit=st.integers(40, 60),
    threshold=st.integers(1, 12),
)
def test_rebalance_converges(sizes: list[int], limit: int, threshold: int) -> None:
    assignment = {i: {f"S{i}_{k:03d}" for k in range(n)} for i, n in enumerate(sizes)}
    moves = plan_rebalance(assignment, list(assignment), limit, threshold)
    held = {i: set(v) for i, v in assignment.items()}
    for m in moves:
        assert m.symbol in held[m.source]
        held[m.source].remove(m.symbol)
        held[m.target].add(m.symbol)
        assert len(held[m.target]) <= limit
    loads = [len(v) for v in held.values()]
    spread_before = max(sizes) - min(sizes)
    if spread_before <= threshold:
        assert moves == []
    else:
        assert max(loads) - min(loads) <= max(1, threshold // 2)
        # No symbol moves twice and nothing is lost.
        assert len({m.symbol for m in moves}) == len(moves)
    assert sum(loads) == sum(sizes)


def test_rebalance_ignores_ineligible_and_validates() -> None:
    assignment = {0: {"A", "B", "C", "D", "E"}, 1: set(), 2: set()}
    assert plan_rebalance(assignment, [0], 10, 2) == []
    moves = plan_rebalance(assignment, [0, 1], 10, 2)
    assert {(m.source, m.target) for m in moves} == {(0, 1)} and len(moves) == 2
    with pytest.raises(UsageError):
        plan_rebalance(assignment, [0, 1], 10, 0)
    assert default_rebalance_threshold(200) == 20
    assert default_rebalance_threshold(5) == 2


# ---------------------------------------------------------------------------------- health


TH = HealthThresholds()


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (HealthSample(connected=False), Health.DEAD),
        (HealthSample(connected=True), Health.HEALTHY),
        (HealthSample(connected=True, rtt=0.05), Health.HEALTHY),
        (HealthSample(connected=True, rtt=1.0), Health.DEGRADED),
        (HealthSample(connected=True, rtt=5.0), Health.DEAD),
        (HealthSample(connected=True, errors=2), Health.HEALTHY),
        (HealthSample(connected=True, errors=3), Health.DEGRADED),
        (HealthSample(connected=True, reconnects=3), Health.DEGRADED),
        # Silence is ignored unless thresholds are configured.
        (HealthSample(connected=True, silence=10_000.0), Health.HEALTHY),
    ],
)
def test_health_default_rules(sample: HealthSample, expected: Health) -> None:
    assert assess_health(sample, TH) is expected


def test_health_silence_thresholds() -> None:
    th = HealthThresholds(degraded_silence=5.0, dead_silence=30.0)
    assert assess_health(HealthSample(True, silence=4.9), th) is Health.HEALTHY
    assert assess_health(HealthSample(True, silence=5.0), th) is Health.DEGRADED
    assert assess_health(HealthSample(True, silence=30.0), th) is Health.DEAD


@given(
    connected=st.booleans(),
    rtt=st.none() | st.floats(0, 20),
    silence=st.none() | st.floats(0, 100),
    errors=st.integers(0, 10),
    reconnects=st.integers(0, 10),
)
def test_health_is_monotone(
    connected: bool, rtt: float | None, silence: float | None, errors: int, reconnects: int
) -> None:
    th = HealthThresholds(degraded_silence=10.0, dead_silence=50.0)
    order = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.DEAD: 2}
    base = assess_health(HealthSample(connected, rtt, silence, errors, reconnects), th)
    # Making any observation worse never makes the verdict better.
    worse = [
        HealthSample(False, rtt, silence, errors, reconnects),
        HealthSample(connected, (rtt or 0) + 1, silence, errors, reconnects),
        HealthSample(connected, rtt, (silence or 0) + 5, errors, reconnects),
        HealthSample(connected, rtt, silence, errors + 1, reconnects),
        HealthSample(connected, rtt, silence, errors, reconnects + 1),
    ]
    for w in worse:
        assert order[assess_health(w, th)] >= order[base]


def test_should_fail_over() -> None:
    assert should_fail_over(Health.DEAD, None, 0.0, TH, others_have_room=False)
    assert not should_fail_over(Health.HEALTHY, None, 100.0, TH, others_have_room=True)
    assert not should_fail_over(Health.DEGRADED, 0.0, 29.9, TH, others_have_room=True)
    assert should_fail_over(Health.DEGRADED, 0.0, 30.0, TH, others_have_room=True)
    assert not should_fail_over(Health.DEGRADED, 0.0, 300.0, TH, others_have_room=False)


# ---------------------------------------------------------------------------------- rotation


def test_rotation_modes() -> None:
    specs = plan_slots(3, 3)
    assignment = {0: {"A", "B"}, 1: {"C"}, 2: {"D"}}
    # One session per key: move the symbols elsewhere (gapless).
    plan = plan_rotation(0, specs, {0, 1, 2}, 1, assignment, [0, 1, 2], 10)
    assert plan.mode is RotationMode.MIGRATE
    assert sorted(s for v in plan.moves.values() for s in v) == ["A", "B"]
    assert 0 not in plan.moves
    # Nowhere to move them: break before make.
    full = {0: {"A", "B"}, 1: {"C", "X"}, 2: {"D", "Y"}}
    plan = plan_rotation(0, specs, {0, 1, 2}, 1, full, [0, 1, 2], 2)
    assert plan.mode is RotationMode.BREAK_BEFORE_MAKE
    # The key allows a second session: make before break.
    plan = plan_rotation(0, specs, {0, 1, 2}, 2, full, [0, 1, 2], 2)
    assert plan.mode is RotationMode.MAKE_BEFORE_BREAK
    # Two slots already share the key with a limit of two: no spare session.
    specs2 = plan_slots(2, 1, 1, 2)
    plan = plan_rotation(0, specs2, {0, 1}, 2, {0: {"A"}, 1: set()}, [0, 1], 10)
    assert plan.mode is RotationMode.MIGRATE and plan.moves == {1: ["A"]}
    # An empty connection simply reconnects.
    plan = plan_rotation(1, specs2, {0, 1}, 2, {0: {"A"}, 1: set()}, [0, 1], 10)
    assert plan.mode is RotationMode.MIGRATE and plan.moves == {}


@given(
    pool_size=st.integers(1, 6),
    per_key=st.integers(1, 3),
    n_cred=st.integers(1, 3),
    sizes=st.lists(st.integers(0, 8), min_size=6, max_size=6),
    limit=st.integers(1, 10),
)
def test_rotation_never_exceeds_key_limit(
    pool_size: int, per_key: int, n_cred: int, sizes: list[int], limit: int
) -> None:
    if pool_size > n_cred * per_key:
        return
    specs = plan_slots(pool_size, n_cred, 1, per_key)
    assignment = {i: {f"S{i}_{k}" for k in range(min(sizes[i], limit))} for i in range(pool_size)}
    connected = set(range(pool_size))
    for slot in range(pool_size):
        plan = plan_rotation(slot, specs, connected, per_key, assignment, connected, limit)
        if plan.mode is RotationMode.MAKE_BEFORE_BREAK:
            pair = (specs[slot].credential, specs[slot].endpoint)
            sessions = sum(1 for s in specs if (s.credential, s.endpoint) == pair) + 1
            assert sessions <= per_key
        elif plan.mode is RotationMode.MIGRATE:
            moved = sorted(s for v in plan.moves.values() for s in v)
            assert moved == sorted(assignment[slot])
            assert slot not in plan.moves
            for target, syms in plan.moves.items():
                assert len(assignment[target]) + len(syms) <= limit
        else:
            assert assignment[slot]
