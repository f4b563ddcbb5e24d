"""ConnectionPool against the emulator: placement, failover, rotation, teardown, metrics."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trioalpaca
from tests.helpers import in_memory
from trioalpaca import AuthFailedError, Quote, Reconnected, Trade, TradeCorrection
from trioalpaca.pool import (
    ConnectionPool,
    HealthThresholds,
    PoolCapacityError,
    PoolConfigError,
    PooledConnection,
    RotationMode,
    open_pool,
)
from trioalpaca.testing import Emulator, open_emulator

CREDS = {"PKPOOL1": "secret-one", "PKPOOL2": "secret-two", "PKPOOL3": "secret-three"}
FEED = "iex"


@asynccontextmanager
async def emulator(**kwargs: Any) -> AsyncIterator[Emulator]:
    kwargs.setdefault("symbols", ["AAPL", "MSFT", "SPY", "QQQ", "TSLA", "NVDA"])
    kwargs.setdefault("rate", 20.0)
    kwargs.setdefault("credentials", CREDS)
    async with open_emulator(**kwargs) as emu:
        yield emu


def pool_for(emu: Emulator, n_keys: int = 3, **kwargs: Any) -> Any:
    kwargs.setdefault("heartbeat_interval", 1.0)
    kwargs.setdefault("backoff", trioalpaca.Backoff(initial=0.5, cap=2.0, seed=1))
    kwargs.setdefault("url", emu.url_for(FEED))
    kwargs.setdefault("stream_factory", in_memory(emu))
    return open_pool(credentials=list(CREDS.items())[:n_keys], feed=FEED, **kwargs)


class Collector:
    """Consumes a handle in the background and records what arrived (with trio times)."""

    def __init__(self, handle: PooledConnection) -> None:
        self.handle = handle
        self.items: list[tuple[float, Any]] = []
        self.event = trio.Event()

    async def run(self) -> None:
        async for msg in self.handle:
            self.items.append((trio.current_time(), msg))
            self.event.set()
            self.event = trio.Event()

    def reconnects(self) -> list[Reconnected]:
        return [m for _, m in self.items if isinstance(m, Reconnected)]

    def data(self, since_ns: int = 0) -> list[Any]:
        """Data messages whose (market) timestamp is at or after ``since_ns``."""
        return [
            m for _, m in self.items if isinstance(m, (Trade, Quote)) and m.timestamp_ns >= since_ns
        ]

    async def wait_for(self, symbols: set[str], since_ns: int = 0) -> float:
        """Wait until every symbol delivered data generated at or after ``since_ns``."""
        while True:
            seen = {m.symbol for m in self.data(since_ns)}
            if symbols <= seen:
                return trio.current_time()
            await self.event.wait()


def subscribed_symbols(emu: Emulator, channel: str = "trades") -> Counter[str]:
    """How many open emulator connections are subscribed to each symbol on ``channel``."""
    counts: Counter[str] = Counter()
    for conn in emu.open_connections(FEED):
        for sym in conn.subscriptions.get(channel, ()):
            counts[sym] += 1
    return counts


def conn_of_key(emu: Emulator, key: str) -> Any:
    (conn,) = [c for c in emu.open_connections(FEED) if c.key == key]
    return conn


def key_of_slot(pool: ConnectionPool, index: int) -> str:
    credential: int = pool.get_pool_metrics()["connections"][index]["credential"]
    return list(CREDS)[credential]


def no_duplicate_trades(col: Collector) -> None:
    ids = [(m.symbol, m.trade_id) for m in col.data() if isinstance(m, Trade)]
    assert len(ids) == len(set(ids)), "a trade was delivered twice"


def no_missing_trades(col: Collector) -> None:
    """The emulator numbers each symbol's trades (and corrections) 1, 2, 3, ...: a handle without
    a reported gap must see them all, in order, without holes."""
    by_symbol: dict[str, list[int]] = {}
    for _, m in col.items:
        # Corrections take the next id too (their corrected trade's id).
        if isinstance(m, Trade):
            by_symbol.setdefault(m.symbol, []).append(m.trade_id)
        elif isinstance(m, TradeCorrection):
            by_symbol.setdefault(m.symbol, []).append(m.corrected_id)
    for sym, ids in by_symbol.items():
        holes = [(a, b) for a, b in itertools.pairwise(ids) if b != a + 1]
        assert not holes, f"{sym}: trades missing or reordered: {holes}"


# ---------------------------------------------------------------------------------- config


async def test_oversized_pool_refused_up_front(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        with pytest.raises(PoolConfigError, match="406"):
            async with open_pool(
                api_key="PKPOOL1",
                api_secret="secret-one",
                pool_size=3,
                feed=FEED,
                url=emu.url_for(FEED),
            ):
                pytest.fail("the pool must not open")  # pragma: no cover
        with pytest.raises(PoolConfigError, match="allow only 4"):
            async with pool_for(emu, n_keys=2, pool_size=5, max_connections_per_key=2):
                pytest.fail("the pool must not open")  # pragma: no cover
        with pytest.raises(PoolConfigError, match="same API key"):
            async with open_pool(
                credentials=[("PKPOOL1", "a"), ("PKPOOL1", "b")], url=emu.url_for(FEED)
            ):
                pytest.fail("the pool must not open")  # pragma: no cover
        with pytest.raises(PoolConfigError, match="same URL"):
            async with pool_for(emu, n_keys=1, url=[emu.url_for(FEED), emu.url_for(FEED)]):
                pytest.fail("the pool must not open")  # pragma: no cover
        with pytest.raises(trioalpaca.UsageError, match="managed by the pool"):
            async with pool_for(emu, max_reconnect_attempts=3):
                pytest.fail("the pool must not open")  # pragma: no cover
        # Nothing ever connected.
        assert emu.connections == []


async def test_two_sessions_per_key_when_the_plan_allows(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(connection_limit=2) as emu,
        pool_for(emu, n_keys=1, max_connections_per_key=2) as pool,
    ):
        assert pool.pool_size == 2
        await emu.wait_for_connections(2, authenticated=True)
        with trio.fail_after(10):
            while pool.get_pool_metrics()["healthy_connections"] < 2:
                await trio.sleep(0.1)
        assert {c.key for c in emu.open_connections(FEED)} == {"PKPOOL1"}


async def test_one_key_two_endpoints(autojump_clock: trio.abc.Clock) -> None:
    # The connection limit is per key *per endpoint*: one key, two endpoints, two sessions.
    async with (
        emulator() as emu1,
        emulator() as emu2,
        open_pool(
            api_key="PKPOOL1",
            api_secret="secret-one",
            feed=FEED,
            url=[emu1.url_for(FEED), emu2.url_for(FEED)],
            heartbeat_interval=1.0,
            stream_factory=in_memory(emu1, emu2),
        ) as pool,
    ):
        assert pool.pool_size == 2
        a = await pool.get_connection(["AAPL"])
        b = await pool.get_connection(["MSFT"])
        assert (a.connections, b.connections) == ((0,), (1,))
        m = pool.get_pool_metrics()
        assert [c["endpoint"] for c in m["connections"]] == [0, 1]
        assert [len(e.open_connections(FEED)) for e in (emu1, emu2)] == [1, 1]
        assert subscribed_symbols(emu1) == {"AAPL": 1}
        assert subscribed_symbols(emu2) == {"MSFT": 1}


async def test_fatal_auth_error_on_every_slot_leaves_the_block(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with emulator() as emu:
        emu.fail_auth(402, count=None)
        with pytest.raises(AuthFailedError):
            async with pool_for(emu, n_keys=2):
                pytest.fail("the pool must not open")  # pragma: no cover


# ---------------------------------------------------------------------------------- placement


async def test_placement_reuse_limits_and_release(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, pool_for(emu, max_subscriptions_per_connection=3) as pool:
        with trio.fail_after(10):
            while pool.get_pool_metrics()["healthy_connections"] < 3:
                await trio.sleep(0.1)
        a = await pool.get_connection(["aapl", "MSFT"])
        b = await pool.get_connection(["SPY", "QQQ"])
        # Least loaded: each handle lands alone on an empty connection (lowest index first).
        assert a.connections == (0,) and b.connections == (1,)
        c = await pool.get_connection(["AAPL", "TSLA"], channels=["trades"])
        # AAPL is reused where it is; TSLA goes to the least loaded connection (2).
        assert c.connections == (0, 2)
        counts = subscribed_symbols(emu)
        assert all(v == 1 for v in counts.values())
        assert set(counts) == {"AAPL", "MSFT", "SPY", "QQQ", "TSLA"}
        m = pool.get_pool_metrics()
        assert [x["load"] for x in m["connections"]] == [2, 2, 1]
        assert m["symbols"] == 5 and m["handles"] == 3
        # Room: 9 slots, 5 used; 5 new symbols can never fit.
        with pytest.raises(PoolCapacityError):
            await pool.get_connection(["A1", "A2", "A3", "A4", "A5"])
        # Four new symbols fit, spread over the connections with room.
        d = await pool.get_connection(["B1", "B2", "B3", "B4"])
        assert [x["load"] for x in pool.get_pool_metrics()["connections"]] == [3, 3, 3]
        assert set(d.connections) == {0, 1, 2}
        # Releasing b unsubscribes SPY and QQQ; AAPL stays for c after releasing a.
        await b.aclose()
        await a.aclose()
        counts = subscribed_symbols(emu)
        assert "SPY" not in counts and "QQQ" not in counts and "MSFT" not in counts
        assert counts["AAPL"] == 1 and counts["TSLA"] == 1
        quotes: Counter[str] = Counter()
        for conn in emu.open_connections(FEED):
            quotes.update(conn.subscriptions.get("quotes", ()))
        assert "AAPL" not in quotes  # only c (trades) still wants AAPL
        await c.aclose()
        await d.aclose()
        assert sum(subscribed_symbols(emu).values()) == 0
        assert pool.get_pool_metrics()["symbols"] == 0
        with pytest.raises(trioalpaca.UsageError):
            await pool.get_connection([])


async def test_handles_receive_only_their_symbols_and_channels(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with emulator() as emu, pool_for(emu) as pool:
        a = await pool.get_connection(["AAPL"])
        b = await pool.get_connection(["AAPL", "MSFT"], channels=["trades"])
        ca, cb = Collector(a), Collector(b)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ca.run)
            nursery.start_soon(cb.run)
            with trio.fail_after(30):
                await ca.wait_for({"AAPL"})
                await cb.wait_for({"AAPL", "MSFT"})
                while not any(isinstance(m, Quote) for m in ca.data()):
                    await ca.event.wait()
            nursery.cancel_scope.cancel()
        assert {m.symbol for m in ca.data()} == {"AAPL"}
        assert {type(m) for m in ca.data()} == {Trade, Quote}
        assert {type(m) for m in cb.data()} == {Trade}
        no_duplicate_trades(ca)
        no_duplicate_trades(cb)
        await trio.sleep(2.5)  # a couple of heartbeats (interval 1 s)
        m = pool.get_pool_metrics()
        assert m["messages_total"] > 0 and m["messages_per_second"] > 0
        for conn in m["connections"]:
            assert conn["state"] == "ready" and conn["health"] == "healthy"
            assert conn["latency_ms"] is not None and 0 <= conn["latency_ms"] < 1000
            assert conn["connected_for"] > 2.0
        assert m["connections"][0]["messages_total"] > 0


# ---------------------------------------------------------------------------------- failover


async def test_kill_one_of_three_connections_fails_over(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        emu.set_reap_period(30.0)  # the killed session keeps its slot: reconnecting gets 406
        backoff = trioalpaca.Backoff(initial=0.5, cap=2.0, connection_limit_floor=30.0, seed=1)
        async with pool_for(emu, backoff=backoff) as pool:
            with trio.fail_after(10):
                while pool.get_pool_metrics()["healthy_connections"] < 3:
                    await trio.sleep(0.1)
            h1 = await pool.get_connection(["AAPL", "MSFT"])  # connection 0
            h2 = await pool.get_connection(["SPY", "QQQ"])  # connection 1
            h3 = await pool.get_connection(["TSLA"])  # connection 2
            h4 = await pool.get_connection(["AAPL", "TSLA"], channels=["trades"])  # 0 and 2
            assert h1.connections == (0,) and h4.connections == (0, 2)
            cols = [Collector(h) for h in (h1, h2, h3, h4)]
            async with trio.open_nursery() as nursery:
                for col in cols:
                    nursery.start_soon(col.run)
                with trio.fail_after(30):
                    await cols[0].wait_for({"AAPL", "MSFT"})
                    await cols[1].wait_for({"SPY", "QQQ"})
                killed_key = key_of_slot(pool, 0)
                victim = conn_of_key(emu, killed_key)
                t_kill = trio.current_time()
                kill_ns = emu.market_ns()
                emu.drop(connection=victim.id, how="reset")
                with trio.fail_after(10):
                    await cols[0].wait_for({"AAPL", "MSFT"}, since_ns=kill_ns)
                    await cols[3].wait_for({"AAPL"}, since_ns=kill_ns)
                recovered = trio.current_time() - t_kill
                assert recovered < 5.0, recovered
                # Exactly one Reconnected per affected handle, none for the others; failing
                # over waits for nothing (the other connection confirms at once, in memory).
                assert [len(c.reconnects()) for c in cols] == [1, 0, 0, 1]
                for col in (cols[0], cols[3]):
                    assert [t for t, m in col.items if isinstance(m, Reconnected)] == [t_kill]
                # The marker comes before the first post-gap message of the handle.
                idx = [i for i, (_, m) in enumerate(cols[0].items) if isinstance(m, Reconnected)]
                after = [m for _, m in cols[0].items[idx[0] + 1 :]]
                assert after and all(not isinstance(m, Reconnected) for m in after)
                gap = cols[0].reconnects()[0]
                assert gap.gap_end_ns >= gap.gap_start_ns
                # No duplicate subscriptions, nothing on the dead key, everything covered.
                counts = subscribed_symbols(emu)
                assert set(counts) == {"AAPL", "MSFT", "SPY", "QQQ", "TSLA"}
                assert all(v == 1 for v in counts.values()), counts
                m = pool.get_pool_metrics()
                assert m["failovers"] == 1 and m["gaps"] >= 1
                assert m["healthy_connections"] == 2
                assert m["connections"][0]["load"] == 0
                assert m["unplaced_symbols"] == 0
                # The dead slot comes back in the background, after the 406 floor (30 s here).
                with trio.fail_after(200):
                    while pool.get_pool_metrics()["healthy_connections"] < 3:
                        await trio.sleep(1.0)
                back_at = (
                    trio.current_time() - pool.get_pool_metrics()["connections"][0]["connected_for"]
                )
                # exactly: the first backoff delay, the 406 refusal, then the 30 s floor
                schedule = backoff.schedule()
                delays = schedule.next_delay() + schedule.next_delay(connection_limit=True)
                assert back_at - t_kill == pytest.approx(delays, abs=1e-9)
                assert delays >= 30.0
                assert any(406 in c.errors_sent for c in emu.connections)
                m = pool.get_pool_metrics()
                assert m["connections"][0]["reconnects"] >= 1
                counts = subscribed_symbols(emu)
                assert all(v == 1 for v in counts.values()), counts
                # Still exactly one marker each: the returning slot caused no new gap.
                assert [len(c.reconnects()) for c in cols] == [1, 0, 0, 1]
                nursery.cancel_scope.cancel()
            for col in cols:
                no_duplicate_trades(col)


async def test_mute_connection_without_pongs_is_declared_dead(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with emulator() as emu:
        # The first connection to open goes mute (no data, no pongs) 5 s after it opened.
        emu.mute(feed=FEED, pings=False, after_seconds=5.0, count=1)
        async with pool_for(emu, n_keys=2, heartbeat_timeout=1.0) as pool:
            with trio.fail_after(10):
                while pool.get_pool_metrics()["healthy_connections"] < 2:
                    await trio.sleep(0.1)
            cols = [
                Collector(await pool.get_connection(["AAPL"])),
                Collector(await pool.get_connection(["MSFT"])),
            ]
            assert [c.handle.connections for c in cols] == [(0,), (1,)]
            async with trio.open_nursery() as nursery:
                for col in cols:
                    nursery.start_soon(col.run)
                with trio.fail_after(10):
                    while not any(c.muted for c in emu.open_connections(FEED)):
                        await trio.sleep(0.05)
                t0 = trio.current_time()
                with trio.fail_after(10):
                    await cols[0].wait_for({"AAPL"}, since_ns=emu.market_ns(t0 + 2.5))
                    await cols[1].wait_for({"MSFT"}, since_ns=emu.market_ns(t0 + 2.5))
                # Exactly one of the two handles sat on the mute connection.
                assert sorted(len(c.reconnects()) for c in cols) == [0, 1]
                m = pool.get_pool_metrics()
                assert m["failovers"] == 1
                errors = [c["errors"] for c in m["connections"]]
                assert sum(e.get("HeartbeatTimeoutError", 0) for e in errors) == 1, errors
                # The mute socket is still open on the server side (it stopped reading, so it
                # has not seen the close); every other connection has each symbol once.
                counts: Counter[str] = Counter()
                for conn in emu.open_connections(FEED):
                    if not conn.muted:
                        counts.update(conn.subscriptions.get("trades", ()))
                assert counts == {"AAPL": 1, "MSFT": 1}
                nursery.cancel_scope.cancel()


async def test_persistently_degraded_connection_is_failed_over(
    autojump_clock: trio.abc.Clock,
) -> None:
    health = HealthThresholds(degraded_silence=2.0, degraded_grace=3.0)
    async with emulator() as emu:
        # The first connection goes mute 5 s after opening but keeps answering pings: it is
        # alive, just silent -> degraded (never dead), failed over after the grace period.
        emu.mute(feed=FEED, pings=True, after_seconds=5.0, count=1)
        async with pool_for(emu, n_keys=2, health=health) as pool:
            cols = [
                Collector(await pool.get_connection(["AAPL"])),
                Collector(await pool.get_connection(["MSFT"])),
            ]
            async with trio.open_nursery() as nursery:
                for col in cols:
                    nursery.start_soon(col.run)
                with trio.fail_after(10):
                    while not any(c.muted for c in emu.open_connections(FEED)):
                        await trio.sleep(0.05)
                t_mute = trio.current_time()
                with trio.fail_after(5):
                    while pool.get_pool_metrics()["degraded_connections"] != 1:
                        await trio.sleep(0.1)
                assert trio.current_time() - t_mute >= 1.9
                with trio.fail_after(10):
                    while pool.get_pool_metrics()["failovers"] != 1:
                        await trio.sleep(0.1)
                # Not before the grace period.
                assert trio.current_time() - t_mute >= 4.9
                since = emu.market_ns()
                with trio.fail_after(10):
                    await cols[0].wait_for({"AAPL"}, since_ns=since)
                    await cols[1].wait_for({"MSFT"}, since_ns=since)
                assert sorted(len(c.reconnects()) for c in cols) == [0, 1]
                nursery.cancel_scope.cancel()


async def test_all_degraded_still_serves_and_does_not_churn(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Every measured heartbeat round trip counts as "slow": all connections turn degraded.
    health = HealthThresholds(degraded_rtt=0.0, degraded_grace=3.0)
    async with emulator() as emu, pool_for(emu, n_keys=2, health=health) as pool:
        with trio.fail_after(10):
            while pool.get_pool_metrics()["degraded_connections"] != 2:
                await trio.sleep(0.1)
        # No healthy connection: new symbols go to the degraded ones rather than waiting.
        h = await pool.get_connection(["AAPL"])
        col = Collector(h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(col.run)
            await trio.sleep(10.0)
            since = emu.market_ns()
            with trio.fail_after(5):
                await col.wait_for({"AAPL"}, since_ns=since)
            nursery.cancel_scope.cancel()
        m = pool.get_pool_metrics()
        # Nowhere healthy to go: nothing is failed over, nothing reconnects.
        assert m["failovers"] == 0 and m["reconnects"] == 0
        assert col.reconnects() == []


# ---------------------------------------------------------------------------------- rotation


async def test_rotation_modes_under_load(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(rate=50.0) as emu, pool_for(emu) as pool:
        with trio.fail_after(10):
            while pool.get_pool_metrics()["healthy_connections"] < 3:
                await trio.sleep(0.1)
        h1 = await pool.get_connection(["AAPL", "MSFT"])
        h2 = await pool.get_connection(["SPY"])
        cols = [Collector(h1), Collector(h2)]
        async with trio.open_nursery() as nursery:
            for col in cols:
                nursery.start_soon(col.run)
            with trio.fail_after(10):
                await cols[0].wait_for({"AAPL", "MSFT"})
            first_key = key_of_slot(pool, 0)
            old_id = conn_of_key(emu, first_key).id
            # One session per key and room elsewhere: migrate, gapless.
            mode = await pool.rotate(0)
            assert mode is RotationMode.MIGRATE
            t0_ns = emu.market_ns()
            with trio.fail_after(10):
                await cols[0].wait_for({"AAPL", "MSFT"}, since_ns=t0_ns)
                while pool.get_pool_metrics()["healthy_connections"] < 3:
                    await trio.sleep(0.1)
            assert 0 not in h1.connections
            assert old_id not in {c.id for c in emu.open_connections(FEED)}
            assert [len(c.reconnects()) for c in cols] == [0, 0]
            counts = subscribed_symbols(emu)
            assert all(v == 1 for v in counts.values()), counts
            assert pool.get_pool_metrics()["rotations"] == 1
            nursery.cancel_scope.cancel()
        for col in cols:
            no_duplicate_trades(col)
            no_missing_trades(col)


async def test_rotation_break_before_make_single_key(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(rate=50.0) as emu, pool_for(emu, n_keys=1) as pool:
        h = await pool.get_connection(["AAPL", "MSFT"])
        col = Collector(h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(col.run)
            with trio.fail_after(10):
                await col.wait_for({"AAPL", "MSFT"})
            mode = await pool.rotate()
            assert mode is RotationMode.BREAK_BEFORE_MAKE
            t0, t0_ns = trio.current_time(), emu.market_ns()
            with trio.fail_after(10):
                await col.wait_for({"AAPL", "MSFT"}, since_ns=t0_ns)
            # Covered again within one backoff step (a clean close: no 406).
            assert trio.current_time() - t0 < 2.5
            assert len(col.reconnects()) == 1
            assert len(emu.open_connections(FEED)) == 1
            assert all(v == 1 for v in subscribed_symbols(emu).values())
            nursery.cancel_scope.cancel()
        no_duplicate_trades(col)


async def test_rotation_make_before_break(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(rate=50.0, connection_limit=2) as emu,
        pool_for(emu, n_keys=1, pool_size=1, max_connections_per_key=2) as pool,
    ):
        h = await pool.get_connection(["AAPL", "MSFT"])
        col = Collector(h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(col.run)
            with trio.fail_after(10):
                await col.wait_for({"AAPL", "MSFT"})
            (old,) = emu.open_connections(FEED)
            mode = await pool.rotate()
            assert mode is RotationMode.MAKE_BEFORE_BREAK
            t0_ns = emu.market_ns()
            with trio.fail_after(10):
                await col.wait_for({"AAPL", "MSFT"}, since_ns=t0_ns)
                while old.open:
                    await trio.sleep(0.05)
            (new,) = emu.open_connections(FEED)
            assert new.id != old.id
            assert set(new.subscriptions["trades"]) == {"AAPL", "MSFT"}
            assert col.reconnects() == []
            nursery.cancel_scope.cancel()
        no_duplicate_trades(col)
        no_missing_trades(col)


async def test_scheduled_rotation(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, pool_for(emu, n_keys=2, rotation_interval=10.0) as pool:
        col = Collector(await pool.get_connection(["AAPL", "MSFT"]))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(col.run)
            await trio.sleep(25.0)
            m = pool.get_pool_metrics()
            assert m["rotations"] >= 2
            assert m["failovers"] == 0
            since = emu.market_ns()
            with trio.fail_after(5):
                await col.wait_for({"AAPL", "MSFT"}, since_ns=since)
            assert col.reconnects() == []
            assert subscribed_symbols(emu) == {"AAPL": 1, "MSFT": 1}
            nursery.cancel_scope.cancel()
        no_duplicate_trades(col)
        no_missing_trades(col)


async def test_migration_under_back_pressure_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A slow consumer keeps messages queued inside the retiring session when it is rotated
    away; they must still be delivered (the pool drains the old session before closing it)."""
    async with emulator(rate=50.0) as emu, pool_for(emu, n_keys=2) as pool:
        handle = await pool.get_connection(["MSFT"], buffer_size=5)
        col = Collector(handle)
        paused = trio.Event()
        resume = trio.Event()

        async def slow_consumer() -> None:
            async for msg in handle:
                col.items.append((trio.current_time(), msg))
                if len(col.items) == 50:
                    paused.set()
                    await resume.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_consumer)
            await paused.wait()
            await trio.sleep(0.5)  # the handle buffer is full: messages queue in the session

            async def release_later() -> None:
                await trio.sleep(1.0)
                resume.set()

            nursery.start_soon(release_later)
            mode = await pool.rotate(handle.connections[0])
            assert mode is RotationMode.MIGRATE
            since = emu.market_ns()
            with trio.fail_after(10):
                while not {m.symbol for m in col.data(since)} >= {"MSFT"}:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert col.reconnects() == []
        no_duplicate_trades(col)
        no_missing_trades(col)


