"""Pure (sans-IO) decisions for :mod:`trioalpaca.pool`.

Following httpcore's rule "pool policy decided synchronously, I/O afterwards", every decision the
connection pool makes lives here as a plain function over plain values: which credential and
endpoint each pooled connection uses, where new symbols go, whether a connection is healthy,
which symbols move where when a connection dies, when loads have drifted far enough apart to
rebalance, and how a planned rotation is carried out. Nothing here sleeps, reads a clock, logs
or touches a socket, so all of it is property-tested with hypothesis.

Load is counted in **symbols** per connection: a symbol placed on a connection carries every
channel any handle asked for on it (trades, quotes, ...), and counts once towards
``max_subscriptions_per_connection``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence, Set

import attrs

from ._errors import UsageError

__all__ = [
    "Health",
    "HealthSample",
    "HealthThresholds",
    "Move",
    "PoolCapacityError",
    "PoolConfigError",
    "RotationMode",
    "RotationPlan",
    "SlotSpec",
    "assess_health",
    "check_capacity",
    "default_rebalance_threshold",
    "plan_failover",
    "plan_placement",
    "plan_rebalance",
    "plan_rotation",
    "plan_slots",
    "should_fail_over",
]


class PoolConfigError(UsageError):
    """The pool was configured in a way the connection limits cannot support.

    Raised by :func:`trioalpaca.pool.open_pool` before any connection is opened, for example when
    ``pool_size`` exceeds credentials x endpoints x ``max_connections_per_key``: Alpaca refuses
    the extra sessions with error 406 (connection limit exceeded), so the pool refuses up front.
    """


class PoolCapacityError(UsageError):
    """A request needs more symbol slots than the whole pool has.

    The pool holds at most ``pool_size x max_subscriptions_per_connection`` distinct symbols.
    Release handles, enlarge the pool or raise ``max_subscriptions_per_connection``.
    """


class Health(str, enum.Enum):
    """Health verdict for one pooled connection (rules: :class:`HealthThresholds`)."""

    HEALTHY = "healthy"
    """Connected and within every threshold; receives new symbols."""
    DEGRADED = "degraded"
    """Connected but slow or erratic; gets no new symbols, failed over if it stays degraded."""
    DEAD = "dead"
    """Not connected, or too slow or silent to count as connected; its symbols are failed over."""


# --------------------------------------------------------------------------------------------
# Slots: which credential / endpoint each pooled connection uses
# --------------------------------------------------------------------------------------------


@attrs.frozen
class SlotSpec:
    """The fixed identity of one pooled connection.

    Attributes:
        index: position of the connection in the pool (0-based).
        credential: index into the pool's credential list.
        endpoint: index into the pool's endpoint (URL) list.
    """

    index: int
    credential: int
    endpoint: int


def plan_slots(
    pool_size: int,
    n_credentials: int,
    n_endpoints: int = 1,
    max_connections_per_key: int = 1,
) -> tuple[SlotSpec, ...]:
    """Assign a credential and an endpoint to each of ``pool_size`` connections.

    Alpaca limits sessions **per key per endpoint** (one on most plans; the next one is refused
    with error 406). The pool can therefore hold at most
    ``n_credentials x n_endpoints x max_connections_per_key`` connections; a larger
    ``pool_size`` raises :class:`PoolConfigError` here, before any socket is opened, instead of
    turning into a 406 storm at run time. Connections are spread round-robin over the
    (credential, endpoint) pairs, so no pair carries more than its limit.
    """
    for name, value in (
        ("pool_size", pool_size),
        ("number of credentials", n_credentials),
        ("number of endpoints", n_endpoints),
        ("max_connections_per_key", max_connections_per_key),
    ):
        if value < 1:
            raise PoolConfigError(f"{name} must be at least 1, got {value}")
    pairs = [(c, e) for c in range(n_credentials) for e in range(n_endpoints)]
    capacity = len(pairs) * max_connections_per_key
    if pool_size > capacity:
        raise PoolConfigError(
            f"pool_size={pool_size} needs {pool_size} concurrent connections, but "
            f"{n_credentials} credential(s) x {n_endpoints} endpoint(s) x "
            f"max_connections_per_key={max_connections_per_key} allow only {capacity}: Alpaca "
            f"refuses extra sessions on the same key and endpoint with error 406 (connection "
            f"limit exceeded). Lower pool_size, pass more credentials, or raise "
            f"max_connections_per_key if your plan allows more sessions per key."
        )
    return tuple(
        SlotSpec(index=i, credential=pairs[i % len(pairs)][0], endpoint=pairs[i % len(pairs)][1])
        for i in range(pool_size)
    )


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------


def check_capacity(needed_total: int, n_slots: int, limit: int) -> None:
    """Raise :class:`PoolCapacityError` if ``needed_total`` symbols can never fit in the pool.

    ``needed_total`` counts every distinct symbol the pool would hold (placed, waiting for a
    connection, and requested).
    """
    capacity = n_slots * limit
    if needed_total > capacity:
        raise PoolCapacityError(
            f"the pool would hold {needed_total} distinct symbols but has room for only "
            f"{capacity} ({n_slots} connection(s) x max_subscriptions_per_connection={limit}); "
            f"close handles you no longer need, enlarge the pool or raise "
            f"max_subscriptions_per_connection"
        )


def _room(loads: Mapping[int, int], slot: int, limit: int) -> int:
    return max(0, limit - loads.get(slot, 0))


def plan_placement(
    symbols: Sequence[str],
    loads: Mapping[int, int],
    eligible: Iterable[int],
    limit: int,
) -> dict[int, list[str]]:
    """Decide where new (not yet placed) ``symbols`` go.

    Rules:

    * Candidates are the ``eligible`` connections (the healthy ones) with room under ``limit``.
    * If the least-loaded candidate has room for all of them, they all go there, so a handle's
      symbols normally share one connection (ties broken by lowest index).
    * Otherwise they are spread one at a time, each to the currently least-loaded candidate
      with room, which keeps loads balanced.
    * If the candidates together lack room, :class:`PoolCapacityError` is raised and nothing
      is placed (all or nothing).

    Returns a mapping ``connection index -> symbols`` (in request order; duplicates removed).
    """
    wanted = list(dict.fromkeys(symbols))
    if not wanted:
        return {}
    work = {s: loads.get(s, 0) for s in eligible if _room(loads, s, limit) > 0}
    total_room = sum(limit - load for load in work.values())
    if total_room < len(wanted):
        raise PoolCapacityError(
            f"{len(wanted)} new symbol(s) do not fit: the available connections have room "
            f"for {total_room} more (max_subscriptions_per_connection={limit})"
        )
    best = min(work, key=lambda s: (work[s], s))
    if limit - work[best] >= len(wanted):
        return {best: wanted}
    result: dict[int, list[str]] = {}
    for sym in wanted:
        target = min((s for s in work if work[s] < limit), key=lambda s: (work[s], s))
        result.setdefault(target, []).append(sym)
        work[target] += 1
    return result


def plan_failover(
    moving: Iterable[str],
    loads: Mapping[int, int],
    eligible: Iterable[int],
    limit: int,
) -> tuple[dict[int, list[str]], list[str]]:
    """Decide where the symbols of a dead (or retiring) connection go.

    Each symbol (in sorted order, for determinism) goes to the currently least-loaded eligible
    connection with room. Symbols that fit nowhere are returned as the second element: they
    wait, unplaced, until a connection has room again (usually the dead slot once it has
    reconnected). ``loads`` must not include the connection being emptied, and ``eligible``
    must not contain it.
    """
    work = {s: loads.get(s, 0) for s in eligible}
    moves: dict[int, list[str]] = {}
    left: list[str] = []
    for sym in sorted(set(moving)):
        candidates = [s for s in work if work[s] < limit]
        if not candidates:
            left.append(sym)
            continue
        target = min(candidates, key=lambda s: (work[s], s))
        moves.setdefault(target, []).append(sym)
        work[target] += 1
    return moves, left


# --------------------------------------------------------------------------------------------
# Rebalancing
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Move:
    """Move one symbol from connection ``source`` to connection ``target``."""

    symbol: str
    source: int
    target: int


def default_rebalance_threshold(limit: int) -> int:
    """The default drift threshold: 10 % of ``max_subscriptions_per_connection``, at least 2."""
    return max(2, limit // 10)


def plan_rebalance(
    assignment: Mapping[int, Set[str]],
    eligible: Iterable[int],
    limit: int,
    threshold: int,
) -> list[Move]:
    """Plan symbol moves when loads among ``eligible`` connections have drifted apart.

    Nothing moves while ``max(load) - min(load) <= threshold``. Once the spread exceeds the
    threshold, symbols move one at a time from the most to the least loaded eligible connection
    until the spread is at most ``max(1, threshold // 2)`` (hysteresis, so a single new symbol
    does not trigger another round). Moves never push a connection over ``limit``; the largest
    symbols in sort order move first, so plans are deterministic.
    """
    if threshold < 1:
        raise UsageError(f"rebalance threshold must be at least 1, got {threshold}")
    slots = sorted(set(eligible))
    if len(slots) < 2:
        return []
    held = {s: set(assignment.get(s, ())) for s in slots}

    def spread() -> tuple[int, int, int]:
        hi = max(slots, key=lambda s: (len(held[s]), -s))
        lo = min(slots, key=lambda s: (len(held[s]), s))
        return hi, lo, len(held[hi]) - len(held[lo])

    hi, lo, diff = spread()
    if diff <= threshold:
        return []
    goal = max(1, threshold // 2)
    moves: list[Move] = []
    while diff > goal and len(held[lo]) < limit:
        sym = max(held[hi])
        held[hi].discard(sym)
        held[lo].add(sym)
        moves.append(Move(sym, hi, lo))
        hi, lo, diff = spread()
    return moves


# --------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------


@attrs.frozen
class HealthThresholds:
    """The documented rules that turn a ``HealthSample`` into a :class:`Health` verdict.

    A connection is **dead** when it is not connected, when its last heartbeat round trip took
    ``dead_rtt`` seconds or more, or (if ``dead_silence`` is set) when it has delivered no
    message for ``dead_silence`` seconds.

    Otherwise it is **degraded** when any of these holds: heartbeat RTT >= ``degraded_rtt``;
    ``degraded_errors`` or more errors within the last ``error_window`` seconds;
    ``degraded_reconnects`` or more reconnects within the last ``reconnect_window`` seconds;
    silent for ``degraded_silence`` seconds or more (if set).

    Otherwise it is **healthy**. A connection that stays degraded for ``degraded_grace`` seconds
    is failed over, provided another healthy connection has room for its symbols.

    Silence thresholds are off by default because a quiet symbol list is not a fault (sparse
    channels such as daily bars, or outside market hours); set them for busy symbol lists.
    """

    degraded_rtt: float = 1.0
    dead_rtt: float = 5.0
    error_window: float = 60.0
    degraded_errors: int = 3
    reconnect_window: float = 300.0
    degraded_reconnects: int = 3
    degraded_silence: float | None = None
    dead_silence: float | None = None
    degraded_grace: float = 30.0


@attrs.frozen
class HealthSample:
    """What the pool observed about one connection at one moment.

    Attributes:
        connected: the connection is open, authenticated and subscribed.
        rtt: last heartbeat round-trip time in seconds, or ``None`` if none measured yet.
        silence: seconds since the connection last delivered a message, or ``None``.
        errors: errors seen within the last ``error_window`` seconds.
        reconnects: reconnects within the last ``reconnect_window`` seconds.
    """

    connected: bool
    rtt: float | None = None
    silence: float | None = None
    errors: int = 0
    reconnects: int = 0


def assess_health(sample: HealthSample, thresholds: HealthThresholds) -> Health:
    """Classify one connection by the rules documented on :class:`HealthThresholds`."""
    t = thresholds
    if not sample.connected:
        return Health.DEAD
    if sample.rtt is not None and sample.rtt >= t.dead_rtt:
        return Health.DEAD
    silence = sample.silence
    if t.dead_silence is not None and silence is not None and silence >= t.dead_silence:
        return Health.DEAD
    if sample.rtt is not None and sample.rtt >= t.degraded_rtt:
        return Health.DEGRADED
    if sample.errors >= t.degraded_errors or sample.reconnects >= t.degraded_reconnects:
        return Health.DEGRADED
    if t.degraded_silence is not None and silence is not None and silence >= t.degraded_silence:
        return Health.DEGRADED
    return Health.HEALTHY


def should_fail_over(
    health: Health,
    degraded_since: float | None,
    now: float,
    thresholds: HealthThresholds,
    *,
    others_have_room: bool,
) -> bool:
    """Whether the pool should take a connection out of service and move its symbols.

    Dead connections always are. Degraded ones are once they have been degraded for
    ``thresholds.degraded_grace`` seconds **and** other healthy connections can take their
    symbols (failing over onto nothing would only add a gap).
    """
    if health is Health.DEAD:
        return True
    if health is Health.DEGRADED and degraded_since is not None:
        return others_have_room and now - degraded_since >= thresholds.degraded_grace
    return False


# --------------------------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------------------------


class RotationMode(str, enum.Enum):
    """How a planned replacement of one connection is carried out."""

    MAKE_BEFORE_BREAK = "make_before_break"
    """Used when the key allows another session. Open the replacement, subscribe, switch
    delivery to it, then close the old session (no gap)."""
    MIGRATE = "migrate"
    """Used when the key allows no other session but other healthy connections have room.
    Move the symbols there first (no gap), then reconnect the slot empty."""
    BREAK_BEFORE_MAKE = "break_before_make"
    """Used when there is neither a spare session nor room elsewhere. Close, reconnect and
    resubscribe: the symbols have a gap of about one connect (plus backoff if the server still
    counts the old session; 406 honours the connection-limit floor) and affected handles get a
    ``Reconnected`` marker."""


@attrs.frozen
class RotationPlan:
    """The outcome of :func:`plan_rotation`.

    Attributes:
        slot: the connection being replaced.
        mode: how (see :class:`RotationMode`).
        moves: for :attr:`RotationMode.MIGRATE`, ``target connection -> symbols``.
    """

    slot: int
    mode: RotationMode
    moves: Mapping[int, Sequence[str]] = attrs.field(factory=dict)


def plan_rotation(
    slot: int,
    specs: Sequence[SlotSpec],
    connected: Set[int],
    max_connections_per_key: int,
    assignment: Mapping[int, Set[str]],
    eligible: Iterable[int],
    limit: int,
) -> RotationPlan:
    """Choose how to rotate (replace) connection ``slot``.

    1. If ``slot``'s (credential, endpoint) pair has a spare session (fewer than
       ``max_connections_per_key`` of the ``connected`` slots use it):
       :attr:`RotationMode.MAKE_BEFORE_BREAK`.
    2. Else, if the other ``eligible`` connections have room for all of ``slot``'s symbols:
       :attr:`RotationMode.MIGRATE`, with the moves.
    3. Else :attr:`RotationMode.BREAK_BEFORE_MAKE`.
    """
    spec = specs[slot]
    pair = (spec.credential, spec.endpoint)
    in_use = sum(1 for s in connected if (specs[s].credential, specs[s].endpoint) == pair) + (
        0 if slot in connected else 1
    )
    if in_use < max_connections_per_key:
        return RotationPlan(slot, RotationMode.MAKE_BEFORE_BREAK)
    mine = assignment.get(slot, set())
    others = [s for s in eligible if s != slot]
    loads = {s: len(assignment.get(s, ())) for s in others}
    moves, left = plan_failover(mine, loads, others, limit)
    if mine and not left:
        return RotationPlan(slot, RotationMode.MIGRATE, moves)
    if not mine:
        return RotationPlan(slot, RotationMode.MIGRATE, {})
    return RotationPlan(slot, RotationMode.BREAK_BEFORE_MAKE)
