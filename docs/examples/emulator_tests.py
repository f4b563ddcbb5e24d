"""Tests against the emulator, in the shape of your own test suite (pytest-trio)."""

import trio

import trioalpaca
from trioalpaca.testing import open_emulator, serve_emulator


async def test_something():
    async with open_emulator(seed=1, speed=60) as emu:
        url = emu.url_for("iex")  # ws://127.0.0.1:PORT/v2/iex
        async with trioalpaca.open_stream("key", "secret", url=url, trades=["AAPL"]) as stream:
            msg = await stream.receive()
            assert msg.symbol == "AAPL"


async def test_in_a_nursery():
    async with trio.open_nursery() as nursery:
        emu = await nursery.start(serve_emulator)
        assert emu.url.startswith("ws://127.0.0.1:")
        nursery.cancel_scope.cancel()


async def test_published_messages():
    async with (
        open_emulator(rate=0) as emu,
        trioalpaca.open_stream("key", "secret", url=emu.url_for("iex"), trades=["AAPL"]) as stream,
    ):
        emu.publish(
            "iex",
            [
                {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 1.5, "s": 3,
                 "c": ["@"], "t": 1_767_225_600_000_000_000, "z": "C"},
            ],
        )  # fmt: skip
        trade = await stream.receive()
        assert (trade.price, trade.size, trade.timestamp_ns) == (1.5, 3, 1_767_225_600_000_000_000)


async def test_trade_updates():
    async with (
        open_emulator() as emu,
        trioalpaca.open_stream(
            "key", "secret", stream_type="trading", url=emu.url_for("trading")
        ) as stream,
    ):
        order_id = emu.submit_order("AAPL", 100, "buy", plan="partial")  # new, partial fills, fill
        events = []
        async for update in stream:
            events.append(update.event)
            if update.event == "fill":
                break
        assert events[0] == "new" and "partial_fill" in events
        assert update.order["id"] == order_id


async def test_reconnect_is_reported():
    async with open_emulator(rate=50, speed=60) as emu:
        emu.drop(after_messages=100, how="reset")  # the next connection only
        async with trioalpaca.open_stream(
            "key", "secret", url=emu.url_for("iex"), trades=["AAPL"]
        ) as stream:
            async for msg in stream:
                if isinstance(msg, trioalpaca.Reconnected):
                    break  # the client reconnected, resubscribed and reported the gap
        assert stream.get_metrics()["reconnects"] == 1
