"""Conformance: the official, unmodified alpaca-py stream clients against the trioalpaca emulator.

The emulator runs as ``trioalpaca emulator`` in a subprocess (market time 60x, so bars close every
second); each alpaca-py stream runs its own asyncio loop in a thread, pointed at the emulator with
``url_override``. Every test requires authentication, the subscription and at least one typed
message on every subscribed channel, and no ERROR log record or logged exception.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

alpaca = pytest.importorskip("alpaca")

from _support import Recorder, problems, running_emulator  # noqa: E402
from alpaca.data.enums import DataFeed  # noqa: E402
from alpaca.data.live import (  # noqa: E402
    CryptoDataStream,
    NewsDataStream,
    OptionDataStream,
    StockDataStream,
)
from alpaca.data.models import (  # noqa: E402
    Bar,
    News,
    Orderbook,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from alpaca.trading.models import TradeUpdate  # noqa: E402
from alpaca.trading.stream import TradingStream  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with running_emulator() as url:
        yield url


def run_stream(stream: Any, rec: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    """Run ``stream`` in a thread until every channel delivered, then stop it."""
    caplog.set_level(logging.INFO)
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        finished = rec.done.wait(TIMEOUT)
    finally:
        deadline = time.monotonic() + 5
        while getattr(stream, "_loop", None) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stream.stop()
        thread.join(15)
    missing = sorted(c for c in rec.wanted if not rec.got[c])
    assert finished, f"no message on {missing} within {TIMEOUT}s"
    assert not thread.is_alive(), "alpaca-py stream did not stop"
    bad = problems(caplog.records, logging.WARNING)
    assert not bad, bad


def test_stock_data_stream(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    channels = {"trades", "quotes", "bars", "updated_bars", "daily_bars", "statuses"}
    channels |= {"corrections", "cancels"}
    rec = Recorder(channels)
    stream = StockDataStream(
        "key-stocks", "secret", feed=DataFeed.IEX, url_override=emulator_url + "/v2/iex"
    )
    symbols = ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY")
    stream.subscribe_trades(rec.handler("trades"), *symbols)
    stream.subscribe_quotes(rec.handler("quotes"), *symbols)
    stream.subscribe_bars(rec.handler("bars"), "*")
    stream.subscribe_updated_bars(rec.handler("updated_bars"), "*")
    stream.subscribe_daily_bars(rec.handler("daily_bars"), *symbols)
    stream.subscribe_trading_statuses(rec.handler("statuses"), "*")
    stream.register_trade_corrections(rec.handler("corrections"))
    stream.register_trade_cancels(rec.handler("cancels"))
    run_stream(stream, rec, caplog)
    assert all(isinstance(m, Trade) for m in rec.got["trades"])
    assert all(isinstance(m, Quote) and m.bid_price < m.ask_price for m in rec.got["quotes"])
    for ch in ("bars", "updated_bars", "daily_bars"):
        assert all(isinstance(m, Bar) and m.low <= m.high for m in rec.got[ch])
    assert all(isinstance(m, TradingStatus) for m in rec.got["statuses"])
    assert all(isinstance(m, TradeCorrection) for m in rec.got["corrections"])
    assert all(isinstance(m, TradeCancel) for m in rec.got["cancels"])


def test_stock_test_feed_fakepaca(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder({"trades", "quotes"})
    stream = StockDataStream("key-test", "secret", url_override=emulator_url + "/v2/test")
    stream.subscribe_trades(rec.handler("trades"), "FAKEPACA")
    stream.subscribe_quotes(rec.handler("quotes"), "FAKEPACA")
    run_stream(stream, rec, caplog)
    assert {m.symbol for m in rec.got["trades"]} == {"FAKEPACA"}


def test_crypto_data_stream(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    channels = {"trades", "quotes", "bars", "updated_bars", "daily_bars", "orderbooks"}
    rec = Recorder(channels)
    stream = CryptoDataStream(
        "key-crypto", "secret", url_override=emulator_url + "/v1beta3/crypto/us"
    )
    pairs = ("BTC/USD", "ETH/USD", "SOL/USD")
    stream.subscribe_trades(rec.handler("trades"), *pairs)
    stream.subscribe_quotes(rec.handler("quotes"), *pairs)
    stream.subscribe_bars(rec.handler("bars"), *pairs)
    stream.subscribe_updated_bars(rec.handler("updated_bars"), *pairs)
    stream.subscribe_daily_bars(rec.handler("daily_bars"), *pairs)
    stream.subscribe_orderbooks(rec.handler("orderbooks"), *pairs)
    run_stream(stream, rec, caplog)
    books = rec.got["orderbooks"]
    assert all(isinstance(m, Orderbook) for m in books)
    first = {}
    for book in books:
        first.setdefault(book.symbol, book)
    assert all(b.reset for b in first.values()), "first orderbook message must be the snapshot"
    assert all(isinstance(m, Trade) for m in rec.got["trades"])


def test_option_data_stream(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder({"trades", "quotes"})
    stream = OptionDataStream("key-opt", "secret", url_override=emulator_url + "/v1beta1/opra")
    contracts = ("AAPL250117C00150000", "AAPL250117P00150000", "SPY250321C00500000")
    stream.subscribe_trades(rec.handler("trades"), *contracts)
    stream.subscribe_quotes(rec.handler("quotes"), *contracts)
    run_stream(stream, rec, caplog)
    assert {m.symbol for m in rec.got["trades"]} <= set(contracts)


def test_news_data_stream(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder({"news"})
    stream = NewsDataStream("key-news", "secret", url_override=emulator_url + "/v1beta1/news")
    stream.subscribe_news(rec.handler("news"), "*")
    run_stream(stream, rec, caplog)
    assert all(isinstance(m, News) and m.headline for m in rec.got["news"])


def test_trading_stream(emulator_url: str, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder({"new", "fill"})
    events: list[TradeUpdate] = []

    async def on_update(update: TradeUpdate) -> None:
        events.append(update)
        event = str(getattr(update.event, "value", update.event))
        if event in ("new", "fill"):
            await rec.handler(event)(update)

    stream = TradingStream("key-trading", "secret", url_override=emulator_url + "/stream")
    stream.subscribe_trade_updates(on_update)
    run_stream(stream, rec, caplog)
    assert all(isinstance(u, TradeUpdate) for u in events)
    fills = [u for u in events if str(getattr(u.event, "value", u.event)) == "fill"]
    assert all(u.qty and u.price and u.order.status.value == "filled" for u in fills)
