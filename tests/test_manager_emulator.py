"""StreamManager and MessageHandler against the real client and the emulator.

Coalescing, request splitting and the rate limit are observed on the emulator's side (its
per-connection counters of received frames and its subscription state), not in the manager.
The client reaches the emulator over in-memory streams (``tests.helpers.in_memory``), so these
run on pytest-trio's autojump clock and the rate limiter's spacing is asserted exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.helpers import in_memory
from trioalpaca import Backoff, Reconnected, Trade, open_message_handler, open_stream
from trioalpaca._connection import Frame
from trioalpaca.manager import open_stream_manager, split_request
from trioalpaca.testing import Emulator, open_emulator
from trioalpaca.testing._server import ConnectionStats

FAST = Backoff(initial=0.05, cap=0.2)
KEY = "PKTESTKEY0123456789"
SECRET = "sEcReT-do-not-leak-0123456789abcdef"


@asynccontextmanager
async def setup(
    *, rate: float = 0.0, symbols: tuple[str, ...] = ("AAPL", "MSFT", "TSLA"), **mgr: Any
) -> AsyncIterator[tuple[Emulator, Any, Any]]:
    async with (
        open_emulator(symbols=list(symbols), rate=rate) as emu,
        open_stream(
            KEY,
            SECRET,
            feed="iex",
            url=emu.url_for("iex"),
            backoff=FAST,
            heartbeat_interval=None,
            stream_factory=in_memory(emu),
        ) as cl,
        open_stream_manager(cl, **mgr) as manager,
    ):
        yield emu, cl, manager


def conn(emu: Emulator) -> ConnectionStats:
    [c] = emu.open_connections("iex")
    return c


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (virtual time) until ``predicate()`` is true."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def requests_seen(c: ConnectionStats) -> int:
    """Subscription requests the emulator received on this connection (the first frame is auth)."""
    return c.received_frames - 1


class FrameWatch:
    """A client observer noting the virtual time at which each frame went out; in memory the
    emulator receives it at that same time."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def frame_out(self, frame: Frame, tx_ns: int) -> None:
        self.times.append(trio.current_time())

    def frame_in(self, frame: Frame, rx_ns: int) -> None:
        pass

    def event(self, name: str, data: dict[str, Any]) -> None:
        pass


async def test_concurrent_subscribes_become_one_request(autojump_clock: trio.abc.Clock) -> None:
    symbols = [f"S{i:03}" for i in range(40)]
    async with setup(coalesce_window=0.3) as (emu, _client, manager):
        c = conn(emu)
        before = requests_seen(c)

        async def one(i: int, s: str) -> None:
            await trio.sleep(i * 0.001)  # spread over 40 ms, inside the 300 ms window
            await manager.subscribe(symbols=[s], data_types=["trades", "quotes"], handler=print)

        async with trio.open_nursery() as nursery:
            for i, s in enumerate(symbols):
                nursery.start_soon(one, i, s)
        assert requests_seen(c) - before == 1  # 40 calls, one request on the wire
        assert set(c.subscriptions["trades"]) == set(symbols)
        assert set(c.subscriptions["quotes"]) == set(symbols)

        # Unsubscribing all of them is one request too.
        before = requests_seen(c)
        async with trio.open_nursery() as nursery:
            for sub in manager.subscriptions:
                nursery.start_soon(sub.unsubscribe)
        assert requests_seen(c) - before == 1
        assert not c.subscriptions.get("trades")
        assert not c.subscriptions.get("quotes")


