"""Serving a recording of the trading stream (trade_updates) with serve_replay."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import open_stream
from trioalpaca.record import open_recorder, open_replay
from trioalpaca.record.serve import serve_replay
from trioalpaca.testing import open_emulator

KEY, SECRET = "PKTRADEKEY", "trade-secret-value"


async def record_trading(path: Path) -> list[Any]:
    """Record the emulator's trading stream until two orders' trade_updates ended (one filled
    in parts, one canceled); the live items."""
    live: list[Any] = []
    async with open_emulator(seed=5) as emu:
        # no heartbeat: on a loaded machine the 1 ms-threshold clock can jump past a pong still
        # in flight on the loopback socket, and a reconnect would put a marker among the updates
        client = open_stream(
            KEY, SECRET, stream_type="trading", url=emu.url_for("trading"), heartbeat_interval=None
        )
        async with open_recorder(path, client), client:
            emu.submit_order("AAPL", qty=3, plan="partial")
            emu.submit_order("MSFT", qty=2, side="sell", plan="cancel")
            async for msg in client:
                live.append(msg)
                events = {u.event for u in live}
                if "fill" in events and "canceled" in events:
                    break
    return live


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_served_trading_recording(
    tmp_path: Path, autojump_clock: trio.abc.Clock, encoding: str
) -> None:
    path = tmp_path / "t.tarec"
    live = await record_trading(path)
    async with open_replay(path) as stream:
        assert stream.header["kind"] == "trading"
        recorded = [m async for m in stream]
    assert recorded[: len(live)] == live
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_replay, path, speed=50.0))
        assert server.streams == {"t": "trading"}
        got: list[Any] = []
        # No virtual-time deadline here (pytest-timeout bounds a hang in real time): the replay
        # reads the file in a worker thread, and while that read runs on a loaded machine the
        # clock would jump straight to such a deadline. No heartbeat, for the same reason.
        async with open_stream(
            "k",
            "s",
            stream_type="trading",
            url=server.url_for("trading"),
            encoding=encoding,
            heartbeat_interval=None,
        ) as client:
            async for msg in client:
                got.append(msg)
                if len(got) == len(recorded):
                    break
        assert server.published == len(recorded)
        nursery.cancel_scope.cancel()
    assert got == recorded
    events = [u.event for u in got]
    assert "fill" in events and "canceled" in events
