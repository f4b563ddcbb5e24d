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


@pytest.mark.parametrize(
    ("busy", "yields"),
    [(None, True), (lambda: True, True), (lambda: False, False)],
    ids=["default", "busy", "idle"],
)
async def test_the_sink_yields_after_a_frame_only_while_busy(
    busy: Callable[[], bool] | None, yields: bool
) -> None:
    """Without ``busy`` the reader checkpoints after every frame; with it, only while it says
    the consumer has a backlog (otherwise the next socket read yields anyway)."""
    got: list[Frame] = []
    send, _receive = trio.open_memory_channel[Frame](1)
    sink = _connection._DirectSink(object(), got.append, None, send, busy)  # type: ignore[arg-type]
    check = trio.testing.assert_checkpoints if yields else trio.testing.assert_no_checkpoints
    with check():
        await sink.send(b"one")
    assert got == [b"one"]


async def test_busy_is_asked_after_each_frame_and_every_frame_arrives(direct: bool) -> None:
    """A reader that yields only while ``busy()`` is true still delivers every frame once, in
    order (the plain get_message() loop ignores ``busy``: its channel checkpoints anyway)."""
    got: list[Frame] = []
    asked: list[int] = []
    total = 50
    done = trio.Event()

    def busy() -> bool:
        asked.append(len(got))
        return len(got) % 2 == 0

    def on_frame(frame: Frame) -> None:
        got.append(frame)
        if len(got) == total:
            done.set()

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        for i in range(total):
            await ws.send_message(b"%d" % i)
        await trio.sleep_forever()

    async with connected(server, on_frame, busy=busy) as conn:
        with trio.fail_after(5):
            await done.wait()
        assert got == [b"%d" % i for i in range(total)]
        if direct:
            assert conn.direct and asked  # asked once per frame delivered by the sink
            assert asked == sorted(asked) and len(asked) <= total
        else:
            assert asked == []


class _StepCounter(trio.abc.Instrument):
    """Counts how many times each task has been stepped (resumed) by the scheduler."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


@pytest.mark.parametrize("backlog", [False, True], ids=["no-backlog", "backlog"])
async def test_frames_of_one_read_are_handed_over_without_a_turn_unless_backlogged(
    backlog: bool,
) -> None:
    """Forty frames arrive in one socket read. With no backlog the sink hands them all over
    in one step of the reader task (no turn for other tasks in between); with a backlog the
    reader yields after every frame (each frame in a step of its own)."""
    total = 40
    counter = _StepCounter()
    seen: list[int] = []
    done = trio.Event()

    def on_frame(frame: Frame) -> None:
        seen.append(counter.steps[trio.lowlevel.current_task()])
        if len(seen) == total + 1:
            done.set()

    async def server(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(b"first")  # delivered alone: the switch to the sink happens here
        await trio.sleep(0.1)
        # one write holding forty unmasked binary frames: the client reads them in one go
        await ws._stream.send_all(b"".join(b"\x82\x02%02d" % i for i in range(total)))
        await trio.sleep_forever()

    trio.lowlevel.add_instrument(counter)
    try:
        async with connected(server, on_frame, busy=lambda: backlog) as conn:
            with trio.fail_after(5):
                await done.wait()
            assert conn.direct
    finally:
        trio.lowlevel.remove_instrument(counter)
    distinct = len(set(seen[1:]))
    assert distinct == (total if backlog else 1)
