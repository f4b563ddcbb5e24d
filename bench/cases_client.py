"""Benchmark cases for the client: trioalpaca vs alpaca-py vs a bare trio-websocket loop."""

from __future__ import annotations

import time
from typing import Any

import trio
from registry import KEY, SECRET, Params, bare_session, case

# ---------------------------------------------------------------- helpers


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def _percentiles(values: list[float]) -> dict[str, float]:
    values.sort()
    n = len(values)
    if not n:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": values[int(0.50 * (n - 1))] / 1e6,
        "p99_ms": values[int(0.99 * (n - 1))] / 1e6,
    }


def _trioalpaca_stream(p: Params, **kwargs: Any) -> Any:
    from trioalpaca import open_stream

    return open_stream(
        KEY,
        SECRET,
        feed="iex",
        url=p.url,
        trades=p.symbols,
        quotes=p.symbols,
        **kwargs,
    )


# ---------------------------------------------------------------- throughput


async def _trioalpaca_throughput(p: Params, raw: bool, batch: bool) -> dict[str, Any]:
    n = 0
    t0 = c0 = 0.0
    async with _trioalpaca_stream(p, raw_data=raw) as stream:
        if batch:
            while n < p.total:
                items = await stream.receive_batch()
                if n == 0:
                    t0 = time.perf_counter()
                    c0 = time.process_time()
                for _msg in items:
                    n += 1
        else:
            async for _msg in stream:
                if n == 0:
                    t0 = time.perf_counter()
                    c0 = time.process_time()
                n += 1
                if n >= p.total:
                    break
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"msgs": n, "seconds": dt, "cpu_s": cpu}


@case("a", "trioalpaca typed (async for)", "throughput")
def a_typed(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca_throughput, p, False, False)


@case("b", "trioalpaca raw dicts (async for)", "throughput")
def b_raw(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca_throughput, p, True, False)


@case("a_batch", "trioalpaca typed (receive_batch)", "throughput")
def a_typed_batch(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca_throughput, p, False, True)


@case("b_batch", "trioalpaca raw dicts (receive_batch)", "throughput")
def b_raw_batch(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca_throughput, p, True, True)


def _alpaca_py(p: Params, raw: bool, mode: str) -> dict[str, Any]:
    import asyncio

    from alpaca.data.enums import DataFeed
    from alpaca.data.live import StockDataStream

    state: dict[str, Any] = {"n": 0, "t0": 0.0, "t1": 0.0, "lat": [], "rss": []}

    async def main() -> None:
        stream = StockDataStream(KEY, SECRET, raw_data=raw, feed=DataFeed.IEX, url_override=p.url)
        done = asyncio.Event()
        warm_until = 0.0

        async def throughput(msg: Any) -> None:
            if state["n"] == 0:
                state["t0"] = time.perf_counter()
                state["c0"] = time.process_time()
            state["n"] += 1
            if state["n"] >= p.total:
                state["t1"] = time.perf_counter()
                state["c1"] = time.process_time()
                done.set()

        async def latency(msg: Any) -> None:
            now = time.time_ns()
            if time.perf_counter() < warm_until:
                return
            if raw:
                state["lat"].append(now - msg["t"].to_unix_nano())
            else:
                state["lat"].append(now - int(msg.timestamp.timestamp() * 1e9))
            state["n"] += 1

        handler = throughput if mode == "throughput" else latency
        stream.subscribe_trades(handler, *p.symbols)
        stream.subscribe_quotes(handler, *p.symbols)
        task = asyncio.create_task(stream._run_forever())
        try:
            if mode == "throughput":
                await asyncio.wait_for(done.wait(), timeout=600)
            else:
                warm_until = time.perf_counter() + 2.0
                await asyncio.sleep(p.seconds + 2.0)
        finally:
            await stream.stop_ws()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    asyncio.run(main())
    if mode == "throughput":
        return {
            "msgs": state["n"],
            "seconds": state["t1"] - state["t0"],
            "cpu_s": state.get("c1", 0.0) - state.get("c0", 0.0),
        }
    return {"msgs": state["n"], **_percentiles(state["lat"])}


