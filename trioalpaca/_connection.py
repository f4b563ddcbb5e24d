"""One websocket connection under a nursery: reader, heartbeat and writer tasks.

This module knows nothing about Alpaca's protocol, retries or pools. It opens one websocket,
runs three tasks next to the caller's block and maps every trio-websocket / socket error to a
:class:`~trioalpaca.TransportError` subclass at the edge:

* the **reader** takes each complete frame off the socket and hands it to a *synchronous*
  ``on_frame`` callback. With the trio-websocket versions we know, the callback runs inside
  trio-websocket's own reader task (:class:`_DirectSink`), which saves a task switch per frame;
  otherwise a task of ours calls ``get_message()``. Because the callback is synchronous it
  cannot wait on a consumer; the only place the reader ever pauses is an explicit
  :class:`Gate` (the ``block`` overflow policy), and while it is paused the heartbeat does not
  count missing pongs against the server.
* the **heartbeat** sends a websocket ping every ``heartbeat_interval`` seconds and expects the
  pong within ``heartbeat_timeout`` (``trio.move_on_after``); otherwise
  :class:`~trioalpaca.HeartbeatTimeoutError`.
* the **writer** sends queued control frames (auth, subscribe) in order.

Leaving the block (normally, by an error or by cancellation) sends a close frame under a shielded,
bounded cancel scope and closes the TCP stream, so a cancelled client still says goodbye properly.
Errors leave :func:`open_connection` as a single exception, never as an exception group.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket

from trioalpaca._errors import (
    ConnectionClosedError,
    HandshakeRejectedError,
    HeartbeatTimeoutError,
    HostNotFoundError,
    TLSError,
    TransportError,
    TrioAlpacaError,
    UsageError,
)
from trioalpaca._groups import collapse_exception_group, exception_leaves

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "Connection",
    "Gate",
    "StreamFactory",
    "collapse_exception_group",
    "open_connection",
]

logger = logging.getLogger("trioalpaca.connection")

Frame = bytes | str

#: Pending outgoing control frames (auth, subscribe...). Far more than the protocol ever queues.
WRITE_QUEUE_SIZE = 64
#: Frames trio-websocket may hold between its own reader and ours. Our reader never waits on a
#: consumer, so a small queue suffices; it lets the library read ahead while we decode.
MESSAGE_QUEUE_SIZE = 16
#: Bytes per socket read. Bigger than trio-websocket's 4 KiB default: fewer wake-ups per frame.
RECEIVE_BUFFER_SIZE = 256 * 1024


StreamFactory = Callable[[str, int, bool], Awaitable[trio.abc.Stream]]
"""Opens the byte stream a websocket runs over: ``await factory(host, port, secure)``."""


class Gate(Protocol):
    """Back-pressure hook for the ``block`` overflow policy.

    The reader asks :meth:`full` before taking the next frame off the socket and, if it is, waits
    in :meth:`wait_for_space`. Policies that never block simply pass no gate.
    """

    def full(self) -> bool:
        """Whether the consumer-side buffer has no room for another frame."""
        ...

    async def wait_for_space(self) -> None:
        """Return once :meth:`full` would return ``False`` (or the connection is closing)."""
        ...


class Connection:
    """An open websocket with its reader, heartbeat and writer tasks running.

    Only :func:`open_connection` creates these.
    """

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        write_channel: trio.MemorySendChannel[Frame],
    ) -> None:
        self._ws = ws
        self._write = write_channel
        self._pauses = 0
        self.paused = False
        """Whether the reader is currently parked on a full :class:`Gate`."""
        self.frames_sent = 0
        """Control frames written to the socket."""
        self.last_rtt: float | None = None
        """Round trip of the last answered heartbeat ping, seconds (``None`` before the first)."""
        self.direct = False
        """Whether frames are delivered from trio-websocket's reader task (:class:`_DirectSink`)."""

    def send_nowait(self, frame: Frame) -> None:
        """Queue ``frame`` for the writer task without waiting.

        Raises:
            TransportError: the write queue is full (the socket stopped accepting data) or the
                connection is closing.
        """
        try:
            self._write.send_nowait(frame)
        except trio.WouldBlock:
            raise TransportError(
                "too many control frames queued; the socket is not accepting writes"
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosedError() from None

    async def send(self, frame: Frame) -> None:
        """Queue ``frame`` for the writer task, waiting if the queue is full."""
        try:
            await self._write.send(frame)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectionClosedError() from None

    @property
    def closed(self) -> bool:
        """Whether the websocket has been closed (by either side)."""
        return self._ws.closed is not None

    async def _reader(
        self,
        on_frame: Callable[[Frame], None],
        gate: Gate | None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        ws = self._ws
        if DIRECT_READER and _can_deliver_directly(ws):
            await self._direct_reader(ws, on_frame, gate, busy)
            return
        get_message = ws.get_message
        try:
            if gate is None:
                while True:
                    on_frame(await get_message())
            else:
                while True:
                    await self._wait_gate(gate)
                    on_frame(await get_message())
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def _wait_gate(self, gate: Gate) -> None:
        if gate.full():
            self.paused = True
            self._pauses += 1
            try:
                await gate.wait_for_space()
            finally:
                self.paused = False

    async def _direct_reader(
        self,
        ws: trio_websocket.WebSocketConnection,
        on_frame: Callable[[Frame], None],
        gate: Gate | None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """Deliver frames from inside trio-websocket's own reader task (see :class:`_DirectSink`).

        Frames it queued before the switch are delivered first, in order; the switch itself
        happens with no checkpoint after the last of them, so no frame can slip past. This task
        then only waits for the end of the connection and raises what ended it.
        """
        recv: trio.MemoryReceiveChannel[Frame] = ws._recv_channel
        original: trio.MemorySendChannel[Frame] = ws._send_channel
        while True:
            if gate is not None:
                await self._wait_gate(gate)
            try:
                frame = recv.receive_nowait()
            except trio.WouldBlock:
                break
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise _closed_error(trio_websocket.ConnectionClosed(ws._close_reason)) from None
            on_frame(frame)
        sink = _DirectSink(self, on_frame, gate, original, busy)
        ws._send_channel = sink  # type: ignore[assignment]  # duck-typed: send + aclose
        self.direct = True
        try:
            await recv.receive()  # nothing is sent there any more: this waits for the close
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        finally:
            sink.stopped = True
        if sink.error is not None:
            raise sink.error
        raise _closed_error(trio_websocket.ConnectionClosed(ws._close_reason))

    async def _writer(self, receive: trio.MemoryReceiveChannel[Frame], limit: float) -> None:
        try:
            async for frame in receive:
                with trio.fail_after(limit):
                    await self._ws.send_message(frame)
                self.frames_sent += 1
        except trio.TooSlowError:
            raise TransportError(f"a write did not complete within {limit:g} s") from None
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def _heartbeat(self, interval: float, pong_limit: float) -> None:
        try:
            while True:
                await trio.sleep(interval)
                pauses = self._pauses
                sent = trio.current_time()
                with trio.move_on_after(pong_limit) as scope:
                    await self._ws.ping()
                    self.last_rtt = trio.current_time() - sent
                if scope.cancelled_caught:
                    if self.paused or self._pauses != pauses:
                        # Our own reader was parked on a full buffer (``block`` policy): the
                        # library cannot read the pong until the consumer catches up. Not the
                        # server's fault.
                        continue
                    raise HeartbeatTimeoutError(pong_limit)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed_error(exc) from None

    async def _close(self, code: int, limit: float) -> None:
        # Shielded and bounded: runs even when the surrounding scope is cancelled.
        with trio.CancelScope(shield=True), trio.move_on_after(limit):
            try:
                await self._ws.aclose(code)
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError):
                pass


#: Deliver frames from trio-websocket's reader task (see :class:`_DirectSink`); ``False`` falls
#: back to a reader task of our own that calls ``get_message()`` (one more task hop per frame).
DIRECT_READER = True


def _can_deliver_directly(ws: object) -> bool:
    """Whether ``ws`` has the trio-websocket internals :class:`_DirectSink` replaces (checked
    at run time, so another trio-websocket version falls back instead of breaking)."""
    return (
        isinstance(getattr(ws, "_send_channel", None), trio.MemorySendChannel)
        and isinstance(getattr(ws, "_recv_channel", None), trio.MemoryReceiveChannel)
        and hasattr(ws, "_close_reason")
    )


class _DirectSink:
    """Stands in for trio-websocket's internal message channel (``ws._send_channel``).

    trio-websocket's reader task assembles each frame and awaits ``send(frame)`` on its
    channel; a ``get_message()`` in another task then takes it out. Replacing the channel by
    this sink hands every frame straight to ``on_frame`` inside that reader task: one task switch
    and one channel round trip fewer per frame, which is most of what the client added over a
    bare ``get_message()`` loop. Behaviour is unchanged:

    * the ``block`` policy's :class:`Gate` is honoured here, before each frame;
    * an exception from ``on_frame`` is kept (never raised into trio-websocket's task) and
      re-raised by :meth:`Connection._direct_reader`; frames after it are dropped, as the
      connection is ending anyway;
    * ``aclose()`` (trio-websocket closing its side) closes the original channel, which is what
      ends :meth:`Connection._direct_reader`;
    * a checkpoint after a frame gives the consumer its turn while it has a backlog: after every
      frame by default, or only while ``busy()`` is true when ``busy`` is given. Without a
      backlog the reader's next socket read yields anyway (it waits for data, or trio's
      successful ``recv`` checkpoints), so a paced feed saves a scheduler pass per frame (about
      8 % of the client's CPU at 20k msgs/s in frames of 10).

    Set :data:`DIRECT_READER` to ``False`` to use the plain ``get_message()`` loop instead.
    """

    __slots__ = ("_busy", "_conn", "_gate", "_on_frame", "_original", "error", "stopped")

    def __init__(
        self,
        conn: Connection,
        on_frame: Callable[[Frame], None],
        gate: Gate | None,
        original: trio.MemorySendChannel[Frame],
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self._busy = busy
        self._conn = conn
        self._on_frame = on_frame
        self._gate = gate
        self._original = original
        self.error: BaseException | None = None
        self.stopped = False

    def _ending(self) -> bool:
        return self.error is not None or self.stopped

    async def send(self, frame: Frame) -> None:
        if self._ending():
            return  # the connection is ending: nobody reads, as with a channel nobody drains
        gate = self._gate
        if gate is not None:
            await self._conn._wait_gate(gate)
            if self._ending():
                return
        try:
            self._on_frame(frame)
        except BaseException as exc:  # handed over to our own task, which re-raises it
            self.error = exc
            self._original.close()
        # Let the consumer run before the next frame while it has a backlog: trio-websocket
        # delivers every frame of a socket read (up to RECEIVE_BUFFER_SIZE) in one go, which
        # would otherwise fill the buffer faster than a consumer that checkpoints every few
        # hundred messages drains it.
        busy = self._busy
        if busy is None or busy():
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._original.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self._original.close()


def _closed_error(exc: trio_websocket.ConnectionClosed) -> ConnectionClosedError:
    reason = exc.reason
    if reason is None:
        return ConnectionClosedError()
    return ConnectionClosedError(reason.code, reason.reason)


#: getaddrinfo codes meaning "this name has no address" (not "DNS is unreachable right now").
_NO_SUCH_HOST = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


def _map_error(exc: BaseException, url: str) -> BaseException:
    """Translate a trio-websocket / socket exception into ours; others are returned unchanged."""
    if isinstance(exc, TrioAlpacaError):
        return exc
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return HandshakeRejectedError(exc.status_code, url)
    if isinstance(exc, trio_websocket.ConnectionClosed):
        return _closed_error(exc)
    if isinstance(exc, trio_websocket.HandshakeError):
        return TransportError(f"websocket handshake with {url} failed: {exc!r}")
    if isinstance(exc, socket.gaierror):
        host = urlsplit(url).hostname or url
        if exc.errno in _NO_SUCH_HOST:
            return HostNotFoundError(host, exc.strerror or "")
        return TransportError(f"cannot resolve {host!r} ({exc.strerror}); DNS may be unreachable")
    if isinstance(exc, ssl.SSLError):
        return _tls_error(exc, url)
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        return _tls_error(exc.__cause__, url)
    if isinstance(exc, (OSError, trio.BrokenResourceError)):
        return TransportError(f"connection to {url} failed: {_os_reason(exc)}")
    return exc


def _os_reason(exc: BaseException) -> str:
    causes: list[BaseException] = [exc]
    cause = exc.__cause__
    if cause is not None:  # a group from trio.open_tcp_stream: one error per address
        causes = exception_leaves(cause)
    if all(
        isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None) == errno.ECONNREFUSED
        for c in causes
    ):
        return "connection refused (nothing listening on that port?)"
    text = str(exc)
    if not text and exc.__cause__ is not None:
        text = str(exc.__cause__)
    return text or type(exc).__name__


def _tls_error(exc: ssl.SSLError, url: str) -> TransportError:
    """A TLS handshake failure as :class:`TLSError` (fatal), keeping the SSL reason text.

    An EOF in the middle of the handshake is ambiguous (the peer may just have gone away); it
    stays a retryable :class:`TransportError` with the reason in its message.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return TLSError(
            f"certificate verify failed: {reason}",
            url,
            "pass ssl_context= with the right CA (e.g. ctx.load_verify_locations(cafile)) or "
            "fix the server's certificate",
        )
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return TransportError(f"connection to {url} closed during the TLS handshake: {exc}")
    reason = (exc.reason or str(exc)).replace("_", " ").lower()
    hint = None
    if exc.reason in (
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
    ):
        hint = "the server does not speak TLS; use ws:// instead of wss://?"
    return TLSError(reason, url, hint)


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    on_frame: Callable[[Frame], None],
    gate: Gate | None = None,
    busy: Callable[[], bool] | None = None,
    headers: Sequence[tuple[str, str]] = (),
    connect_timeout: float = 10.0,
    close_timeout: float = 1.0,
    write_timeout: float = 5.0,
    heartbeat_interval: float | None = 10.0,
    heartbeat_timeout: float = 5.0,
    max_message_size: int = 16 * 2**20,
    ssl_context: ssl.SSLContext | None = None,
    stream_factory: StreamFactory | None = None,
) -> AsyncIterator[Connection]:
    """Open a websocket to ``url`` and run its reader, heartbeat and writer during the block.

    Args:
        url: full ``ws://`` or ``wss://`` URL (it must not contain credentials).
        on_frame: synchronous callback the reader calls with every received frame
            (``bytes`` for binary frames, ``str`` for text frames). Exceptions it raises end the
            connection and leave the block.
        gate: optional back-pressure hook (see :class:`Gate`).
        busy: optional backlog test: after delivering a frame the reader yields to other tasks
            only while it returns ``True`` (the default, ``None``, yields after every frame).
        headers: extra HTTP headers for the upgrade request.
        connect_timeout: seconds for TCP connect + websocket upgrade.
        close_timeout: seconds to wait for the closing handshake when leaving.
        write_timeout: seconds one control-frame write may take.
        heartbeat_interval: seconds between pings; ``None`` disables the heartbeat.
        heartbeat_timeout: seconds a pong may take.
        max_message_size: largest accepted frame in bytes.
        ssl_context: TLS settings for ``wss://`` URLs (default:
            ``ssl.create_default_context()``, the system's CAs). The TLS handshake completes
            inside the connect step.
        stream_factory: opens the byte stream instead of TCP (+ TLS): called as
            ``await stream_factory(host, port, secure)`` inside the connect step; the websocket
            runs over what it returns (e.g. one half of ``trio.testing.memory_stream_pair()``
            whose other half an emulator serves: see ``Emulator.connect_in_memory``).

    Raises:
        TransportError: the connection failed or was lost (see its subclasses).
        TLSError: the TLS handshake failed (certificate not verified, server without TLS).
        HostNotFoundError: the host name does not resolve.
        HandshakeRejectedError: the server answered the upgrade with an HTTP error.
        HeartbeatTimeoutError: a ping went unanswered.
    """
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    host, port, resource, secure = _split_url(url)
    send_channel, receive_channel = trio.open_memory_channel[Frame](WRITE_QUEUE_SIZE)
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as ws_nursery:
            # trio-websocket's own reader runs in a shielded nursery so that it can still read the
            # server's half of the closing handshake after our scope was cancelled; we cancel it
            # ourselves once the close is done.
            host_nursery, host_scope = await ws_nursery.start(_shielded_host)
            try:
                try:
                    with trio.fail_after(connect_timeout):
                        if stream_factory is not None:
                            stream = await stream_factory(host, port, secure)
                        elif secure:
                            stream = await trio.open_ssl_over_tcp_stream(
                                host,
                                port,
                                ssl_context=ssl_context or ssl.create_default_context(),
                                https_compatible=True,
                            )
                            # Handshake now, inside the connect step, so a certificate or
                            # protocol failure surfaces as itself (TLSError) right here.
                            try:
                                await stream.do_handshake()
                            except trio.BrokenResourceError as exc:
                                if isinstance(exc.__cause__, ssl.SSLError):
                                    raise _tls_error(exc.__cause__, url) from exc.__cause__
                                raise
                        else:
                            stream = await trio.open_tcp_stream(host, port)
                        host_header = host if port in (80, 443) else f"{host}:{port}"
                        # trio-websocket waits forever when the server hangs up during the
                        # upgrade (a TLS server answering a ws:// client does): watch for it.
                        with trio.CancelScope() as upgrade:
                            watched = _UpgradeWatch(stream, upgrade.cancel)
                            ws = await trio_websocket.wrap_client_stream(
                                host_nursery,
                                watched,  # type: ignore[arg-type]  # any trio Stream works
                                host_header,
                                resource,
                                extra_headers=extra,
                                message_queue_size=MESSAGE_QUEUE_SIZE,
                                max_message_size=max_message_size,
                                receive_buffer_size=RECEIVE_BUFFER_SIZE,
                            )
                        watched.on_eof = None
                        if upgrade.cancelled_caught:
                            hint = "" if secure else " (does it only speak TLS? try wss://)"
                            raise TransportError(
                                f"the server closed the connection during the websocket upgrade "
                                f"of {url}{hint}"
                            )
                except trio.TooSlowError:
                    raise TransportError(
                        f"connecting to {url} took longer than {connect_timeout:g} s"
                    ) from None
                conn = Connection(ws, send_channel)
                try:
                    async with trio.open_nursery() as tasks:
                        tasks.start_soon(
                            conn._reader, on_frame, gate, busy, name="trioalpaca-reader"
                        )
                        tasks.start_soon(
                            conn._writer, receive_channel, write_timeout, name="trioalpaca-writer"
                        )
                        if heartbeat_interval is not None:
                            tasks.start_soon(
                                conn._heartbeat,
                                heartbeat_interval,
                                heartbeat_timeout,
                                name="trioalpaca-heartbeat",
                            )
                        yield conn
                        tasks.cancel_scope.cancel()
                finally:
                    send_channel.close()
                    await conn._close(1000, close_timeout)
            finally:
                host_scope.cancel()
    except BaseExceptionGroup as group:
        single = collapse_exception_group(group)
        mapped = _map_error(single, url)
        if mapped is single:
            single.__suppress_context__ = True  # keep __cause__; hide the group
            raise single  # noqa: B904
        raise mapped from single
    except (OSError, trio_websocket.HandshakeError, trio.BrokenResourceError) as exc:
        raise _map_error(exc, url) from exc
    finally:
        if stream is not None:
            # trio-websocket leaves the TCP stream open when the peer vanished first.
            with trio.CancelScope(shield=True):
                await stream.aclose()


class _UpgradeWatch(trio.abc.Stream):
    """A stream passing everything through that reports the peer hanging up (EOF or a broken
    stream) to ``on_eof`` while it is set (during the websocket upgrade)."""

    __slots__ = ("_stream", "on_eof")

    def __init__(self, stream: trio.abc.Stream, on_eof: Callable[[], object]) -> None:
        self._stream = stream
        self.on_eof: Callable[[], object] | None = on_eof

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self.on_eof is not None:
                self.on_eof()
            raise
        if not data and self.on_eof is not None:
            self.on_eof()
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _shielded_host(
    task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


def _split_url(url: str) -> tuple[str, int, str, bool]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"not a websocket URL: {url!r}")
    secure = scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return parts.hostname, port, resource, secure
