"""One accepted stream connection on the server side, shared by the emulator and the relay.

Both servers run every websocket the same way: a handler task reads frames and feeds them to the
sans-IO server protocol (:class:`~trioalpaca._protocol.server.DataServerProtocol` /
:class:`~trioalpaca._protocol.server.TradingServerProtocol`), and a sender task drains a
per-connection queue. The reader never waits on sending: replies and data are queued; a control
frame is never refused, and closing is an item of the queue
(:meth:`ServerConnection.close_after_flush`) so that whatever was queued before still goes
out. The end of either task (the socket closed, the peer vanished) ends both.

:class:`ServerConnection` holds that part: the queue and its byte count, the sender loop, the
guarded task nursery, the welcome (``connected``, or ``412`` for options over JSON), header
credentials, the auth deadline, the slow-client cut and the socket-level close and abort.
What a server sends, counts and routes stays in its subclass (the emulator's ``_Conn``, the
relay's ``_Downstream``), through a few hooks: :meth:`~ServerConnection._send` (one queued item
onto the socket), :meth:`~ServerConnection._idle` (the queue is empty),
:meth:`~ServerConnection._finish` (the close item came up), :meth:`~ServerConnection._abort`
and :meth:`~ServerConnection._closed_for_sending`.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from ._codec import Encoder, Encoding, Frame, encode_request
from ._protocol.server import DataServerProtocol, TradingServerProtocol
from ._serve import (
    endpoint_for_path,
    header_credentials,
    lower_headers,
    negotiated_encoding,
    serve_stream_websocket,
)
from .endpoints import Endpoint, StreamKind

__all__ = [
    "Outgoing",
    "ServerConnection",
    "ServerStats",
    "StreamServer",
    "handle_guarded",
    "resolve_request",
    "start_listener",
]

#: What ends a connection's task quietly: the socket closed or the peer went away.
CLOSED_ERRORS = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class ServerStats(Protocol):
    """The counters every server keeps per connection (the emulator's ``ConnectionStats``, the
    relay's ``RelayClientStats``)."""

    id: int
    errors_sent: list[int]
    open: bool
    close_reason: str | None


StatsT = TypeVar("StatsT", bound=ServerStats)


@attrs.define(eq=False, slots=True)
class Outgoing:
    """One item of a connection's send queue: a frame, or (``frame`` None) the close."""

    frame: Frame | None
    #: message elements in the frame
    messages: int = 0
    #: market data / trade updates (not a control frame)
    data: bool = False
    #: trio time the data arrived at the server (the relay's latency and merging), if data
    t_in: float | None = None
    #: with ``frame`` None: the close code
    close_code: int | None = None


async def resolve_request(
    request: WebSocketRequest,
) -> tuple[Endpoint, Mapping[bytes, bytes]] | None:
    """The endpoint a websocket upgrade asks for and its lower-case headers; an unknown path is
    rejected with 404 (and ``None`` returned)."""
    ep = endpoint_for_path(request.path)
    if ep is None:
        await request.reject(404, body=b"Not Found")
        return None
    return ep, lower_headers(request)


async def handle_guarded(
    inner: Callable[[WebSocketRequest], Awaitable[None]],
    request: WebSocketRequest,
    *,
    errors: list[BaseException],
    log: logging.Logger,
    what: str,
) -> None:
    """Run one connection's handler: a peer that goes away ends it quietly; anything else is
    logged and appended to ``errors`` (tests assert it stays empty), never raised into the
    listener."""
    try:
        await inner(request)
    except (ConnectionClosed, trio.BrokenResourceError):
        pass
    except Exception as exc:
        log.exception("%s: connection handler failed", what)
        errors.append(exc)


class StreamServer(Protocol):
    """What :func:`start_listener` needs of a server (the ``Emulator``, the ``Relay``)."""

    host: str
    port: int
    errors: list[BaseException]

    async def _handle_inner(self, request: WebSocketRequest) -> None: ...


async def start_listener(
    nursery: trio.Nursery,
    server: StreamServer,
    ssl_context: ssl.SSLContext | None,
    *,
    log: logging.Logger,
    what: str,
    on_error: Callable[[BaseException], object] | None = None,
) -> int:
    """Start a listener on ``server.host``/``server.port`` in ``nursery`` (which also runs the
    connections), with ``server._handle_inner`` for every upgrade, guarded by
    :func:`handle_guarded` (errors into ``server.errors``); return the bound port. ``on_error``
    hears of unexpected errors before a handler runs (see
    :func:`~trioalpaca._serve.serve_stream_websocket`)."""
    guarded = functools.partial(
        handle_guarded, server._handle_inner, errors=server.errors, log=log, what=what
    )
    bound: int = await nursery.start(
        functools.partial(
            serve_stream_websocket,
            guarded,
            server.host,
            server.port,
            ssl_context,
            handler_nursery=nursery,
            on_error=on_error,
        )
    )
    return bound


class ServerConnection(Generic[StatsT]):
    """Server-side state of one websocket: the send queue, its sender and its task nursery.

    ``stats`` is set by the subclass. ``closing`` means nothing new is queued (the close item is
    in the queue, or the connection is ending); ``ended`` that the handler is finishing, so no new
    task starts (:meth:`spawn` is then a no-op).
    """

    stats: StatsT
    log: logging.Logger = logging.getLogger("trioalpaca.serve")
    label = "connection"

    def __init__(self, ws: WebSocketConnection, ep: Endpoint, headers: Mapping[bytes, bytes]):
        self.ws = ws
        self.endpoint = ep
        self.encoding: Encoding = negotiated_encoding(headers)
        self.header_auth: tuple[str, str] | None = header_credentials(headers)
        self.queue: deque[Outgoing] = deque()
        self.queued_bytes = 0
        self.wake = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.closing = False
        self.ended = False
        self.encoder: Encoder | None = (
            None if ep.kind is StreamKind.TRADING else Encoder(ep.kind, self.encoding)
        )
        self.proto: DataServerProtocol | None = None
        self.tproto: TradingServerProtocol | None = None

    # ------------------------------------------------------------------ tasks
    def spawn(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start a task in this connection's nursery; a no-op once the connection is ending.

        Market deliveries, fault timers and the slow-client policy may reach a connection while
        its nursery is already closing (the client just left); that must never raise into the
        caller (a market loop or an upstream reader is shared by every client).
        """
        nursery = self.nursery
        if nursery is None or self.ended:
            return
        try:
            nursery.start_soon(fn, *args)
        except RuntimeError:  # "Nursery is closed to new arrivals": the connection is ending
            self.ended = True

    def cancel(self) -> None:
        """End every task of the connection."""
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run one connection task; the end of the socket ends every task of the connection."""
        try:
            await fn()
        except CLOSED_ERRORS:
            pass
        finally:
            # From here on the connection takes nothing new (data, timers, the slow-client
            # policy): its nursery is about to close.
            self.ended = True
            self.closing = True
            self.cancel()

    async def serve(
        self, main: Callable[[], Awaitable[None]], arm: Callable[[], None] | None = None
    ) -> None:
        """Run the sender and ``main`` (the reader) in the connection's nursery until either
        ends; ``arm`` runs once the nursery exists (fault timers, ...)."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.guard, self.sender)
            if arm is not None:
                arm()
            await self.guard(main)

    def finished(self) -> None:
        """Record the end of the connection in its stats (call once :meth:`serve` returned)."""
        self.closing = True
        self.stats.open = False
        closed = self.ws.closed
        if self.stats.close_reason is None and closed is not None:
            self.stats.close_reason = f"closed {closed.code}"

    # ------------------------------------------------------------------ queueing
    def _push(self, item: Outgoing) -> None:
        self.queue.append(item)
        if item.frame is not None:
            self.queued_bytes += len(item.frame)
        self.wake.set()

    def send_control(self, frame: Frame, messages: int = 1) -> None:
        """Queue a control frame (welcome, ack, error, marker): never subject to a limit."""
        if not self.closing:
            self._push(Outgoing(frame, messages))

    def close_after_flush(self, code: int = 1000) -> None:
        """Send what is queued, then close with ``code``."""
        if not self.closing:
            self._push(Outgoing(None, close_code=code))
            self.closing = True
            self._closed_for_sending()

    def _closed_for_sending(self) -> None:
        """Hook: the close is queued (nothing more is queued from now on)."""

    def discard_queue(self) -> None:
        """Forget every queued frame (the slow-client policy)."""
        self.queue.clear()
        self.queued_bytes = 0

    def send_error(self, code: int) -> None:
        """Queue Alpaca error ``code`` from the data protocol (and keep ``errors_sent``)."""
        if self.proto is not None:
            self.send_control(self.proto.error_frame(code))
            self.stats.errors_sent = list(self.proto.errors_sent)

    def cut_slow(self) -> None:
        """Slow-client policy: discard the queue, send error 407 ``slow client``, close; a client
        that reads nothing never receives the 407, so the socket is cut a second later."""
        self.log.info("%s %d: slow client, closing", self.label, self.stats.id)
        self.discard_queue()
        self._on_slow()
        self.send_error(407)
        self.close_after_flush(1008)
        self.spawn(self._abort_later, 1.0)

    def _on_slow(self) -> None:
        """Hook: the connection is being cut as a slow client."""

    async def _abort_later(self, delay: float) -> None:
        await trio.sleep(delay)
        await self._abort()

    async def _abort(self) -> None:
        """Cut a slow client that does not read (hook; default: close the socket, no close
        frame)."""
        self.stats.close_reason = self.stats.close_reason or "aborted (slow client)"
        await self.abort_socket()

    # ------------------------------------------------------------------ socket
    async def abort_socket(self) -> None:
        """Close the TCP stream under the websocket (the peer sees 1006), then end the tasks."""
        stream = getattr(self.ws, "_stream", None)
        if stream is not None:
            with trio.move_on_after(1):
                await stream.aclose()
        self.cancel()

    async def close_socket(self, code: int) -> None:
        """Close the websocket with ``code`` (2 s at most for the handshake), then end the
        tasks."""
        with trio.move_on_after(2):
            await self.ws.aclose(code)
        self.cancel()

    # ------------------------------------------------------------------ sender
    async def sender(self) -> None:
        """Drain the queue onto the socket until the close item (or the socket's end)."""
        while True:
            if not self.queue:
                idle = await self._idle()
                if idle is None:
                    return
                if not idle:
                    self.wake = trio.Event()
                    await self.wake.wait()
                continue
            item = self.queue.popleft()
            if item.frame is None:
                await self._finish(item.close_code)
                return
            self.queued_bytes -= len(item.frame)
            await self._send(item)

    async def _idle(self) -> bool | None:
        """Hook: the queue is empty. True: something was sent (look again); False: wait for the
        queue; None: the sender is done."""
        return False

    async def _send(self, item: Outgoing) -> None:
        """Hook: put one queued frame onto the socket and count it."""
        assert item.frame is not None
        await self.ws.send_message(item.frame)

    async def _finish(self, code: int | None) -> None:
        """Hook: the close item came up."""
        self.stats.close_reason = self.stats.close_reason or f"close {code}"
        await self.close_socket(code or 1000)

    # ------------------------------------------------------------------ the data protocol
    async def open_data(
        self,
        proto: DataServerProtocol,
        auth_timeout: float,
        on_frame: Callable[[Frame], None],
    ) -> None:
        """Start the data protocol: queue the welcome, close on 412 (options over JSON),
        authenticate from the credential headers through ``on_frame`` (the server's handling of
        one client frame), and arm the auth deadline. Does not return if the connection closes
        on the way (the sender ends it)."""
        self.proto = proto
        for frame in proto.opening_frames():
            self.send_control(frame)
        self.stats.errors_sent = list(proto.errors_sent)
        if proto.encoding_rejected:  # 412: options without msgpack, as on Alpaca
            self.close_after_flush(1008)
            await trio.sleep_forever()
        if self.header_auth is not None:
            # APCA-API-KEY-ID / APCA-API-SECRET-KEY headers: authenticated without an auth message
            key, secret = self.header_auth
            on_frame(encode_request({"action": "auth", "key": key, "secret": secret}, "json"))
            if proto.should_close:
                await trio.sleep_forever()
        self.spawn(self._auth_deadline, proto, auth_timeout)

    async def _auth_deadline(self, proto: DataServerProtocol, seconds: float) -> None:
        await trio.sleep(seconds)
        frames = proto.auth_timeout()
        if frames and not self.closing:
            for frame in frames:
                self.send_control(frame)
            self.stats.errors_sent = list(proto.errors_sent)
            self.close_after_flush(1008)
