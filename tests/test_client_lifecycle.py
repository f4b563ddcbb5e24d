"""Cancellation at every stage, clean close frames, exception shape, and the demo command.

These run on the real clock: they assert that leaving or cancelling the block takes well under a
second of real time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio_websocket

from trioalpaca import AlpacaWebSocketClient, Backoff, TrioAlpacaError, open_stream
from trioalpaca.testing import open_emulator

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

KEY = "PKLIFECYCLE"
SECRET = "lifecycle-secret"

Script = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


class ScriptedServer:
    """A tiny websocket server running ``script`` per connection; records how each one ended."""

    def __init__(self) -> None:
        self.close_codes: list[int | None] = []
        self.port = 0


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[ScriptedServer]:
    info = ScriptedServer()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await script(ws)
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            info.close_codes.append(exc.reason.code if exc.reason else None)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                handler, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        info.port = server.port
        yield info
        nursery.cancel_scope.cancel()


def pack(*msgs: dict[str, Any]) -> bytes:
    return msgpack.packb(list(msgs))  # type: ignore[no-any-return]


async def silent(ws: trio_websocket.WebSocketConnection) -> None:
    """Accept the upgrade, then say nothing (stuck before the welcome)."""


async def until_subscribe(ws: trio_websocket.WebSocketConnection) -> None:
    """Welcome and authenticate, then never answer the subscription."""
    await ws.send_message(pack({"T": "success", "msg": "connected"}))
    await ws.get_message()
    await ws.send_message(pack({"T": "success", "msg": "authenticated"}))
    await ws.get_message()


async def ready_then_ignore(ws: trio_websocket.WebSocketConnection) -> None:
    """Complete the handshake and the initial subscription, then ignore every request."""
    await until_subscribe(ws)
    await ws.send_message(pack({"T": "subscription", "trades": ["AAPL"], "quotes": []}))


def stream_to(port: int, **kwargs: Any) -> AlpacaWebSocketClient:
    kwargs.setdefault("trades", ["AAPL"])
    return open_stream(KEY, SECRET, feed="iex", url=f"ws://127.0.0.1:{port}/v2/iex", **kwargs)


async def cancel_after(delay: float, body: Callable[[], Awaitable[None]]) -> float:
    """Run ``body`` and cancel it after ``delay`` s; return how long the cancellation took."""
    cancelled_at = 0.0
    with trio.CancelScope() as scope:

        async def cancel() -> None:
            nonlocal cancelled_at
            await trio.sleep(delay)
            cancelled_at = time.perf_counter()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel)
            await body()
    assert scope.cancelled_caught
    return time.perf_counter() - cancelled_at


async def test_cancel_during_tcp_upgrade() -> None:
    # a listener that never accepts: the TCP handshake completes, the upgrade never does
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:

        async def body() -> None:
            async with stream_to(port):
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(0.2, body) < 0.5
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_cancel_before_welcome_sends_close_frame() -> None:
    async with scripted_server(silent) as server:

        async def body() -> None:
            async with stream_to(server.port):
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(0.2, body) < 0.5
        await trio.sleep(0.05)
    assert server.close_codes == [1000]


async def test_cancel_while_subscribing_sends_close_frame() -> None:
    async with scripted_server(until_subscribe) as server:

        async def body() -> None:
            async with stream_to(server.port):
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(0.2, body) < 0.5
        await trio.sleep(0.05)
    assert server.close_codes == [1000]


async def test_cancel_pending_runtime_subscribe() -> None:
    async with scripted_server(ready_then_ignore) as server:

        async def body() -> None:
            async with stream_to(server.port) as stream:
                await stream.subscribe(quotes=["MSFT"])
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(0.3, body) < 0.5
        await trio.sleep(0.05)
    assert server.close_codes == [1000]


async def test_handshake_timeout_is_retryable_then_cancellable() -> None:
    async with scripted_server(silent) as server:

        async def body() -> None:
            async with stream_to(server.port, connect_timeout=0.2, backoff=Backoff(initial=0.05)):
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(1.0, body) < 0.5
    assert len(server.close_codes) >= 2  # it timed out, closed properly and tried again


async def test_cancel_during_backoff_sleep() -> None:
    async with open_emulator(symbols=["AAPL"]) as emu:
        emu.reject_upgrades(503, count=None)

        async def body() -> None:
            async with open_stream(
                KEY, SECRET, feed="iex", url=emu.url_for("iex"), trades=["AAPL"]
            ):
                raise AssertionError("unreachable")  # pragma: no cover

        assert await cancel_after(0.5, body) < 0.5


async def test_cancel_while_streaming_closes_cleanly() -> None:
    async with open_emulator(symbols=["AAPL"], rate=500) as emu:
        stream = open_stream(KEY, SECRET, feed="iex", url=emu.url_for("iex"), trades=["AAPL"])

        async def body() -> None:
            async with stream:
                async for _ in stream:
                    pass

        assert await cancel_after(0.3, body) < 0.5
        await trio.sleep(0.05)
        assert emu.open_connections() == []
        assert stream.state == "closed"
        assert emu.errors == []


async def test_leaving_block_normally_is_fast_and_clean() -> None:
    async with scripted_server(ready_then_ignore) as server:
        t0 = time.perf_counter()
        async with stream_to(server.port) as stream:
            entered = time.perf_counter()
            assert stream.state == "connected"
        assert time.perf_counter() - entered < 0.5
        assert entered - t0 < 1.0
        await trio.sleep(0.05)
    assert server.close_codes == [1000]


async def test_user_exception_passes_through_unwrapped() -> None:
    async with scripted_server(ready_then_ignore) as server:
        with pytest.raises(ZeroDivisionError):
            async with stream_to(server.port):
                1 / 0  # noqa: B018
        await trio.sleep(0.05)
    assert server.close_codes == [1000]


async def test_fatal_error_is_single_typed_exception() -> None:
    async def refuse(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(pack({"T": "success", "msg": "connected"}))
        await ws.get_message()
        await ws.send_message(pack({"T": "error", "code": 402, "msg": "auth failed"}))

    async with scripted_server(refuse) as server:
        with pytest.raises(TrioAlpacaError) as info:
            async with stream_to(server.port):
                raise AssertionError("unreachable")  # pragma: no cover
    assert not isinstance(info.value, BaseExceptionGroup)
    assert type(info.value).__name__ == "AuthFailedError"
    assert SECRET not in str(info.value)


async def test_client_is_single_use_and_needs_the_block() -> None:
    stream = open_stream(KEY, SECRET, feed="iex", url="ws://127.0.0.1:9/v2/iex")
    with pytest.raises(TrioAlpacaError):
        await stream.connect()


def test_demo_command_plain_output() -> None:
    env = dict(os.environ)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "trioalpaca", "demo", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 30
    lines = [line for line in out.stdout.splitlines() if line.startswith("t=")]
    assert lines, out.stdout
    assert "\x1b[" not in out.stdout  # no terminal escapes when not a tty
    last = lines[-1]
    assert "state=connected" in last and "reconnects=0" in last
    assert "AAPL last=" in last and "p99=" in last
    msgs = int(last.split("msgs=")[1].split()[0])
    assert msgs > 0
