"""No client can crash the emulator: floods, abrupt exits, garbage and slow readers.

The emulator is shared by every client of a test run (and by every SDK in the conformance runs),
so each of these must cost at most the misbehaving client's own socket.
"""

from __future__ import annotations

import json

import trio
from trio_websocket import wrap_client_stream

from trioalpaca import Trade, open_stream
from trioalpaca.testing import Emulator, open_emulator

SYMBOLS = [f"S{i:04d}" for i in range(5000)]


async def _flood_and_vanish(emu: Emulator) -> None:
    """Authenticate, subscribe to 5,000 symbols on two channels and leave without a close frame."""
    tcp = await trio.open_tcp_stream(emu.host, emu.port)
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, tcp, emu.host, "/v2/iex")
        await ws.get_message()
        await ws.send_message(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
        await ws.get_message()
        await ws.send_message(
            json.dumps({"action": "subscribe", "trades": SYMBOLS, "quotes": SYMBOLS})
        )
        await tcp.aclose()
        nursery.cancel_scope.cancel()


async def test_subscription_flood_and_vanish_three_times_keeps_the_emulator_up() -> None:
    # A small send buffer makes the slow-client policy fire while the vanished client's
    # connection is being torn down: it used to start a task in the closing nursery, and the
    # RuntimeError ("Nursery is closed to new arrivals") killed the whole emulator.
    async with open_emulator(rate=5, send_buffer_limit=20_000, symbols=["AAPL"]) as emu:
        for _ in range(3):
            await _flood_and_vanish(emu)
            await trio.sleep(0.05)
        with trio.fail_after(10):
            async with open_stream("k2", "s", url=emu.url_for("iex"), trades=["AAPL"]) as stream:
                async for msg in stream:
                    if isinstance(msg, Trade):
                        break
        assert emu.errors == []
