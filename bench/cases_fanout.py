"""Benchmark cases for the Redis fan-out (trioalpaca.fanout): publish, consume, end to end.

Each case starts its own ``redis-server`` (no persistence) on a free loopback port; without
redis-server on PATH a case reports an error instead of a figure.

* ``fan_pub``: the client (raw, batches) reads the burst feed and a publisher writes it into
  Redis; msgs/s = messages confirmed written by Redis, and CPU seconds of this process (client
  and publisher; not redis-server's). Target: >= 50% of ``b_batch``.
* ``fan_consume`` / ``fan_consume_typed``: a stream pre-filled with the burst feed is read back
  by one consumer (raw dicts / typed models); msgs/s.
* ``fan_relay_pub``: ``trioalpaca relay --redis`` in its own process publishes its upstream (the
  burst feed) while serving one downstream raw client; msgs/s = data messages in Redis over the
  span of their entries' IDs (Redis' own write times), and the relay process's CPU per million
  upstream messages. Set against ``fan_pub`` (a client's publisher, no relay): reported.
* ``fan_e2e``: paced feed (``--rate``, 20k msgs/s by default) -> client -> publisher -> Redis ->
  consumer in its own process (as on another machine); latency = delivery time minus the
  publisher's receive time of the entry (``RedisStream.statistics()["lag_s"]`` sampled per
  delivered batch, weighted by the batch's messages), after a 1 s warm-up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio
from registry import KEY, SECRET, Params, case, ratio


@contextmanager
def _redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(5)


def _client(p: Params) -> Any:
    from trioalpaca import open_stream

    return open_stream(
        KEY, SECRET, feed="iex", url=p.url, raw_data=True, trades=p.symbols, quotes=p.symbols
    )


async def _publish_all(url: str, p: Params) -> dict[str, Any]:
    from trioalpaca.fanout import open_redis_publisher

    async with _client(p) as client, open_redis_publisher(url, client, maxlen=None) as pub:
        t0 = None
        c0 = 0.0
        n0 = 0
        while True:
            done = pub.published_messages
            if t0 is None and done:
                t0 = time.perf_counter()
                c0 = time.process_time()
                n0 = done
            if done >= p.total:
                break
            await trio.sleep(0.01)
        dt = time.perf_counter() - (t0 or time.perf_counter())
        cpu = time.process_time() - c0
        stats = pub.statistics()
        return {
            "msgs": stats["published_messages"] - n0,
            "seconds": dt,
            # this process only (client + publisher); redis-server's CPU is not counted
            "cpu_s": cpu,
            "entries": stats["published_entries"],
            "dropped": stats["dropped"],
            "write_p99_ms": stats["write_p99_ms"],
        }


@case("fan_pub", "fanout publisher into Redis (raw batches)", "throughput")
def fan_pub(p: Params) -> dict[str, Any]:
    with _redis() as url:
        return trio.run(_publish_all, url, p)


async def _relay_published(p: Params, redis_url: str, relay_url: str) -> dict[str, Any]:
    """One downstream client takes the burst through the relay; then the relay publisher's
    data entries are read back from Redis: their messages, and the span of their IDs."""
    import msgpack

    from trioalpaca import open_stream
    from trioalpaca.fanout import StreamLayout
    from trioalpaca.fanout._redis import open_redis_client, parse_id

    received = 0
    async with open_stream(
        "fan0", "x", feed="iex", url=relay_url, raw_data=True, trades=p.symbols, quotes=p.symbols
    ) as client:
        while received < p.total:
            with trio.move_on_after(2.0):
                received += len(await client.receive_batch())
                continue
            break  # the burst is over
    layout = StreamLayout.for_feed("iex")
    keys = [layout.key("t"), layout.key("q")]
    msgs = 0
    first_ms = last_ms = None
    async with open_redis_client(redis_url) as redis:
        lengths: list[int] = []
        while True:  # until the publisher has written everything (no entry for 0.5 s)
            now = [int(await redis.xlen(k)) for k in keys]
            if now == lengths:
                break
            lengths = now
            await trio.sleep(0.5)
        for key in keys:
            for entry in await redis.xrange(key):
                fields = entry.field_values
                if fields.get(b"k") != b"data":
                    continue
                msgs += len(msgpack.unpackb(fields[b"d"]))
                ms = parse_id(entry.identifier)[0]
                first_ms = ms if first_ms is None else min(first_ms, ms)
                last_ms = ms if last_ms is None else max(last_ms, ms)
    seconds = ((last_ms or 0) - (first_ms or 0)) / 1000.0
    return {"msgs": msgs, "seconds": seconds, "received": received}


@case("fan_relay_pub", "relay publishing into Redis (+1 raw client)", "throughput")
def fan_relay_pub(p: Params) -> dict[str, Any]:
    from cases_relay import _relay, _with_relay_cpu

    with _redis() as url:
        with _relay(p.url, extra=("--redis", url)) as relay_url:
            r = trio.run(_relay_published, p, url, relay_url)
        return _with_relay_cpu(r, p.total)


ratio("fan_relay_pub / fan_pub  relay publisher vs client's", "fan_relay_pub", "fan_pub", None)


async def _consume_all(p: Params, raw: bool) -> dict[str, Any]:
    from trioalpaca.fanout import open_redis_stream

    with _redis() as url:
        await _publish_all(url, p)
        n = 0
        async with open_redis_stream(
            url, feed="iex", trades=["*"], quotes=["*"], start="oldest", raw_data=raw
        ) as stream:
            t0 = time.perf_counter()
            while n < p.total:
                n += len(await stream.receive_batch())
            dt = time.perf_counter() - t0
        return {"msgs": n, "seconds": dt}


@case("fan_consume", "fanout consumer, raw dicts (receive_batch)", "throughput")
def fan_consume(p: Params) -> dict[str, Any]:
    return trio.run(_consume_all, p, True)


@case("fan_consume_typed", "fanout consumer, typed (receive_batch)", "throughput")
def fan_consume_typed(p: Params) -> dict[str, Any]:
    return trio.run(_consume_all, p, False)


def _lag_percentiles(samples: list[tuple[float, int]]) -> dict[str, Any]:
    samples.sort()
    total = sum(n for _, n in samples)
    if not total:
        return {"error": "no messages", "p50_ms": float("nan"), "p99_ms": float("nan"), "msgs": 0}

    def pct(q: float) -> float:
        want = q * total
        seen = 0
        for lag, n in samples:
            seen += n
            if seen >= want:
                return lag * 1e3
        return samples[-1][0] * 1e3

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "msgs": total}


async def _consumer_proc(url: str, warm: float, seconds: float) -> dict[str, Any]:
    """The end-to-end consumer (its own process, as on another machine)."""
    from trioalpaca.fanout import open_redis_stream

    samples: list[tuple[float, int]] = []
    async with open_redis_stream(url, feed="iex", trades=["*"], quotes=["*"]) as stream:
        t_warm = time.monotonic() + warm
        end = t_warm + seconds
        with trio.move_on_after(warm + seconds):
            while True:
                items = await stream.receive_batch()
                lag = stream.statistics()["lag_s"]
                if time.monotonic() >= t_warm and lag is not None:
                    samples.append((lag, len(items)))
                if time.monotonic() >= end:
                    break
    out = _lag_percentiles(samples)
    out["rate"] = out["msgs"] / seconds
    return out


async def _e2e(p: Params) -> dict[str, Any]:
    import json
    import sys

    from trioalpaca.fanout import open_redis_publisher

    with _redis() as url:
        async with _client(p) as client, open_redis_publisher(url, client) as pub:
            code = (
                "import json, sys, trio; sys.path.insert(0, sys.argv[1]); import cases_fanout; "
                "print(json.dumps(trio.run(cases_fanout._consumer_proc, sys.argv[2], 1.0, "
                "float(sys.argv[3]))))"
            )
            here = __file__.rsplit("/", 1)[0]
            proc = await trio.run_process(
                [sys.executable, "-c", code, here, url, str(p.seconds)],
                capture_stdout=True,
                check=False,
            )
            pub_stats = pub.statistics()
    lines = [x for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    if not lines:
        return {"error": "the consumer process failed", "p50_ms": float("nan"), "msgs": 0}
    result: dict[str, Any] = json.loads(lines[-1])
    result["publisher_dropped"] = pub_stats["dropped"]
    result["published"] = pub_stats["published_messages"]
    return result


@case("fan_e2e", "fanout end to end (client->Redis->consumer)", "latency")
def fan_e2e(p: Params) -> dict[str, Any]:
    return trio.run(_e2e, p)


ratio("fan_pub / b_batch  publish vs raw client", "fan_pub", "b_batch", 0.5)
