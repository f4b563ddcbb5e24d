"""The connection's frame delivery: straight from trio-websocket's reader task (``_DirectSink``)
and through the plain ``get_message()`` loop, which must behave the same.

A trio-websocket server runs on the other half of a ``trio.testing.memory_stream_pair()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from trioalpaca import _connection
from trioalpaca._connection import Connection, Frame, open_connection
from trioalpaca._errors import ConnectionClosedError
from trioalpaca._groups import single_error


@pytest.fixture(params=[True, False], ids=["direct", "get_message"])
def direct(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(_connection, "DIRECT_READER", request.param)
    return bool(request.param)


ServerFn = Callable[[trio_websocket.WebSocketConnection], Any]


@asynccontextmanager
async def connected(
    server: ServerFn, on_frame: Callable[[Frame], None], **kwargs: Any
) -> AsyncIterator[Connection]:
    """Open a client connection whose peer runs ``await server(ws)``."""
    kwargs.setdefault("heartbeat_interval", None)
    with single_error():
        async with trio.open_nursery() as nursery:

            async def factory(host: str, port: int, secure: bool) -> trio.abc.Stream:
                client_stream, server_stream = trio.testing.memory_stream_pair()

                async def serve() -> None:
                    request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                    with contextlib.suppress(trio_websocket.ConnectionClosed):
                        await server(await request.accept())

                nursery.start_soon(serve)
                return client_stream

            async with open_connection(
                "ws://test.invalid/stream", on_frame=on_frame, stream_factory=factory, **kwargs
            ) as conn:
                yield conn
            nursery.cancel_scope.cancel()


async def test_direct_delivery_is_used_with_the_installed_trio_websocket() -> None:
    got: list[Frame] = []
    done = trio.Event()

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(b"one")
        await done.wait()

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        done.set()

    async with connected(server, on_frame) as conn:
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert conn.direct  # if this fails, trio-websocket's internals changed: see _DirectSink
    assert got == [b"one"]


async def test_every_frame_arrives_once_in_order(direct: bool) -> None:
    """Frames the library queued before the switch (more than its queue holds) come first."""
    total = 3 * _connection.MESSAGE_QUEUE_SIZE + 5
    got: list[Frame] = []
    done = trio.Event()

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        for i in range(total):
            await ws.send_message(str(i) if i % 2 else str(i).encode())
        await done.wait()

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        if len(got) == total:
            done.set()

    async with connected(server, on_frame) as conn:
        await done.wait()
        assert conn.direct is direct
    assert got == [str(i) if i % 2 else str(i).encode() for i in range(total)]


async def test_an_on_frame_error_ends_the_connection_with_that_error(direct: bool) -> None:
    got: list[Frame] = []

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        for i in range(10):
            await ws.send_message(b"%d" % i)
        await trio.sleep_forever()

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        if frame == b"3":
            raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        async with connected(server, on_frame):
            await trio.sleep_forever()
    assert got == [b"0", b"1", b"2", b"3"]  # nothing after the failing frame


async def test_a_server_close_raises_connection_closed_with_its_code(direct: bool) -> None:
    got: list[Frame] = []

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(b"last words")
        await ws.aclose(4001, "going away")

    with pytest.raises(ConnectionClosedError) as info:
        async with connected(server, got.append):
            await trio.sleep_forever()
    assert info.value.close_code == 4001
    assert got == [b"last words"]


class _Gate:
    def __init__(self) -> None:
        self.closed = True
        self.opened = trio.Event()

    def full(self) -> bool:
        return self.closed

    async def wait_for_space(self) -> None:
        await self.opened.wait()


async def test_a_full_gate_holds_every_frame_until_it_opens(
    direct: bool, autojump_clock: trio.abc.Clock
) -> None:
    """More frames than trio-websocket queues wait behind the gate; none is lost or reordered
    by the switch to direct delivery, which happens once the gate opens."""
    got: list[Frame] = []
    gate = _Gate()
    total = 3 * _connection.MESSAGE_QUEUE_SIZE + 5

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        for i in range(total):
            await ws.send_message(b"%d" % i)
        await trio.sleep_forever()

    async with connected(server, got.append, gate=gate) as conn:
        await trio.sleep(1)
        assert got == []
        assert conn.paused
        gate.closed = False
        gate.opened.set()
        await trio.sleep(1)
        assert not conn.paused
        assert got == [b"%d" % i for i in range(total)]
        assert conn.direct is direct


async def test_the_sink_drops_frames_once_the_connection_is_ending() -> None:
    """Once our reader task is gone (the block is being left), frames still read during the
    closing handshake go nowhere, as they did when nobody drained trio-websocket's channel;
    that includes not waiting on a full gate."""
    got: list[Frame] = []
    send, _receive = trio.open_memory_channel[Frame](1)
    gate = _Gate()  # full, forever
    sink = _connection._DirectSink(object(), got.append, gate, send)  # type: ignore[arg-type]
    sink.stopped = True
    with trio.fail_after(1):
        await sink.send(b"late")
    assert got == []
