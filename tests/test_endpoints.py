"""Tests for feeds, paths, channel tables, channel name mapping and URL building."""

from __future__ import annotations

import pytest

from trioalpaca import UsageError
from trioalpaca.endpoints import (
    CHANNELS,
    FEEDS,
    PYTHON_CHANNEL_NAMES,
    WIRE_CHANNEL_NAMES,
    Endpoint,
    StreamKind,
    channel_to_python,
    channel_to_wire,
    resolve_feed,
    stream_url,
)

PATHS = {
    "iex": "/v2/iex",
    "sip": "/v2/sip",
    "delayed_sip": "/v2/delayed_sip",
    "test": "/v2/test",
    "boats": "/v1beta1/boats",
    "overnight": "/v1beta1/overnight",
    "crypto/us": "/v1beta3/crypto/us",
    "crypto/us-1": "/v1beta3/crypto/us-1",
    "crypto/eu-1": "/v1beta3/crypto/eu-1",
    "crypto-perps/global": "/v1beta1/crypto-perps/global",
    "opra": "/v1beta1/opra",
    "indicative": "/v1beta1/indicative",
    "news": "/v1beta1/news",
    "trading": "/stream",
}


@pytest.mark.parametrize(("feed", "path"), sorted(PATHS.items()))
def test_paths(feed: str, path: str) -> None:
    ep = FEEDS[feed]
    assert ep.feed == feed
    assert ep.path == path


def test_aliases() -> None:
    assert FEEDS["options"] is FEEDS["opra"]
    assert FEEDS["crypto"] is FEEDS["crypto/us"]
    assert resolve_feed("SIP") is FEEDS["sip"]
    assert resolve_feed(" Options ") is FEEDS["opra"]
    assert resolve_feed(FEEDS["news"]) is FEEDS["news"]


def test_unknown_feed_lists_valid_feeds() -> None:
    with pytest.raises(UsageError) as info:
        resolve_feed("otc")
    assert "otc" in str(info.value)
    assert "delayed_sip" in str(info.value) and "crypto/us" in str(info.value)
    with pytest.raises(ValueError):
        resolve_feed("nope")


def test_kinds_and_msgpack_only() -> None:
    for feed in ("iex", "sip", "delayed_sip", "boats", "overnight", "test"):
        assert FEEDS[feed].kind is StreamKind.STOCKS
        assert FEEDS[feed].mirrors_trades
    for feed in ("crypto/us", "crypto/us-1", "crypto/eu-1", "crypto-perps/global"):
        assert FEEDS[feed].kind is StreamKind.CRYPTO
        assert not FEEDS[feed].mirrors_trades
    assert FEEDS["opra"].kind is FEEDS["indicative"].kind is StreamKind.OPTIONS
    assert FEEDS["news"].kind is StreamKind.NEWS
    assert FEEDS["trading"].kind is StreamKind.TRADING
    only = {name for name, ep in FEEDS.items() if ep.msgpack_only}
    assert only == {"opra", "indicative", "options"}
    assert StreamKind("crypto") is StreamKind.CRYPTO and StreamKind.NEWS.value == "news"


def test_channel_sets() -> None:
    assert FEEDS["sip"].channels == {
        "trades",
        "quotes",
        "bars",
        "dailyBars",
        "updatedBars",
        "statuses",
        "lulds",
        "imbalances",
    }
    assert "corrections" not in FEEDS["sip"].channels  # server-maintained, never requested
    assert FEEDS["crypto/us"].channels == CHANNELS[StreamKind.CRYPTO]
    assert "orderbooks" in FEEDS["crypto/us"].channels
    assert "pricing" not in FEEDS["crypto/us"].channels
    assert FEEDS["crypto-perps/global"].channels == CHANNELS[StreamKind.CRYPTO] | {"pricing"}
    assert FEEDS["opra"].channels == {"trades", "quotes"}
    assert FEEDS["news"].channels == {"news"}
    assert FEEDS["trading"].channels == {"trade_updates"}


