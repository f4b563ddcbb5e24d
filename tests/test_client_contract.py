"""The client's contract for the layers above it: statistics(), positions, wait_delivered."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from tests.test_client_basic import client, emulator
from trioalpaca import Trade
from trioalpaca.client import ClientStatistics


async def test_statistics_is_a_frozen_snapshot_in_seconds(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL"]) as stream:
        n = 0
        async for _ in stream:
            n += 1
            if n >= 50:
                break
        await trio.sleep(1.5)  # one heartbeat round trip
        st = stream.statistics()
        assert isinstance(st, ClientStatistics)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            st.state = "x"  # type: ignore[misc]
        assert st.messages_received >= 50 and st.latency.count > 0
        assert st.heartbeat_rtt is not None and st.heartbeat_rtt == stream.heartbeat_rtt
        m = stream.get_metrics()  # the dict view, in the original units
        assert m["heartbeat_rtt_ms"] == pytest.approx(st.heartbeat_rtt * 1e3)
        assert m["p50_latency_ms"] == pytest.approx(st.latency.p50 * 1e3)
        assert m["messages_received"] >= st.messages_received
        assert st.received_position >= st.delivered_position >= 49


async def test_unsubscribe_returns_the_position_to_wait_for(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu, client(emu, trades=["AAPL", "MSFT"]) as stream:
        got: list[Trade] = []
        # Let messages pile up unread, then unsubscribe MSFT.
        await trio.sleep(0.5)
        position = await stream.unsubscribe(trades=["MSFT"])
        assert position >= stream.statistics().delivered_position
        assert position > 0
        assert await stream.subscribe() == 0  # nothing to change

        done = trio.Event()

        async def consume() -> None:
            async for msg in stream:
                if isinstance(msg, Trade):
                    got.append(msg)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)

            async def wait() -> None:
                await stream.wait_delivered(position)
                done.set()

            nursery.start_soon(wait)
            with trio.fail_after(5):
                await done.wait()
            # Every message before the acknowledgement went through the consumer: from here
            # on no MSFT trade arrives any more.
            before = len(got)
            assert stream.statistics().delivered_position >= position
            await trio.sleep(1.0)
            assert all(m.symbol == "AAPL" for m in got[before:])
            assert any(m.symbol == "MSFT" for m in got[:before])
            nursery.cancel_scope.cancel()
