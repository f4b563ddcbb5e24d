"""Latency and cost cases against the paced, send-stamped server (``bench/paced_server.py``).

Every case reads the same paced feed (``params.rate`` msgs/s in frames of 10, each message's
``t`` being its frame's send time) and measures, for each message handed to user code,
``time.time_ns()`` minus ``t``: the latency the client added (plus the kernel's loopback hop,
which the bare floor also pays). The first second is warm-up and is not counted.

Each case also reports, over the measured window:

* ``cpu_s_per_M``: CPU seconds (user + system, this process) per million messages;
* ``gc_max_ms`` / ``gc_total_ms`` / ``gc_count``: garbage-collector pauses, timed with
  ``gc.callbacks``;
* ``server_late_frames``: frames the server sent more than 1 ms after they were due (if the server
  itself falls behind, the feed is burstier than asked; reported so a reader can tell).
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any

import trio
from registry import KEY, SECRET, Params, bare_session, case

WARMUP_NS = 1_000_000_000


class _Meter:
    """Collects per-message latencies after warm-up, CPU time and GC pauses over the window."""

    def __init__(self) -> None:
        self.lat: list[int] = []
        self.cut: int | None = None
        self.cpu0 = 0.0
        self.gc_pauses: list[float] = []
        self._gc_start = 0.0
        self.summary: dict[str, Any] = {}
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if self.cut is None:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_start)

    def add(self, now_ns: int, t_ns: int) -> None:
        if self.cut is None:
            self.cut = t_ns + WARMUP_NS
            return
        if t_ns < self.cut:
            return
        if not self.lat:
            self.cpu0 = _cpu()
        self.lat.append(now_ns - t_ns)

    def result(self) -> dict[str, Any]:
        cpu = _cpu() - self.cpu0
        gc.callbacks.remove(self._on_gc)
        lat = sorted(self.lat)
        n = len(lat)
        out: dict[str, Any] = {"msgs": n}
        if n:
            for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
                out[f"{name}_ms"] = lat[min(n - 1, int(q * n))] / 1e6
            out["max_ms"] = lat[-1] / 1e6
            out["over_10ms"] = sum(1 for x in lat if x > 10_000_000)
            out["cpu_s_per_M"] = cpu / n * 1e6
        out["gc_count"] = len(self.gc_pauses)
        out["gc_max_ms"] = max(self.gc_pauses, default=0.0) * 1e3
        out["gc_total_ms"] = sum(self.gc_pauses) * 1e3
        out["server_late_frames"] = self.summary.get("late_frames")
        out["server_rate"] = self.summary.get("achieved_rate")
        return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stream(p: Params, **kwargs: Any) -> Any:
    from trioalpaca import open_stream

    return open_stream(
        KEY, SECRET, feed="iex", url=p.url, trades=p.symbols, quotes=p.symbols, **kwargs
    )


async def _trioalpaca(p: Params, mode: str, freeze: bool = False) -> dict[str, Any]:
    meter = _Meter()
    time_ns = time.time_ns
    add = meter.add
    async with _stream(p, raw_data=(mode == "raw"), buffer_size=1_000_000) as stream:
        if freeze:
            gc.freeze()
        if mode == "batch":
            done = False
            while not done:
                for msg in await stream.receive_batch():
                    ts = getattr(msg, "timestamp_ns", None)
                    if ts is None:
                        if getattr(msg, "type", None) == "bench_end":
                            meter.summary = msg.raw
                            done = True
                        continue
                    add(time_ns(), ts)
        elif mode == "raw":
            async for msg in stream:
                t = msg.get("t") if isinstance(msg, dict) else None
                if t is None:
                    if isinstance(msg, dict) and msg.get("T") == "bench_end":
                        meter.summary = msg
                        break
                    continue
                add(time_ns(), t)
        else:
            async for msg in stream:
                ts = getattr(msg, "timestamp_ns", None)
                if ts is None:
                    if getattr(msg, "type", None) == "bench_end":
                        meter.summary = msg.raw
                        break
                    continue
                add(time_ns(), ts)
    return meter.result()


@case("pl_a", "trioalpaca typed (async for)", "paced")
def pl_a(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca, p, "typed")


@case("pl_a_gc", "trioalpaca typed, gc.freeze() after start", "paced")
def pl_a_gc(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca, p, "typed", True)


@case("pl_b", "trioalpaca raw dicts (async for)", "paced")
def pl_b(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca, p, "raw")


@case("pl_a_batch", "trioalpaca typed (receive_batch)", "paced")
def pl_a_batch(p: Params) -> dict[str, Any]:
    return trio.run(_trioalpaca, p, "batch")


async def _floor(p: Params) -> dict[str, Any]:
    import msgpack

    meter = _Meter()
    time_ns = time.time_ns
    add = meter.add
    async with bare_session(p.url, p.symbols) as ws:
        unpackb = msgpack.unpackb
        get = ws.get_message
        done = False
        while not done:
            for msg in unpackb(await get()):
                t = msg.get("t")
                if t is None:
                    meter.summary = msg
                    done = True
                    continue
                add(time_ns(), t.to_unix_nano())
    return meter.result()


@case("pl_e", "bare trio-websocket + msgpack.unpackb (floor)", "paced")
def pl_e(p: Params) -> dict[str, Any]:
    return trio.run(_floor, p)


def _alpaca_py(p: Params) -> dict[str, Any]:
    import asyncio

    from alpaca.data.enums import DataFeed
    from alpaca.data.live import StockDataStream

    meter = _Meter()
    time_ns = time.time_ns

    async def main() -> None:
        stream = StockDataStream(KEY, SECRET, feed=DataFeed.IEX, url_override=p.url)

        async def handler(msg: Any) -> None:
            # alpaca-py's models carry a datetime (microseconds): enough for milliseconds.
            ts = msg.timestamp
            add_ns = int(ts.timestamp() * 1_000_000) * 1000
            meter.add(time_ns(), add_ns)

        stream.subscribe_trades(handler, *p.symbols)
        stream.subscribe_quotes(handler, *p.symbols)
        task = asyncio.create_task(stream._run_forever())
        # alpaca-py drops unknown T values, so the end of the feed is the end of its duration.
        await asyncio.sleep(p.seconds + 1.5)
        await stream.stop_ws()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass

    asyncio.run(main())
    return meter.result()


@case("pl_c", "alpaca-py 0.44 StockDataStream typed", "paced")
def pl_c(p: Params) -> dict[str, Any]:
    return _alpaca_py(p)