# ---------------------------------------------------------------------------------- teardown


async def test_cancelling_the_pool_tears_everything_down(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        ended = trio.Event()

        async def consume(handle: PooledConnection) -> None:
            async for _ in handle:
                pass
            ended.set()

        with trio.CancelScope() as outer:
            async with pool_for(emu) as pool, trio.open_nursery() as nursery:
                h = await pool.get_connection(["AAPL", "SPY"])
                nursery.start_soon(consume, h)
                await emu.wait_for_connections(3, authenticated=True)
                await trio.sleep(1.0)
                t0 = trio.current_time()
                outer.cancel()
        assert outer.cancelled_caught
        assert trio.current_time() == t0  # every close handshake completes at once in memory
        with trio.fail_after(2):
            while emu.open_connections(FEED):
                await trio.sleep(0.01)
        assert h.closed
        with pytest.raises(trio.EndOfChannel):
            while True:
                await h.receive()
        with pytest.raises(trioalpaca.UsageError):
            await pool.get_connection(["AAPL"])


async def test_leaving_the_block_closes_handles(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        async with pool_for(emu, n_keys=2) as pool:
            h = await pool.get_connection(["AAPL"])
        assert h.closed
        assert [x async for x in h if not isinstance(x, (Trade, Quote))] == []
        with trio.fail_after(2):
            while emu.open_connections(FEED):
                await trio.sleep(0.01)


# ---------------------------------------------------------------------------------- balancing


async def test_rebalancing_moves_symbols_without_a_gap(autojump_clock: trio.abc.Clock) -> None:
    symbols = ["AAPL", "MSFT", "SPY", "QQQ", "TSLA", "NVDA"]
    async with (
        emulator() as emu,
        pool_for(emu, n_keys=2, max_subscriptions_per_connection=10, rebalance_threshold=2) as pool,
    ):
        with trio.fail_after(10):
            while pool.get_pool_metrics()["healthy_connections"] < 2:
                await trio.sleep(0.1)
        h = await pool.get_connection(symbols, channels=["trades"])
        # All six fit on the least-loaded connection, so they go there together...
        assert [c["load"] for c in pool.get_pool_metrics()["connections"]] == [6, 0]
        col = Collector(h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(col.run)
            # ...and the monitor then evens the loads out (spread 6 > threshold 2).
            with trio.fail_after(10):
                while [c["load"] for c in pool.get_pool_metrics()["connections"]] != [3, 3]:
                    await trio.sleep(0.1)
            t0_ns = emu.market_ns()
            with trio.fail_after(10):
                await col.wait_for(set(symbols), since_ns=t0_ns)
            assert h.connections == (0, 1)
            assert col.reconnects() == []
            assert pool.get_pool_metrics()["rebalance_moves"] == 3
            counts = subscribed_symbols(emu)
            assert counts == dict.fromkeys(symbols, 1)
            nursery.cancel_scope.cancel()
        no_duplicate_trades(col)
        no_missing_trades(col)


async def test_slow_handle_drop_oldest_reports_dropped(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(rate=100.0) as emu, pool_for(emu, n_keys=1) as pool:
        slow = await pool.get_connection(["AAPL"], buffer_size=5, overflow="drop_oldest")
        fast = await pool.get_connection(["AAPL"])
        await trio.sleep(2.0)  # nobody reads: slow overflows, fast (10 000) does not
        first = await slow.receive()
        assert isinstance(first, trioalpaca.Dropped) and first.count > 0
        assert slow.dropped == first.count
        rest = [await slow.receive() for _ in range(5)]
        assert all(isinstance(m, (Trade, Quote)) for m in rest)
        assert fast.dropped == 0
        assert not isinstance(await fast.receive(), trioalpaca.Dropped)


# ---------------------------------------------------------------------------------- invariants


def check_bookkeeping(pool: ConnectionPool) -> None:
    """The pool's own tables agree with each other."""
    place = pool._place
    pool._book.check_invariants()
    assert set(place) == pool._book.symbols()
    seen: set[str] = set()
    for slot in pool._slots:
        assert not (slot.symbols & seen), "a symbol is assigned to two connections"
        seen |= slot.symbols
        assert len(slot.symbols) <= pool.max_subscriptions_per_connection
        for sym in slot.symbols:
            assert place[sym] == slot.spec.index
    assert seen == set(place)
    for sym, index in pool._live.items():
        assert place[sym] == index and pool._slots[index].ready
    for h in pool._book:
        for sym in h.symbols:
            assert h in pool._book.owners_of_symbol(sym)
            for ch in h.channels:
                assert pool._book.refcount((ch, sym)) >= 1


def check_server_state(pool: ConnectionPool, emu: Emulator) -> None:
    """What the emulator has subscribed is exactly what the handles want, each symbol on the
    one connection the pool assigned it to (call when settled: every symbol live)."""
    by_key = {c.key: c for c in emu.open_connections(FEED)}
    assert len(by_key) == len(emu.open_connections(FEED)), "two sessions on one key"
    creds = list(CREDS)
    for slot in pool._slots:
        conn = by_key.get(creds[slot.spec.credential])
        assert conn is not None, f"no session for connection {slot.spec.index}"
        for channel in ("trades", "quotes"):
            want = {s for s in slot.symbols if pool._book.wanted((channel, s))}
            assert set(conn.subscriptions.get(channel, ())) == want, (slot.spec.index, channel)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_operations_keep_the_books_straight(
    autojump_clock: trio.abc.Clock, seed: int
) -> None:
    import random

    rng = random.Random(seed)
    universe = ["AAPL", "MSFT", "SPY", "QQQ", "TSLA", "NVDA", "AMD", "IBM", "GE", "F", "T", "C"]
    async with (
        emulator(rate=5.0) as emu,
        pool_for(emu, max_subscriptions_per_connection=5, rebalance_threshold=2) as pool,
        trio.open_nursery() as consumers,
    ):
        handles: list[PooledConnection] = []

        async def drain(h: PooledConnection) -> None:
            async for _ in h:
                pass

        async def settle() -> None:
            with trio.move_on_after(60):
                while True:
                    m = pool.get_pool_metrics()
                    ready = all(c["state"] == "ready" for c in m["connections"])
                    if ready and m["unplaced_symbols"] == 0:
                        return
                    await trio.sleep(0.1)
            m = pool.get_pool_metrics()
            pytest.fail(f"did not settle: {m}, live={pool._live}, place={pool._place}")

        for _ in range(40):
            op = rng.choice(["open", "open", "close", "drop", "rotate", "sleep"])
            if op == "open":
                syms = rng.sample(universe, rng.randint(1, 4))
                channels = rng.choice([["trades"], ["quotes"], ["trades", "quotes"]])
                try:
                    with trio.fail_after(30):
                        handles.append(await pool.get_connection(syms, channels=channels))
                    consumers.start_soon(drain, handles[-1])
                except PoolCapacityError:
                    wanted = pool._book.symbols() | set(syms)
                    assert len(wanted) > 15
            elif op == "close" and handles:
                await handles.pop(rng.randrange(len(handles))).aclose()
            elif op == "drop":
                conns = emu.open_connections(FEED)
                if conns:
                    emu.drop(connection=rng.choice(conns).id, how="reset")
                    await trio.sleep(0.05)
            elif op == "rotate":
                await settle()
                try:
                    await pool.rotate(rng.randrange(3))
                except trioalpaca.UsageError:
                    pass  # it started reconnecting meanwhile (e.g. failed over as degraded)
            else:
                await trio.sleep(rng.uniform(0.1, 3.0))
            check_bookkeeping(pool)
        await settle()
        await trio.sleep(3.0)  # let rebalancing finish
        await settle()
        check_bookkeeping(pool)
        check_server_state(pool, emu)
        # Frequent drops make connections degraded (3 reconnects in 5 min): rebalancing evens
        # out the healthy ones.
        healthy = [c for c in pool.get_pool_metrics()["connections"] if c["health"] == "healthy"]
        loads = [c["load"] for c in healthy]
        assert not loads or max(loads) - min(loads) <= 2
        consumers.cancel_scope.cancel()


async def test_an_error_in_the_block_leaves_promptly(autojump_clock: trio.abc.Clock) -> None:
    class Boom(Exception):
        pass

    async with emulator() as emu:
        with trio.fail_after(5), pytest.raises(Boom):
            async with pool_for(emu) as pool, trio.open_nursery() as nursery:
                h = await pool.get_connection(["AAPL", "MSFT"])

                async def drain() -> None:
                    async for _ in h:
                        pass

                nursery.start_soon(drain)
                await trio.sleep(1.0)
                raise Boom
        with trio.fail_after(2):
            while emu.open_connections(FEED):
                await trio.sleep(0.01)


# ---------------------------------------------------------------------------------- contract


async def test_error_handler_gets_one_report_per_connection_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    reports: list[trioalpaca.ErrorReport] = []
    async with emulator() as emu, pool_for(emu, n_keys=2) as pool:
        pool.set_error_handler(reports.append)  # plain function
        h = await pool.get_connection(["AAPL"])
        assert isinstance(h, trio.abc.ReceiveChannel)
        index = h.connections[0]
        victim = conn_of_key(emu, key_of_slot(pool, index))
        emu.drop(connection=victim.id, how="reset")
        with trio.fail_after(10):
            while not reports:
                await trio.sleep(0.01)
        (report,) = reports
        assert (report.component, report.connection, report.action) == ("pool", index, "reconnect")
        assert isinstance(report.exception, trioalpaca.TrioAlpacaError)

        async def failing(report: trioalpaca.ErrorReport) -> None:  # async, and raising
            raise RuntimeError("bug in the error handler")

        pool.set_error_handler(failing)
        (other,) = {0, 1} - {index}
        emu.drop(connection=conn_of_key(emu, key_of_slot(pool, other)).id, how="reset")
        with trio.fail_after(10):
            while pool.get_metrics()["error_handler_errors"] < 1:
                await trio.sleep(0.01)
        m = pool.get_metrics()
        assert m == {**pool.get_pool_metrics(), "messages_per_second": m["messages_per_second"]}
        assert m["error_handler_errors"] == 1 and m["failovers"] == 2
        await h.aclose()


async def test_pool_reads_the_same_environment_as_the_client(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ALPACA_API_KEY", "PKPOOL2")
    monkeypatch.setenv("ALPACA_API_SECRET", "secret-two")
    async with (
        emulator() as emu,
        open_pool(feed=FEED, url=emu.url_for(FEED), stream_factory=in_memory(emu)) as pool,
    ):
        assert pool.pool_size == 1
        assert {c.key for c in emu.open_connections(FEED)} == {"PKPOOL2"}
    monkeypatch.delenv("ALPACA_API_KEY")
    with pytest.raises(trioalpaca.CredentialsError, match="ALPACA_API_KEY"):
        async with open_pool(feed=FEED):
            pytest.fail("the pool must not open")  # pragma: no cover


async def test_stream_options_reach_every_client_and_typos_are_refused(
    autojump_clock: trio.abc.Clock,
) -> None:
    options = trioalpaca.StreamOptions(heartbeat_interval=2.0, subscription_timeout=3.0)
    async with emulator() as emu:
        with pytest.raises(
            trioalpaca.UsageError, match=r"unknown stream option.*heartbeat_intervall"
        ):
            async with pool_for(emu, heartbeat_intervall=1.0):
                pytest.fail("the pool must not open")  # pragma: no cover
        with pytest.raises(trioalpaca.UsageError, match="not both"):
            async with pool_for(emu, options=options):  # pool_for adds heartbeat_interval=
                pytest.fail("the pool must not open")  # pragma: no cover
        assert emu.connections == []
        async with open_pool(
            credentials=list(CREDS.items())[:2],
            feed=FEED,
            url=emu.url_for(FEED),
            options=attrs.evolve(options, stream_factory=in_memory(emu)),
        ) as pool:
            assert pool._client_timeout() == 3.0
            for _, c in pool.clients():
                assert c.statistics().state == "connected"
                assert c._settings.heartbeat_interval == 2.0
    with pytest.raises(trioalpaca.UsageError, match="buffer_size"):
        trioalpaca.StreamOptions(buffer_size=0)
    assert (
        trioalpaca.StreamOptions.from_kwargs(overflow="drop_oldest").client_kwargs()["overflow"]
        == "drop_oldest"
    )
