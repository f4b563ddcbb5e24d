"""Hypothesis drives random client behaviour against one emulator; it must stay up.

Each example is a list of actions by up to three raw websocket clients -- connect (any feed and
encoding), authenticate (well or badly), subscription floods of up to 5,000 symbols,
unsubscribes, garbage frames (bytes, text, JSON, msgpack), raw TCP garbage, abrupt TCP closes,
clean closes and plain not reading (slow clients) -- run in one trio test while a control client
(trioalpaca's own) streams from the same emulator. Afterwards the emulator must have recorded no
internal error, the control client must never have been disconnected, and a trade published now
must still reach it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

from trioalpaca import Trade, open_stream
from trioalpaca.testing import Emulator, open_emulator

FEEDS = {"iex": "/v2/iex", "test": "/v2/test", "crypto/us": "/v1beta3/crypto/us"}
CHANNELS = {
    "iex": ("trades", "quotes", "bars"),
    "test": ("trades", "quotes", "dailyBars"),
    "crypto/us": ("trades", "quotes", "orderbooks"),
}
CLIENTS = 3
T0 = 1_767_225_600_000_000_000

client_ids = st.integers(0, CLIENTS - 1)
garbage = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(json.dumps),
    st.fixed_dictionaries(
        {"action": st.sampled_from(["auth", "subscribe", "unsubscribe", "listen", "zz"])},
        optional={"trades": st.lists(st.text(max_size=6), max_size=5), "key": st.text(max_size=6)},
    ).map(lambda d: msgpack.packb(d)),
)
actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("connect"),
            client_ids,
            st.sampled_from(sorted(FEEDS)),
            st.sampled_from(["json", "msgpack"]),
        ),
        st.tuples(st.just("auth"), client_ids, st.booleans()),
        st.tuples(
            st.just("subscribe"), client_ids, st.integers(0, 2), st.sampled_from([1, 20, 5000])
        ),
        st.tuples(
            st.just("unsubscribe"), client_ids, st.integers(0, 2), st.sampled_from([1, 5000])
        ),
        st.tuples(st.just("garbage"), client_ids, garbage),
        st.tuples(st.just("read"), client_ids, st.integers(1, 5)),
        st.tuples(st.just("abort"), client_ids),
        st.tuples(st.just("close"), client_ids),
        st.tuples(st.just("raw_tcp"), st.binary(max_size=200)),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.01, 0.05])),
    ),
    max_size=25,
)


@dataclass
class _Client:
    ws: WebSocketConnection
    tcp: trio.SocketStream
    feed: str
    encoding: str
    dead: bool = False
    subscribed: dict[str, list[str]] = field(default_factory=dict)

    def encode(self, obj: dict[str, Any]) -> bytes | str:
        return msgpack.packb(obj) if self.encoding == "msgpack" else json.dumps(obj)


def _symbols(feed: str, n: int) -> list[str]:
    if feed == "crypto/us":
        return [f"X{i}/USD" for i in range(n)]
    return [f"S{i:04d}" for i in range(n)]


class _Driver:
    def __init__(self, emu: Emulator, nursery: trio.Nursery) -> None:
        self.emu = emu
        self.nursery = nursery
        self.clients: dict[int, _Client] = {}

    async def run(self, action: tuple[Any, ...]) -> None:
        kind = action[0]
        try:
            await getattr(self, "_" + kind)(*action[1:])
        except (
            ConnectionClosed,
            HandshakeError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ):
            # the server hung up on this client (garbage, bad auth, slow client...): fine
            if len(action) > 1 and isinstance(action[1], int) and action[1] in self.clients:
                await self._abort(action[1])

    async def _connect(self, cid: int, feed: str, encoding: str) -> None:
        await self._abort(cid)
        tcp = await trio.open_tcp_stream(self.emu.host, self.emu.port)
        headers = [("Content-Type", "application/msgpack")] if encoding == "msgpack" else []
        with trio.fail_after(5):
            ws = await wrap_client_stream(
                self.nursery, tcp, self.emu.host, FEEDS[feed], extra_headers=headers
            )
        self.clients[cid] = _Client(ws, tcp, feed, encoding)

    async def _auth(self, cid: int, good: bool) -> None:
        c = self.clients.get(cid)
        if c is not None:
            key = f"fuzz{cid}" if good else ""
            await c.ws.send_message(c.encode({"action": "auth", "key": key, "secret": "s"}))

    async def _subscribe(self, cid: int, channel: int, n: int, action: str = "subscribe") -> None:
        c = self.clients.get(cid)
        if c is not None:
            name = CHANNELS[c.feed][channel]
            await c.ws.send_message(c.encode({"action": action, name: _symbols(c.feed, n)}))

    async def _unsubscribe(self, cid: int, channel: int, n: int) -> None:
        await self._subscribe(cid, channel, n, "unsubscribe")

    async def _garbage(self, cid: int, frame: bytes | str) -> None:
        c = self.clients.get(cid)
        if c is not None:
            await c.ws.send_message(frame)

    async def _read(self, cid: int, n: int) -> None:
        c = self.clients.get(cid)
        if c is not None:
            with trio.move_on_after(0.05):
                for _ in range(n):
                    await c.ws.get_message()

    async def _abort(self, cid: int) -> None:
        c = self.clients.pop(cid, None)
        if c is not None:
            await c.tcp.aclose()  # no close frame: the server sees the TCP stream vanish

    async def _close(self, cid: int) -> None:
        c = self.clients.pop(cid, None)
        if c is not None:
            with trio.move_on_after(1):
                await c.ws.aclose()
            await c.tcp.aclose()

    async def _raw_tcp(self, payload: bytes) -> None:
        tcp = await trio.open_tcp_stream(self.emu.host, self.emu.port)
        try:
            await tcp.send_all(payload)
        finally:
            await tcp.aclose()

    async def _sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def close_all(self) -> None:
        for cid in list(self.clients):
            await self._abort(cid)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions)
async def test_random_clients_cannot_take_the_emulator_down(script: list[tuple[Any, ...]]) -> None:
    async with open_emulator(rate=1, symbols=["AAPL", "BTC/USD"], send_buffer_limit=64_000) as emu:
        async with open_stream(
            "control", "s", url=emu.url_for("iex"), trades=["AAPL"], staleness_timeout=None
        ) as control:
            async with trio.open_nursery() as nursery:
                driver = _Driver(emu, nursery)
                with trio.fail_after(30):
                    for action in script:
                        await driver.run(action)
                await driver.close_all()
                nursery.cancel_scope.cancel()
            # The emulator is still serving: a trade published now reaches the control client.
            marker = {"T": "t", "S": "AAPL", "i": 999_999, "x": "V", "p": 1.0, "s": 1}
            emu.publish("iex", [{**marker, "c": ["@"], "t": T0}])
            with trio.fail_after(10):
                async for msg in control:
                    if isinstance(msg, Trade) and msg.trade_id == 999_999:
                        break
            assert control.get_metrics()["reconnects"] == 0
        assert emu.errors == []
