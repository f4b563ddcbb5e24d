"""Benchmark cases for the pipeline: client -> MessageHandler (1 and 4 workers, trivial processors).

Compared with the bare client's ``receive_batch`` throughput (case ``a_batch``); the project
target is a ratio of at least 0.70. The clock starts at the first received batch and stops when
the processors have seen ``params.total`` messages (so queued-but-unprocessed messages do not
count).
"""

from __future__ import annotations

import time
from typing import Any

import trio
from registry import KEY, SECRET, Params, case, ratio


class _Timed:
    """Wraps the client's ``receive_batch`` to note when the first batch arrived."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.t0 = 0.0

    async def receive_batch(self) -> list[Any]:
        items: list[Any] = await self.stream.receive_batch()
        if not self.t0:
            self.t0 = time.perf_counter()
        return items


async def _pipeline(p: Params, workers: int) -> dict[str, Any]:
    from trioalpaca import open_message_handler, open_stream

    n = 0
    done = trio.Event()
    t1 = 0.0

    def proc(batch: list[Any]) -> None:
        nonlocal n, t1
        n += len(batch)
        if n >= p.total and not done.is_set():
            t1 = time.perf_counter()
            done.set()

    async with open_stream(
        KEY, SECRET, feed="iex", url=p.url, trades=p.symbols, quotes=p.symbols
    ) as stream:
        timed = _Timed(stream)
        async with open_message_handler(worker_count=workers, batch_size=100) as handler:
            handler.register_processor("trades", proc)
            handler.register_processor("quotes", proc)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handler.consume, timed)
                await done.wait()
                nursery.cancel_scope.cancel()
            m = handler.get_metrics()["total"]
            handler.close()
    return {"msgs": n, "seconds": t1 - timed.t0, "dropped": m["dropped"], "errors": m["errors"]}


@case("p1", "client -> MessageHandler, 1 worker", "throughput")
def p1(p: Params) -> dict[str, Any]:
    return trio.run(_pipeline, p, 1)


@case("p4", "client -> MessageHandler, 4 workers", "throughput")
def p4(p: Params) -> dict[str, Any]:
    return trio.run(_pipeline, p, 4)


ratio("p1 / a_batch  MessageHandler 1 worker vs bare client", "p1", "a_batch", 0.70)
ratio("p4 / a_batch  MessageHandler 4 workers vs bare client", "p4", "a_batch", 0.70)
