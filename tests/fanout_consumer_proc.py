"""A consumer for the hub tests: ``python -m tests.fanout_consumer_proc URL AFTER`` (a process)
or :func:`collect` (in the test's own process).

Reads ``ta:{iex}:t`` and ``ta:{iex}:q`` from the oldest entry in raw mode; stops ``AFTER`` data
items after the first gap marker (or after 20 s). The process prints every item as a JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from trioalpaca.fanout import open_redis_stream


async def collect(url: str, after: int) -> list[dict[str, Any]]:
    """Every item up to ``after`` data items past the first gap marker."""
    out: list[dict[str, Any]] = []
    left: int | None = None
    with trio.move_on_after(20):
        async with open_redis_stream(
            url, feed="iex", trades=["*"], quotes=["*"], start="oldest", raw_data=True
        ) as stream:
            async for item in stream:
                out.append(item)
                if item.get("T") == "reconnected" and left is None:
                    left = after
                elif left is not None and item.get("T") != "dropped":
                    left -= 1
                    if left <= 0:
                        break
    return out


async def main(url: str, after: int) -> None:
    for item in await collect(url, after):
        print(json.dumps(item, sort_keys=True), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
