"""Client niceties users of alpaca-py and trio expect: default feed, feed from the URL, log labels,
symbol checks, run()/aclose() for nursery.start, DATA_PROXY_WS, the trading-feed warning."""

from __future__ import annotations

import logging

import pytest
import trio

from tests.helpers import in_memory
from trioalpaca import (
    AlpacaWebSocketClient,
    AuthFailedError,
    Reconnected,
    Trade,
    UsageError,
    open_stream,
)
from trioalpaca.endpoints import (
    DEFAULT_FEED,
    StreamKind,
    check_symbol,
    feed_from_url,
    proxy_from_env,
    stream_url,
)
from trioalpaca.testing import open_emulator

KEY, SECRET = "PKFRONT", "front-secret"


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATA_PROXY_WS", "DATA_CRYPTO_PROXY_WS"):
        monkeypatch.delenv(var, raising=False)


def test_default_feed_is_iex() -> None:
    assert DEFAULT_FEED == "iex"
    client = AlpacaWebSocketClient(KEY, SECRET)
    assert client.endpoint.feed == "iex"
    assert client.url == "wss://stream.data.alpaca.markets/v2/iex"


@pytest.mark.parametrize(
    ("url", "feed"),
    [
        ("ws://127.0.0.1:1/v2/sip", "sip"),
        ("ws://127.0.0.1:1/v2/iex/", "iex"),
        ("ws://127.0.0.1:1/relay/v1beta3/crypto/us", "crypto/us"),
        ("ws://127.0.0.1:1/v1beta1/indicative", "indicative"),
        ("ws://127.0.0.1:1/v1beta1/news", "news"),
        ("ws://127.0.0.1:1/v1beta1/crypto-perps/global", "crypto-perps/global"),
        ("ws://127.0.0.1:1/stream", None),  # trading is chosen by stream_type, never inferred
        ("ws://127.0.0.1:1/custom", None),
    ],
)
def test_feed_follows_the_url(url: str, feed: str | None) -> None:
    assert feed_from_url(url) == feed
    client = AlpacaWebSocketClient(KEY, SECRET, url=url)
    assert client.endpoint.feed == (feed or "iex")
    assert client.url == url


def test_explicit_feed_wins_over_the_url() -> None:
    client = AlpacaWebSocketClient(KEY, SECRET, feed="sip", url="ws://h:1/v2/iex")
    assert client.endpoint.feed == "sip"


def test_otc_is_refused_naming_the_valid_feeds() -> None:
    with pytest.raises(UsageError, match=r"no real-time websocket feed 'otc'.*valid feeds:.*iex"):
        AlpacaWebSocketClient(KEY, SECRET, feed="otc")
    with pytest.raises(UsageError, match=r"unknown feed 'nope'; valid feeds: .*sip"):
        AlpacaWebSocketClient(KEY, SECRET, feed="nope")


def test_trading_stream_warns_that_the_feed_is_ignored() -> None:
    with pytest.warns(UserWarning, match="feed='sip' is ignored"):
        client = AlpacaWebSocketClient(KEY, SECRET, stream_type="trading", feed="sip")
    assert client.endpoint.feed == "trading"
    # No feed, no warning (filterwarnings=error would fail the test otherwise).
    AlpacaWebSocketClient(KEY, SECRET, stream_type="trading")


