"""Unit tests for trioalpaca.manager against an in-memory fake client."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca._errors import SymbolLimitError, UsageError
from trioalpaca.endpoints import channel_to_wire
from trioalpaca.manager import (
    HandlerFailure,
    StreamManager,
    Subscription,
    TokenBucket,
    open_stream_manager,
    split_request,
)
from trioalpaca.models import News, Quote, Reconnected, Trade, TradeCorrection


def trade(symbol: str, i: int = 0) -> Trade:
    return Trade(symbol, i, "V", 100.0, 1, (), 1_700_000_000_000_000_000 + i, "C")


def quote(symbol: str, i: int = 0) -> Quote:
    return Quote(symbol, "V", 99.0, 1, "V", 101.0, 1, (), 1_700_000_000_000_000_000 + i, "C")


class FakeClient:
    """Records requests, keeps the server-side state, optionally rejects symbols."""

    def __init__(
        self,
        *,
        initial: dict[str, tuple[str, ...]] | None = None,
        reject: Iterable[str] = (),
        latency: float = 0.0,
    ) -> None:
        self.calls: list[tuple[float, str, dict[str, tuple[str, ...]]]] = []
        self.state: set[tuple[str, str]] = {
            (ch, s) for ch, syms in (initial or {}).items() for s in syms
        }
        self.reject = set(reject)
        self.latency = latency
        self.redundant = 0

    @property
    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for ch, s in sorted(self.state):
            out.setdefault(ch, []).append(s)
        return {ch: tuple(v) for ch, v in out.items()}

    async def _do(self, action: str, channels: dict[str, Iterable[str]]) -> None:
        req = {channel_to_wire(ch): tuple(syms) for ch, syms in channels.items()}
        self.calls.append((trio.current_time(), action, req))
        await trio.sleep(self.latency)
        pairs = {(ch, s) for ch, syms in req.items() for s in syms}
        if action == "subscribe":
            if any(s in self.reject for _, s in pairs):
                raise SymbolLimitError(405, "symbol limit exceeded")
            self.redundant += len(pairs & self.state)
            self.state |= pairs
        else:
            self.redundant += len(pairs - self.state)
            self.state -= pairs

    async def subscribe(self, **channels: Iterable[str]) -> None:
        await self._do("subscribe", channels)

    async def unsubscribe(self, **channels: Iterable[str]) -> None:
        await self._do("unsubscribe", channels)


class FakeStream(FakeClient):
    """A fake client that is also a message stream fed through a memory channel."""

    def __init__(self) -> None:
        super().__init__()
        self.send, self._recv = trio.open_memory_channel[Any](100)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._recv.__aiter__()


# ---------------------------------------------------------------- pure helpers


@settings(max_examples=200, deadline=None)
@given(
    channels=st.dictionaries(
        st.sampled_from(["trades", "quotes", "dailyBars", "news"]),
        st.lists(st.text(alphabet='ABCXYZ.\\"/é', min_size=1, max_size=12), max_size=80),
        max_size=4,
    ),
    max_bytes=st.integers(min_value=80, max_value=2000),
    action=st.sampled_from(["subscribe", "unsubscribe"]),
)
def test_split_request_bounds(channels: dict[str, list[str]], max_bytes: int, action: str) -> None:
    try:
        chunks = split_request(action, channels, max_bytes)
    except UsageError:
        # Allowed only when some symbol cannot fit even alone (JSON escapes "é" as 6 bytes).
        alone = [
            len(json.dumps({"action": action, ch: [s]})) for ch, ss in channels.items() for s in ss
        ]
        assert max(alone) > max_bytes
        return
    for chunk in chunks:
        assert chunk
        assert len(json.dumps({"action": action, **chunk})) <= max_bytes
        assert all(chunk.values())
    got = [(ch, s) for chunk in chunks for ch, syms in chunk.items() for s in syms]
    want = [(ch, s) for ch, syms in channels.items() for s in dict.fromkeys(syms)]
    assert sorted(got) == sorted(want)
    assert len(got) == len(set(got))


def test_split_request_too_small() -> None:
    with pytest.raises(UsageError):
        split_request("subscribe", {"trades": ["X" * 100]}, 64)


def test_split_request_packs_channels_together() -> None:
    assert split_request("subscribe", {"trades": ["A"], "quotes": ["A", "B"]}, 1000) == [
        {"trades": ["A"], "quotes": ["A", "B"]}
    ]


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    capacity=st.integers(min_value=1, max_value=20),
    steps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=100),
)
def test_token_bucket_never_exceeds_rate(rate: float, capacity: int, steps: list[float]) -> None:
    bucket = TokenBucket(rate, capacity, now=0.0)
    now = 0.0
    grants: list[float] = []
    for dt in steps:
        now += dt
        if bucket.try_acquire(now):
            grants.append(now)
        else:
            # delay() is exact: after it, the token is there; just before, it is not.
            d = bucket.delay(now)
            assert d > 0
            probe = TokenBucket(rate, capacity, now=0.0)
            probe._tokens, probe._last = bucket._tokens, bucket._last
            assert probe.try_acquire(now + d * (1 + 1e-9) + 1e-12)
    # Any window [a, b] holds at most capacity + rate * (b - a) grants.
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            assert j - i + 1 <= capacity + rate * (grants[j] - grants[i]) + 1e-6


def test_token_bucket_validation() -> None:
    with pytest.raises(UsageError):
        TokenBucket(0, 1)
    with pytest.raises(UsageError):
        TokenBucket(1, 0.5)
    b = TokenBucket(1, 2)
    assert b.available(0.0) == 2
    with pytest.raises(UsageError):
        b.try_acquire(0.0, 3)
    assert b.delay(0.0, 2) == 0.0


# ---------------------------------------------------------------- routing


async def test_routing_and_wildcards() -> None:
    client = FakeStream()
    got: dict[str, list[Any]] = {"tech": [], "aapl": [], "all_trades": [], "ctl": []}
    async with open_stream_manager(client, coalesce_window=0) as manager:
        await manager.subscribe(
            symbols=["AAPL", "MSFT"], data_types=["trades", "quotes"], handler=got["tech"].append
        )
        await manager.subscribe(symbols="AAPL", data_types="trades", handler=got["aapl"].append)
        await manager.subscribe(
            symbols=["*"], data_types=["trades"], handler=got["all_trades"].append
        )
        await manager.subscribe(symbols=[], data_types=["control"], handler=got["ctl"].append)
        corr = TradeCorrection("AAPL", "V", 1, 1.0, 1, (), 2, 2.0, 2, (), 1, "C")
        msgs = [trade("AAPL"), quote("MSFT"), trade("TSLA"), quote("TSLA"), corr, Reconnected(1, 2)]
        for m in msgs:
            await client.send.send(m)
        await trio.testing.wait_all_tasks_blocked()
        assert got["tech"] == [trade("AAPL"), quote("MSFT"), corr]
        assert got["aapl"] == [trade("AAPL"), corr]
        assert got["all_trades"] == [trade("AAPL"), trade("TSLA"), corr]
        assert got["ctl"] == [Reconnected(1, 2)]
        m = manager.get_metrics()
        assert m["unrouted"] == 1  # TSLA quote
        assert m["routed"] == 5
        assert client.state == {
            ("trades", "AAPL"),
            ("trades", "MSFT"),
            ("quotes", "AAPL"),
            ("quotes", "MSFT"),
            ("trades", "*"),
        }
        assert client.redundant == 0


async def test_news_routed_by_any_symbol_and_default_handler() -> None:
    client = FakeStream()
    news_got: list[Any] = []
    default: list[Any] = []
    news = News(1, "h", "s", "a", 1, 1, "", "", ("AAPL", "TSLA"), "benzinga")
    other = News(2, "h", "s", "a", 1, 1, "", "", ("GME",), "benzinga")
    async with open_stream_manager(client, coalesce_window=0, default_handler=default.append) as m:
        await m.subscribe(symbols=["TSLA"], data_types=["news"], handler=news_got.append)
        await client.send.send(news)
        await client.send.send(other)
        await trio.testing.wait_all_tasks_blocked()
    assert news_got == [news]
    assert default == [other]


async def test_dispatch_without_consuming() -> None:
    client = FakeClient()
    got: list[Any] = []
    async with open_stream_manager(client, consume=False, coalesce_window=0) as manager:
        sub = await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=got.append)
        await manager.dispatch_batch([trade("AAPL", 1), {"T": "t", "S": "AAPL"}, trade("X")])
        assert manager.targets(trade("AAPL")) == (sub,)
    assert got == [trade("AAPL", 1), {"T": "t", "S": "AAPL"}]


async def test_handler_errors_go_to_error_handler(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    got: list[Any] = []
    failures: list[HandlerFailure] = []

    async def bad(msg: Any) -> None:
        raise RuntimeError("handler bug")

    async with open_stream_manager(client, consume=False, coalesce_window=0) as manager:
        s_bad = await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=bad)
        await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=got.append)
        await manager.dispatch(trade("AAPL", 1))  # no error handler yet: logged
        manager.set_error_handler(failures.append)
        await manager.dispatch(trade("AAPL", 2))
    assert got == [trade("AAPL", 1), trade("AAPL", 2)]  # routing continued
    assert [(f.subscription, f.message) for f in failures] == [(s_bad, trade("AAPL", 2))]
    assert s_bad.errors == 2
    assert manager.get_metrics()["handler_errors"] == 2
    assert any("handler of" in r.getMessage() and r.exc_info for r in caplog.records)


# ---------------------------------------------------------------- refcounts and coalescing


async def test_refcounted_union(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    async with open_stream_manager(client, consume=False) as manager:
        a = await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=print)
        b = await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=print)
        assert [c[1:] for c in client.calls] == [("subscribe", {"trades": ("AAPL",)})]
        assert manager.refcount("trades", "AAPL") == 2
        await a.unsubscribe()
        assert len(client.calls) == 1  # b keeps it flowing: no wire request
        assert client.state == {("trades", "AAPL")}
        assert manager.targets(trade("AAPL")) == (b,)
        await manager.unsubscribe(b)
        assert [c[1:] for c in client.calls][-1] == ("unsubscribe", {"trades": ("AAPL",)})
        assert client.state == set()
        assert manager.refcount("trades", "AAPL") == 0
        await b.unsubscribe()  # idempotent
        assert len(client.calls) == 2


async def test_calls_within_window_coalesce(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    subs: list[Subscription] = []
    async with open_stream_manager(client, consume=False, coalesce_window=0.1) as manager:
        t0 = trio.current_time()

        async def one(sym: str, delay: float) -> None:
            await trio.sleep(delay)
            subs.append(
                await manager.subscribe(
                    symbols=[sym], data_types=["trades", "quotes"], handler=print
                )
            )

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, f"S{i:02}", i * 0.004)
        assert len(client.calls) == 1
        at, action, req = client.calls[0]
        assert at - t0 == pytest.approx(0.1)
        assert action == "subscribe"
        assert req["trades"] == tuple(f"S{i:02}" for i in range(20))
        m = manager.get_metrics()
        assert (m["changes"], m["flushes"]) == (20, 1)

        # Subscribe + unsubscribe of the same pair inside one window sends nothing.
        calls_before = len(client.calls)
        async with trio.open_nursery() as nursery:

            async def flap() -> None:
                s = await manager.subscribe(symbols=["NEW"], data_types="trades", handler=print)
                await s.unsubscribe()

            nursery.start_soon(flap)
        assert [c[1:] for c in client.calls[calls_before:]] == [
            ("subscribe", {"trades": ("NEW",)}),
            ("unsubscribe", {"trades": ("NEW",)}),
        ]
        calls_before = len(client.calls)
        async with trio.open_nursery() as nursery:
            for s in subs:
                nursery.start_soon(s.unsubscribe)
        # 20 unsubscribes -> one request carrying both channels
        assert [c[1] for c in client.calls[calls_before:]] == ["unsubscribe"]
        assert client.state == set()


async def test_undo_within_window_sends_nothing(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    async with open_stream_manager(client, consume=False, coalesce_window=1.0) as manager:
        keep = await manager.subscribe(symbols=["K"], data_types="trades", handler=print)
        n = len(client.calls)

        async def sub_then_cancel() -> None:
            with trio.move_on_after(0.5):
                await manager.subscribe(symbols=["TMP"], data_types="trades", handler=print)

        await sub_then_cancel()  # registered, then rolled back before the flush
        await trio.sleep(2)
        assert len(client.calls) == n
        assert manager.refcount("trades", "TMP") == 0
        assert keep.active


async def test_large_symbol_lists_are_split(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    symbols = [f"SYM{i:05}" for i in range(3000)]
    async with open_stream_manager(
        client, consume=False, max_request_bytes=4096, requests_per_second=1000, burst=1000
    ) as manager:
        await manager.subscribe(symbols=symbols, data_types=["trades", "quotes"], handler=print)
    assert len(client.calls) > 1
    for _, action, req in client.calls:
        assert len(json.dumps({"action": action, **{k: list(v) for k, v in req.items()}})) <= 4096
    assert client.state == {(ch, s) for ch in ("trades", "quotes") for s in symbols}


async def test_rate_limit_spaces_requests(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    symbols = [f"SYM{i:05}" for i in range(800)]
    async with open_stream_manager(
        client, consume=False, max_request_bytes=1024, requests_per_second=2.0, burst=3
    ) as manager:
        t0 = trio.current_time()
        await manager.subscribe(symbols=symbols, data_types="trades", handler=print)
        times = [c[0] - t0 for c in client.calls]
    n = len(times)
    assert n == len(split_request("subscribe", {"trades": symbols}, 1024)) > 5
    window = 0.05
    expected = [window] * 3 + [window + 0.5 * (k + 1) for k in range(n - 3)]
    assert times == pytest.approx(expected)
    assert manager.get_metrics()["rate_limited_s"] == pytest.approx(0.5 * (n - 3))


async def test_failed_subscribe_raises_and_rolls_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient(reject={"BAD_SYMBOL_XYZ_1"})
    ok_results: list[Subscription] = []
    errors: list[BaseException] = []
    async with open_stream_manager(
        client, consume=False, max_request_bytes=64, coalesce_window=0.1
    ) as manager:

        async def try_sub(sym: str) -> None:
            try:
                ok_results.append(
                    await manager.subscribe(symbols=[sym], data_types="trades", handler=print)
                )
            except SymbolLimitError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(try_sub, "GOOD_SYMBOL_XYZ")
            nursery.start_soon(try_sub, "BAD_SYMBOL_XYZ_1")
        assert [s.symbols for s in ok_results] == [frozenset({"GOOD_SYMBOL_XYZ"})]
        assert len(errors) == 1
        assert manager.refcount("trades", "BAD_SYMBOL_XYZ_1") == 0
        assert [s.symbols for s in manager.subscriptions] == [frozenset({"GOOD_SYMBOL_XYZ"})]
        assert client.state == {("trades", "GOOD_SYMBOL_XYZ")}
        assert manager.get_metrics()["requests_failed"] == 1


async def test_update_switches_symbols(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient()
    async with open_stream_manager(client, consume=False) as manager:
        sub = await manager.subscribe(symbols=["A", "B"], data_types="trades", handler=print)
        await sub.update(symbols=["B", "C"], data_types=["trades", "daily_bars"])
        assert client.state == {
            ("trades", "B"),
            ("trades", "C"),
            ("dailyBars", "B"),
            ("dailyBars", "C"),
        }
        assert [c[1] for c in client.calls] == ["subscribe", "unsubscribe", "subscribe"]
        async with sub:
            pass
        assert not sub.active
        assert client.state == set()
        with pytest.raises(UsageError):
            await sub.update(symbols=["X"])


async def test_external_subscriptions_left_alone(autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient(initial={"trades": ("AAPL",)})
    async with open_stream_manager(client, consume=False) as manager:
        sub = await manager.subscribe(symbols=["AAPL", "MSFT"], data_types="trades", handler=print)
        assert [c[1:] for c in client.calls] == [("subscribe", {"trades": ("MSFT",)})]
        await sub.unsubscribe()
        assert [c[1:] for c in client.calls][-1] == ("unsubscribe", {"trades": ("MSFT",)})
        assert client.state == {("trades", "AAPL")}


async def test_usage_errors() -> None:
    client = FakeClient()
    manager = StreamManager(client)
    with pytest.raises(UsageError):
        await manager.subscribe(symbols=["A"], data_types="trades", handler=print)
    with pytest.raises(UsageError):
        StreamManager(client, coalesce_window=-1)
    with pytest.raises(UsageError):
        StreamManager(client, max_request_bytes=10)
    async with open_stream_manager(client, consume=False) as m2:
        with pytest.raises(UsageError):
            await m2.subscribe(symbols=["A"], data_types=[], handler=print)
        with pytest.raises(UsageError):
            await m2.subscribe(symbols=["A"], data_types=["bogus"], handler=print)
        with pytest.raises(UsageError):
            await m2.subscribe(symbols=[""], data_types=["trades"], handler=print)
        with pytest.raises(UsageError):
            await m2.subscribe(symbols=[], data_types=["trades"], handler=print)
        other = Subscription(manager, 1, frozenset({"A"}), frozenset({"trades"}), print)
        with pytest.raises(UsageError):
            await m2.unsubscribe(other)
        with pytest.raises(UsageError):
            await m2.run()


async def test_unsubscribe_failure_is_logged_and_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(FakeClient):
        fail_next = True

        async def unsubscribe(self, **channels: Iterable[str]) -> None:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("transient")
            await super().unsubscribe(**channels)

    client = Flaky()
    caplog.set_level(logging.WARNING, logger="trioalpaca.manager")
    async with open_stream_manager(client, consume=False) as manager:
        a = await manager.subscribe(symbols=["A"], data_types="trades", handler=print)
        await a.unsubscribe()
        assert client.state == {("trades", "A")}  # the request failed ...
        assert any("unsubscribe request failed" in r.getMessage() for r in caplog.records)
        await manager.subscribe(symbols=["B"], data_types="trades", handler=print)
        assert client.state == {("trades", "B")}  # ... and went out with the next change


async def test_stopping_releases_waiters_and_handles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeClient(latency=5.0)  # every request takes 5 s
    errors: list[BaseException] = []
    async with trio.open_nursery() as outer:
        manager = StreamManager(client, consume=False, coalesce_window=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            done = await manager.subscribe(symbols=["A"], data_types="trades", handler=print)

            async def waiter() -> None:
                try:
                    await manager.subscribe(symbols=["B"], data_types="trades", handler=print)
                except UsageError as exc:
                    errors.append(exc)

            outer.start_soon(waiter)
            await trio.sleep(1.0)  # the request for B is in flight
            nursery.cancel_scope.cancel()
    assert len(errors) == 1  # released with an error, not left hanging or falsely "done"
    # Leaving a handle's block after the manager stopped does not hang.
    async with done:
        pass
    assert not done.active
    with pytest.raises(UsageError):
        await manager.subscribe(symbols=["C"], data_types="trades", handler=print)