def test_ack_key_sets() -> None:
    stock = FEEDS["iex"].ack_channels
    assert set(stock) == FEEDS["iex"].channels | {"corrections", "cancelErrors"}
    assert len(stock) == len(set(stock))
    assert FEEDS["crypto/us"].ack_channels == (
        "trades",
        "quotes",
        "orderbooks",
        "bars",
        "updatedBars",
        "dailyBars",
    )
    assert FEEDS["crypto-perps/global"].ack_channels[-1] == "pricing"
    assert FEEDS["opra"].ack_channels == ("trades", "quotes")
    assert FEEDS["news"].ack_channels == ("news",)
    for ep in FEEDS.values():
        assert ep.channels <= set(ep.ack_channels) or ep.kind is StreamKind.TRADING


def test_custom_endpoint_derives_ack_keys() -> None:
    ep = Endpoint("mine", "/v2/mine", StreamKind.STOCKS, frozenset({"trades"}))
    assert "cancelErrors" in ep.ack_channels


def test_default_urls() -> None:
    assert stream_url("sip") == "wss://stream.data.alpaca.markets/v2/sip"
    assert stream_url(FEEDS["boats"]) == "wss://stream.data.alpaca.markets/v1beta1/boats"
    assert stream_url("crypto/eu-1") == "wss://stream.data.alpaca.markets/v1beta3/crypto/eu-1"
    assert stream_url("options") == "wss://stream.data.alpaca.markets/v1beta1/opra"
    assert stream_url("trading") == "wss://paper-api.alpaca.markets/stream"
    assert stream_url("trading", paper=False) == "wss://api.alpaca.markets/stream"


def test_sandbox_urls() -> None:
    assert stream_url("iex", sandbox=True) == "wss://stream.data.sandbox.alpaca.markets/v2/iex"
    assert (
        stream_url("news", sandbox=True) == "wss://stream.data.sandbox.alpaca.markets/v1beta1/news"
    )
    with pytest.raises(UsageError, match="sandbox"):
        stream_url("trading", sandbox=True)


def test_base_url_override() -> None:
    assert stream_url("sip", base_url="ws://127.0.0.1:8765") == "ws://127.0.0.1:8765/v2/sip"
    assert stream_url("sip", base_url="http://127.0.0.1:8765/") == "ws://127.0.0.1:8765/v2/sip"
    assert (
        stream_url("opra", base_url="https://proxy.example") == "wss://proxy.example/v1beta1/opra"
    )
    assert stream_url("news", base_url="localhost:9") == "wss://localhost:9/v1beta1/news"
    # already ends with the path: no doubling
    assert stream_url("sip", base_url="ws://h:1/v2/sip") == "ws://h:1/v2/sip"
    # a prefix path is kept
    assert stream_url("sip", base_url="ws://h:1/proxy") == "ws://h:1/proxy/v2/sip"
    assert stream_url("trading", base_url="ws://h:1", paper=False) == "ws://h:1/stream"


def test_full_url_override_wins() -> None:
    url = "ws://127.0.0.1:5/v2/iex?x=1"
    assert stream_url("sip", url=url, base_url="ws://other:1", sandbox=True) == url
    assert stream_url("sip", url="https://h/custom") == "wss://h/custom"


@pytest.mark.parametrize("bad", ["ftp://h/x", "ws://", "mailto:x"])
def test_bad_urls(bad: str) -> None:
    with pytest.raises(UsageError):
        stream_url("sip", base_url=bad)


def test_channel_name_mapping() -> None:
    assert channel_to_wire("daily_bars") == "dailyBars"
    assert channel_to_wire("dailyBars") == "dailyBars"
    assert channel_to_wire("updated_bars") == "updatedBars"
    assert channel_to_wire("cancel_errors") == "cancelErrors"
    assert channel_to_wire("trades") == "trades"
    assert channel_to_python("dailyBars") == "daily_bars"
    assert channel_to_python("daily_bars") == "daily_bars"
    assert channel_to_python("cancelErrors") == "cancel_errors"
    for py, wire in zip(PYTHON_CHANNEL_NAMES, WIRE_CHANNEL_NAMES, strict=True):
        assert channel_to_wire(py) == wire
        assert channel_to_python(wire) == py
    # every subscribable channel of every endpoint has a python name
    for ep in FEEDS.values():
        for ch in ep.channels:
            assert channel_to_wire(channel_to_python(ch)) == ch
    with pytest.raises(UsageError, match="daily_bars"):
        channel_to_wire("dailybars")
    with pytest.raises(UsageError):
        channel_to_python("candles")
