"""Client, pool and manager over in-memory streams served by the emulator, on exact virtual time.

No sockets: ``stream_factory=emu.connect_in_memory`` hands each connection one half of a
``trio.testing.memory_stream_pair()`` whose other half the emulator serves. With nothing "in
flight" outside trio, pytest-trio's ``autojump_clock`` can jump at once, and the tests assert
the exact virtual times the timers produce (as trio's own happy-eyeballs tests do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trioalpaca
from trioalpaca import Reconnected, Trade
from trioalpaca.testing import Emulator, open_emulator

KEY, SECRET = "PKMEMORY", "secret"
CREDS = {"PKPOOL1": "s1", "PKPOOL2": "s2"}


@asynccontextmanager
async def emulator(**kwargs: Any) -> AsyncIterator[Emulator]:
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 20.0)
    async with open_emulator(**kwargs) as emu:
        yield emu


def client(emu: Emulator, **kwargs: Any) -> trioalpaca.AlpacaWebSocketClient:
    kwargs.setdefault("heartbeat_interval", None)
    return trioalpaca.open_stream(
        KEY,
        SECRET,
        feed="iex",
        url=emu.url_for("iex"),
        stream_factory=emu.connect_in_memory,
        **kwargs,
    )


async def test_connecting_takes_no_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        t0 = trio.current_time()
        async with client(emu, trades=["AAPL"]) as stream:
            assert trio.current_time() == t0  # connect, auth, subscribe: no timer involved
            msg = await stream.receive()
            assert isinstance(msg, Trade) and msg.symbol == "AAPL"
        assert emu.connections[0].key == KEY


async def test_reconnect_happens_exactly_after_the_backoff_delay(
    autojump_clock: trio.abc.Clock,
) -> None:
    backoff = trioalpaca.Backoff(initial=0.5, cap=4.0, seed=7)
    expected = backoff.schedule().next_delay()
    async with emulator() as emu, client(emu, trades=["AAPL"], backoff=backoff) as stream:
        await stream.receive()
        dropped_at = trio.current_time()
        emu.drop(how="reset")
        while True:
            msg = await stream.receive()
            if isinstance(msg, Reconnected):
                break
        assert trio.current_time() - dropped_at == pytest.approx(expected, abs=1e-9)
        assert msg.attempts == 1


async def test_a_mute_server_is_detected_exactly_at_the_heartbeat_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    backoff = trioalpaca.Backoff(initial=1.0, cap=1.0, jitter="none")
    async with (
        emulator(connection_limit=2) as emu,  # the mute session still holds its slot
        client(
            emu,
            trades=["AAPL"],
            heartbeat_interval=2.0,
            heartbeat_timeout=0.5,
            close_timeout=0.25,
            staleness_timeout=None,
            backoff=backoff,
        ) as stream,
    ):
        t0 = trio.current_time()
        emu.mute(pings=False)
        while True:
            msg = await stream.receive()
            if isinstance(msg, Reconnected):
                break
        # ping at t0 + 2, no pong by t0 + 2.5: lost; the closing handshake waits its 0.25 s
        # for the mute server; the reconnect comes 1 s after that.
        assert trio.current_time() - t0 == pytest.approx(2.0 + 0.5 + 0.25 + 1.0, abs=1e-9)
        assert stream.get_metrics()["errors"] == {"HeartbeatTimeoutError": 1}


async def test_manager_flush_goes_out_exactly_one_coalesce_window_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        emulator() as emu,
        client(emu) as stream,
        trioalpaca.open_stream_manager(stream, coalesce_window=0.25) as manager,
    ):
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for sym in ("AAPL", "MSFT"):
                nursery.start_soon(
                    lambda s=sym: manager.subscribe(symbols=[s], data_types="trades", handler=print)
                )
        assert trio.current_time() - t0 == pytest.approx(0.25, abs=1e-9)
        assert manager.get_metrics()["requests"] == {"subscribe": 1, "unsubscribe": 0}
        assert emu.connections[0].subscriptions["trades"] == ("AAPL", "MSFT")


async def test_pool_fails_over_at_once_over_memory_streams(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(credentials=CREDS) as emu,
        trioalpaca.open_pool(
            credentials=list(CREDS.items()),
            feed="iex",
            url=emu.url_for("iex"),
            options=trioalpaca.StreamOptions(
                heartbeat_interval=None, stream_factory=emu.connect_in_memory
            ),
            backoff=trioalpaca.Backoff(initial=3.0, cap=3.0, jitter="none"),
        ) as pool,
    ):
        t0 = trio.current_time()
        handle = await pool.get_connection(["AAPL"], channels=["trades"])
        assert trio.current_time() == t0 and handle.connections == (0,)
        await handle.receive()
        victim = next(c for c in emu.open_connections("iex") if c.key == "PKPOOL1")
        dropped_at = trio.current_time()
        emu.drop(connection=victim.id, how="reset")
        while not isinstance(await handle.receive(), Reconnected):
            pass
        # Failed over to the other connection without waiting for anything.
        assert trio.current_time() == dropped_at and handle.connections == (1,)
        # The dead slot comes back exactly one backoff delay later.
        while pool.get_metrics()["healthy_connections"] < 2:
            await trio.sleep(0.01)
        assert trio.current_time() - dropped_at == pytest.approx(3.0, abs=0.011)
        await handle.aclose()
