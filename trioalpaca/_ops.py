"""A tiny operations HTTP endpoint: ``/metrics`` (Prometheus text format) and ``/healthz``.

Shared by the relay (``trioalpaca relay --metrics-port``) and the Redis hub. It is a deliberately
small HTTP/1.1 server on :func:`trio.serve_tcp`: one request per connection, ``GET``/``HEAD`` only,
request heads capped at 8 KiB and read under a timeout, so a stray client costs nothing.

The metrics come from a :class:`prometheus_client.CollectorRegistry` (``prometheus-client`` is
imported lazily: install the ``ops`` extra). Register collectors that read a snapshot (for example
``get_metrics()``) when scraped, so nothing runs on the data path::

    registry = CollectorRegistry()
    registry.register(MyCollector(relay))
    await nursery.start(serve_ops_http, 9100, registry, relay.healthy)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ._errors import UsageError

__all__ = ["HealthFn", "OpsServer", "serve_ops_http"]

#: ``health_fn() -> bool`` or ``(bool, details)``: true means healthy (200), false 503. The
#: details (a JSON-serialisable mapping) are included in the ``/healthz`` body.
HealthFn = Callable[[], "bool | tuple[bool, Mapping[str, Any]]"]

_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[500] = "Internal Server Error"
_REASONS[503] = "Service Unavailable"


class OpsServer:
    """Handle reported by :func:`serve_ops_http` through ``task_status``.

    Attributes:
        host: the bound interface.
        port: the bound port (the real one when 0 was asked for).
        requests: requests answered so far.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.requests = 0

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _response(status: int, body: bytes, content_type: str, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def _health(health_fn: HealthFn | None) -> tuple[int, bytes]:
    if health_fn is None:
        ok, details = True, {}
    else:
        result = health_fn()
        if isinstance(result, tuple):
            ok, details = bool(result[0]), dict(result[1])
        else:
            ok, details = bool(result), {}
    body = json.dumps({"status": "ok" if ok else "unhealthy", **details}, default=str)
    return (200 if ok else 503), body.encode() + b"\n"


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    buf = bytearray()
    with trio.move_on_after(_READ_TIMEOUT):
        while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return None
            buf += chunk
            if len(buf) > _MAX_HEAD:
                return None
        return bytes(buf)
    return None


async def serve_ops_http(
    port: int,
    registry: Any,
    health_fn: HealthFn | None = None,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[OpsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` until cancelled.

    Use with ``ops = await nursery.start(serve_ops_http, port, registry, health_fn)``; reports an
    :class:`OpsServer` once bound (``port=0`` picks a free port).

    Args:
        port: TCP port (0: any free one).
        registry: a :class:`prometheus_client.CollectorRegistry`; ``/metrics`` returns
            ``generate_latest(registry)`` in the Prometheus text format.
        health_fn: called per ``/healthz`` request; ``True`` (or ``(True, details)``) answers 200
            with ``{"status": "ok", ...details}``, ``False`` answers 503. ``None``: always healthy.
        host: interface to bind (loopback by default).

    Raises:
        UsageError: ``prometheus-client`` is not installed (``pip install trioalpaca[ops]``).
    """
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError as exc:  # pragma: no cover - the ops extra is installed in CI
        raise UsageError(
            "the metrics endpoint needs prometheus-client: pip install 'trioalpaca[ops]'"
        ) from exc

    async def handle(stream: trio.SocketStream) -> None:
        try:
            head = await _read_head(stream)
            if head is None:
                return
            line = head.split(b"\n", 1)[0].decode("latin-1").strip()
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                reply = _response(400, b"bad request\n", "text/plain", False)
            else:
                method, target = parts[0], parts[1].split("?", 1)[0]
                head_only = method == "HEAD"
                if method not in ("GET", "HEAD"):
                    reply = _response(405, b"method not allowed\n", "text/plain", False)
                elif target == "/metrics":
                    try:
                        body = generate_latest(registry)
                        reply = _response(200, body, CONTENT_TYPE_LATEST, head_only)
                    except Exception as exc:  # a broken collector must not kill the server
                        text = f"metrics collection failed: {type(exc).__name__}\n".encode()
                        reply = _response(500, text, "text/plain", head_only)
                elif target == "/healthz":
                    try:
                        status, body = _health(health_fn)
                    except Exception as exc:  # a failing health check reports unhealthy
                        status = 503
                        body = json.dumps(
                            {"status": "unhealthy", "error": type(exc).__name__}
                        ).encode()
                    reply = _response(status, body, "application/json", head_only)
                else:
                    reply = _response(404, b"not found\n", "text/plain", head_only)
            server.requests += 1
            with trio.move_on_after(_READ_TIMEOUT):
                await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1):
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, port, host=host))
        sock = listeners[0].socket
        server = OpsServer(host, sock.getsockname()[1])
        task_status.started(server)
