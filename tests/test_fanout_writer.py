"""The publisher's writer against a fake Redis (no server): when it coalesces writes."""

from __future__ import annotations

from typing import Any

import msgpack
import trio
import trio.testing

from trioalpaca.fanout import publisher as pubmod
from trioalpaca.fanout._layout import StreamLayout
from trioalpaca.fanout.publisher import RedisPublisher


class _FakeRedis:
    """Takes every write script call at once; records (virtual time, messages written)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def register_script(self, script: str) -> Any:
        async def call(keys: list[str], args: list[Any], client: Any = None) -> list[int]:
            rows = msgpack.unpackb(args[3], raw=True)  # (rows are packed without bin type)
            msgs = sum(len(msgpack.unpackb(row[2])) for row in rows if row[1] == b"data")
            self.calls.append((trio.current_time(), msgs))
            return [1, len(rows)]

        return call


def _batch(n: int) -> list[dict[str, Any]]:
    return [{"T": "t", "S": "AAPL", "i": i} for i in range(n)]


async def _write_now(pub: RedisPublisher, redis: _FakeRedis, n: int) -> float:
    """Queue n messages; the virtual seconds until the write that carries them. Returns once
    the writer is blocked again (idle, or waiting for more after a large write)."""
    t0 = trio.current_time()
    before = len(redis.calls)
    pub.publish(_batch(n), rx_ns=1)
    while len(redis.calls) == before:
        await trio.sleep(0.0001)
    await trio.testing.wait_all_tasks_blocked()
    assert len(redis.calls) == before + 1 and redis.calls[-1][1] == n
    return redis.calls[-1][0] - t0


async def test_after_a_large_write_the_writer_waits_for_more(autojump_clock: Any) -> None:
    redis = _FakeRedis()
    pub = RedisPublisher(redis, StreamLayout.for_feed("iex"), 1)
    wait = pubmod._COALESCE_WAIT
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pub._run_writer)
        # an idle writer writes at once, however large the batch
        assert await _write_now(pub, redis, pubmod._COALESCE_AFTER) < 0.001
        # right after a large write, a small batch waits out the coalescing window
        # (the window opened at the large write, a poll step before this batch)
        assert wait - 0.0005 <= await _write_now(pub, redis, 10) < wait + 0.001
        # after a small write (a slow feed), nothing waits
        assert await _write_now(pub, redis, 10) < 0.001
        # after a large write, the wait ends as soon as enough is queued
        assert await _write_now(pub, redis, pubmod._COALESCE_AFTER) < 0.001
        assert await _write_now(pub, redis, pubmod._COALESCE_TO) < 0.001
        assert await pub.flush(1.0)
        nursery.cancel_scope.cancel()


async def test_a_small_queue_coalesces_up_to_half_of_it(autojump_clock: Any) -> None:
    redis = _FakeRedis()
    size = pubmod._COALESCE_AFTER * 2
    pub = RedisPublisher(redis, StreamLayout.for_feed("iex"), 1, queue_size=size)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pub._run_writer)
        assert await _write_now(pub, redis, pubmod._COALESCE_AFTER) < 0.001
        assert await _write_now(pub, redis, size // 2) < 0.001  # half the queue is enough
        assert pub.statistics()["dropped"] == 0
        nursery.cancel_scope.cancel()
