"""Fan a stream out through Redis: publish it once, read it from any number of processes.

Upstream: Alpaca, or ``DATA_PROXY_WS`` (the emulator in the tests); Redis: ``REDIS_URL``.
"""

from __future__ import annotations

import os

import trio

import trioalpaca
from trioalpaca.fanout import open_redis_publisher, open_redis_stream

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


async def publish(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    # [publish]
    async with (
        trioalpaca.open_stream(
            feed="iex", trades=["AAPL", "MSFT"], quotes=["AAPL"], raw_data=True
        ) as stream,
        open_redis_publisher(REDIS, stream, maxlen=100_000) as publisher,
    ):
        task_status.started()
        while True:
            await trio.sleep(10)
            stats = publisher.statistics()
            print(f"published {stats['published_messages']}, queued {stats['queue_depth']}")
    # [publish end]


async def consume(messages: int) -> None:
    # [consume]
    async with open_redis_stream(REDIS, feed="iex", trades=["AAPL"], start="oldest") as stream:
        n = 0
        async for msg in stream:  # the same items open_stream yields
            if isinstance(msg, trioalpaca.Reconnected):
                print(f"gap of {msg.gap_seconds:.1f} s")
            elif isinstance(msg, trioalpaca.Trade):
                print(f"{msg.symbol} {msg.price} x {msg.size}")
                n += 1
                if n == messages:
                    break
    # [consume end]


async def main(messages: int = 5) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(publish)
        await consume(messages)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
