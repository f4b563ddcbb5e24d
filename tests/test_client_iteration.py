"""``async for`` over the client: its async generator is kept across loops and closed with the
block, a second consumer is still refused, and nothing is lost or left to the garbage collector."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.helpers import in_memory
from trioalpaca import AlpacaWebSocketClient, Trade, UsageError, open_stream
from trioalpaca.testing import Emulator, open_emulator

KW: dict[str, Any] = {"api_key": "key", "api_secret": "secret"}
T0 = 1_767_225_600_000_000_000


@asynccontextmanager
async def opened() -> AsyncIterator[tuple[Emulator, AlpacaWebSocketClient]]:
    """An emulator (no ticks) and a client subscribed to AAPL trades on it."""
    async with (
        open_emulator(rate=0) as emu,
        open_stream(
            url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"], **KW
        ) as stream,
    ):
        yield emu, stream


def _trade(i: int) -> dict[str, Any]:
    return {"T": "t", "S": "AAPL", "i": i, "x": "V", "p": 1.5, "s": 3, "c": ["@"], "t": T0 + i}


async def test_break_and_iterate_again_loses_nothing_and_warns_nothing() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with opened() as (emu, stream):
            emu.publish("iex", [_trade(i) for i in range(10)])
            got: list[int] = []
            with trio.fail_after(5):
                for _ in range(5):  # five loops of two messages each
                    async for msg in stream:
                        got.append(msg.trade_id)
                        if len(got) % 2 == 0:
                            break
            assert got == list(range(10))
            # one generator served every loop; the stream holds it
            assert stream._agen is not None and stream.__aiter__() is stream._agen
            # a direct anext() in between takes the next message in order
            emu.publish("iex", [_trade(10), _trade(11)])
            with trio.fail_after(5):
                assert (await stream.__anext__()).trade_id == 10
                async for msg in stream:
                    assert msg.trade_id == 11
                    break
        # leaving the block closed the generator
        assert stream._agen is None
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught


async def test_second_async_for_while_one_waits_is_refused() -> None:
    async with opened() as (emu, stream):
        got: list[Any] = []

        async def first() -> None:
            async for msg in stream:
                got.append(msg)
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first, name="first-consumer")
            await trio.sleep(0.05)
            with pytest.raises(UsageError, match="first-consumer"):
                async for _ in stream:
                    pass  # pragma: no cover
            emu.publish("iex", [_trade(1)])
        assert isinstance(got[0], Trade) and got[0].trade_id == 1
        emu.publish("iex", [_trade(2)])
        with trio.fail_after(5):
            async for msg in stream:
                assert msg.trade_id == 2
                break


async def test_a_cancelled_wait_ends_the_generator_and_the_next_loop_starts_a_new_one() -> None:
    async with opened() as (emu, stream):
        with trio.move_on_after(0.05) as scope:
            async for _ in stream:
                pass  # pragma: no cover
        assert scope.cancelled_caught
        first = stream._agen
        assert first is not None and first.ag_frame is None  # ended by the Cancelled
        emu.publish("iex", [_trade(3)])
        with trio.fail_after(5):
            async for msg in stream:
                assert msg.trade_id == 3
                break
        assert stream._agen is not first


async def test_iteration_ends_after_disconnect_and_resumes_after_connect() -> None:
    async with opened() as (emu, stream):
        emu.publish("iex", [_trade(1)])
        with trio.fail_after(5):
            async for msg in stream:
                assert msg.trade_id == 1
                break
            await stream.disconnect()
            assert [m async for m in stream] == []  # the buffer is closed: iteration ends
            await stream.connect()
            emu.publish("iex", [_trade(2)])
            async for msg in stream:
                assert msg.trade_id == 2
                break
