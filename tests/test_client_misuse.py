"""Misuse raises UsageError at once instead of hanging (issue 9, part 3)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from tests.helpers import in_memory
from trioalpaca import AlpacaWebSocketClient, Trade, UsageError, open_stream
from trioalpaca.testing import Emulator, open_emulator

KW: dict[str, Any] = {"api_key": "key", "api_secret": "secret"}
T0 = 1_767_225_600_000_000_000


def _trade(i: int) -> dict[str, Any]:
    return {"T": "t", "S": "AAPL", "i": i, "x": "V", "p": 1.5, "s": 3, "c": ["@"], "t": T0 + i}


async def test_iterating_outside_async_with_is_a_usage_error() -> None:
    client = AlpacaWebSocketClient(url="ws://127.0.0.1:1/v2/iex", trades=["AAPL"], **KW)
    with trio.fail_after(1):
        with pytest.raises(UsageError, match="inside its block"):
            async for _ in client:
                pass  # pragma: no cover
        with pytest.raises(UsageError, match="inside its block"):
            await client.receive()
        with pytest.raises(UsageError, match="inside its block"):
            await client.receive_batch()


async def test_receive_before_connect_is_a_usage_error() -> None:
    async with (
        open_emulator(rate=0) as emu,
        open_stream(
            url=emu.url_for("iex"), stream_factory=in_memory(emu), auto_connect=False, **KW
        ) as stream,
    ):
        with trio.fail_after(1), pytest.raises(UsageError, match="connect"):
            await stream.receive()
        await stream.connect()
        assert stream.state == "connected"


async def test_iteration_after_the_block_ends_instead_of_raising() -> None:
    async with open_emulator(rate=0) as emu:
        stream = open_stream(
            url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"], **KW
        )
        async with stream:
            pass
        with trio.fail_after(1):
            assert [m async for m in stream] == []


async def test_second_concurrent_consumer_is_refused() -> None:
    async with (
        open_emulator(rate=0) as emu,
        open_stream(
            url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"], **KW
        ) as stream,
    ):
        got: list[Any] = []

        async def first() -> None:
            got.append(await stream.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first, name="first-consumer")
            await trio.sleep(0.05)
            with pytest.raises(UsageError, match="first-consumer"):
                await stream.receive()
            with pytest.raises(UsageError, match="one consumer task"):
                await stream.receive_batch()
            emu.publish("iex", [_trade(1)])
        # the first consumer was not disturbed
        assert isinstance(got[0], Trade) and got[0].trade_id == 1
        # once it is done, another task may consume
        emu.publish("iex", [_trade(2)])
        with trio.fail_after(5):
            assert (await stream.receive()).trade_id == 2


async def _foreign_run_calls(stream: AlpacaWebSocketClient) -> list[str]:
    """Call the client from a second trio.run in a worker thread; collect what each call did."""
    outcomes: list[str] = []

    async def foreign() -> None:
        for call in (
            stream.receive,
            stream.receive_batch,
            lambda: stream.subscribe(trades=["MSFT"]),
            stream.disconnect,
        ):
            try:
                await call()
            except UsageError as exc:
                outcomes.append(f"UsageError: {exc}")
            else:  # pragma: no cover - a failure
                outcomes.append("returned")

    def plain_thread() -> None:
        try:
            stream.register_handler("trades", print)
        except UsageError as exc:
            outcomes.append(f"UsageError: {exc}")

    await trio.to_thread.run_sync(trio.run, foreign)
    await trio.to_thread.run_sync(plain_thread)
    return outcomes


async def test_calls_from_another_trio_run_or_thread_are_refused_owner_unharmed() -> None:
    async with open_emulator(rate=0) as emu:
        with trio.fail_after(10):
            async with open_stream(
                url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"], **KW
            ) as stream:
                outcomes = await _foreign_run_calls(stream)
                assert len(outcomes) == 5
                assert all("another trio.run" in o for o in outcomes), outcomes
                # the owner keeps streaming and closes normally
                emu.publish("iex", [_trade(7)])
                assert (await stream.receive()).trade_id == 7
                assert stream.subscriptions == {"trades": ("AAPL",)}
        assert stream.state == "closed"


async def test_plain_def_handlers_are_called() -> None:
    seen: list[int] = []
    awaited: list[int] = []

    def on_trade(msg: Trade) -> None:
        seen.append(msg.trade_id)

    async def on_trade_async(msg: Trade) -> None:
        awaited.append(msg.trade_id)

    class Callable:
        def __init__(self) -> None:
            self.ids: list[int] = []

        async def __call__(self, msg: Trade) -> None:
            self.ids.append(msg.trade_id)

    obj = Callable()
    async with (
        open_emulator(rate=0) as emu,
        open_stream(
            url=emu.url_for("iex"), stream_factory=in_memory(emu), trades=["AAPL"], **KW
        ) as stream,
    ):
        stream.register_handler("trades", on_trade)
        stream.register_handler("t", on_trade_async)
        stream.register_handler("*", obj)
        emu.publish("iex", [_trade(1), _trade(2), _trade(3)])
        with trio.fail_after(5):
            while len(obj.ids) < 3:
                await trio.sleep(0.01)
    assert seen == awaited == obj.ids == [1, 2, 3]
    assert stream.get_metrics()["errors"].get("handler", 0) == 0


async def test_failing_handler_logs_once_per_minute_with_a_count(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, emu_rate0: Emulator
) -> None:
    emu = emu_rate0
    calls = 0

    def broken(msg: Trade) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"bad {msg.trade_id}")

    caplog.set_level(logging.ERROR, logger="trioalpaca.client")
    async with open_stream(
        url=emu.url_for("iex"),
        stream_factory=in_memory(emu),
        trades=["AAPL"],
        staleness_timeout=None,
        **KW,
    ) as stream:
        stream.register_handler("trades", broken)

        async def publish_and_wait(ids: range) -> None:
            target = calls + len(ids)
            emu.publish("iex", [_trade(i) for i in ids])
            while calls < target:
                await trio.sleep(0.01)

        await publish_and_wait(range(10))  # t = 0: logged once, 9 suppressed
        await trio.sleep(30)
        await publish_and_wait(range(10, 15))  # t = 30: all 5 suppressed
        await trio.sleep(31)
        await publish_and_wait(range(15, 16))  # t = 61: logged, reports the 14 in between
    records = [r for r in caplog.records if "message handler" in r.getMessage()]
    assert len(records) == 2
    assert "bad 0" in str(records[0].exc_info[1])  # type: ignore[index]
    assert "at most once per 60 s" in records[0].getMessage()
    assert "14 more failure(s)" in records[1].getMessage()
    assert stream.get_metrics()["errors"]["handler"] == 16


@pytest.fixture
async def emu_rate0() -> Any:
    async with open_emulator(rate=0) as emu:
        yield emu
