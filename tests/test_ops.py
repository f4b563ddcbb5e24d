"""The shared operations endpoint: /metrics (Prometheus text) and /healthz, scraped over TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import trio
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from trioalpaca._ops import serve_ops_http


async def _get(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, body


def _request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


class _Snapshot:
    """A collector that reads a value only when scraped."""

    def __init__(self) -> None:
        self.depth = 3

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("demo_queue_depth", "queued bytes", labels=["client"])
        g.add_metric(["a"], self.depth)
        yield g


async def test_metrics_and_healthz_scraped() -> None:
    registry = CollectorRegistry()
    counter = Counter("demo_messages", "messages", registry=registry)
    counter.inc(5)
    snap = _Snapshot()
    registry.register(snap)
    healthy = {"ok": True}

    def health() -> tuple[bool, dict[str, object]]:
        return healthy["ok"], {"upstreams": 1}

    async with trio.open_nursery() as nursery:
        ops = await nursery.start(serve_ops_http, 0, registry, health)
        assert ops.url == f"http://127.0.0.1:{ops.port}"
        status, headers, body = await _get(ops.port, _request("/metrics"))
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert int(headers["content-length"]) == len(body)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["demo_messages"].samples[0].value == 5
        assert families["demo_queue_depth"].samples[0].labels == {"client": "a"}
        assert families["demo_queue_depth"].samples[0].value == 3
        snap.depth = 7  # read at scrape time, not at registration
        _, _, body = await _get(ops.port, _request("/metrics"))
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["demo_queue_depth"].samples[0].value == 7

        status, headers, body = await _get(ops.port, _request("/healthz"))
        assert status == 200
        assert json.loads(body) == {"status": "ok", "upstreams": 1}
        healthy["ok"] = False
        status, _, body = await _get(ops.port, _request("/healthz"))
        assert status == 503
        assert json.loads(body)["status"] == "unhealthy"

        status, _, body = await _get(ops.port, _request("/healthz", "HEAD"))
        assert status == 503 and body == b""
        assert (await _get(ops.port, _request("/nope")))[0] == 404
        assert (await _get(ops.port, _request("/metrics", "POST")))[0] == 405
        assert (await _get(ops.port, b"garbage\r\n\r\n"))[0] == 400
        assert ops.requests == 8
        nursery.cancel_scope.cancel()


async def test_failing_health_check_is_503_and_server_survives() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        ops = await nursery.start(serve_ops_http, 0, CollectorRegistry(), broken)
        status, _, body = await _get(ops.port, _request("/healthz"))
        assert status == 503
        assert json.loads(body) == {"status": "unhealthy", "error": "RuntimeError"}
        # a client that sends nothing and hangs up costs nothing
        stream = await trio.open_tcp_stream("127.0.0.1", ops.port)
        await stream.aclose()
        status, _, _ = await _get(ops.port, _request("/metrics"))
        assert status == 200
        nursery.cancel_scope.cancel()
