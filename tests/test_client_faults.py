"""Client fault handling against the emulator's fault injection, over in-memory streams (virtual
time, autojump)."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import in_memory, loopback_clock_fixture  # noqa: F401 (loopback_clock)
from trioalpaca import (
    AlpacaWebSocketClient,
    AuthFailedError,
    Backoff,
    Dropped,
    HandshakeRejectedError,
    InsufficientSubscriptionError,
    MalformedMessage,
    Reconnected,
    ReconnectLimitError,
    SubscriptionTimeoutError,
    Trade,
    open_stream,
)
from trioalpaca._protocol.client import MAX_UNDECODABLE_FRAMES
from trioalpaca.testing import DEFAULT_SEND_BUFFER_LIMIT, Emulator, open_emulator

KEY = "PKFAULTKEY"
SECRET = "fault-secret-value"


@asynccontextmanager
async def emulator(**kwargs: Any) -> AsyncIterator[Emulator]:
    kwargs.setdefault("symbols", ["AAPL", "MSFT"])
    kwargs.setdefault("rate", 100.0)
    async with open_emulator(**kwargs) as emu:
        yield emu


def client(emu: Emulator, **kwargs: Any) -> AlpacaWebSocketClient:
    kwargs.setdefault("backoff", Backoff(initial=0.5, seed=1))
    kwargs.setdefault("stream_factory", in_memory(emu))
    return open_stream(KEY, SECRET, feed="iex", url=emu.url_for("iex"), **kwargs)


async def until_reconnected(stream: AlpacaWebSocketClient) -> tuple[Reconnected, list[Any]]:
    before: list[Any] = []
    async for msg in stream:
        if isinstance(msg, Reconnected):
            return msg, before
        before.append(msg)
    raise AssertionError("stream ended without a Reconnected marker")


async def take_data(stream: AlpacaWebSocketClient, n: int) -> list[Any]:
    out: list[Any] = []
    async for msg in stream:
        assert not isinstance(msg, Reconnected)
        out.append(msg)
        if len(out) >= n:
            return out
    raise AssertionError("stream ended")


def first_delays(backoff: Backoff, *connection_limit: bool, reset: bool = True) -> float:
    """The sum of the reconnect loop's first delays under ``backoff`` (one per flag: whether
    that attempt followed a 406); ``reset``: data had flowed, so the loop reset the schedule."""
    schedule = backoff.schedule()
    if reset:
        schedule.reset()
    return sum(schedule.next_delay(connection_limit=limit) for limit in connection_limit)


async def last_frame_at(stream: AlpacaWebSocketClient) -> float:
    """The virtual time of the last frame received, once every frame in memory was read."""
    await trio.testing.wait_all_tasks_blocked()
    age = stream.statistics().last_message_age
    assert age is not None
    return trio.current_time() - age


def stale_at(ready_at: float, last: float, limit: float) -> float:
    """When the staleness watch (started at ``ready_at``, looking every ``limit / 4`` s) first
    sees more than ``limit`` s of silence after a frame at ``last``."""
    step = limit / 4
    k = math.floor((last + limit - ready_at) / step) + 1
    return ready_at + k * step


@pytest.mark.parametrize("how", ["reset", "abort", 1011, 1000])
async def test_drop_reconnects_resubscribes_and_marks_gap(
    autojump_clock: trio.abc.Clock, how: Any
) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"], quotes=["MSFT"]) as stream:
        await take_data(stream, 10)
        emu.drop(feed="iex", how=how)
        marker, _ = await until_reconnected(stream)
        assert marker.attempts == 1
        assert marker.gap_end_ns >= marker.gap_start_ns
        after = await take_data(stream, 20)
        assert {m.symbol for m in after} <= {"AAPL", "MSFT"}
        first, second = emu.connections[:2]
        assert not first.open
        assert second.subscriptions["trades"] == ("AAPL",)
        assert second.subscriptions["quotes"] == ("MSFT",)
        m = stream.get_metrics()
        assert m["reconnects"] == 1
        assert sum(m["errors"].values()) == 1
        assert stream.subscriptions["trades"] == ("AAPL",)


async def test_runtime_subscription_survives_reconnect(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        await stream.subscribe(quotes=["MSFT"])
        await stream.unsubscribe(trades=["AAPL"])
        emu.drop(feed="iex")
        await until_reconnected(stream)
        (conn,) = emu.open_connections("iex")
        assert conn.subscriptions["quotes"] == ("MSFT",)
        assert conn.subscriptions["trades"] == ()


async def test_mute_socket_detected_by_staleness(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator() as emu,
        client(emu, trades=["AAPL"], staleness_timeout=3.0, heartbeat_interval=1.0) as stream,
    ):
        ready_at = trio.current_time()
        await take_data(stream, 5)
        emu.mute(feed="iex", pings=True)
        last = await last_frame_at(stream)
        await until_reconnected(stream)
        # the first look (every 0.75 s) past 3 s of silence, then the first backoff delay
        expected = stale_at(ready_at, last, 3.0) + first_delays(Backoff(initial=0.5, seed=1), False)
        assert trio.current_time() == pytest.approx(expected, abs=1e-9)
        assert stream.get_metrics()["errors"] == {"StaleStreamError": 1}
        await take_data(stream, 5)


async def test_mute_socket_without_pongs_detected_by_heartbeat(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        emulator() as emu,
        client(emu, trades=["AAPL"], heartbeat_interval=2.0, heartbeat_timeout=1.0) as stream,
    ):
        ready_at = trio.current_time()
        await take_data(stream, 5)
        emu.mute(feed="iex", pings=False)
        t0 = trio.current_time()
        while not stream.get_metrics()["errors"]:
            await trio.sleep(0.01)
        # pings every 2 s from the connection on; the first unanswered one + the 1 s pong
        # deadline + the 0.5 s close_timeout (the mute server cannot read our close frame)
        next_ping = ready_at + 2.0 * math.floor((t0 - ready_at) / 2.0 + 1)
        assert next_ping + 1.5 <= trio.current_time() < next_ping + 1.5 + 0.01  # polled each 0.01
        assert stream.get_metrics()["errors"] == {"HeartbeatTimeoutError": 1}
        assert stream.state == "reconnecting"
        # The emulator's mute connection cannot even process our close frame (its socket lock is
        # held), so it keeps the connection slot: unmute it to let it notice we are gone.
        emu.unmute(feed="iex")
        await until_reconnected(stream)
        await take_data(stream, 5)


async def test_sparse_channels_are_not_stale_by_default(autojump_clock: trio.abc.Clock) -> None:
    # a float staleness timeout ignores sparse channels such as dailyBars
    async with (
        emulator(rate=0) as emu,
        client(emu, daily_bars=["AAPL"], staleness_timeout=1.0) as stream,
    ):
        await trio.sleep(10)
        assert stream.get_metrics()["reconnects"] == 0
        assert len(emu.connections) == 1


async def test_connection_limit_backoff_respects_floor(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        emu.set_reap_period(90.0)
        backoff = Backoff(initial=0.2, connection_limit_floor=90.0, seed=3)
        async with client(emu, trades=["AAPL"], backoff=backoff) as stream:
            await take_data(stream, 5)
            t0 = trio.current_time()
            emu.drop(feed="iex", how="reset")  # the server keeps the slot for 90 s
            marker, _ = await until_reconnected(stream)
            elapsed = trio.current_time() - t0
            # the first backoff delay, a 406, then the floor
            assert elapsed == pytest.approx(first_delays(backoff, False, True), abs=1e-9)
            assert elapsed >= 90.0
            assert marker.attempts == 2  # one 406, then success after the floor
            errors = stream.get_metrics()["errors"]
            assert errors.get("406") == 1
            # exactly: the dropped connection, one refused with 406, the good one
            assert len(emu.connections) == 3
            await take_data(stream, 5)


async def test_connection_limit_at_first_connect(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        emu.fail_auth(406, count=2)
        t0 = trio.current_time()
        backoff = Backoff(initial=0.1, connection_limit_floor=30.0, seed=1)
        async with client(
            emu,
            trades=["AAPL"],
            backoff=backoff,
            first_connect_timeout=None,  # retry for as long as it takes
        ) as stream:
            # two 406 refusals, each followed by at least the 30 s floor
            expected = first_delays(backoff, True, True, reset=False)
            assert trio.current_time() - t0 == pytest.approx(expected, abs=1e-9)
            assert expected >= 60.0
            assert stream.get_metrics()["errors"] == {"406": 2}
            assert stream.get_metrics()["reconnects"] == 0  # never connected before
            await take_data(stream, 3)


@pytest.mark.parametrize(
    ("code", "exc_type"), [(402, AuthFailedError), (409, InsufficientSubscriptionError)]
)
async def test_fatal_auth_errors_end_block_quickly(
    autojump_clock: trio.abc.Clock, code: int, exc_type: type[BaseException]
) -> None:
    async with emulator() as emu:
        emu.fail_auth(code, count=None)
        t0 = trio.current_time()
        with pytest.raises(exc_type) as info:
            async with client(emu, trades=["AAPL"]):
                raise AssertionError("must not get here")  # pragma: no cover
        assert trio.current_time() == t0  # no timer involved
        assert len(emu.connections) == 1  # no retry
        assert info.value.fatal


async def test_fatal_error_while_streaming_ends_block(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        stream = client(emu, trades=["AAPL"])
        with pytest.raises(AuthFailedError):
            async with stream:
                await take_data(stream, 3)
                emu.fail_auth(402, count=None)
                emu.drop(feed="iex")
                async for _ in stream:
                    pass
        assert stream.state == "failed"
        assert len(emu.connections) == 2


async def test_slow_client_407_then_close_reconnects(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        await take_data(stream, 3)
        emu.set_send_buffer_limit(1)  # the next data frame trips 407 + close
        while "407" not in stream.get_metrics()["errors"]:
            await trio.sleep(0.01)
        emu.set_send_buffer_limit(DEFAULT_SEND_BUFFER_LIMIT)
        await until_reconnected(stream)
        assert stream.get_metrics()["errors"].get("407") == 1
        await take_data(stream, 3)


async def test_real_slow_client_gets_407_and_recovers(loopback_clock: trio.abc.Clock) -> None:
    # Over loopback: the subject is the socket (the server's send buffer fills because TCP
    # back pressure reaches it; an in-memory stream has no such limit).
    async with (
        emulator(rate=3000.0, send_buffer_limit=32 * 1024) as emu,
        client(
            emu,
            trades=["AAPL"],
            quotes=["AAPL"],
            buffer_size=100,
            overflow="block",
            stream_factory=None,
        ) as stream,
    ):
        got_marker = False
        with trio.move_on_after(600):
            async for msg in stream:
                if isinstance(msg, Reconnected):
                    got_marker = True
                    break
                await trio.sleep(0.05)  # a consumer far slower than the feed
        assert got_marker
        errors = stream.get_metrics()["errors"]
        assert errors.get("407", 0) + errors.get("ConnectionClosedError", 0) >= 1
        assert stream.get_metrics()["dropped"] == 0  # block never drops locally


async def test_upgrade_rejections(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        emu.reject_upgrades(429, count=2)
        async with client(emu, trades=["AAPL"]) as stream:
            assert stream.get_metrics()["errors"] == {"HandshakeRejectedError": 2}
        emu.reject_upgrades(404, count=None)
        with pytest.raises(HandshakeRejectedError) as info:
            async with client(emu, trades=["AAPL"]):
                pass  # pragma: no cover
        assert info.value.status_code == 404


async def test_reconnect_limit(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        emu.reject_upgrades(503, count=None)
        with pytest.raises(ReconnectLimitError) as info:
            async with client(emu, trades=["AAPL"], max_reconnect_attempts=3):
                pass  # pragma: no cover
        assert info.value.attempts == 3
        assert isinstance(info.value.__cause__, HandshakeRejectedError)


async def test_reconnect_limit_resets_when_data_flows(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"], max_reconnect_attempts=1) as s:
        for _ in range(4):
            await take_data(s, 3)
            emu.drop(feed="iex")
            await until_reconnected(s)
        assert s.get_metrics()["reconnects"] == 4


async def test_malformed_frame_is_skipped_and_a_broken_stream_reconnects(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        await take_data(stream, 3)
        emu.inject_malformed(feed="iex")  # one undecodable frame: a marker, no reconnect
        async for msg in stream:
            if isinstance(msg, MalformedMessage):
                assert msg.frame and msg.raw == b"\xc1\xc1 not msgpack"
                break
        assert stream.get_metrics()["reconnects"] == 0
        assert stream.get_metrics()["undecodable_frames"] == 1
        for _ in range(MAX_UNDECODABLE_FRAMES):  # ten in a row: the stream counts as broken
            emu.inject_malformed(feed="iex")
        await until_reconnected(stream)
        assert stream.get_metrics()["errors"] == {"MalformedStreamError": 1}


# ---------------------------------------------------------------- subscriptions in flight


async def test_pending_subscribe_survives_reconnect(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"], heartbeat_interval=60.0) as s:
        await take_data(s, 3)
        emu.mute(feed="iex", pings=False)  # nothing reaches us, not even the ack
        result: list[Any] = []

        async def sub() -> None:
            await s.subscribe(quotes=["MSFT"])
            result.append("ok")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub)
            await trio.sleep(1.0)
            assert result == []
            (conn,) = emu.open_connections("iex")
            assert conn.subscriptions.get("quotes") == ("MSFT",)  # server got it, ack stuck
            emu.drop(feed="iex", how="reset")
        assert result == ["ok"]
        assert s.subscriptions["quotes"] == ("MSFT",)
        (conn,) = emu.open_connections("iex")
        assert conn.subscriptions["quotes"] == ("MSFT",)
        assert conn.subscriptions["trades"] == ("AAPL",)


async def test_subscribe_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator() as emu,
        client(emu, trades=["AAPL"], heartbeat_interval=None, subscription_timeout=2.0) as s,
    ):
        emu.mute(feed="iex", pings=False)
        t0 = trio.current_time()
        with pytest.raises(SubscriptionTimeoutError):
            await s.subscribe(quotes=["MSFT"])
        assert trio.current_time() - t0 == pytest.approx(2.0, abs=1e-9)


async def test_subscribes_are_serialised(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as s:
        async with trio.open_nursery() as nursery:
            for sym in ("MSFT", "TSLA", "NVDA", "AMD"):
                nursery.start_soon(lambda sym=sym: s.subscribe(quotes=[sym]))
        assert set(s.subscriptions["quotes"]) == {"MSFT", "TSLA", "NVDA", "AMD"}
        (conn,) = emu.open_connections("iex")
        assert set(conn.subscriptions["quotes"]) == {"MSFT", "TSLA", "NVDA", "AMD"}


# ---------------------------------------------------------------- overflow policies


async def _slow_consume(
    emu: Emulator, stream: AlpacaWebSocketClient, seconds: float
) -> tuple[int, int, list[Any]]:
    """Consume slowly for ``seconds``, then stop the feed and drain; return
    (data received, dropped reported by markers, markers)."""
    received = 0
    dropped = 0
    markers: list[Any] = []
    end = trio.current_time() + seconds
    async for msg in stream:
        if isinstance(msg, (Dropped, Reconnected)):
            markers.append(msg)
            if isinstance(msg, Dropped):
                dropped += msg.count
        else:
            received += 1
        if trio.current_time() >= end:
            break
        await trio.sleep(0.01)
    emu.mute(feed="iex", pings=True)
    while True:
        with trio.move_on_after(2.0) as cs:
            msg = await stream.receive()
        if cs.cancelled_caught:
            break
        if isinstance(msg, Dropped):
            markers.append(msg)
            dropped += msg.count
        elif isinstance(msg, Reconnected):
            markers.append(msg)
        else:
            received += 1
    return received, dropped, markers


async def test_slow_consumer_drop_oldest_counts_every_drop(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(rate=500.0) as emu,
        client(
            emu, trades=["AAPL"], quotes=["AAPL"], buffer_size=50, overflow="drop_oldest"
        ) as stream,
    ):
        received, dropped, markers = await _slow_consume(emu, stream, 5.0)
        sent = sum(c.data_messages for c in emu.connections)
        assert dropped > 0
        assert received + dropped == sent
        assert stream.get_metrics()["dropped"] == dropped
        assert all(isinstance(m, Dropped) for m in markers)
        assert len(emu.connections) == 1


async def test_slow_consumer_block_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(rate=300.0) as emu,
        client(emu, trades=["AAPL"], buffer_size=50, overflow="block") as stream,
    ):
        received, dropped, markers = await _slow_consume(emu, stream, 3.0)
        sent = sum(c.data_messages for c in emu.connections)
        assert markers == [] and dropped == 0
        assert received == sent
        assert stream.get_metrics()["reconnects"] == 0


async def test_slow_consumer_disconnect_policy(autojump_clock: trio.abc.Clock) -> None:
    async with (
        emulator(rate=500.0) as emu,
        client(
            emu, trades=["AAPL"], quotes=["AAPL"], buffer_size=50, overflow="disconnect"
        ) as stream,
    ):
        received, dropped, markers = await _slow_consume(emu, stream, 5.0)
        sent = sum(c.data_messages for c in emu.connections)
        kinds = [type(m) for m in markers]
        assert Dropped in kinds and Reconnected in kinds
        # every Dropped is followed by the Reconnected marker of the new connection
        first_drop = kinds.index(Dropped)
        assert Reconnected in kinds[first_drop:]
        assert received + dropped <= sent
        assert stream.get_metrics()["reconnects"] >= 1
        assert stream.get_metrics()["dropped"] == dropped


# ---------------------------------------------------------------- misc


async def test_unknown_message_types_pass_through(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        await take_data(stream, 2)
        emu.inject_unknown(feed="iex")
        async for msg in stream:
            if type(msg).__name__ == "UnknownMessage":
                break
        assert stream.get_metrics()["reconnects"] == 0


async def test_trade_data_keeps_flowing_under_garbage_free_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        msgs = [m for m in await take_data(stream, 100) if isinstance(m, Trade)]
        assert len(msgs) > 50
        # Delivery order is the server's order. Timestamps are not a usable check: the emulator,
        # like SIP, sends a few late prints stamped in the previous minute (they make updatedBars).
        # Its trade ids grow with every trade sent for a symbol.
        ids = [m.trade_id for m in msgs]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


async def test_auto_staleness_needs_data_first(autojump_clock: trio.abc.Clock) -> None:
    # default staleness_timeout="auto": a channel that never delivered is never stale...
    async with emulator(rate=0) as emu, client(emu, trades=["AAPL"]) as stream:
        await trio.sleep(400)
        assert stream.get_metrics()["reconnects"] == 0
        assert len(emu.connections) == 1


async def test_auto_staleness_catches_a_mute_socket(autojump_clock: trio.abc.Clock) -> None:
    # ...but one that delivered and then went silent (pings still answered) is, after 120 s
    async with (
        emulator(symbols=["AAPL"], rate=20.0) as emu,
        client(emu, trades=["AAPL"], heartbeat_interval=None) as stream,
    ):
        ready_at = trio.current_time()
        await take_data(stream, 5)
        emu.mute(feed="iex", pings=True)
        last = await last_frame_at(stream)
        await until_reconnected(stream)
        # the first look (every 30 s) past 120 s of silence, then the first backoff delay
        expected = stale_at(ready_at, last, 120.0) + first_delays(
            Backoff(initial=0.5, seed=1), False
        )
        assert trio.current_time() == pytest.approx(expected, abs=1e-9)
        assert stream.get_metrics()["errors"] == {"StaleStreamError": 1}


async def test_each_gap_is_reported_once(autojump_clock: trio.abc.Clock) -> None:
    async with emulator(rate=0) as emu, client(emu, trades=["AAPL"]) as stream:
        markers = []
        for _ in range(3):
            await trio.sleep(5)
            emu.drop(feed="iex")
            marker, before = await until_reconnected(stream)
            assert before == []  # no data at all (rate=0)
            markers.append(marker)
        # consecutive gaps do not overlap: each starts after the previous one ended
        for previous, current in itertools.pairwise(markers):
            assert current.gap_start_ns >= previous.gap_end_ns
        # no market data flowed in between, so the consecutive-attempt count keeps growing
        assert [m.attempts for m in markers] == [1, 2, 3]
