"""The emulator's synthetic market and order flow (pure code, no sockets)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from trioalpaca.testing._market import (
    MINUTE_NS,
    NS,
    Market,
    MarketConfig,
    family_of_symbol,
    is_occ_symbol,
)
from trioalpaca.testing._orders import OrderFlow

START = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z


def run(family: str, minutes: float, *, step_s: float = 60.0, **cfg: Any) -> list[Any]:
    config = MarketConfig(**{"seed": 7, "rate": 20.0, "speed": 60.0, **cfg})
    m = Market(family, config, START)
    out = []
    t = START
    end = START + int(minutes * MINUTE_NS)
    while t < end:
        t = min(end, t + int(step_s * NS))
        out.extend(m.advance(t))
    return out


def test_deterministic_and_independent_of_step_size() -> None:
    a = run("stocks", 5, step_s=60)
    b = run("stocks", 5, step_s=0.37)
    assert a == b
    assert a != run("stocks", 5, seed=8)
    assert len(a) > 500


def test_bars_are_the_aggregate_of_the_trades_sent() -> None:
    events = run("stocks", 12, late_trade_probability=0.2)
    trades: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    final_bar: dict[tuple[str, int], dict[str, Any]] = {}
    seen_kinds = set()
    for channel, symbol, msg in events:
        if channel == "trades":
            trades[(symbol, msg["t"] // MINUTE_NS * MINUTE_NS)].append(msg)
        elif channel in ("bars", "updatedBars"):
            seen_kinds.add(channel)
            if channel == "updatedBars":
                assert (symbol, msg["t"]) in final_bar, "updated bar before the bar"
            final_bar[(symbol, msg["t"])] = msg
    assert seen_kinds == {"bars", "updatedBars"}
    assert len(final_bar) > 30
    for key, bar in final_bar.items():
        ts = sorted(trades[key], key=lambda m: m["t"])
        assert bar["n"] == len(ts)
        assert bar["v"] == sum(m["s"] for m in ts)
        assert bar["o"] == ts[0]["p"]
        assert bar["c"] == ts[-1]["p"]
        assert bar["h"] == max(m["p"] for m in ts)
        assert bar["l"] == min(m["p"] for m in ts)
        vwap = sum(m["p"] * m["s"] for m in ts) / bar["v"]
        assert bar["vw"] == pytest.approx(vwap, rel=1e-6)
        assert isinstance(bar["v"], int) and isinstance(bar["n"], int)
    # a minute with trades always gets a bar (except the still-open last minute)
    last = max(k[1] for k in trades)
    assert {k for k in trades if k[1] < last} <= set(final_bar)


def test_daily_bar_is_cumulative() -> None:
    events = run("stocks", 4)
    so_far: dict[str, list[dict[str, Any]]] = defaultdict(list)
    checked = 0
    for channel, symbol, msg in events:
        if channel == "trades":
            so_far[symbol].append(msg)
        elif channel == "dailyBars":
            ts = so_far[symbol]
            assert msg["t"] == START  # UTC day start
            assert msg["n"] == len(ts)
            assert msg["v"] == sum(m["s"] for m in ts)
            assert msg["h"] == max(m["p"] for m in ts)
            assert msg["o"] == min(ts, key=lambda m: m["t"])["p"]
            checked += 1
    assert checked >= 18


def test_quotes_have_bid_below_ask_and_messages_are_well_formed() -> None:
    events = run("stocks", 6)
    kinds = defaultdict(int)
    for channel, _symbol, msg in events:
        kinds[channel] += 1
        assert next(iter(msg)) == "T"
        assert isinstance(msg["t"], int)
        if channel == "quotes":
            assert 0 < msg["bp"] < msg["ap"]
            assert isinstance(msg["bs"], int) and isinstance(msg["as"], int)
        elif channel == "trades":
            assert isinstance(msg["s"], int) and isinstance(msg["i"], int)
            assert msg["z"] in "ABC"
        elif channel == "lulds":
            assert msg["d"] < msg["u"]
        elif channel == "statuses":
            assert {"sc", "sm", "rc", "rm", "z"} <= msg.keys()
        elif channel == "corrections":
            assert msg["oi"] != msg["ci"]
        elif channel == "cancelErrors":
            assert msg["a"] == "C"
    for ch in ("trades", "quotes", "bars", "dailyBars", "lulds", "statuses", "corrections"):
        assert kinds[ch] > 0, ch


def test_halted_symbols_do_not_trade() -> None:
    events = run("stocks", 20, status_interval=30.0)
    halted: dict[str, bool] = defaultdict(bool)
    n_halts = 0
    for channel, symbol, msg in events:
        if channel == "statuses":
            halted[symbol] = msg["sc"] == "H"
            n_halts += msg["sc"] == "H"
        elif channel in ("trades", "quotes"):
            assert not halted[symbol]
    assert n_halts > 0


def test_crypto_book_deltas_keep_a_valid_book() -> None:
    config = MarketConfig(seed=3, rate=50.0, speed=60.0)
    m = Market("crypto", config, START)
    m.advance(START + 10 * NS)
    snap = m.orderbook_snapshot("BTC/USD")
    assert snap is not None and snap["r"] is True
    bids = {lv["p"]: lv["s"] for lv in snap["b"]}
    asks = {lv["p"]: lv["s"] for lv in snap["a"]}
    deltas = 0
    for t in range(1, 200):
        for channel, symbol, msg in m.advance(START + (10 + t) * NS):
            if channel != "orderbooks" or symbol != "BTC/USD":
                continue
            deltas += 1
            assert msg["r"] is False
            for side, book in (("b", bids), ("a", asks)):
                for lv in msg[side]:
                    if lv["s"] == 0:
                        book.pop(lv["p"], None)
                    else:
                        book[lv["p"]] = lv["s"]
            assert bids and asks
            assert max(bids) < min(asks), "crossed book"
            assert all(s > 0 for s in (*bids.values(), *asks.values()))
    assert deltas > 50
    final = m.orderbook_snapshot("BTC/USD")
    assert final is not None
    assert {lv["p"]: lv["s"] for lv in final["b"]} == bids
    assert {lv["p"]: lv["s"] for lv in final["a"]} == asks


def test_crypto_options_perps_and_news_shapes() -> None:
    crypto = run("crypto", 2)
    assert any(
        c == "trades" and isinstance(m["s"], float) and m["tks"] in "BS" for c, _, m in crypto
    )
    assert any(c == "bars" and isinstance(m["v"], float) for c, _, m in crypto)
    options = run("options", 2)
    trades = [m for c, _, m in options if c == "trades"]
    assert trades and all(isinstance(m["c"], str) and is_occ_symbol(m["S"]) for m in trades)
    assert all(m["bp"] < m["ap"] for c, _, m in options if c == "quotes")
    perps = run("perps", 2)
    assert any(c == "pricing" and {"ip", "mp", "fr", "oi", "ft"} <= m.keys() for c, _, m in perps)
    news = run("news", 10)
    assert news
    keys = {"id", "headline", "summary", "author", "created_at", "updated_at", "content", "url"}
    for channel, symbol, msg in news:
        assert channel == "news" and symbol == ""
        assert keys | {"symbols", "source"} <= msg.keys()
        assert msg["symbols"]


def test_test_feed_is_fakepaca_and_symbols_partition() -> None:
    assert {s for _, s, _ in run("test", 2)} == {"FAKEPACA"}
    cfg = MarketConfig(symbols=("IBM", "BTC/USD", "AAPL250117C00150000", "ETH-PERP"))
    assert cfg.universe("stocks") == ("IBM",)
    assert cfg.universe("crypto") == ("BTC/USD",)
    assert cfg.universe("options") == ("AAPL250117C00150000",)
    assert cfg.universe("perps") == ("ETH-PERP",)
    assert family_of_symbol("BRK.B") == "stocks"


def test_extra_symbols_and_rate_zero() -> None:
    m = Market("stocks", MarketConfig(seed=1, rate=10, speed=60), START)
    m.add_symbols(["IBM"])
    assert any(s == "IBM" for _, s, _ in m.advance(START + 5 * MINUTE_NS))
    quiet = Market("stocks", MarketConfig(seed=1, rate=0), START)
    assert quiet.advance(START + 10 * MINUTE_NS) == []
    with pytest.raises(ValueError, match="unknown market family"):
        Market("bonds", MarketConfig(), START)


def test_order_flow_quantities_are_consistent() -> None:
    flow = OrderFlow(seed=1)
    order, steps = flow.submit("AAPL", 100, "buy", now_ns=START, plan="partial", price="10.00")
    events = [flow.apply(order.id, s, START + i) for i, s in enumerate(steps)]
    assert [e["event"] for e in events if e] == ["new", "partial_fill", "partial_fill", "fill"]
    fills = [e for e in events if e and e["event"] in ("fill", "partial_fill")]
    assert sum(Decimal(e["qty"]) for e in fills) == 100
    assert fills[-1]["order"]["status"] == "filled"
    assert Decimal(fills[-1]["order"]["filled_qty"]) == 100
    assert Decimal(fills[-1]["position_qty"]) == 100
    for e in events:
        assert e is not None and e["timestamp"].endswith("Z") and e["order"]["id"] == order.id
    sell, steps = flow.submit("AAPL", 30, "sell", now_ns=START, plan="cancel")
    events = [flow.apply(sell.id, s, START) for s in steps]
    assert [e["event"] for e in events if e] == ["new", "partial_fill", "canceled"]
    assert Decimal(events[-1]["order"]["filled_qty"]) < 30  # type: ignore[index]
    assert flow.positions["AAPL"] == 100 - Decimal(events[1]["qty"])  # type: ignore[index]
    held, steps = flow.submit("MSFT", 1, now_ns=START, plan="hold")
    assert [flow.apply(held.id, s, START)["event"] for s in steps] == ["new"]  # type: ignore[index]
    assert flow.cancel(held.id, START + 1) is not None
    assert flow.cancel(held.id, START + 2) is None
    assert flow.expire("nope", START) is None
    with pytest.raises(ValueError, match="plan"):
        flow.submit("AAPL", 1, now_ns=START, plan="bogus")  # type: ignore[arg-type]


def test_fast_forward_skips_time_and_keeps_bars_consistent() -> None:
    config = MarketConfig(seed=11, rate=20.0, speed=60.0, late_trade_probability=0.2)
    m = Market("stocks", config, START)
    m.advance(START + 90 * NS)
    skip_to = START + 3 * MINUTE_NS + 17 * NS
    m.fast_forward(skip_to)
    m.fast_forward(skip_to - NS)  # going back is a no-op
    events = m.advance(START + 12 * MINUTE_NS)
    bar_types = ("bars", "updatedBars", "dailyBars")
    assert events and all(msg["t"] > skip_to for c, _, msg in events if c not in bar_types)
    first_minute = skip_to // MINUTE_NS * MINUTE_NS
    assert all(msg["t"] >= first_minute for c, _, msg in events if c in bar_types[:2])
    trades: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    final: dict[tuple[str, int], dict[str, Any]] = {}
    for channel, symbol, msg in events:
        if channel == "trades":
            trades[(symbol, msg["t"] // MINUTE_NS * MINUTE_NS)].append(msg)
        elif channel in ("bars", "updatedBars"):
            final[(symbol, msg["t"])] = msg
    assert len(final) > 20
    for key, bar in final.items():
        assert bar["n"] == len(trades[key])
        assert bar["v"] == sum(m["s"] for m in trades[key])
    crypto = Market("crypto", config, START)
    crypto.advance(START + 10 * NS)
    crypto.fast_forward(START + 10 * MINUTE_NS)
    assert any(c == "orderbooks" for c, _, _ in crypto.advance(START + 11 * MINUTE_NS))
