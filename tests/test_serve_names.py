"""Trio naming: what runs until cancelled is ``serve`` / ``serve_*`` and works with
``nursery.start``; the original ``run`` names stay as aliases of the same code."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import pytest
import trio
import trio.testing

from trioalpaca import AlpacaWebSocketClient, StreamManager, open_stream
from trioalpaca._errors import UsageError
from trioalpaca.models import Trade
from trioalpaca.pipeline import MessageHandler
from trioalpaca.testing import open_emulator

KEY, SECRET = "PKSERVE", "serve-secret"


def trade(symbol: str, i: int) -> Trade:
    return Trade(symbol, i, "V", 100.0, 1, (), 1_700_000_000_000_000_000 + i, "C")


class _Client:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, tuple[str, ...]]]] = []

    subscriptions: dict[str, tuple[str, ...]] = {}

    async def subscribe(self, **channels: Iterable[str]) -> None:
        self.requests.append(("subscribe", {k: tuple(v) for k, v in channels.items()}))

    async def unsubscribe(self, **channels: Iterable[str]) -> None:
        self.requests.append(("unsubscribe", {k: tuple(v) for k, v in channels.items()}))


@pytest.mark.parametrize("cls", [AlpacaWebSocketClient, StreamManager, MessageHandler])
def test_serve_takes_task_status_and_run_is_its_alias(cls: type) -> None:
    serve = inspect.signature(cls.serve)
    assert "task_status" in serve.parameters
    assert serve.parameters["task_status"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "task_status" in inspect.signature(cls.run).parameters
    assert ":meth:`serve`" in (cls.run.__doc__ or "")


async def test_client_serve_with_nursery_start() -> None:
    async with open_emulator(symbols=["AAPL"], rate=200) as emu:
        client = open_stream(KEY, SECRET, url=emu.url_for("iex"), trades=["AAPL"])
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                stream = await nursery.start(client.serve)
                assert stream is client
                assert stream.state == "connected"
                assert stream.subscriptions["trades"] == ("AAPL",)
                assert isinstance(await stream.receive(), Trade)
                await stream.aclose()
        assert client.state == "closed"


async def test_manager_serve_with_nursery_start(autojump_clock: trio.testing.MockClock) -> None:
    client = _Client()
    manager = StreamManager(client, consume=False, coalesce_window=0)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:
        started = await nursery.start(manager.serve)
        assert started is manager
        await manager.subscribe(symbols=["AAPL"], data_types="trades", handler=got.append)
        assert client.requests == [("subscribe", {"trades": ("AAPL",)})]
        await manager.dispatch(trade("AAPL", 1))
        assert [m.trade_id for m in got] == [1]
        with pytest.raises(UsageError):  # one run per manager, whatever the name
            await manager.run()
        nursery.cancel_scope.cancel()


async def test_pipeline_serve_with_nursery_start() -> None:
    got: list[int] = []
    handler = MessageHandler(worker_count=2, batch_timeout=0)
    handler.register_processor("trades", lambda batch: got.extend(t.trade_id for t in batch))
    async with trio.open_nursery() as nursery:
        started = await nursery.start(handler.serve)
        assert started is handler
        for i in range(20):
            await handler.send(trade("X", i))
        handler.close()
    assert got == list(range(20))
    with pytest.raises(UsageError):
        await handler.serve()


async def test_pipeline_run_alias_with_nursery_start() -> None:
    got: list[int] = []
    handler = MessageHandler(worker_count=1, batch_timeout=0)
    handler.register_processor("trades", lambda batch: got.extend(t.trade_id for t in batch))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(handler.run) is handler
        await handler.send(trade("Y", 7))
        handler.close()
    assert got == [7]
