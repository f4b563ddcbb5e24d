"""Fault injection and named scenarios of the emulator, over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.helpers import ws_connect
from trioalpaca.testing import SCENARIOS, Emulator, open_emulator

MSGPACK = [("Content-Type", "application/msgpack")]


@asynccontextmanager
async def session(
    emu: Emulator, feed: str = "iex", *, key: str = "key", subscribe: dict[str, Any] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """Connected, authenticated (and subscribed) msgpack session."""
    async with ws_connect(emu.url_for(feed), MSGPACK) as ws:
        assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "connected"
        await ws.send_message(msgpack.packb({"action": "auth", "key": key, "secret": "s"}))
        reply = msgpack.unpackb(await ws.get_message())[0]
        assert reply == {"T": "success", "msg": "authenticated"}, reply
        if subscribe is not None:
            await ws.send_message(msgpack.packb({"action": "subscribe", **subscribe}))
            assert msgpack.unpackb(await ws.get_message())[0]["T"] == "subscription"
        yield ws


async def count_until_closed(ws: WebSocketConnection) -> tuple[int, int]:
    """Read data until the connection ends; return (messages, close code)."""
    n = 0
    while True:
        try:
            frame = await ws.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return n, exc.reason.code
        n += len(msgpack.unpackb(frame))


TRADES = {"trades": ["AAPL", "MSFT"], "quotes": ["AAPL"]}


@pytest.mark.parametrize(("how", "code"), [("reset", 1006), ("abort", 1006), (1011, 1011)])
async def test_drop_after_n_messages(how: Any, code: int) -> None:
    async with open_emulator(rate=200, speed=60, seed=1) as emu:
        emu.drop(after_messages=137, how=how)
        async with session(emu, subscribe=TRADES) as ws:
            received, close_code = await count_until_closed(ws)
        assert (received, close_code) == (137, code)
        stats = emu.connections[0]
        assert stats.data_messages == 137
        assert stats.close_reason is not None
        # the rule applied to one connection only
        async with session(emu, subscribe=TRADES) as ws:
            for _ in range(3):
                await ws.get_message()
        assert emu.errors == []


async def test_drop_now_and_after_seconds(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=20, speed=60) as emu:
        async with session(emu, subscribe=TRADES) as ws:
            emu.drop(how=1000)
            assert (await count_until_closed(ws))[1] == 1000
        emu.drop(after_seconds=7.5, how="reset", count=None)
        for _ in range(2):
            async with session(emu, subscribe=TRADES) as ws:
                start = trio.current_time()
                _, code = await count_until_closed(ws)
                assert code == 1006
                assert trio.current_time() - start == pytest.approx(7.5, abs=0.1)
        emu.clear_faults()
        async with session(emu, subscribe=TRADES) as ws:
            with trio.move_on_after(20):
                await count_until_closed(ws)
                pytest.fail("connection dropped although faults were cleared")


async def test_mute_with_and_without_pongs(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=50, speed=60) as emu, session(emu, subscribe=TRADES) as ws:
        await ws.get_message()
        emu.mute(pings=True)
        with trio.move_on_after(0.2):  # drain what was queued before the mute
            while True:
                await ws.get_message()
        with trio.move_on_after(5) as quiet:
            await ws.get_message()
        assert quiet.cancelled_caught, "data arrived on a mute connection"
        with trio.fail_after(1):
            await ws.ping()
        assert emu.connections[0].dropped_messages > 0
        emu.unmute()
        emu.mute(pings=False)
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(5):
                await ws.ping()
        emu.unmute()
        with trio.fail_after(5):
            await ws.ping()
            await ws.get_message()


async def test_mute_rule_for_new_connections(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=50, speed=60) as emu:
        emu.mute(after_seconds=3.0, pings=True)
        async with session(emu, subscribe=TRADES) as ws:
            start = last = trio.current_time()
            with trio.move_on_after(15):
                while True:
                    await ws.get_message()
                    last = trio.current_time()
            assert 2.5 < last - start <= 3.1
            assert emu.connections[0].muted
            with trio.fail_after(1):
                await ws.ping()


async def test_slow_client_gets_407_and_is_closed(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=5000, send_buffer_limit=256 * 1024) as emu:
        async with session(emu, subscribe={"trades": ["*"], "quotes": ["*"]}) as ws:
            with trio.fail_after(60):
                while emu.open_connections():
                    await trio.sleep(0.05)  # not reading: the server's buffer fills up
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await ws.get_message())
        stats = emu.connections[0]
        assert stats.errors_sent == [407]
        assert not stats.open
        # the 407 (when it got out at all: the client was not reading) is the last thing sent
        if frames and len(msgpack.unpackb(frames[-1])) == 1:
            assert msgpack.unpackb(frames[-1])[0]["code"] == 407
        assert emu.errors == []


async def test_reaping_period_holds_the_slot(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=0) as emu:
        emu.set_reap_period(90)
        async with session(emu, key="k") as ws:
            emu.drop(how="reset")
            await count_until_closed(ws)
        start = trio.current_time()
        attempts = 0
        while True:
            async with ws_connect(emu.url_for("iex"), MSGPACK) as ws:
                await ws.get_message()
                await ws.send_message(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
                reply = msgpack.unpackb(await ws.get_message())[0]
            attempts += 1
            if reply.get("msg") == "authenticated":
                break
            assert reply["code"] == 406
            await trio.sleep(10)
        assert attempts > 5
        assert 89 <= trio.current_time() - start <= 101
        # a clean close frees the slot as soon as the server has closed the session
        async with session(emu, key="j"):
            pass
        with trio.fail_after(1):
            while emu.open_connections():
                await trio.sleep(0.01)
        async with session(emu, key="j"):
            pass


async def test_upgrade_rejections_and_auth_failures() -> None:
    async with open_emulator(rate=0) as emu:
        emu.reject_upgrades(429, count=2)
        for expected in (429, 429, 101):
            stream = await trio.open_tcp_stream(emu.host, emu.port)
            async with stream:
                await stream.send_all(
                    b"GET /v2/iex HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                status = await stream.receive_some(100)
            assert int(status.split(b" ")[1]) == expected
        emu.fail_auth(402, count=1)
        emu.fail_auth(406, feed="sip", count=2)
        cases = [("iex", 402, True), ("sip", 406, True), ("sip", 406, False)]
        for i, (feed, code, closes) in enumerate(cases):
            if i == 2:
                emu.set_close_on({402, 409, 412})
            async with ws_connect(emu.url_for(feed), MSGPACK) as ws:
                await ws.get_message()
                auth = {"action": "auth", "key": "a", "secret": "b"}
                await ws.send_message(msgpack.packb(auth))
                assert msgpack.unpackb(await ws.get_message())[0]["code"] == code
                if closes:
                    with pytest.raises(ConnectionClosed):
                        await ws.get_message()
                else:
                    await ws.send_message(msgpack.packb(auth))
                    assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "authenticated"


async def test_malformed_and_unknown_frames() -> None:
    async with open_emulator(rate=0) as emu:
        async with session(emu, subscribe=TRADES) as ws:
            emu.inject_malformed()
            emu.inject_unknown()
            bad = await ws.get_message()
            with pytest.raises(Exception):  # noqa: B017 - any decoding error
                msgpack.unpackb(bad)
            unknown = msgpack.unpackb(await ws.get_message())
            assert unknown[0]["T"] == "zz"
            emu.inject_frame(b"\x90")
            assert msgpack.unpackb(await ws.get_message()) == []
        async with ws_connect(emu.url_for("iex")) as ws:
            await ws.get_message()
            emu.inject_malformed(feed="iex")
            frame = await ws.get_message()
            assert isinstance(frame, str)
            with pytest.raises(json.JSONDecodeError):
                json.loads(frame)


async def test_burst_mode_sends_exactly_what_it_counts() -> None:
    async with open_emulator(rate=0, burst=100, burst_frames=40) as emu:
        async with session(emu, subscribe={"trades": ["AAPL", "MSFT"]}) as ws:
            kinds = {"t": 0, "q": 0}
            for _ in range(40):
                msgs = msgpack.unpackb(await ws.get_message())
                assert len(msgs) == 100
                for m in msgs:
                    kinds[m["T"]] += 1
            with trio.move_on_after(0.3) as idle:
                await ws.get_message()
            assert idle.cancelled_caught
        assert kinds == {"t": 2000, "q": 2000}
        stats = emu.connections[0]
        assert (stats.data_frames, stats.data_messages) == (40, 4000)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_every_scenario_applies(name: str) -> None:
    async with open_emulator(rate=0, scenario=name) as emu:
        assert SCENARIOS[name].description
        emu.clear_faults()
    with pytest.raises(ValueError, match="unknown scenario"):
        async with open_emulator(scenario="nope"):
            pass  # pragma: no cover


async def test_scenarios_behave(autojump_clock: trio.abc.Clock) -> None:
    async with (
        open_emulator(rate=20, speed=60, scenario="close-1011") as emu,
        session(emu, subscribe=TRADES) as ws,
    ):
        assert (await count_until_closed(ws))[1] == 1011
    async with (
        open_emulator(rate=0, scenario="garbage") as emu,
        session(emu, subscribe=TRADES) as ws,
        session(emu, "crypto/us", subscribe={"trades": ["BTC/USD"]}) as ws2,
    ):
        for conn in (ws, ws2):
            frames = [await conn.get_message() for _ in range(2)]
            with pytest.raises(Exception):  # noqa: B017
                msgpack.unpackb(frames[0])
            assert msgpack.unpackb(frames[1])[0]["T"] == "zz"
    async with (
        open_emulator(rate=0, scenario="insufficient-subscription") as emu,
        ws_connect(emu.url_for("sip"), MSGPACK) as ws,
    ):
        await ws.get_message()
        await ws.send_message(msgpack.packb({"action": "auth", "key": "a", "secret": "b"}))
        assert msgpack.unpackb(await ws.get_message())[0]["code"] == 409


async def test_burst_mode_with_drop_and_mute(autojump_clock: trio.abc.Clock) -> None:
    async with open_emulator(rate=0, burst=10) as emu:
        emu.drop(after_messages=50, how=1011)
        async with session(emu, subscribe={"trades": ["AAPL"]}) as ws:
            assert await count_until_closed(ws) == (50, 1011)
        async with session(emu, subscribe={"trades": ["AAPL"]}) as ws:
            await ws.get_message()
            emu.mute()
            with trio.move_on_after(0.5):
                while True:
                    await ws.get_message()  # drain what was in flight
            with trio.move_on_after(5) as quiet:
                await ws.get_message()
            assert quiet.cancelled_caught
            emu.unmute()
            with trio.fail_after(5):
                assert len(msgpack.unpackb(await ws.get_message())) == 10
