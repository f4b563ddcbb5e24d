"""Websocket-serving plumbing shared by the emulator (``trioalpaca.testing``) and the relay.

Everything here is about accepting an Alpaca-style stream connection, not about what is served:
the URL path table (every endpoint path, plus the ``/v2/boats`` and ``/v2/overnight`` aliases the
Go SDK builds), the encoding a client negotiates with its ``Content-Type`` header, credentials
sent as headers, query parameters, and the trio-websocket listener with the frame limits both
servers use.
"""

from __future__ import annotations

import base64
import functools
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import trio
import trio_websocket
from trio_websocket import WebSocketRequest

from ._codec import Encoding
from .endpoints import FEEDS, Endpoint

__all__ = [
    "ENDPOINT_PATHS",
    "endpoint_for_path",
    "header_credentials",
    "lower_headers",
    "negotiated_encoding",
    "query_params",
    "serve_stream_websocket",
]

#: Largest message a client may send (alpaca-py fragments subscribes into 32 KiB frames).
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
#: Messages trio-websocket buffers per connection before its reader waits.
MESSAGE_QUEUE_SIZE = 64


def _build_paths() -> dict[str, Endpoint]:
    paths = {ep.path: ep for ep in FEEDS.values()}
    # Go's default URL building puts boats/overnight under /v2.
    paths["/v2/boats"] = FEEDS["boats"]
    paths["/v2/overnight"] = FEEDS["overnight"]
    return paths


#: URL path -> endpoint, for every Alpaca stream endpoint (``/stream`` is trade_updates).
ENDPOINT_PATHS: Mapping[str, Endpoint] = _build_paths()


def endpoint_for_path(path: str) -> Endpoint | None:
    """The endpoint served at a request path (query string and a trailing slash ignored)."""
    base = path.split("?", 1)[0]
    return ENDPOINT_PATHS.get(base) or ENDPOINT_PATHS.get(base.rstrip("/"))


def query_params(path: str) -> dict[str, str]:
    """The query parameters of a request path (last value wins; blank values kept)."""
    _, _, query = path.partition("?")
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def lower_headers(request: WebSocketRequest) -> dict[bytes, bytes]:
    """The upgrade request's headers with lower-case names."""
    return {bytes(k).lower(): bytes(v) for k, v in request.headers}


def negotiated_encoding(headers: Mapping[bytes, bytes]) -> Encoding:
    """``"msgpack"`` when the ``Content-Type`` asks for it (alpaca-py, the Go SDK), else JSON."""
    ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
    return "msgpack" if "msgpack" in ctype else "json"


def header_credentials(headers: Mapping[bytes, bytes]) -> tuple[str, str] | None:
    """Key and secret from the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers or from
    ``Authorization: Basic``."""
    key = headers.get(b"apca-api-key-id")
    secret = headers.get(b"apca-api-secret-key")
    if key is not None and secret is not None:
        return key.decode("latin-1"), secret.decode("latin-1")
    auth = headers.get(b"authorization", b"")
    if auth[:6].lower() == b"basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("latin-1")
        except (ValueError, UnicodeDecodeError):
            return None
        k, sep, sec = decoded.partition(":")
        if sep:
            return k, sec
    return None


async def serve_stream_websocket(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a trio-websocket listener for stream connections until cancelled.

    Reports the bound port through ``task_status`` (the real one when ``port`` is 0).
    """
    serve: Any = functools.partial(
        trio_websocket.serve_websocket,
        handler,
        host,
        port,
        ssl_context,
        handler_nursery=handler_nursery,
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=MAX_MESSAGE_SIZE,
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve)
        listener = server.listeners[0]
        bound = listener.port if isinstance(listener, trio_websocket.Endpoint) else port
        task_status.started(bound)