@pytest.mark.parametrize(
    ("symbol", "match"),
    [
        ("", "must not be empty"),
        ("AA PL", "'AA PL'"),
        (" AAPL", "' AAPL'"),
        ("AAPL,MSFT", "'AAPL,MSFT'.*pass a list"),
        ("AAPL\n", "control characters|spaces"),
        (3, "must be strings"),
    ],
)
def test_bad_symbols_are_refused_naming_them(symbol: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_symbol(symbol)
    with pytest.raises(UsageError, match=match):
        AlpacaWebSocketClient(KEY, SECRET, trades=["MSFT", symbol])  # type: ignore[list-item]


def test_symbols_are_upper_cased() -> None:
    assert check_symbol("btc/usd") == "BTC/USD"
    assert check_symbol("*") == "*"
    client = AlpacaWebSocketClient(KEY, SECRET, trades=["aapl", "AAPL"], quotes="msft")
    assert client._subs.desired == {"trades": ("AAPL",), "quotes": ("MSFT",)}


def test_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_PROXY_WS", "ws://127.0.0.1:9")
    assert AlpacaWebSocketClient(KEY, SECRET, feed="sip").url == "ws://127.0.0.1:9/v2/sip"
    # Go-style base with the version segment
    monkeypatch.setenv("DATA_PROXY_WS", "http://127.0.0.1:9/v2")
    assert AlpacaWebSocketClient(KEY, SECRET).url == "ws://127.0.0.1:9/v2/iex"
    assert AlpacaWebSocketClient(KEY, SECRET, feed="news").url == "ws://127.0.0.1:9/v1beta1/news"
    # explicit arguments win; the trading stream ignores it
    assert AlpacaWebSocketClient(KEY, SECRET, url="ws://h:2/v2/iex").url == "ws://h:2/v2/iex"
    assert AlpacaWebSocketClient(KEY, SECRET, base_url="ws://h:2").url == "ws://h:2/v2/iex"
    trading = AlpacaWebSocketClient(KEY, SECRET, stream_type="trading")
    assert trading.url == "wss://paper-api.alpaca.markets/stream"
    # crypto prefers its own variable
    assert proxy_from_env(StreamKind.CRYPTO) == "http://127.0.0.1:9/v2"
    monkeypatch.setenv("DATA_CRYPTO_PROXY_WS", "ws://127.0.0.1:8")
    crypto = AlpacaWebSocketClient(KEY, SECRET, feed="crypto/us")
    assert crypto.url == "ws://127.0.0.1:8/v1beta3/crypto/us"


def test_base_url_with_version_segment() -> None:
    assert stream_url("sip", base_url="ws://h:1/v2") == "ws://h:1/v2/sip"
    assert stream_url("boats", base_url="ws://h:1/v1beta1") == "ws://h:1/v1beta1/boats"
    assert stream_url("boats", base_url="ws://h:1/v2") == "ws://h:1/v1beta1/boats"
    assert stream_url("news", base_url="ws://h:1/proxy/v1beta3") == "ws://h:1/proxy/v1beta1/news"


async def test_proxy_env_reaches_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_emulator(symbols=["AAPL"], rate=200) as emu:
        monkeypatch.setenv("DATA_PROXY_WS", emu.url)
        async with open_stream(
            KEY, SECRET, trades=["aapl"], stream_factory=in_memory(emu)
        ) as stream:
            assert stream.url == emu.url_for("iex")
            assert stream.subscriptions == {"trades": ("AAPL",)}
            with trio.fail_after(10):
                async for msg in stream:
                    if isinstance(msg, Trade):
                        assert msg.symbol == "AAPL"
                        break


async def test_subscribe_refuses_bad_symbols_before_sending() -> None:
    async with (
        open_emulator(symbols=["AAPL"], rate=0) as emu,
        open_stream(
            KEY, SECRET, url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"]
        ) as stream,
    ):
        with pytest.raises(UsageError, match="'MS FT'"):
            await stream.subscribe(quotes=["MSFT", "MS FT"])
        await stream.subscribe(quotes=["msft"])
        assert stream.subscriptions == {"trades": ("AAPL",), "quotes": ("MSFT",)}


async def test_log_label_follows_the_url(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioalpaca.client")
    async with (
        open_emulator(symbols=["AAPL"], rate=200) as emu,
        open_stream(
            KEY, SECRET, url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"]
        ) as stream,
    ):
        emu.drop(feed="iex")
        with trio.fail_after(20):
            async for msg in stream:
                if isinstance(msg, Reconnected):
                    break
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost
    assert all(m.startswith(f"stream iex at {emu.url_for('iex')} lost") for m in lost)
    assert not any("sip" in r.getMessage() for r in caplog.records)


async def test_nursery_start_and_aclose() -> None:
    async with open_emulator(symbols=["AAPL"], rate=200) as emu:
        client = open_stream(
            KEY, SECRET, url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"]
        )
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                stream = await nursery.start(client.run)
                assert stream is client
                assert stream.state == "connected"
                msg = await stream.receive()
                assert isinstance(msg, Trade)
                await stream.aclose()
                assert stream.state == "closed"
                await stream.aclose()  # idempotent
        # the run task ended with aclose, so the nursery closed by itself
        assert client.state == "closed"


async def test_aclose_inside_async_with_ends_iteration() -> None:
    async with (
        open_emulator(symbols=["AAPL"], rate=200) as emu,
        open_stream(
            KEY, SECRET, url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"]
        ) as stream,
    ):
        await stream.aclose()
        assert stream.state == "disconnected"
        with trio.fail_after(5):
            rest = [m async for m in stream]  # buffered messages, then the end
        assert all(isinstance(m, Trade) for m in rest)
    assert stream.state == "closed"


async def test_run_raises_fatal_errors_into_the_nursery() -> None:
    async with open_emulator(symbols=["AAPL"], rate=0, credentials={KEY: SECRET}) as emu:
        client = open_stream(
            KEY, "wrong", url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"]
        )
        with pytest.RaisesGroup(AuthFailedError):
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)


async def test_stream_manager_uses_the_client_symbol_rule() -> None:
    from trioalpaca import Trade, open_stream_manager

    got: list[str] = []

    async def on_trade(msg: object) -> None:
        if isinstance(msg, Trade):
            got.append(msg.symbol)

    async with (
        open_emulator(symbols=["AAPL"], rate=300) as emu,
        open_stream(KEY, SECRET, url=emu.url_for("iex"), stream_factory=in_memory(emu)) as stream,
        open_stream_manager(stream) as manager,
    ):
        with pytest.raises(UsageError, match="'AA PL'"):
            await manager.subscribe(symbols=["AA PL"], data_types=["trades"], handler=on_trade)
        sub = await manager.subscribe(symbols=["aapl"], data_types=["trades"], handler=on_trade)
        assert sub.symbols == {"AAPL"}
        with trio.fail_after(10):
            while not got:
                await trio.sleep(0.01)
    assert set(got) == {"AAPL"}
