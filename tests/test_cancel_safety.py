"""A consumer cancelled while it takes messages loses none: every receiving call of the buffer,
the live client, a pooled connection, the Redis consumer and the replay checkpoints *before* it
takes anything, so a ``Cancelled`` (a ``move_on_after`` around the loop, a nursery shutting down)
leaves what it was about to hand out queued for the next call.

Each test alternates calls in an already-cancelled scope with ordinary ones and checks that
the items handed out are exactly the items sent, in order, and that cancellations did happen.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import in_memory, replay_iteration  # noqa: F401 (the iteration fixture)
from tests.redis_fixtures import RedisServer
from tests.test_client_iteration import _trade, opened
from tests.test_record_consume import BASE, write_recording
from trioalpaca import _buffer, open_pool
from trioalpaca._buffer import MessageBuffer
from trioalpaca.fanout import open_redis_publisher, open_redis_stream
from trioalpaca.record import open_replay
from trioalpaca.testing import open_emulator

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


async def alternate(
    take: Callable[[list[Any]], Awaitable[None]], want: int
) -> tuple[list[Any], int]:
    """Call ``take(got)`` (it appends what it takes to ``got`` as it goes) alternately inside a
    cancelled scope and outside one until ``want`` items came out; returns them and how many
    calls were cancelled."""
    got: list[Any] = []
    cancelled = 0
    while len(got) < want:
        with trio.CancelScope() as scope:
            scope.cancel()
            await take(got)
        cancelled += scope.cancelled_caught
        if len(got) < want:
            await take(got)
    return got, cancelled


def batches(receive: Callable[[], Awaitable[list[Any]]]) -> Callable[[list[Any]], Awaitable[None]]:
    """A ``take`` of one batch."""

    async def take(got: list[Any]) -> None:
        got.extend(await receive())

    return take


def iterating(stream: Any, n: int) -> Callable[[list[Any]], Awaitable[None]]:
    """A ``take`` of up to ``n`` items by ``async for`` (a cancelled scope around it ends it at
    its next checkpoint)."""

    async def take(got: list[Any]) -> None:
        start = len(got)
        async for item in stream:
            got.append(item)
            if len(got) - start >= n:
                break

    return take


# ------------------------------------------------------------------------------ the buffer


async def test_buffer_get_keeps_the_item_it_was_cancelled_at() -> None:
    buf = MessageBuffer(10_000, "block")
    buf.put(list(range(3000)))

    async def take(got: list[Any]) -> None:
        for _ in range(700):  # a cancelled call ends at the checkpoint (every 512 items)
            if not buf.q:
                return
            got.append(await buf.get())

    got, cancelled = await alternate(take, 3000)
    assert got == list(range(3000))
    assert cancelled >= 2


@pytest.mark.parametrize("max_items", [None, 7])
async def test_buffer_get_batch_keeps_the_batch_it_was_cancelled_at(max_items: int | None) -> None:
    buf = MessageBuffer(10_000, "block")
    buf.put(list(range(100)))
    got, cancelled = await alternate(batches(lambda: buf.get_batch(max_items)), 100)
    assert got == list(range(100))
    assert cancelled >= 1


async def test_buffer_get_full_batch_keeps_the_batch_it_was_cancelled_at() -> None:
    buf = MessageBuffer(10_000, "block")
    buf.put(list(range(100)))
    got, cancelled = await alternate(batches(lambda: buf.get_full_batch(9, 0.0)), 100)
    assert got == list(range(100))
    assert cancelled >= 1


async def test_buffer_get_batch_checkpoints_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # waiting for the first item is the call's checkpoint: a consumer that keeps up (it waits
    # every time) is handed its batch as soon as it is woken, with no second pass through the
    # scheduler; one that finds items queued checkpoints once, before taking them
    explicit = 0
    checkpoint = trio.lowlevel.checkpoint

    async def counting() -> None:
        nonlocal explicit
        explicit += sys._getframe(1).f_code.co_filename == _buffer.__file__  # its own calls
        await checkpoint()

    monkeypatch.setattr(trio.lowlevel, "checkpoint", counting)
    buf = MessageBuffer(100, "block")
    got: list[Any] = []

    async def consumer() -> None:
        got.extend(await buf.get_batch(None))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        buf.put([1, 2, 3])
    assert got == [1, 2, 3] and explicit == 0
    buf.put([4, 5])
    assert await buf.get_batch(None) == [4, 5] and explicit == 1


# ------------------------------------------------------------------------------ live client


async def test_client_async_for_loses_nothing_to_cancellation() -> None:
    async with opened() as (emu, stream):
        emu.publish("iex", [_trade(i) for i in range(3000)])
        with trio.fail_after(10):
            got, cancelled = await alternate(iterating(stream, 400), 3000)
    assert [m.trade_id for m in got] == list(range(3000))
    assert cancelled >= 2


async def test_client_receive_batch_loses_nothing_to_cancellation() -> None:
    async with opened() as (emu, stream):
        with trio.fail_after(10):
            for start in range(0, 600, 50):
                emu.publish("iex", [_trade(i) for i in range(start, start + 50)])
            got, cancelled = await alternate(batches(lambda: stream.receive_batch(40)), 600)
    assert [m.trade_id for m in got] == list(range(600))
    assert cancelled >= 1


async def test_pooled_connection_loses_nothing_to_cancellation() -> None:
    async with (
        open_emulator(rate=0) as emu,
        open_pool(
            api_key="key",
            api_secret="secret",
            feed="iex",
            url=emu.url_for("iex"),
            stream_factory=in_memory(emu),
        ) as pool,
    ):
        handle = await pool.get_connection(["AAPL"], channels=["trades"])
        emu.publish("iex", [_trade(i) for i in range(3000)])
        with trio.fail_after(10):
            got, cancelled = await alternate(iterating(handle, 400), 3000)
    assert [m.trade_id for m in got] == list(range(3000))
    assert cancelled >= 2


# ------------------------------------------------------------------------------ Redis consumer


async def test_redis_consumer_receive_batch_loses_nothing_to_cancellation(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    msg = {"T": "t", "S": "AAPL", "i": 0, "x": "V", "p": 1.5, "s": 1, "t": 1, "c": [], "z": "C"}
    async with open_redis_publisher(url, feed="iex", gap_since_last=False) as pub:
        for i in range(300):
            pub.publish([{**msg, "i": i}])
        assert await pub.flush(5.0)
        async with open_redis_stream(
            url, feed="iex", trades=["*"], start="oldest", raw_data=True, count=25
        ) as stream:
            with trio.fail_after(10):
                got, cancelled = await alternate(batches(lambda: stream.receive_batch(10)), 300)
    assert [d["i"] for d in got] == list(range(300))
    assert cancelled >= 1


# ------------------------------------------------------------------------------ replay


@pytest.fixture(params=[4000, 1 << 20], ids=["small-chunks", "one-chunk"])
def recording(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, list[int]]:
    """2,000 trades in chunks of about 4 kB (every block loads one: a checkpoint) or in one
    chunk (blocks are decoded from memory, with no checkpoint of their own)."""
    path = tmp_path / "r.tarec"
    return path, write_recording(path, frames=80, per_frame=25, chunk_bytes=request.param)


async def test_replay_receive_batch_loses_nothing_to_cancellation(
    recording: tuple[Path, list[int]],
) -> None:
    path, ids = recording
    async with open_replay(path, raw_data=True) as stream:
        got, cancelled = await alternate(batches(lambda: stream.receive_batch(60)), len(ids))
    assert [d["i"] for d in got] == ids
    assert cancelled >= 1


async def test_replay_async_for_loses_nothing_to_cancellation(
    recording: tuple[Path, list[int]], iteration: str
) -> None:
    path, ids = recording
    async with open_replay(path, raw_data=True) as stream:
        got, cancelled = await alternate(iterating(stream, 300), len(ids))
    assert [d["i"] for d in got] == ids
    assert cancelled >= 1


async def test_timed_replay_keeps_items_and_times_together_when_cancelled(
    recording: tuple[Path, list[int]],
) -> None:
    # receive_times=True keeps a receive time per item; a cancelled call must not take one
    # without the other (the pairs would shift by one from there on)
    path, ids = recording

    async with open_replay(path, raw_data=True, receive_times=True) as stream:
        calls = 0
        by_iteration = iterating(stream, 300)

        async def take(got: list[Any]) -> None:
            nonlocal calls
            calls += 1
            if calls % 2:
                sink: list[Any] = []
                try:
                    await by_iteration(sink)
                finally:
                    got.extend((item["t"], item) for item in sink)
            else:
                got.extend(await stream.receive_timed_batch(50))

        got, cancelled = await alternate(take, len(ids))
    assert [d["i"] for _, d in got] == ids
    assert all(rx == d["t"] for rx, d in got)  # the recording's receive time is the trade's t
    assert cancelled >= 2


async def test_paced_replay_keeps_the_item_it_was_waiting_to_release(
    recording: tuple[Path, list[int]], autojump_clock: trio.testing.MockClock
) -> None:
    path, ids = recording
    async with open_replay(path, raw_data=True, speed=1.0) as stream:
        t0 = trio.current_time()
        got, cancelled = await alternate(iterating(stream, 30), len(ids))
        elapsed = trio.current_time() - t0
    assert [d["i"] for d in got] == ids
    assert cancelled >= 1
    # still paced by the items' own times: the last trade comes 79 ms after the first
    last_ns = BASE + 79 * 1_000_000
    assert elapsed == pytest.approx((last_ns - BASE) / 1e9, abs=1e-3)
