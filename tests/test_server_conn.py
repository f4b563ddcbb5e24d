"""The per-connection server half shared by the emulator and the relay
(trioalpaca._server_conn.ServerConnection), against a fake websocket."""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio
import trio.testing

from trioalpaca._codec import Frame
from trioalpaca._protocol.server import DataServerProtocol
from trioalpaca._server_conn import ServerConnection
from trioalpaca.endpoints import resolve_feed


@attrs.define
class _Closed:
    code: int


class FakeWS:
    """Records what is sent; ``stuck`` makes sending wait forever (a client that reads
    nothing)."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.sent: list[Frame] = []
        self.closed: _Closed | None = None
        self.stuck = stuck
        self.incoming_send, self.incoming = trio.open_memory_channel[Frame](10)

    async def send_message(self, frame: Frame) -> None:
        if self.stuck:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.sent.append(frame)

    async def get_message(self) -> Frame:
        return await self.incoming.receive()

    async def aclose(self, code: int = 1000) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = _Closed(code)


@attrs.define
class Stats:
    id: int = 1
    errors_sent: list[int] = attrs.Factory(list)
    open: bool = True
    close_reason: str | None = None


class Conn(ServerConnection[Stats]):
    def __init__(self, ws: FakeWS, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(ws, resolve_feed("iex"), headers or {})  # type: ignore[arg-type]
        self.stats = Stats()


def texts(ws: FakeWS) -> list[Any]:
    return [json.loads(f) for f in ws.sent]


async def test_queued_frames_go_out_in_order_then_the_close() -> None:
    ws = FakeWS()
    conn = Conn(ws)
    conn.send_control("[1]")
    conn.send_control("[2]")
    conn.close_after_flush(1001)
    conn.send_control("[3]")  # after the close: never queued
    assert conn.queued_bytes == 6
    with trio.fail_after(5):
        await conn.serve(trio.sleep_forever)  # the sender's close ends the reader too
    conn.finished()
    assert ws.sent == ["[1]", "[2]"]
    assert ws.closed == _Closed(1001)
    assert conn.queued_bytes == 0
    assert conn.stats.close_reason == "close 1001"
    assert not conn.stats.open


async def test_the_reader_ending_ends_the_sender() -> None:
    ws = FakeWS()
    conn = Conn(ws)

    async def reader() -> None:
        raise trio.BrokenResourceError  # the peer vanished: ends quietly

    with trio.fail_after(5):
        await conn.serve(reader)
    assert conn.closing and conn.ended
    conn.spawn(trio.sleep_forever)  # no-op once ended


async def test_slow_client_gets_407_and_is_cut_when_it_reads_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ws = FakeWS(stuck=True)
    conn = Conn(ws)
    conn.proto = DataServerProtocol("iex", "json")
    aborted: list[float] = []

    async def abort() -> None:
        aborted.append(trio.current_time())
        conn.cancel()

    conn._abort = abort  # type: ignore[method-assign]
    conn.send_control("[1]")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            conn.nursery = nursery
            nursery.start_soon(conn.guard, conn.sender)
            await trio.sleep(0.1)  # the sender is stuck on [1]
            start = trio.current_time()
            conn.send_control('["a"]')
            conn.cut_slow()
    assert conn.stats.errors_sent == [407]
    [frame, close] = list(conn.queue)
    assert frame.frame is not None
    assert json.loads(frame.frame) == [{"T": "error", "code": 407, "msg": "slow client"}]
    assert close.frame is None and close.close_code == 1008
    assert aborted and aborted[0] - start == 1.0


async def test_open_data_sends_the_welcome_and_authenticates_from_headers() -> None:
    ws = FakeWS()
    headers = {b"apca-api-key-id": b"K", b"apca-api-secret-key": b"S"}
    conn = Conn(ws, headers)
    assert conn.header_auth == ("K", "S")
    proto = DataServerProtocol("iex", "json")
    seen: list[Any] = []

    def on_frame(frame: Frame) -> None:
        seen.append(json.loads(frame))
        for reply in proto.receive(frame):
            conn.send_control(reply)

    async with trio.open_nursery() as nursery:
        conn.nursery = nursery
        await conn.open_data(proto, 10.0, on_frame)
        nursery.cancel_scope.cancel()
    assert seen == [{"action": "auth", "key": "K", "secret": "S"}]
    assert proto.authenticated
    frames = [json.loads(item.frame) for item in conn.queue if item.frame is not None]
    assert frames[0] == [{"T": "success", "msg": "connected"}]
    assert frames[1] == [{"T": "success", "msg": "authenticated"}]


async def test_auth_deadline_sends_404_and_closes(autojump_clock: trio.testing.MockClock) -> None:
    ws = FakeWS()
    conn = Conn(ws)
    proto = DataServerProtocol("iex", "json")

    async def reader() -> None:
        await conn.open_data(proto, 10.0, lambda frame: None)
        await trio.sleep_forever()

    with trio.fail_after(30):
        await conn.serve(reader)
    assert trio.current_time() >= 10.0
    sent = texts(ws)
    assert sent[0] == [{"T": "success", "msg": "connected"}]
    assert sent[1][0]["code"] == 404
    assert ws.closed == _Closed(1008)
    assert conn.stats.errors_sent == [404]
