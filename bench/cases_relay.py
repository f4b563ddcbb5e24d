"""Relay cases: latency through ``trioalpaca relay`` and fan-out throughput to 10 clients.

The relay runs as ``python -m trioalpaca relay`` in its own process (accept-any-key on loopback),
with the upstream pointed at the benchmark's server; the downstream clients (trioalpaca, raw
dicts, ``receive_batch``) run in the case's process.

* ``relay_lat_1`` / ``relay_lat_10`` (``paced``): the send-stamped feed (``bench/paced_server.py``)
  goes through the relay to 1 or 10 downstream clients: one measuring trioalpaca client (delivery
  time minus send stamp, per message) plus 9 sinks that read frames without decoding them, so that
  the case's own process keeps up and the relay's fan-out (encode + send to 10 sockets) is what is
  measured. Subtract the direct client's figure (``pl_b``, same feed without the relay) for the
  latency the relay adds. ``relay_cpu_s_per_M_in`` is the relay process's CPU per million upstream
  messages (after start-up).
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: CPU seconds the last relay process used (read just before it is stopped).
RELAY_CPU: list[float] = []


@contextmanager
def _relay(
    upstream_feed_url: str, send_buffer: int = 64 * 1024 * 1024, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run the relay in its own process (``extra``: more command-line options); yield its
    ``/v2/iex`` URL."""
    base = upstream_feed_url.rsplit("/v2/", 1)[0]
    env = {**os.environ, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "trioalpaca", "relay", "--listen", "127.0.0.1:0"]
    cmd += ["--accept-any-key", "--upstream-url", base, "--status-interval", "0"]
    cmd += ["--send-buffer", str(send_buffer), "--linger", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"relay did not start: {proc.stderr.read() if proc.stderr else ''}")
        cpu0 = _cpu_seconds(proc.pid)  # start-up (imports) is not the relay's per-message cost
        yield json.loads(line)["url"] + "/v2/iex"
    finally:
        try:
            RELAY_CPU.append(_cpu_seconds(proc.pid) - cpu0)
        except OSError:  # pragma: no cover - the process already exited
            pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _sink(url: str, symbols: list[str]) -> None:
    """A downstream client that reads frames without decoding them (bytes only)."""
    import msgpack
    from trio_websocket import open_websocket_url

    headers = [("Content-Type", "application/msgpack")]
    async with open_websocket_url(url, extra_headers=headers) as ws:
        await ws.get_message()
        await ws.send_message(msgpack.packb({"action": "auth", "key": "sink", "secret": "x"}))
        await ws.get_message()
        await ws.send_message(
            msgpack.packb({"action": "subscribe", "trades": symbols, "quotes": symbols})
        )
        while True:  # until the measuring client saw the end and the case cancels the sinks
            await ws.get_message()


async def _latency(p: Params, url: str, clients: int) -> dict[str, Any]:
    """One measuring trioalpaca client plus ``clients - 1`` sinks (the relay still encodes and
    sends to every one of them; the sinks' process does not decode, so it keeps up)."""
    from trioalpaca import open_stream

    meters = [_Meter()]
    stop = trio.Event()

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
                            stop.set()
                            return
                        continue
                    add(time_ns(), t)

    # a client process that cannot keep up never sees the end marker in time: stop anyway and
    # say so (``finished`` < ``clients``) rather than time out
    with trio.move_on_after(p.seconds + 20):
        async with trio.open_nursery() as nursery:
            for _ in range(clients - 1):
                nursery.start_soon(_sink, url, p.symbols)
            ready = trio.Event()
            nursery.start_soon(one, 0, ready)
            await ready.wait()
            await stop.wait()
            nursery.cancel_scope.cancel()
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
    out["cpu_s_per_M"] = results[0].get("cpu_s_per_M")  # the measuring client's
    out["gc_max_ms"] = max(r["gc_max_ms"] for r in results)
    out["server_rate"] = results[0].get("server_rate")
    out["server_late_frames"] = results[0].get("server_late_frames")
    return out


def _with_relay_cpu(result: dict[str, Any], upstream_msgs: float) -> dict[str, Any]:
    # the relay's own CPU per million upstream messages (warm-up included: an upper bound)
    if RELAY_CPU and upstream_msgs:
        result["relay_cpu_s_per_M_in"] = RELAY_CPU[-1] / upstream_msgs * 1e6
    return result


@case("relay_lat_1", "relay, 1 downstream client (raw batches)", "paced")
def relay_lat_1(p: Params) -> dict[str, Any]:
    with _relay(p.url) as url:
        r = trio.run(_latency, p, url, 1)
    return _with_relay_cpu(r, p.rate * p.seconds)


@case("relay_lat_10", "relay, 10 downstream clients (raw batches)", "paced")
def relay_lat_10(p: Params) -> dict[str, Any]:
    with _relay(p.url) as url:
        r = trio.run(_latency, p, url, 10)
    return _with_relay_cpu(r, p.rate * p.seconds)


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
        r = trio.run(_fanout, p, url, 10)
    return _with_relay_cpu(r, p.total)


ratio("relay_fanout_10 / b_batch  fan-out total vs direct raw", "relay_fanout_10", "b_batch", 1.0)
