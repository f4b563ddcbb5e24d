"""Websocket-serving plumbing shared by the emulator (``trioalpaca.testing``) and the relay.

Everything here is about accepting an Alpaca-style stream connection, not about what is served:
the URL path table (every endpoint path, plus the ``/v2/boats`` and ``/v2/overnight`` aliases the
Go SDK builds and the retired paths of :data:`~trioalpaca.endpoints.LEGACY_PATHS`), the encoding a
client negotiates with its ``Content-Type`` header, credentials sent as headers, query parameters,
and the trio-websocket listener with the frame limits both servers use.
"""

from __future__ import annotations

import base64
import errno
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest

from ._codec import Encoding
from ._errors import BindError
from .endpoints import FEEDS, LEGACY_PATHS, Endpoint

__all__ = [
    "ENDPOINT_PATHS",
    "endpoint_for_path",
    "header_credentials",
    "lower_headers",
    "negotiated_encoding",
    "query_params",
    "serve_stream_websocket",
]

logger = logging.getLogger("trioalpaca.serve")

#: Largest message a client may send (alpaca-py fragments subscribes into 32 KiB frames).
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
#: Messages trio-websocket buffers per connection before its reader waits.
MESSAGE_QUEUE_SIZE = 64


def _build_paths() -> dict[str, Endpoint]:
    paths = {ep.path: ep for ep in FEEDS.values()}
    # Go's default URL building puts boats/overnight under /v2.
    paths["/v2/boats"] = FEEDS["boats"]
    paths["/v2/overnight"] = FEEDS["overnight"]
    # Retired paths old SDKs hard-code (the legacy Python SDK's /v1beta2/crypto).
    paths.update({path: FEEDS[feed] for path, feed in LEGACY_PATHS.items()})
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


#: Seconds a client has for the TLS handshake and the websocket upgrade before the server hangs up.
UPGRADE_TIMEOUT = 10.0


async def serve_stream_websocket(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    handler_nursery: trio.Nursery,
    on_error: Callable[[BaseException], object] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a trio-websocket listener for stream connections until cancelled.

    Reports the bound port through ``task_status`` (the real one when ``port`` is 0). With
    ``ssl_context`` it serves TLS (``wss://``). Whatever one client does before ``handler`` runs (a
    failed TLS handshake, plain HTTP on the TLS port, garbage bytes, vanishing mid-upgrade) ends
    only its own socket: the listener keeps serving. Unexpected errors of that phase are logged
    and passed to ``on_error``; they never reach ``handler_nursery``.

    Raises:
        BindError: the port is in use or the address cannot be bound (before anything starts).
    """
    try:
        tcp = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise _bind_error(host, port, exc) from None
    bound = tcp[0].socket.getsockname()[1]
    listeners: list[trio.SSLListener[trio.SocketStream] | trio.SocketListener] = list(tcp)
    if ssl_context is not None:
        listeners = [trio.SSLListener(t, ssl_context, https_compatible=True) for t in tcp]
    server = trio_websocket.WebSocketServer(
        handler,
        listeners,
        handler_nursery=handler_nursery,
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=MAX_MESSAGE_SIZE,
        connect_timeout=UPGRADE_TIMEOUT,
        disconnect_timeout=2,
    )
    accept = functools.partial(_accept, server, on_error)
    serve: Any = functools.partial(
        trio.serve_listeners, accept, listeners, handler_nursery=handler_nursery
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        task_status.started(bound)


async def _accept(
    server: trio_websocket.WebSocketServer,
    on_error: Callable[[BaseException], object] | None,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
) -> None:
    """One accepted socket: the TLS handshake, the websocket upgrade, then the handler."""
    try:
        if isinstance(stream, trio.SSLStream):
            # Handshake here, so a client that does not speak TLS (or rejects the certificate)
            # is hung up on at once instead of after the upgrade timeout.
            with trio.move_on_after(UPGRADE_TIMEOUT) as scope:
                await stream.do_handshake()
            if scope.cancelled_caught:
                return
        await server._handle_connection(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed, OSError):
        pass  # the client went away, or failed the TLS handshake
    except Exception as exc:  # one client must never take the listener down
        logger.exception("connection failed before or after its handler")
        if on_error is not None:
            on_error(exc)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def _bind_error(host: str, port: int, exc: OSError) -> BindError:
    if exc.errno == errno.EADDRINUSE:
        text = f"port {port} is already in use on {host}"
    elif exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        text = f"cannot listen on {host}:{port}: {exc.strerror}"
    else:
        text = f"cannot listen on {host}:{port}: {exc}"
    err = BindError(text)
    err.errno = exc.errno  # still the OSError it was, for code that checks errno
    return err
