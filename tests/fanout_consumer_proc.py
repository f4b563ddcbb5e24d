"""A consumer process for the hub tests: ``python -m tests.fanout_consumer_proc URL AFTER``.

Reads ``ta:{iex}:t`` and ``ta:{iex}:q`` from the oldest entry in raw mode and prints every item
as one JSON line; stops ``AFTER`` data items after the first gap marker (or after 20 s).
"""

from __future__ import annotations

import json
import sys

import trio

from trioalpaca.fanout import open_redis_stream


async def main(url: str, after: int) -> None:
    left: int | None = None
    with trio.move_on_after(20):
        async with open_redis_stream(
            url, feed="iex", trades=["*"], quotes=["*"], start="oldest", raw_data=True
        ) as stream:
            async for item in stream:
                print(json.dumps(item, sort_keys=True), flush=True)
                if item.get("T") == "reconnected" and left is None:
                    left = after
                elif left is not None and item.get("T") != "dropped":
                    left -= 1
                    if left <= 0:
                        return


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