async def test_refcounts_seen_by_the_server(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as (emu, _client, manager):
        c = conn(emu)
        a = await manager.subscribe(symbols=["AAPL"], data_types="trades", handler=print)
        n = requests_seen(c)
        b = await manager.subscribe(symbols=["AAPL"], data_types="trades", handler=print)
        assert requests_seen(c) == n  # already on the wire: no request
        await a.unsubscribe()
        assert requests_seen(c) == n and c.subscriptions["trades"] == ("AAPL",)
        await b.unsubscribe()
        assert requests_seen(c) == n + 1
        assert not c.subscriptions.get("trades")


async def test_large_lists_split_and_rate_limited(autojump_clock: trio.abc.Clock) -> None:
    symbols = [f"SYMBOL{i:04}" for i in range(420)]
    chunks = split_request("subscribe", {"trades": symbols}, 1024)
    assert len(chunks) >= 6
    async with setup(max_request_bytes=1024, requests_per_second=4.0, burst=2) as (
        emu,
        client,
        manager,
    ):
        watch = FrameWatch()
        client.observers.append(watch)
        before = requests_seen(conn(emu))
        await manager.subscribe(symbols=symbols, data_types="trades", handler=print)
        await until(lambda: len(watch.times) >= len(chunks))
        assert len(watch.times) == len(chunks)  # one frame per chunk, nothing else
        assert requests_seen(conn(emu)) - before == len(chunks)
        assert set(conn(emu).subscriptions["trades"]) == set(symbols)
        # The first two (the burst) go back to back; after that exactly 1 / 4 s apart.
        start = watch.times[0]
        expected = [start + max(i - 1, 0) * 0.25 for i in range(len(chunks))]
        assert watch.times == pytest.approx(expected, abs=1e-9)


async def test_routing_with_live_data_and_reconnect(autojump_clock: trio.abc.Clock) -> None:
    got: dict[str, list[Any]] = {"a": [], "m": [], "ctl": []}
    async with setup(rate=50.0) as (emu, _client, manager):
        await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=got["a"].append)
        await manager.subscribe(
            symbols=["MSFT"], data_types=["trades", "quotes"], handler=got["m"].append
        )
        await manager.subscribe(symbols=[], data_types="control", handler=got["ctl"].append)
        await until(lambda: got["a"] and any(type(m).channel == "quotes" for m in got["m"]))
        assert {(type(m).channel, m.symbol) for m in got["a"]} <= {
            ("trades", "AAPL"),
            ("corrections", "AAPL"),
            ("cancelErrors", "AAPL"),
        }
        assert {m.symbol for m in got["m"]} == {"MSFT"}
        assert any(type(m).channel == "quotes" for m in got["m"])

        # The connection drops; the client resubscribes the union; routing continues.
        emu.drop(feed="iex")
        await emu.wait_for_connections(1, feed="iex", authenticated=True)
        await until(lambda: any(isinstance(m, Reconnected) for m in got["ctl"]))
        n_a = len(got["a"])
        await until(lambda: len(got["a"]) > n_a)
        c = conn(emu)
        assert c.subscriptions["trades"] == ("AAPL", "MSFT")
        # A change after the reconnect goes out on the new connection.
        await manager.subscribe(symbols=["TSLA"], data_types="trades", handler=print)
        assert "TSLA" in conn(emu).subscriptions["trades"]


async def test_manager_feeding_a_message_handler(autojump_clock: trio.abc.Clock) -> None:
    """The manager routes, a MessageHandler does the (slow) work per symbol in order."""
    seen: dict[str, list[int]] = {}

    async def work(batch: list[Trade]) -> None:
        await trio.sleep(0.001)
        for t in batch:
            # per-symbol order is checked by trade id: the emulator sends late prints on purpose,
            # so timestamps are not monotonic
            seen.setdefault(t.symbol, []).append(t.trade_id)

    async with open_message_handler(worker_count=4, batch_size=20) as handler:
        handler.register_processor("trades", work)
        async with setup(rate=100.0, consume=False) as (_emu, client, manager):

            async def to_handler(msg: Any) -> None:
                await handler.send(msg)

            await manager.subscribe(symbols=["*"], data_types="trades", handler=to_handler)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, manager)
                await until(lambda: len(seen) == 3 and min(map(len, seen.values())) >= 20)
                nursery.cancel_scope.cancel()
    assert set(seen) == {"AAPL", "MSFT", "TSLA"}
    for ids in seen.values():
        assert ids == sorted(ids)
    assert handler.get_metrics()["by_type"]["trades"]["processed"] == sum(map(len, seen.values()))


async def _pump(client: Any, manager: Any) -> None:
    while True:
        await manager.dispatch_batch(await client.receive_batch())
