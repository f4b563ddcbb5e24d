"""Client basics against the emulator: streaming, subscriptions, handlers, credentials, metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trioalpaca
from tests.helpers import in_memory
from trioalpaca import (
    AlpacaWebSocketClient,
    CredentialsError,
    ErrorReport,
    Quote,
    SymbolLimitError,
    Trade,
    TradeCancel,
    TradeCorrection,
    UsageError,
    open_stream,
)
from trioalpaca.testing import Emulator, open_emulator

KEY = "PKTESTKEY0123456789"
SECRET = "sEcReT-do-not-leak-0123456789abcdef"


@asynccontextmanager
async def emulator(**kwargs: Any) -> AsyncIterator[Emulator]:
    kwargs.setdefault("symbols", ["AAPL", "MSFT", "TSLA"])
    kwargs.setdefault("rate", 200.0)
    async with open_emulator(**kwargs) as emu:
        yield emu


def client(emu: Emulator, feed: str = "iex", **kwargs: Any) -> AlpacaWebSocketClient:
    kwargs.setdefault("heartbeat_interval", 1.0)
    kwargs.setdefault("stream_factory", in_memory(emu))
    return open_stream(KEY, SECRET, feed=feed, url=emu.url_for(feed), **kwargs)


async def take(stream: AlpacaWebSocketClient, n: int) -> list[Any]:
    out = []
    async for msg in stream:
        out.append(msg)
        if len(out) >= n:
            break
    return out


async def test_typed_stream_only_subscribed(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"], quotes=["MSFT"]) as stream:
        assert stream.state == "connected"
        assert stream.subscriptions["trades"] == ("AAPL",)
        assert stream.subscriptions["quotes"] == ("MSFT",)
        msgs = await take(stream, 200)
        kinds = {(type(m), m.symbol) for m in msgs}
        mirrors = {(TradeCorrection, "AAPL"), (TradeCancel, "AAPL")}  # follow trades
        assert kinds <= {(Trade, "AAPL"), (Quote, "MSFT"), *mirrors}
        assert (Trade, "AAPL") in kinds and (Quote, "MSFT") in kinds
        assert all(isinstance(m.timestamp_ns, int) for m in msgs)
        m = stream.get_metrics()
        assert m["messages_received"] >= 200
        assert m["bytes_received"] > 0
        assert m["state"] == "connected"
        assert m["reconnects"] == 0
        assert m["dropped"] == 0
        assert m["p50_latency_ms"] is not None and m["p99_latency_ms"] >= m["p50_latency_ms"]
        assert m["avg_latency_ms"] is not None
        assert m["last_message_age_s"] is not None and m["last_message_age_s"] >= 0
        assert m["subscriptions"]["trades"] == ("AAPL",)
        assert m["messages_per_second"] > 0
    assert stream.state == "closed"


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_raw_dicts(autojump_clock: trio.abc.Clock, encoding: str) -> None:
    async with (
        emulator() as emu,
        client(emu, raw_data=True, encoding=encoding, trades=["AAPL"], quotes=["AAPL"]) as stream,
    ):
        msgs = await take(stream, 50)
    assert all(type(m) is dict for m in msgs)
    assert {m["T"] for m in msgs} <= {"t", "q", "c", "x"}  # corrections/cancels follow trades
    assert all(m["S"] == "AAPL" and type(m["t"]) is int for m in msgs)
    # the emulator negotiated what we asked for
    assert emu.connections[0].encoding == encoding


async def test_json_typed(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, encoding="json", trades=["TSLA"]) as stream:
        msgs = await take(stream, 20)
    assert all(m.symbol == "TSLA" for m in msgs)
    assert {type(m) for m in msgs} <= {Trade, TradeCancel, TradeCorrection}


async def test_runtime_subscribe_unsubscribe(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        await stream.subscribe(quotes=["MSFT"], trades="TSLA")
        assert stream.subscriptions["quotes"] == ("MSFT",)
        assert set(stream.subscriptions["trades"]) == {"AAPL", "TSLA"}
        # the server agrees
        (conn,) = emu.open_connections("iex")
        assert set(conn.subscriptions["trades"]) == {"AAPL", "TSLA"}
        seen: set[tuple[type, str]] = set()
        async for msg in stream:
            seen.add((type(msg), msg.symbol))
            if {(Quote, "MSFT"), (Trade, "TSLA")} <= seen:
                break
        await stream.unsubscribe(trades=["AAPL", "TSLA"], quotes=["MSFT"])
        assert stream.subscriptions == {}
        # drain what was in flight, then nothing more arrives
        with trio.move_on_after(0.5):
            async for _ in stream:
                pass
        with trio.move_on_after(2) as cs:
            await stream.receive()
        assert cs.cancelled_caught


async def test_request_level_error_keeps_stream(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(symbol_limit=2) as emu, client(emu, trades=["AAPL"]) as stream:
        with pytest.raises(SymbolLimitError):
            await stream.subscribe(quotes=["MSFT", "TSLA"])
        assert stream.subscriptions == {"trades": ("AAPL",)}
        assert stream.state == "connected"
        msgs = await take(stream, 5)
        assert all(m.symbol == "AAPL" for m in msgs)
        assert stream.get_metrics()["reconnects"] == 0


async def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        open_stream(KEY, SECRET, feed="nope")
    with pytest.raises(UsageError):
        open_stream(KEY, SECRET, feed="iex", orderbooks=["AAPL"])
    with pytest.raises(UsageError):
        open_stream(KEY, SECRET, feed="opra", encoding="json")
    with pytest.raises(UsageError):
        open_stream(KEY, SECRET, overflow="explode")  # type: ignore[arg-type]
    stream = open_stream(KEY, SECRET, feed="iex")
    with pytest.raises(UsageError):
        stream.register_handler("bogus", _noop)
    with pytest.raises(UsageError):
        await stream.subscribe(trades=["AAPL"])  # outside the block


async def _noop(msg: Any) -> None:
    pass


async def test_handlers_coexist_and_filter(autojump_clock: trio.abc.Clock) -> None:
    got: dict[str, list[Any]] = {"t": [], "trades": [], "star": [], "msft": []}
    done = trio.Event()

    async def on_t(msg: Any) -> None:
        got["t"].append(msg)

    async def on_trades(msg: Any) -> None:
        got["trades"].append(msg)

    async def on_all(msg: Any) -> None:
        got["star"].append(msg)
        if len(got["star"]) >= 300:
            done.set()

    async def on_msft(msg: Any) -> None:
        got["msft"].append(msg)

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL", "MSFT"], quotes=["AAPL"])
        stream.register_handler("t", on_t)
        stream.register_handler("trades", on_trades)
        stream.register_handler("*", on_all)
        handle = stream.register_handler("quotes", on_msft, symbols=["MSFT"])
        stream.register_handler("q", on_msft, symbols="MSFT")
        async with stream:
            with pytest.raises(UsageError):
                await stream.receive()
            await done.wait()
            handle.remove()
            handle.remove()  # idempotent
    assert got["t"] and got["t"] == [m for m in got["trades"]]
    assert all(isinstance(m, Trade) for m in got["t"])
    assert any(isinstance(m, Quote) for m in got["star"])
    assert got["msft"] == []  # MSFT quotes are not subscribed


async def test_handler_errors_go_to_error_handler(autojump_clock: trio.abc.Clock) -> None:
    errors: list[tuple[BaseException, Any]] = []
    reports: list[ErrorReport] = []
    count = 0
    done = trio.Event()

    async def boom(msg: Any) -> None:
        nonlocal count
        count += 1
        if count >= 20:
            done.set()
        raise RuntimeError("handler bug")

    async def on_error(report: ErrorReport) -> None:
        errors.append((report.exception, report.message))
        reports.append(report)

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        stream.register_handler("trades", boom)
        stream.set_error_handler(on_error)
        async with stream:
            await done.wait()
            assert stream.state == "connected"
    assert len(errors) >= 19
    assert all(isinstance(e, RuntimeError) and isinstance(m, Trade) for e, m in errors)
    assert {(r.component, r.kind, r.action) for r in reports} == {("client", "trades", "continue")}
    assert reports[0].handler.endswith("boom") and reports[0].batch == (reports[0].message,)
    assert stream.get_metrics()["errors"]["handler"] >= 19


async def test_handler_errors_logged_by_default(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    done = trio.Event()

    async def boom(msg: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            done.set()
        raise RuntimeError("oops")

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        stream.register_handler("t", boom)
        async with stream:
            await done.wait()
    assert "message handler raised" in caplog.text


async def test_handler_errors_raise_policy(autojump_clock: trio.abc.Clock) -> None:
    async def boom(msg: Any) -> None:
        raise KeyError("stop here")

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"], handler_errors="raise")
        stream.register_handler("t", boom)
        with pytest.raises(KeyError, match="stop here"):
            async with stream:
                await trio.sleep(30)


async def test_iteration_after_handler_removed(autojump_clock: trio.abc.Clock) -> None:
    first = trio.Event()

    async def once(msg: Any) -> None:
        first.set()

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        handle = stream.register_handler("*", once)
        async with stream:
            await first.wait()
            handle.remove()
            # the dispatcher notices on its next message and hands the stream back
            with trio.fail_after(5):
                while True:
                    try:
                        msg = await stream.receive()
                        break
                    except UsageError:
                        await trio.sleep(0.01)
            assert isinstance(msg, Trade)


async def test_explicit_connect_disconnect(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"], auto_connect=False)
        async with stream:
            assert stream.state == "idle"
            assert emu.open_connections() == []
            await stream.connect()
            assert stream.state == "connected"
            await take(stream, 3)
            await stream.disconnect()
            assert stream.state == "disconnected"
            await trio.sleep(0.1)
            assert emu.open_connections() == []
            # buffered messages drain, then iteration ends
            async for _ in stream:
                pass
            await stream.connect()
            assert len(await take(stream, 3)) == 3
            assert emu.open_connections()[0].subscriptions["trades"] == ("AAPL",)


async def test_receive_batch(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(rate=2000) as emu, client(emu, trades=["AAPL"], quotes=["AAPL"]) as s:
        total = 0
        while total < 500:
            batch = await s.receive_batch(max_items=64)
            assert 1 <= len(batch) <= 64
            total += len(batch)


# ---------------------------------------------------------------- credentials and secrets


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialsError) as info:
        AlpacaWebSocketClient()
    assert "APCA_API_KEY_ID" in str(info.value) and "ALPACA_API_KEY" in str(info.value)
    monkeypatch.setenv("ALPACA_API_KEY", "k2")
    monkeypatch.setenv("ALPACA_API_SECRET", "s2")
    c = AlpacaWebSocketClient()
    assert c._settings.key.reveal() == "k2"
    monkeypatch.setenv("APCA_API_KEY_ID", "k1")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "s1")
    c = AlpacaWebSocketClient()
    assert (c._settings.key.reveal(), c._settings.secret.reveal()) == ("k1", "s1")
    c = AlpacaWebSocketClient("k0", "s0")
    assert (c._settings.key.reveal(), c._settings.secret.reveal()) == ("k0", "s0")
    with pytest.raises(CredentialsError, match="both"):
        AlpacaWebSocketClient("k0")
    with pytest.raises(CredentialsError):
        AlpacaWebSocketClient("", "")


async def test_secrets_never_logged_or_shown(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        assert SECRET not in repr(stream) and KEY not in repr(stream)
        async with stream:
            await take(stream, 10)
            emu.drop(feed="iex", how="reset")
            async for msg in stream:
                if isinstance(msg, trioalpaca.Reconnected):
                    break
            assert SECRET not in repr(stream)
            assert SECRET not in str(stream.get_metrics())
        emu.fail_auth(402, count=None)
        bad = client(emu, trades=["AAPL"])
        with pytest.raises(trioalpaca.AuthFailedError) as info:
            async with bad:
                pass
    text = caplog.text
    assert "reconnected" in text
    assert SECRET not in text and KEY not in text
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert KEY not in str(info.value)


# ---------------------------------------------------------------- other stream kinds


async def test_crypto_and_news_and_options(autojump_clock: trio.abc.Clock) -> None:
    symbols = ["AAPL", "BTC/USD", "AAPL250117C00150000"]
    async with emulator(symbols=symbols, news_interval=1.0) as emu:
        async with client(emu, "crypto/us", trades=["BTC/USD"], orderbooks=["BTC/USD"]) as s:
            msgs = await take(s, 20)
            types = {type(m).__name__ for m in msgs}
            assert types <= {"CryptoTrade", "Orderbook"}
        async with client(emu, "opra", trades=["*"]) as s:
            msgs = await take(s, 5)
            assert all(type(m).__name__ == "OptionTrade" for m in msgs)
        async with client(emu, "news", news=["*"]) as s:
            msgs = await take(s, 2)
            assert all(type(m).__name__ == "News" for m in msgs)


async def test_trading_stream(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator() as emu,
        open_stream(
            KEY,
            SECRET,
            stream_type="trading",
            url=emu.url_for("trading"),
            stream_factory=in_memory(emu),
        ) as stream,
    ):
        emu.submit_order("AAPL", qty=1)
        msgs = await take(stream, 2)
    assert all(type(m).__name__ == "TradeUpdate" for m in msgs)
    assert msgs[0].event == "new"


async def test_subscribe_needs_a_connection(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"], auto_connect=False)
        async with stream:
            with pytest.raises(UsageError):
                await stream.subscribe(quotes=["MSFT"])
            await stream.connect()
            await stream.subscribe(quotes=["MSFT"])
            await stream.disconnect()
            with pytest.raises(UsageError):
                await stream.unsubscribe(quotes=["MSFT"])
            # subscriptions survive disconnect/connect
            await stream.connect()
            (conn,) = emu.open_connections("iex")
            assert conn.subscriptions["quotes"] == ("MSFT",)
            assert conn.subscriptions["trades"] == ("AAPL",)


async def test_trading_stream_raw(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator() as emu,
        open_stream(
            KEY,
            SECRET,
            stream_type="trading",
            url=emu.url_for("trading"),
            raw_data=True,
            stream_factory=in_memory(emu),
        ) as stream,
    ):
        emu.submit_order("MSFT", qty=2, plan="cancel")
        msgs = await take(stream, 2)
    assert all(type(m) is dict and m["order"]["symbol"] == "MSFT" for m in msgs)
    assert [m["event"] for m in msgs][:1] == ["new"]


async def test_staleness_for_an_explicit_sparse_channel(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(rate=0) as emu,
        client(
            emu,
            daily_bars=["AAPL"],
            staleness_timeout={"daily_bars": 5.0},
            backoff=trioalpaca.Backoff(initial=1.0, cap=1.0, jitter="none"),
        ) as stream,
    ):
        t0 = trio.current_time()
        async for msg in stream:
            if isinstance(msg, trioalpaca.Reconnected):
                break
        # The watch looks every 5 / 4 s: the fifth look (6.25 s) sees more than 5 s of silence;
        # the reconnect follows after the 1 s backoff (no close handshake wait in memory).
        assert trio.current_time() - t0 == pytest.approx(5 * 1.25 + 1.0, abs=1e-9)
        assert stream.get_metrics()["errors"] == {"StaleStreamError": 1}


async def test_metrics_before_any_data() -> None:
    stream = open_stream(KEY, SECRET, feed="iex", url="ws://127.0.0.1:9/v2/iex")
    m = stream.get_metrics()
    assert m["state"] == "idle"
    assert m["messages_received"] == 0
    assert m["p50_latency_ms"] is None and m["last_message_age_s"] is None
    assert m["subscriptions"] == {} and m["errors"] == {}


async def test_control_handler_gets_markers(autojump_clock: trio.abc.Clock) -> None:
    markers: list[Any] = []
    got = trio.Event()

    async def on_control(msg: Any) -> None:
        markers.append(msg)
        got.set()

    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        stream.register_handler("control", on_control)
        stream.register_handler("t", _noop)
        async with stream:
            await trio.sleep(1)
            emu.drop(feed="iex")
            await got.wait()
    assert len(markers) == 1 and isinstance(markers[0], trioalpaca.Reconnected)
