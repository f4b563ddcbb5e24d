"""The emulator's protocol behaviour over real sockets, checked with a bare trio-websocket client
(independent of trioalpaca's own client and codec)."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import msgpack
import pytest
import trio
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.helpers import ws_connect
from trioalpaca.testing import Emulator, open_emulator

MSGPACK = [("Content-Type", "application/msgpack")]
WELCOME = [{"T": "success", "msg": "connected"}]
AUTHENTICATED = [{"T": "success", "msg": "authenticated"}]


class Client:
    """Minimal client speaking the wire format by hand."""

    def __init__(self, ws: WebSocketConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding

    def decode(self, frame: bytes | str) -> Any:
        if self.encoding == "msgpack":
            assert isinstance(frame, bytes), "msgpack sessions get binary frames"
            return msgpack.unpackb(frame, timestamp=2)
        assert isinstance(frame, str), "JSON sessions get text frames"
        return json.loads(frame)

    async def recv(self) -> Any:
        return self.decode(await self.ws.get_message())

    async def send(self, obj: dict[str, Any]) -> None:
        if self.encoding == "msgpack":
            await self.ws.send_message(msgpack.packb(obj))
        else:
            await self.ws.send_message(json.dumps(obj))

    async def request(self, obj: dict[str, Any]) -> Any:
        await self.send(obj)
        return await self.recv()

    async def control(self) -> dict[str, Any]:
        """Next control message (skipping data frames)."""
        while True:
            msgs = await self.recv()
            if len(msgs) == 1 and msgs[0]["T"] in ("success", "error", "subscription"):
                return dict(msgs[0])


async def upgrade_status(emu: Emulator, path: str) -> int:
    """HTTP status of a websocket upgrade request (a raw request: trio-websocket's client leaks its
    socket when the upgrade is rejected)."""
    stream = await trio.open_tcp_stream(emu.host, emu.port)
    async with stream:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {emu.host}:{emu.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, "connection closed before the status line"
            data += chunk
    return int(data.split(b" ", 2)[1])


@asynccontextmanager
async def connect(
    emu: Emulator,
    feed: str = "iex",
    *,
    encoding: str = "msgpack",
    key: str | None = "key",
    secret: str = "secret",
) -> AsyncIterator[Client]:
    headers = MSGPACK if encoding == "msgpack" else []
    async with ws_connect(emu.url_for(feed), headers) as ws:
        c = Client(ws, encoding)
        assert await c.recv() == WELCOME
        if key is not None:
            assert (
                await c.request({"action": "auth", "key": key, "secret": secret}) == AUTHENTICATED
            )
        yield c


async def test_handshake_and_full_state_acks() -> None:
    async with open_emulator(rate=0) as emu, connect(emu) as c:
        assert emu.url.startswith("ws://127.0.0.1:")
        ack = await c.request({"action": "subscribe", "trades": ["AAPL"], "quotes": ["MSFT"]})
        assert ack == [
            {
                "T": "subscription",
                "trades": ["AAPL"],
                "quotes": ["MSFT"],
                "bars": [],
                "updatedBars": [],
                "dailyBars": [],
                "statuses": [],
                "lulds": [],
                "corrections": ["AAPL"],
                "cancelErrors": ["AAPL"],
                "imbalances": [],
            }
        ]
        ack = await c.request(
            {"action": "subscribe", "trades": ["TSLA"], "bars": None, "lulds": []}
        )
        assert ack[0]["trades"] == ["AAPL", "TSLA"]
        assert ack[0]["cancelErrors"] == ["AAPL", "TSLA"]
        ack = await c.request({"action": "unsubscribe", "trades": ["AAPL"], "quotes": ["MSFT"]})
        assert ack[0]["trades"] == ["TSLA"] and ack[0]["quotes"] == []
        assert next(iter(ack[0])) == "T"
        stats = emu.connections[0]
        assert stats.authenticated and stats.key == "key"
        assert stats.subscriptions["corrections"] == ("TSLA",)
        assert stats.received_frames == 4


async def test_every_endpoint_path_is_served_and_unknown_paths_get_404() -> None:
    paths = ["/v2/iex", "/v2/sip", "/v2/delayed_sip", "/v2/test", "/v1beta1/boats"]
    paths += ["/v1beta1/overnight", "/v2/boats", "/v2/overnight", "/v1beta3/crypto/us"]
    paths += ["/v1beta3/crypto/us-1", "/v1beta3/crypto/eu-1", "/v1beta1/crypto-perps/global"]
    paths += ["/v1beta1/opra", "/v1beta1/indicative", "/v1beta1/news"]
    async with open_emulator(rate=0) as emu:
        for path in paths:
            async with ws_connect(emu.url + path, MSGPACK) as ws:
                assert msgpack.unpackb(await ws.get_message()) == WELCOME, path
        for path in ("/stream", "/stream/"):
            async with ws_connect(emu.url + path) as ws:
                await ws.send_message(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
                reply = json.loads(await ws.get_message())
                assert reply["data"]["status"] == "authorized"
        for path in ("/v2/nope", "/v1beta3/crypto", "/"):
            assert await upgrade_status(emu, path) == 404
        assert await upgrade_status(emu, "/v2/iex") == 101


async def test_json_sessions_use_text_frames_and_rfc3339() -> None:
    async with (
        open_emulator(rate=50, speed=60, seed=3) as emu,
        connect(emu, encoding="json") as c,
    ):
        ack = await c.request({"action": "subscribe", "trades": ["AAPL"]})
        assert ack[0]["T"] == "subscription"
        msgs = await c.recv()
        assert msgs[0]["T"] == "t" and msgs[0]["S"] == "AAPL"
        assert isinstance(msgs[0]["t"], str) and msgs[0]["t"].endswith("Z")


async def test_msgpack_timestamps_are_ext_minus_one_and_sizes_are_ints() -> None:
    async with open_emulator(rate=50, speed=60, seed=3) as emu, connect(emu) as c:
        await c.request({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]})
        raw = await c.ws.get_message()
        assert isinstance(raw, bytes)
        msgs = msgpack.unpackb(raw, timestamp=0)
        for m in msgs:
            assert isinstance(m["t"], msgpack.Timestamp)
            assert isinstance(m["s" if m["T"] == "t" else "bs"], int)


async def test_request_errors() -> None:
    async with open_emulator(rate=0, symbol_limit=3) as emu:
        async with connect(emu, key=None) as c:
            assert (await c.request({"action": "subscribe", "trades": ["AAPL"]}))[0]["code"] == 401
            await c.send({"action": "auth", "key": "k", "secret": "s"})
            assert await c.recv() == AUTHENTICATED
            assert (await c.request({"action": "auth", "key": "k", "secret": "s"}))[0][
                "code"
            ] == 403
            assert (await c.request({"action": "dance"}))[0]["code"] == 400
            assert (await c.request({"action": "subscribe", "trades": "AAPL"}))[0]["code"] == 400
            assert (await c.request({"action": "subscribe", "orderbooks": ["X"]}))[0]["code"] == 410
            ack = await c.request({"action": "subscribe", "trades": ["A", "B"], "orderbooks": []})
            assert ack[0]["trades"] == ["A", "B"]
            err = await c.request({"action": "subscribe", "quotes": ["C", "D"]})
            assert err == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
            ack = await c.request({"action": "subscribe", "quotes": ["A"]})
            assert ack[0]["trades"] == ["A", "B"] and ack[0]["quotes"] == ["A"]
        async with connect(emu, "opra") as c:
            err = await c.request({"action": "subscribe", "quotes": ["*"]})
            assert err[0]["code"] == 413
            assert (await c.request({"action": "subscribe", "bars": ["SPY"]}))[0]["code"] == 410
        async with connect(emu, "news") as c:
            assert (await c.request({"action": "subscribe", "trades": ["AAPL"]}))[0]["code"] == 410
        assert emu.errors == []


async def test_options_need_msgpack() -> None:
    async with open_emulator(rate=0) as emu, ws_connect(emu.url_for("indicative")) as ws:
        assert json.loads(await ws.get_message()) == WELCOME
        err = json.loads(await ws.get_message())
        assert err[0]["code"] == 412
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_credentials_and_plan() -> None:
    async with open_emulator(rate=0, credentials={"k": "s"}, allowed_feeds=["iex", "news"]) as emu:
        async with connect(emu, key=None) as c:
            err = await c.request({"action": "auth", "key": "k", "secret": "wrong"})
            assert err == [{"T": "error", "code": 402, "msg": "auth failed"}]
            with pytest.raises(ConnectionClosed):
                await c.recv()
        async with connect(emu, key="k", secret="s"):
            pass
        async with connect(emu, "sip", key=None) as c:
            err = await c.request({"action": "auth", "key": "k", "secret": "s"})
            assert err[0]["code"] == 409
    async with open_emulator(rate=0) as emu, connect(emu, key=None) as c:
        assert (await c.request({"action": "auth", "key": "", "secret": "x"}))[0]["code"] == 402


async def test_auth_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=0) as emu, connect(emu, key=None) as c:
        start = trio.current_time()
        err = await c.recv()
        assert err == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        assert trio.current_time() - start == pytest.approx(10.0, abs=0.1)
        with pytest.raises(ConnectionClosed):
            await c.recv()


async def test_connection_limit_per_key_and_endpoint() -> None:
    async with open_emulator(rate=0) as emu:
        async with connect(emu, key="a"):
            async with connect(emu, key=None) as second:
                err = await second.request({"action": "auth", "key": "a", "secret": "s"})
                assert err[0]["code"] == 406
            async with connect(emu, key="b"), connect(emu, "sip", key="a"):
                pass
        with trio.fail_after(5):
            while emu.open_connections("iex"):
                await trio.sleep(0.01)
        async with connect(emu, key="a"):
            pass
        emu.set_connection_limit(2)
        async with connect(emu, key="a"), connect(emu, key="a"):
            pass


async def test_fragmented_requests_are_reassembled() -> None:
    async with open_emulator(rate=0) as emu, connect(emu) as c:
        symbols = [f"S{i:04d}" for i in range(3000)]
        data = msgpack.packb({"action": "subscribe", "trades": symbols})
        assert len(data) > 4 * 4096
        pieces = [data[i : i + 4096] for i in range(0, len(data), 4096)]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            await c.ws._send(wsproto.events.BytesMessage(data=piece, message_finished=last))
        ack = await c.recv()
        assert ack[0]["trades"] == symbols


async def test_pings_are_answered_under_load() -> None:
    async with open_emulator(rate=0, burst=100) as emu, connect(emu) as c:
        await c.request({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]})
        received = 0

        async def drain() -> None:
            nonlocal received
            while True:
                await c.ws.get_message()
                received += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            for _ in range(5):
                with trio.fail_after(5):
                    await c.ws.ping()
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert received > 20
        assert emu.connections[0].data_messages > 2000


async def test_bars_match_the_trades_received(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=40, speed=60, seed=5) as emu, connect(emu) as c:
        ack = await c.request({"action": "subscribe", "trades": ["AAPL"], "bars": ["AAPL"]})
        assert ack[0]["T"] == "subscription"
        await c.send({"action": "subscribe", "updatedBars": ["AAPL"]})
        trades: dict[int, list[dict[str, Any]]] = defaultdict(list)
        bars: dict[int, dict[str, Any]] = {}
        first_minute: int | None = None
        while len(bars) < 7:
            for m in await c.recv():
                if m["T"] == "t":
                    minute = m["t"] // 60_000_000_000 * 60_000_000_000
                    trades[minute].append(m)
                    if first_minute is None:
                        first_minute = minute
                elif m["T"] in ("b", "u"):
                    bars[m["t"]] = m
        assert first_minute is not None
        checked = 0
        last_minute = max(bars)
        for minute, bar in bars.items():
            if minute <= first_minute:
                continue  # subscribed mid-minute: earlier trades were not received
            if minute == last_minute:
                # a late print for the newest bar may have arrived in the same batch as the bar,
                # before its updated bar: the loop stopped between the two
                continue
            ts = sorted(trades[minute], key=lambda m: m["t"])
            assert bar["n"] == len(ts)
            assert bar["v"] == sum(m["s"] for m in ts)
            assert (bar["o"], bar["c"]) == (ts[0]["p"], ts[-1]["p"])
            assert (bar["h"], bar["l"]) == (max(m["p"] for m in ts), min(m["p"] for m in ts))
            checked += 1
        assert checked >= 4
        assert emu.connections[0].data_messages >= sum(len(v) for v in trades.values())


async def test_orderbook_snapshot_follows_the_ack_then_deltas_keep_a_valid_book() -> None:
    async with open_emulator(rate=100, speed=60, seed=2) as emu, connect(emu, "crypto/us") as c:
        await c.send({"action": "subscribe", "orderbooks": ["BTC/USD"], "trades": ["ETH/USD"]})
        ack = await c.recv()
        assert ack[0]["T"] == "subscription" and ack[0]["orderbooks"] == ["BTC/USD"]
        books = []
        while len(books) < 60:
            books += [m for m in await c.recv() if m["T"] == "o"]
        assert books[0]["r"] is True and all(b["r"] is False for b in books[1:])
        bids = {lv["p"]: lv["s"] for lv in books[0]["b"]}
        asks = {lv["p"]: lv["s"] for lv in books[0]["a"]}
        for delta in books[1:]:
            for side, book in (("b", bids), ("a", asks)):
                for lv in delta[side]:
                    if lv["s"] == 0:
                        book.pop(lv["p"], None)
                    else:
                        book[lv["p"]] = lv["s"]
            assert bids and asks and max(bids) < min(asks)
            assert all(s > 0 for s in (*bids.values(), *asks.values()))


async def test_star_test_feed_news_and_options() -> None:
    async with open_emulator(rate=50, speed=60, news_interval=5, seed=4) as emu:
        async with connect(emu, "test") as c:
            await c.request({"action": "subscribe", "trades": ["*"]})
            seen = {m["S"] for _ in range(5) for m in await c.recv()}
            assert seen == {"FAKEPACA"}
        async with connect(emu) as c:
            await c.request({"action": "subscribe", "quotes": ["*"]})
            seen = set()
            while len(seen) < 6:
                for m in await c.recv():
                    assert m["T"] == "q" and m["bp"] < m["ap"]
                    seen.add(m["S"])
        async with connect(emu, "news") as c:
            await c.request({"action": "subscribe", "news": ["AAPL"]})
            for _ in range(3):
                for m in await c.recv():
                    assert m["T"] == "n" and "AAPL" in m["symbols"] and m["source"]
        async with connect(emu, "opra") as c:
            await c.request({"action": "subscribe", "trades": ["AAPL250117C00150000"]})
            msgs = await c.recv()
            assert all(m["T"] == "t" and isinstance(m["c"], str) for m in msgs)


async def test_publish_routes_by_subscription() -> None:
    async with open_emulator(rate=0) as emu, connect(emu) as c:
        await c.request({"action": "subscribe", "trades": ["AAPL"]})
        t0 = 1_767_225_600_000_000_000
        trade = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 1.5, "s": 3, "c": ["@"], "t": t0}
        emu.publish("iex", [{**trade, "S": "MSFT"}, trade, {**trade, "T": "q", "S": "AAPL"}])
        assert await c.recv() == [trade]
        assert emu.connections[0].data_messages == 1


async def test_trading_stream_order_flow() -> None:
    async with open_emulator(rate=0, credentials={"k": "s"}) as emu:
        async with ws_connect(emu.url_for("trading")) as ws:

            async def call(obj: dict[str, Any]) -> dict[str, Any]:
                await ws.send_message(json.dumps(obj))
                frame = await ws.get_message()
                assert isinstance(frame, bytes)  # JSON in binary frames, like paper
                return dict(json.loads(frame))

            listen = {"action": "listen", "data": {"streams": ["trade_updates"]}}
            assert (await call(listen))["data"] == {"status": "unauthorized", "action": "listen"}
            auth = {"action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}}
            assert (await call(auth))["data"]["status"] == "authorized"
            assert await call(listen) == {
                "stream": "listening",
                "data": {"streams": ["trade_updates"]},
            }
            oid = emu.submit_order("AAPL", 90, "buy", plan="partial", price="100")
            events = [json.loads(await ws.get_message())["data"] for _ in range(4)]
            assert [e["event"] for e in events] == ["new", "partial_fill", "partial_fill", "fill"]
            assert all(e["order"]["id"] == oid and e["timestamp"] for e in events)
            assert sum(Decimal(e["qty"]) for e in events[1:]) == 90
            assert events[-1]["position_qty"] == "90"
            assert events[-1]["order"]["status"] == "filled"
            held = emu.submit_order("MSFT", 5, plan="hold")
            assert json.loads(await ws.get_message())["data"]["event"] == "new"
            assert emu.cancel_order(held)
            assert not emu.cancel_order(held)
            update = json.loads(await ws.get_message())["data"]
            assert update["event"] == "canceled" and update["order"]["status"] == "canceled"
            emu.submit_order("SPY", 1, plan="expire")
            evs = [json.loads(await ws.get_message())["data"]["event"] for _ in range(2)]
            assert evs == ["new", "expired"]
        async with ws_connect(emu.url_for("trading")) as ws:
            await ws.send_message(json.dumps({"action": "auth", "key": "k", "secret": "bad"}))
            reply = json.loads(await ws.get_message())
            assert reply["data"] == {"status": "unauthorized", "action": "auth"}
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        stats = next(c for c in emu.connections if c.feed == "trading")
        assert stats.data_messages == 8 and stats.listening == ("trade_updates",)
        assert emu.errors == []


async def test_header_authentication() -> None:
    async with open_emulator(rate=0, credentials={"k": "s"}) as emu:
        headers = [*MSGPACK, ("APCA-API-KEY-ID", "k"), ("APCA-API-SECRET-KEY", "s")]
        async with ws_connect(emu.url_for("iex"), headers) as ws:
            c = Client(ws, "msgpack")
            assert await c.recv() == WELCOME
            assert await c.recv() == AUTHENTICATED
            ack = await c.request({"action": "subscribe", "trades": ["AAPL"]})
            assert ack[0]["trades"] == ["AAPL"]
            assert (await c.request({"action": "auth", "key": "k", "secret": "s"}))[0][
                "code"
            ] == 403
        basic = [("Authorization", "Basic " + base64.b64encode(b"k:bad").decode())]
        async with ws_connect(emu.url_for("news"), basic) as ws:
            c = Client(ws, "json")
            assert await c.recv() == WELCOME
            assert (await c.recv())[0]["code"] == 402


async def test_trading_stream_has_no_connection_limit() -> None:
    async with (
        open_emulator(rate=0) as emu,
        ws_connect(emu.url_for("trading")) as a,
        ws_connect(emu.url_for("trading")) as b,
    ):
        for ws in (a, b):
            await ws.send_message(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
            assert json.loads(await ws.get_message())["data"]["status"] == "authorized"


async def test_delayed_sip_timestamps_are_15_minutes_old() -> None:
    async with (
        open_emulator(rate=50, speed=1, seed=9) as emu,
        connect(emu, "delayed_sip") as c,
    ):
        await c.request({"action": "subscribe", "quotes": ["AAPL"]})
        msgs = await c.recv()
        lag = emu.market_ns() - msgs[0]["t"]
        assert 15 * 60 * 10**9 <= lag < 16 * 60 * 10**9


async def test_idle_market_costs_nothing_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    import time

    async with open_emulator(rate=50, speed=60, seed=1) as emu, connect(emu) as c:
        await c.request({"action": "subscribe", "trades": ["AAPL"]})
        await c.recv()
        ack = await c.request({"action": "unsubscribe", "trades": ["AAPL"]})
        while ack[0]["T"] != "subscription":  # data sent before the unsubscribe
            ack = await c.recv()
        wall = time.perf_counter()
        await trio.sleep(5000)  # 83 market hours at speed 60 with nobody listening
        assert time.perf_counter() - wall < 2.0
        before = emu.market_ns()
        await c.request({"action": "subscribe", "trades": ["AAPL"]})
        msgs = await c.recv()
        assert msgs[0]["T"] == "t" and msgs[0]["t"] >= before
