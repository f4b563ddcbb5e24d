"""Relay cases: latency through ``trioalpaca relay`` and fan-out throughput to 10 clients.

The relay runs as ``python -m trioalpaca relay`` in its own process (accept-any-key on loopback),
with the upstream pointed at the benchmark's server; the downstream clients (trioalpaca, raw
dicts, ``receive_batch``) run in the case's process.

* ``relay_lat_1`` / ``relay_lat_10`` (``paced``): the send-stamped feed (``bench/paced_server.py``)
  goes through the relay to 1 or 10 clients; each message's delivery time minus its send stamp,
  over every client. Subtract the direct client's figure (``pl_b``, same feed without the relay)
  for the latency the relay adds.
* ``relay_fanout_10`` (``throughput``): the emulator's burst through the relay to 10 clients;
  the figure is the total messages delivered to all 10 per second, set against the direct raw
  client's ``b_batch`` in the ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio
from cases_latency import _Meter
from registry import KEY, SECRET, Params, case, ratio


@contextmanager
def _relay(upstream_feed_url: str, send_buffer: int = 64 * 1024 * 1024) -> Iterator[str]:
    """Run the relay in its own process; yield its ``/v2/iex`` URL."""
    base = upstream_feed_url.rsplit("/v2/", 1)[0]
    env = {**os.environ, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "trioalpaca", "relay", "--listen", "127.0.0.1:0"]
    cmd += ["--accept-any-key", "--upstream-url", base, "--status-interval", "0"]
    cmd += ["--send-buffer", str(send_buffer), "--linger", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"relay did not start: {proc.stderr.read() if proc.stderr else ''}")
        yield json.loads(line)["url"] + "/v2/iex"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _latency(p: Params, url: str, clients: int) -> dict[str, Any]:
    from trioalpaca import open_stream

    meters = [_Meter() for _ in range(clients)]

    async def one(i: int, ready: trio.Event) -> None:
        meter = meters[i]
        add = meter.add
        time_ns = time.time_ns
        async with open_stream(
            f"bench{i}", "x", feed="iex", url=url, raw_data=True, buffer_size=1_000_000
        ) as s:
            ready.set()
            await s.subscribe(trades=p.symbols, quotes=p.symbols)
            while True:
                for m in await s.receive_batch():
                    t = m.get("t")
                    if t is None:
                        if m.get("T") == "bench_end":
                            meter.summary = m
                            return
                        continue
                    add(time_ns(), t)

    # a client process that cannot keep up never sees the end marker in time: stop anyway and
    # say so (``finished`` < ``clients``) rather than time out
    with trio.move_on_after(p.seconds + 20):
        async with trio.open_nursery() as nursery:
            for i in range(clients):
                ready = trio.Event()
                nursery.start_soon(one, i, ready)
                await ready.wait()
    results = [m.result() for m in meters]
    lat: list[int] = sorted(x for m in meters for x in m.lat)
    n = len(lat)
    out: dict[str, Any] = {"msgs": n, "clients": clients}
    out["finished"] = sum(1 for m in meters if m.summary)
    if n:
        for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999)):
            out[f"{name}_ms"] = lat[min(n - 1, int(q * n))] / 1e6
        out["max_ms"] = lat[-1] / 1e6
        out["over_10ms"] = sum(1 for x in lat if x > 10_000_000)
    out["cpu_s_per_M"] = results[0].get("cpu_s_per_M")
    out["gc_max_ms"] = max(r["gc_max_ms"] for r in results)
    out["server_rate"] = results[0].get("server_rate")
    out["server_late_frames"] = results[0].get("server_late_frames")
    return out


@case("relay_lat_1", "relay, 1 downstream client (raw batches)", "paced")
def relay_lat_1(p: Params) -> dict[str, Any]:
    with _relay(p.url) as url:
        return trio.run(_latency, p, url, 1)


@case("relay_lat_10", "relay, 10 downstream clients (raw batches)", "paced")
def relay_lat_10(p: Params) -> dict[str, Any]:
    with _relay(p.url) as url:
        return trio.run(_latency, p, url, 10)


async def _fanout(p: Params, url: str, clients: int) -> dict[str, Any]:
    from trioalpaca import open_stream

    counts = [0] * clients
    first: list[float] = []
    last = [0.0] * clients
    quiet = 2.0

    async def one(i: int, go: trio.Event, ready: trio.Event) -> None:
        async with open_stream(f"fan{i}", "x", feed="iex", url=url, raw_data=True) as s:
            ready.set()
            await go.wait()
            await s.subscribe(trades=p.symbols, quotes=p.symbols)
            while counts[i] < p.total:
                with trio.move_on_after(quiet):
                    batch = await s.receive_batch()
                    if not first:
                        first.append(time.perf_counter())
                    counts[i] += len(batch)
                    last[i] = time.perf_counter()
                    continue
                break  # the burst is over (or this client was cut)

    go = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            ready = trio.Event()
            nursery.start_soon(one, i, go, ready)
            await ready.wait()
        go.set()
    total = sum(counts)
    seconds = max(last) - first[0] if first else 0.0
    return {"msgs": total, "seconds": seconds, "per_client_min": min(counts)}


@case("relay_fanout_10", "relay fan-out, total to 10 clients (raw)", "throughput")
def relay_fanout_10(p: Params) -> dict[str, Any]:
    with _relay(p.url) as url:
        return trio.run(_fanout, p, url, 10)


ratio("relay_fanout_10 / b_batch  fan-out total vs direct raw", "relay_fanout_10", "b_batch", 1.0)
