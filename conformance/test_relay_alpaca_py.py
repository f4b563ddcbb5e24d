"""Conformance: unmodified alpaca-py stream clients through the trioalpaca relay.

One background thread runs trio with the emulator and the relay (inspected through a trio
token); each alpaca-py stream runs its own asyncio loop in a thread, pointed at the relay with
``url_override`` and a *local* key. The emulator only ever sees the relay's upstream key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

alpaca = pytest.importorskip("alpaca")

from _support import Recorder, problems  # noqa: E402
from alpaca.data.enums import DataFeed  # noqa: E402
from alpaca.data.live import CryptoDataStream, NewsDataStream, StockDataStream  # noqa: E402
from alpaca.data.models import News, Orderbook, Quote, Trade  # noqa: E402
from alpaca.trading.models import TradeUpdate  # noqa: E402
from alpaca.trading.stream import TradingStream  # noqa: E402

from trioalpaca import open_stream  # noqa: E402
from trioalpaca.relay import Relay, serve_relay  # noqa: E402
from trioalpaca.testing import Emulator, open_emulator  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT = 30.0
UP_KEY, UP_SECRET = "PKRELAYUPSTREAM", "relay-upstream-secret"
LOCAL = {f"user{i}": f"pw{i}" for i in range(8)}


class Harness:
    """The emulator and the relay running in a trio thread."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.emu: Emulator | None = None
        self.relay: Relay | None = None
        self.nursery: trio.Nursery | None = None
        self.ready = threading.Event()
        self.stop: trio.Event | None = None
        self.error: BaseException | None = None

    async def main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with (
            open_emulator(
                speed=60,
                rate=20,
                news_interval=10,
                scripted_orders=0.3,
                seed=42,
                credentials={UP_KEY: UP_SECRET},
            ) as emu,
            trio.open_nursery() as nursery,
        ):
            self.emu = emu
            self.nursery = nursery
            self.relay = await nursery.start(
                lambda task_status: serve_relay(
                    (UP_KEY, UP_SECRET),
                    local_keys=LOCAL,
                    port=0,
                    upstream_url=emu.url,
                    task_status=task_status,
                )
            )
            self.ready.set()
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    def run(self) -> None:
        try:
            trio.run(self.main)
        except BaseException as exc:  # pragma: no cover - reported by the fixture
            self.error = exc
            self.ready.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the trio thread (synchronously) and return its result."""
        return trio.from_thread.run_sync(fn, trio_token=self.token)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    thread = threading.Thread(target=h.run, daemon=True)
    thread.start()
    assert h.ready.wait(20), "relay did not start"
    assert h.error is None, h.error
    try:
        yield h
    finally:
        assert h.stop is not None
        trio.from_thread.run_sync(h.stop.set, trio_token=h.token)
        thread.join(20)
        assert h.relay is not None and h.emu is not None
        assert h.relay.errors == [] and h.emu.errors == []


def run_streams(streams: list[tuple[Any, Recorder]], caplog: pytest.LogCaptureFixture) -> None:
    """Run alpaca-py streams, each in a thread, until every recorder is done; then stop them."""
    caplog.set_level(logging.INFO)
    threads = [threading.Thread(target=s.run, daemon=True) for s, _ in streams]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        finished = all(rec.done.wait(max(0.0, deadline - time.monotonic())) for _, rec in streams)
    finally:
        for stream, _ in streams:
            limit = time.monotonic() + 5
            while getattr(stream, "_loop", None) is None and time.monotonic() < limit:
                time.sleep(0.05)
            stream.stop()
        for t in threads:
            t.join(15)
    missing = [rec.missing() for _, rec in streams]
    assert finished, f"channels without a message: {missing}"
    assert not any(t.is_alive() for t in threads), "alpaca-py stream did not stop"
    assert not problems(caplog.records, logging.WARNING)


def test_five_stock_clients_one_upstream_each_gets_its_own_symbols(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    assert harness.relay is not None and harness.emu is not None
    url = harness.relay.url_for("iex")
    sets = [("AAPL", "MSFT"), ("TSLA",), ("NVDA", "AMZN"), ("SPY", "AAPL"), ("META", "GOOG")]
    streams = []
    for i, syms in enumerate(sets):
        rec = Recorder({"trades", "quotes"})
        s = StockDataStream(f"user{i}", f"pw{i}", feed=DataFeed.IEX, url_override=url)
        s.subscribe_trades(rec.handler("trades"), *syms)
        s.subscribe_quotes(rec.handler("quotes"), *syms)
        streams.append((s, rec))

    # and a trioalpaca client on the same relay, in the trio thread
    got_trio: list[Any] = []
    trio_done = threading.Event()

    async def trioalpaca_client() -> None:
        async with open_stream("user7", "pw7", feed="iex", url=url, trades=["IBM"]) as s:
            async for msg in s:
                got_trio.append(msg)
                if len(got_trio) >= 10:
                    trio_done.set()
                    break

    assert harness.nursery is not None
    harness.call(lambda: harness.nursery.start_soon(trioalpaca_client))  # type: ignore[union-attr]
    run_streams(streams, caplog)
    assert trio_done.wait(TIMEOUT)
    for (_, rec), syms in zip(streams, sets, strict=True):
        assert all(isinstance(m, Trade) for m in rec.got["trades"])
        assert all(isinstance(m, Quote) for m in rec.got["quotes"])
        assert {m.symbol for m in rec.got["trades"] + rec.got["quotes"]} <= set(syms)
    assert {m.symbol for m in got_trio} == {"IBM"}
    iex = harness.call(lambda: [c for c in harness.emu.connections if c.feed == "iex"])  # type: ignore[union-attr]
    assert len(iex) == 1, "exactly one upstream connection for six downstream clients"
    assert iex[0].key == UP_KEY


def test_crypto_news_and_trading_through_the_relay(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    assert harness.relay is not None
    relay = harness.relay
    crypto_rec = Recorder({"trades", "quotes", "orderbooks"})
    crypto = CryptoDataStream("user1", "pw1", url_override=relay.url_for("crypto/us"))
    pairs = ("BTC/USD", "ETH/USD")
    crypto.subscribe_trades(crypto_rec.handler("trades"), *pairs)
    crypto.subscribe_quotes(crypto_rec.handler("quotes"), *pairs)
    crypto.subscribe_orderbooks(crypto_rec.handler("orderbooks"), *pairs)

    news_rec = Recorder({"news"})
    news = NewsDataStream("user2", "pw2", url_override=relay.url_for("news"))
    news.subscribe_news(news_rec.handler("news"), "*")

    trade_rec = Recorder({"new", "fill"})
    updates: list[TradeUpdate] = []

    async def on_update(update: TradeUpdate) -> None:
        updates.append(update)
        event = str(getattr(update.event, "value", update.event))
        if event in ("new", "fill"):
            trade_rec.add(event, update)

    trading = TradingStream("user3", "pw3", url_override=relay.url_for("trading"))
    trading.subscribe_trade_updates(on_update)

    run_streams([(crypto, crypto_rec), (news, news_rec), (trading, trade_rec)], caplog)
    assert all(isinstance(m, Orderbook) for m in crypto_rec.got["orderbooks"])
    assert {m.symbol for m in crypto_rec.got["trades"]} <= set(pairs)
    assert all(isinstance(m, News) and m.headline for m in news_rec.got["news"])
    assert all(isinstance(u, TradeUpdate) for u in updates)
    feeds = harness.call(lambda: sorted(c.feed for c in harness.emu.connections))  # type: ignore[union-attr]
    for feed in ("crypto/us", "news", "trading"):
        assert feeds.count(feed) == 1, feeds