@case("c", "alpaca-py 0.44 StockDataStream typed", "throughput")
def c_alpaca_typed(p: Params) -> dict[str, Any]:
    return _alpaca_py(p, False, "throughput")


@case("d", "alpaca-py 0.44 StockDataStream raw", "throughput")
def d_alpaca_raw(p: Params) -> dict[str, Any]:
    return _alpaca_py(p, True, "throughput")


async def _bare(p: Params) -> dict[str, Any]:
    import msgpack

    n = 0
    t0 = 0.0
    async with bare_session(p.url, p.symbols) as ws:
        unpackb = msgpack.unpackb
        get = ws.get_message
        while n < p.total:
            msgs = unpackb(await get())
            if n == 0:
                t0 = time.perf_counter()
                c0 = time.process_time()
            for _msg in msgs:
                n += 1
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"msgs": n, "seconds": dt, "cpu_s": cpu}


@case("e", "bare trio-websocket + msgpack.unpackb", "throughput")
def e_bare(p: Params) -> dict[str, Any]:
    return trio.run(_bare, p)


# ---------------------------------------------------------------- memory (slow consumer)


async def _slow_consumer(p: Params) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    consumed = 0
    async with _trioalpaca_stream(p, overflow="drop_oldest") as stream:
        start = trio.current_time()

        async def sample() -> None:
            while True:
                samples.append((trio.current_time() - start, _rss_mb()))
                await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            # a consumer 10x slower than the feed: at most rate/10 messages per second
            per_tick = max(1, int(p.rate / 10 / 100))
            with trio.move_on_after(p.seconds):
                async for _msg in stream:
                    consumed += 1
                    if consumed % per_tick == 0:
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        metrics = stream.get_metrics()
    after_warmup = [rss for t, rss in samples if t >= 3.0] or [samples[-1][1]]
    return {
        "consumed": consumed,
        "received": metrics["messages_received"],
        "dropped": metrics["dropped"],
        "rss_start_mb": after_warmup[0],
        "rss_peak_mb": max(rss for _, rss in samples),
        "rss_end_mb": samples[-1][1],
        "rss_growth_mb": samples[-1][1] - after_warmup[0],
    }


@case("rss", "trioalpaca drop_oldest, consumer 10x slower", "memory")
def rss(p: Params) -> dict[str, Any]:
    return trio.run(_slow_consumer, p)


# ---------------------------------------------------------------- buffered (RSS per million)


async def _buffered(p: Params, raw: bool) -> dict[str, Any]:
    """Let ``p.total`` messages pile up in the client's buffer unread, then measure memory."""
    import gc
    import sys

    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.collect()
    rss0 = _rss_mb()
    blocks0 = sys.getallocatedblocks()
    gc.callbacks.append(on_gc)
    async with _trioalpaca_stream(p, raw_data=raw, buffer_size=p.total + 10_000) as stream:
        while stream.get_metrics()["buffered"] < p.total:
            await trio.sleep(0.05)
        gc.callbacks.remove(on_gc)
        gc.collect()
        rss1 = _rss_mb()
        blocks1 = sys.getallocatedblocks()
        buffered = stream.get_metrics()["buffered"]
    return {
        "buffered": buffered,
        "rss_mb": rss1 - rss0,
        "rss_mb_per_M": (rss1 - rss0) / buffered * 1e6,
        "blocks_per_msg": (blocks1 - blocks0) / buffered,
        "gc_count": len(pauses),
        "gc_max_ms": max(pauses, default=0.0) * 1e3,
        "gc_total_ms": sum(pauses) * 1e3,
    }


@case("buf_a", "trioalpaca typed, messages held in the buffer", "buffered")
def buf_a(p: Params) -> dict[str, Any]:
    return trio.run(_buffered, p, False)


@case("buf_b", "trioalpaca raw dicts, messages held in the buffer", "buffered")
def buf_b(p: Params) -> dict[str, Any]:
    return trio.run(_buffered, p, True)
