"""The emulator server: every Alpaca stream endpoint on one trio-websocket listener.

Per connection there is a reader loop (the handler task) that feeds frames to the sans-IO server
protocol and a sender task that drains a per-connection queue. The reader never waits on sending:
replies and data are queued, and data that would push the queued bytes past the send buffer limit
triggers the slow-client policy (error 407, then close) instead of blocking.

:class:`Emulator` is the control handle; it owns one helper per responsibility, each in its own
module:

* ``_feeds.DataFeeds``: data connections' reader loops and one task per market family that
  advances a :class:`~trioalpaca.testing._market.Market` on ``trio.current_time()`` and hands every
  connection the messages it subscribed to;
* ``_trading.TradingDesk``: trading connections' reader loops and the playback of orders;
* ``_auth.AuthGate``: credentials, the plan's feeds and the per-key connection slots;
* ``_injection.FaultInjector``: carries out the fault plan (``_faults.Faults``) on connections;
* ``_burst.Burst``: burst mode.
"""

from __future__ import annotations

import functools
import itertools
import logging
import socket
import ssl
import struct
from collections import deque
from collections.abc import (
    AsyncIterator,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest

from .._groups import single_error
from .._server_conn import (
    Outgoing,
    ServerConnection,
    handle_guarded,
    resolve_request,
    start_listener,
)
from ..endpoints import FEEDS, Endpoint, StreamKind, resolve_feed
from ..models import MARKET_DATA_TYPES
from ._auth import AuthGate
from ._burst import Burst
from ._faults import SCENARIOS, DropHow, DropRule, Faults
from ._feeds import DataFeeds
from ._injection import FaultInjector
from ._market import NS, Event, Market, MarketConfig
from ._orders import OrderFlow, OrderPlan
from ._trading import TradingDesk

__all__ = [
    "ConnectionStats",
    "Emulator",
    "open_emulator",
    "serve_emulator",
]

logger = logging.getLogger("trioalpaca.testing")

#: Default server-side send buffer (bytes queued for one connection) before the slow-client policy.
DEFAULT_SEND_BUFFER_LIMIT = 8 * 1024 * 1024
_MAX_FRAME_MESSAGES = 1000
_HISTORY = 10_000


def _family(ep: Endpoint) -> str:
    if ep.kind is StreamKind.STOCKS:
        return "test" if ep.feed == "test" else "stocks"
    if ep.kind is StreamKind.CRYPTO:
        return "perps" if ep.feed.startswith("crypto-perps") else "crypto"
    if ep.kind is StreamKind.OPTIONS:
        return "options"
    if ep.kind is StreamKind.NEWS:
        return "news"
    return "trading"


@attrs.define(eq=False)
class ConnectionStats:
    """Live counters and state of one emulator connection (what the server sent and received).

    ``sent_messages`` counts every message element sent (control and data), ``data_messages`` only
    market data / trade updates; ``sent_frames`` and ``data_frames`` count websocket messages.
    ``dropped_messages`` counts data not sent because the connection was mute.
    """

    id: int
    feed: str
    path: str
    encoding: str
    key: str | None = None
    authenticated: bool = False
    subscriptions: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    listening: tuple[str, ...] = ()
    sent_messages: int = 0
    sent_frames: int = 0
    sent_bytes: int = 0
    data_messages: int = 0
    data_frames: int = 0
    received_frames: int = 0
    dropped_messages: int = 0
    errors_sent: list[int] = attrs.Factory(list)
    open: bool = True
    close_reason: str | None = None
    muted: bool = False


class _Conn(ServerConnection[ConnectionStats]):
    """Server-side state of one websocket."""

    log = logger
    label = "emulator connection"

    def __init__(
        self,
        emu: Emulator,
        cid: int,
        ws: WebSocketConnection,
        ep: Endpoint,
        headers: Mapping[bytes, bytes],
    ) -> None:
        super().__init__(ws, ep, headers)
        self.emu = emu
        self.family = _family(ep)
        self.stats = ConnectionStats(cid, ep.feed, ep.path, self.encoding)
        self.abnormal = False
        self.drop_rule: DropRule | None = None
        self.data_enqueued = 0
        self.unmuted = trio.Event()
        self.unmuted.set()
        self.burst_frames: list[bytes | str] | None = None
        self.burst_left: int | None = None
        self.burst_n = 0
        self.burst_cycle: Iterator[bytes | str] = iter(())

    def send_data(self, messages: list[dict[str, Any]]) -> None:
        """Encode and queue market data; applies mute, drop-after-N and the slow-client policy."""
        if self.closing or not messages:
            return
        if self.stats.muted:
            self.stats.dropped_messages += len(messages)
            return
        rule = self.drop_rule
        drop_now = False
        if rule is not None and rule.after_messages is not None:
            room = rule.after_messages - self.data_enqueued
            if room <= len(messages):
                messages = messages[: max(room, 0)]
                drop_now = True
        assert self.encoder is not None
        for i in range(0, len(messages), _MAX_FRAME_MESSAGES):
            chunk = messages[i : i + _MAX_FRAME_MESSAGES]
            frame = self.encoder.encode_raw(chunk)
            if self.queued_bytes + len(frame) > self.emu._send_buffer_limit:
                self.cut_slow()
                return
            self.data_enqueued += len(chunk)
            self._push(Outgoing(frame, len(chunk), data=True))
        if drop_now and rule is not None:
            self._push(Outgoing(None, close_code=-1))
            self.closing = True

    def send_trade_update(self, data: dict[str, Any]) -> None:
        """Queue one ``trade_updates`` message (JSON in binary frames, like paper)."""
        if self.closing or self.tproto is None:
            return
        frame = self.tproto.trade_update_frame(data)
        if isinstance(frame, str):
            frame = frame.encode()
        if self.stats.muted:
            self.stats.dropped_messages += 1
            return
        if self.queued_bytes + len(frame) > self.emu._send_buffer_limit:
            self.cut_slow()
            return
        self._push(Outgoing(frame, 1, data=True))

    async def _abort(self) -> None:
        await self.drop("abort")

    # ------------------------------------------------------------------ sending
    async def _idle(self) -> bool | None:
        # burst mode: pre-encoded frames as fast as the socket takes them, while nothing else waits
        stats = self.stats
        burst = self.burst_frames
        if not burst or stats.muted or self.closing or self.burst_left == 0:
            return False
        frame = next(self.burst_cycle)
        n = self.burst_n
        await self.ws.send_message(frame)
        stats.sent_frames += 1
        stats.data_frames += 1
        stats.sent_messages += n
        stats.data_messages += n
        stats.sent_bytes += len(frame)
        if self.burst_left is not None:
            self.burst_left -= 1
        rule = self.drop_rule
        limit = None if rule is None else rule.after_messages
        if rule is not None and limit is not None and stats.data_messages >= limit:
            await self.drop(rule.how)
            return None
        return True

    async def _send(self, item: Outgoing) -> None:
        assert item.frame is not None
        await self.ws.send_message(item.frame)
        stats = self.stats
        stats.sent_frames += 1
        stats.sent_messages += item.messages
        stats.sent_bytes += len(item.frame)
        if item.data:
            stats.data_frames += 1
            stats.data_messages += item.messages

    async def _finish(self, code: int | None) -> None:
        if code == -1 and self.drop_rule is not None:  # the drop-after-N-messages rule
            await self.drop(self.drop_rule.how)
        else:
            await super()._finish(code)

    # ------------------------------------------------------------------ drops
    async def drop(self, how: DropHow) -> None:
        """Drop the connection now: TCP reset, abort (FIN without close frame) or a close code."""
        if not self.stats.open:
            return
        self.closing = True
        stream = getattr(self.ws, "_stream", None)
        if how == 1006:
            how = "abort"
        if how in ("reset", "abort"):
            self.abnormal = True
            self.stats.close_reason = str(how)
            sock = getattr(stream, "socket", None)
            if how == "reset" and sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:  # pragma: no cover - socket already gone
                    pass
            await self.abort_socket()
        else:
            self.stats.close_reason = f"close {how}"
            await self.close_socket(int(how))

    def mute(self, pings: bool) -> None:
        """Stop sending data; with ``pings=False`` also stop answering pings (the socket lock is
        held)."""
        self.stats.muted = True
        if self.unmuted.is_set():
            self.unmuted = trio.Event()
        lock = getattr(self.ws, "_stream_lock", None)
        if not pings and lock is not None:
            self.spawn(self._hold_lock, lock, self.unmuted)

    @staticmethod
    async def _hold_lock(lock: trio.StrictFIFOLock, until: trio.Event) -> None:
        async with lock:
            await until.wait()

    def unmute(self) -> None:
        """Resume sending data (and answering pings)."""
        self.stats.muted = False
        self.unmuted.set()
        self.wake.set()


class Emulator:
    """Control handle of a running emulator (from :func:`serve_emulator` / :func:`open_emulator`).

    All control methods are synchronous and take effect at once (fault rules apply to connections
    opened later; ``drop``/``mute`` without delays also to the live connections that match).

    Attributes:
        host: the bound interface.
        port: the bound port (the real one when 0 was asked for).
        config: the :class:`MarketConfig` of the synthetic market.
        faults: the fault plan the control methods edit.
        orders: the order book of the trading stream (orders and positions).
        errors: unexpected exceptions raised inside the emulator's connection handlers; tests
            should assert it stays empty.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        config: MarketConfig,
        credentials: Mapping[str, str] | None,
        allowed_feeds: Collection[str] | None,
        symbol_limit: int | None,
        connection_limit: int,
        auth_timeout: float,
        send_buffer_limit: int,
        start_ns: int | None,
        burst: int | None,
        burst_frames: int | None,
        scripted_orders: float | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.port = port
        self.config = config
        self.credentials = dict(credentials) if credentials is not None else None
        self.allowed_feeds = (
            None if allowed_feeds is None else {resolve_feed(f).feed for f in allowed_feeds}
        )
        self.symbol_limit = symbol_limit
        self.connection_limit = connection_limit
        self.auth_timeout = auth_timeout
        self._send_buffer_limit = send_buffer_limit
        self.faults = Faults()
        self.orders = OrderFlow(config.seed)
        self.errors: list[BaseException] = []
        self._ids = itertools.count(1)
        # open connections by id (record/serve.py polls their queues)
        self._conns: dict[int, _Conn] = {}
        self._history: deque[ConnectionStats] = deque(maxlen=_HISTORY)
        self._t0 = trio.current_time()
        if start_ns is None:
            import time

            start_ns = time.time_ns()
        self._start_ns = start_ns
        self._scripted_orders = scripted_orders
        self._nursery: trio.Nursery | None = None
        # the helpers that own each responsibility (each module's docstring says what)
        self._auth = AuthGate(self)
        self._burst = Burst(burst, burst_frames)
        self._feeds = DataFeeds(self, self._conns)
        self._trading = TradingDesk(self, self._conns)
        self._injector = FaultInjector(self, self._conns)

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """Base URL, ``ws://HOST:PORT`` (``wss://`` when serving TLS); append an endpoint path
        (or use :meth:`url_for`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "ws" if self.ssl_context is None else "wss"
        return f"{scheme}://{host}:{self.port}"

    def url_for(self, feed: str | Endpoint) -> str:
        """Full URL of a feed's endpoint (``"iex"``, ``"crypto/us"``, ``"opra"``, ``"news"``,
        ``"trading"``, ...)."""
        return self.url + resolve_feed(feed).path

    def endpoint_urls(self) -> dict[str, str]:
        """Every canonical feed name mapped to its URL on this emulator."""
        return {name: self.url + ep.path for name, ep in FEEDS.items() if name == ep.feed}

    def market_ns(self, now: float | None = None) -> int:
        """Market time (ns since the epoch) at trio time ``now`` (default: now)."""
        t = trio.current_time() if now is None else now
        return self._start_ns + int((t - self._t0) * self.config.speed * NS)

    def _trio_time_for(self, market_ns: int) -> float:
        return self._t0 + (market_ns - self._start_ns) / (self.config.speed * NS)

    # ------------------------------------------------------------------ introspection
    @property
    def connections(self) -> list[ConnectionStats]:
        """Stats of the connections accepted so far (open and closed; the last 10000), oldest
        first."""
        return list(self._history)

    def open_connections(self, feed: str | None = None) -> list[ConnectionStats]:
        """Stats of the connections still open (optionally only on ``feed``)."""
        f = None if feed is None else resolve_feed(feed).feed
        return [c.stats for c in self._conns.values() if f is None or c.endpoint.feed == f]

    async def wait_for_connections(
        self,
        n: int = 1,
        *,
        feed: str | None = None,
        authenticated: bool = False,
        listening: bool = False,
    ) -> list[ConnectionStats]:
        """Wait until at least ``n`` matching connections are open (and authenticated, if asked;
        with ``listening=True``, trading connections listening to ``trade_updates``: the moment
        from which a submitted order's updates reach them)."""
        while True:
            conns = [
                c
                for c in self.open_connections(feed)
                if (c.authenticated or not authenticated)
                and (not listening or "trade_updates" in c.listening)
            ]
            if len(conns) >= n:
                return conns
            await trio.sleep(0.005)

    def market(self, family: str) -> Market | None:
        """The market of a family (``"stocks"``, ``"test"``, ``"crypto"``, ``"perps"``,
        ``"options"``, ``"news"``) once a connection started it."""
        return self._feeds.markets.get(family)

    # ------------------------------------------------------------------ fault control
    def drop(
        self,
        *,
        feed: str | None = None,
        how: DropHow = "reset",
        after_messages: int | None = None,
        after_seconds: float | None = None,
        connection: int | None = None,
        count: int | None = 1,
    ) -> None:
        """Drop connections: ``how`` is ``"reset"`` (TCP RST), ``"abort"`` (FIN, no close frame;
        the client sees 1006) or a close code (1000, 1011, ...).

        Without ``after_*`` the matching open connections (all on ``feed``, or the one with id
        ``connection``) are dropped now. With ``after_messages`` / ``after_seconds`` a rule is
        added: the next ``count`` new connections (``None``: all of them) on ``feed`` are dropped
        after that many data messages / seconds; open connections are armed too when ``connection``
        is given.
        """
        self._injector.drop(feed, how, after_messages, after_seconds, connection, count)

    def mute(
        self,
        *,
        feed: str | None = None,
        pings: bool = True,
        after_seconds: float | None = None,
        count: int | None = 1,
    ) -> None:
        """Make connections mute (socket open, no data); ``pings=False`` also stops pong replies.

        Without ``after_seconds`` every open connection on ``feed`` goes mute now; with it, the next
        ``count`` new connections go mute that many seconds after they open.
        """
        self._injector.mute(feed, pings, after_seconds, count)

    def unmute(self, *, feed: str | None = None) -> None:
        """Resume data (and pongs) on the open mute connections."""
        self._injector.unmute(feed)

    def reject_upgrades(
        self, status: int = 429, *, feed: str | None = None, count: int | None = 1
    ) -> None:
        """Reject the next ``count`` websocket upgrades (``None``: all) with HTTP ``status``."""
        self.faults.add_upgrade_rejection(
            status, None if feed is None else resolve_feed(feed).feed, count
        )

    def fail_auth(self, code: int = 402, *, feed: str | None = None, count: int | None = 1) -> None:
        """Answer the next ``count`` auth requests (``None``: all) with error ``code`` (402, 406,
        409, 411, ...)."""
        self.faults.add_auth_error(code, None if feed is None else resolve_feed(feed).feed, count)

    def set_close_on(self, codes: Iterable[int]) -> None:
        """Error codes after which the emulator closes the socket (404 and 407 always do; 400, 401,
        403, 405, 410 and 413 never do). Default: 402, 404, 406, 407, 409, 412. Remove 406 to
        let clients retry auth on the same socket like the Go SDK does."""
        self.faults.close_on = frozenset(codes)

    def set_send_buffer_limit(self, limit: int) -> None:
        """Bytes the server queues for one connection before the slow-client policy (407, close)."""
        self._send_buffer_limit = int(limit)

    def set_reap_period(self, seconds: float) -> None:
        """How long the slot of an abnormally closed connection stays taken (406 meanwhile)."""
        self.faults.reap_period = float(seconds)

    def set_connection_limit(self, limit: int) -> None:
        """Sessions allowed per key per endpoint (default 1)."""
        self.connection_limit = int(limit)

    def set_garbage_interval(self, seconds: float | None) -> None:
        """Every ``seconds`` send each data connection a malformed frame and an unknown-type
        frame."""
        self.faults.garbage_interval = seconds
        self._injector.start_garbage()

    def set_burst(self, messages_per_frame: int | None = 100, *, frames: int | None = None) -> None:
        """Burst mode for connections subscribed later: pre-encoded frames of ``messages_per_frame``
        messages (half trades, half quotes of the subscribed symbols), sent as fast as the socket
        takes them, ``frames`` in total per connection (``None``: unlimited). ``None`` turns it
        off."""
        self._burst.messages_per_frame = messages_per_frame
        self._burst.frames = frames

    def clear_faults(self) -> None:
        """Remove every fault rule and unmute every connection."""
        self.faults.clear()
        self._send_buffer_limit = DEFAULT_SEND_BUFFER_LIMIT
        self._injector.unmute(None)

    def apply_scenario(self, name: str) -> None:
        """Apply a named scenario (a key of ``trioalpaca.testing.SCENARIOS``)."""
        try:
            scenario = SCENARIOS[name]
        except KeyError:
            raise ValueError(
                f"unknown scenario {name!r}; valid: {', '.join(sorted(SCENARIOS))}"
            ) from None
        scenario.apply(self)

    def inject_frame(self, frame: bytes | str, *, feed: str | None = None) -> None:
        """Send a raw frame as-is to every open connection on ``feed`` (counted as one message)."""
        self._injector.inject_frame(frame, feed)

    def inject_malformed(self, *, feed: str | None = None) -> None:
        """Send a frame that is not valid msgpack / JSON to every open data connection."""
        self._injector.inject_malformed(feed)

    def inject_unknown(self, *, feed: str | None = None) -> None:
        """Send a well-formed frame with an unknown message type to every open data connection."""
        self._injector.inject_unknown(feed)

    def publish(self, feed: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """Send canonical wire dicts (timestamps as int ns) to the subscribers of ``feed``'s family,
        routed by channel and symbol like generated market data."""
        ep = resolve_feed(feed)
        family = _family(ep)
        by_type = {c.wire_type: c.channel for cs in MARKET_DATA_TYPES.values() for c in cs}
        events: list[Event] = []
        for m in messages:
            channel = by_type.get(str(m.get("T")), str(m.get("T")))
            events.append((channel, str(m.get("S", "")), dict(m)))
        self._feeds.dispatch(family, events)

    # ------------------------------------------------------------------ orders
    def submit_order(
        self,
        symbol: str,
        qty: float | int | str = 1,
        side: str = "buy",
        *,
        plan: OrderPlan = "fill",
        type: str = "market",
        limit_price: float | str | None = None,
        time_in_force: str = "day",
        price: float | str | None = None,
        step_delay: float = 0.05,
        key: str | None = None,
    ) -> str:
        """Submit an order; its ``trade_updates`` (per ``plan``: ``fill``, ``partial``, ``cancel``,
        ``expire``, ``reject``, ``hold``) go to every listening trading connection (only to those
        authenticated with ``key`` when given: the account the order belongs to). Returns the
        id."""
        order, steps = self.orders.submit(
            symbol,
            qty,
            side,
            now_ns=self.market_ns(),
            plan=plan,
            type=type,
            limit_price=limit_price,
            time_in_force=time_in_force,
            price=price,
            step_delay=step_delay,
        )
        self._trading.play(order.id, steps, key)
        return order.id

    def cancel_order(self, order_id: str) -> bool:
        """Cancel an open order now (emits ``canceled``); False if unknown or already done."""
        return self._trading.cancel(order_id)

    def expire_order(self, order_id: str) -> bool:
        """Expire an open order now (emits ``expired``); False if unknown or already done."""
        return self._trading.expire(order_id)

    def _broadcast_trade_update(self, data: dict[str, Any], key: str | None = None) -> None:
        # record/serve.py replays trading recordings through this
        self._trading.broadcast(data, key)

    # ------------------------------------------------------------------ connections
    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one websocket connection over ``stream`` (any trio byte stream: the server
        half of ``trio.testing.memory_stream_pair()``, a socket accepted elsewhere, ...), exactly
        as a connection to the listener is served. Returns when that connection ends."""
        assert self._nursery is not None, "emulator is not running"
        try:
            request = await trio_websocket.wrap_server_stream(self._nursery, stream)
        except (trio_websocket.HandshakeError, trio.BrokenResourceError):
            return  # the client went away during the upgrade
        await handle_guarded(
            self._handle_inner, request, errors=self.errors, log=logger, what="emulator"
        )

    async def connect_in_memory(self, host: str, port: int, secure: bool) -> trio.abc.Stream:
        """A client stream factory (``stream_factory=emulator.connect_in_memory``): returns one
        half of an in-memory stream pair whose other half the emulator serves, so clients, pools
        and managers run against the emulator without sockets, on virtual time."""
        assert self._nursery is not None, "emulator is not running"
        client_half, server_half = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.serve_stream, server_half)
        return client_half

    async def _handle_inner(self, request: WebSocketRequest) -> None:
        resolved = await resolve_request(request)
        if resolved is None:
            return
        ep, headers = resolved
        status = self.faults.take_upgrade_rejection(ep.feed)
        if status is not None:
            body = b"Too Many Requests" if status == 429 else b"Rejected"
            await request.reject(status, body=body)
            return
        ws = await request.accept()
        conn = _Conn(self, next(self._ids), ws, ep, headers)
        self._conns[conn.stats.id] = conn
        self._history.append(conn.stats)
        try:
            serve = self._trading.serve if ep.kind is StreamKind.TRADING else self._feeds.serve
            await conn.serve(
                functools.partial(serve, conn), functools.partial(self._injector.arm, conn)
            )
        finally:
            if ws.closed is not None and ws.closed.code == 1006:
                conn.abnormal = True
            conn.finished()
            del self._conns[conn.stats.id]
            self._auth.release(conn)
            self._feeds.closed(conn)

    # ------------------------------------------------------------------ lifetime
    async def _run(self, task_status: trio.TaskStatus[Emulator]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.port = await start_listener(
                nursery,
                self,
                self.ssl_context,
                log=logger,
                what="emulator",
                on_error=self.errors.append,
            )
            if self._scripted_orders:
                nursery.start_soon(self._trading.scripted_loop, self._scripted_orders)
            if self.faults.garbage_interval is not None:
                self.set_garbage_interval(self.faults.garbage_interval)
            task_status.started(self)


async def serve_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    rate: float = 5.0,
    symbols: Sequence[str] = (),
    speed: float = 1.0,
    credentials: Mapping[str, str] | None = None,
    allowed_feeds: Collection[str] | None = None,
    symbol_limit: int | None = None,
    connection_limit: int = 1,
    auth_timeout: float = 10.0,
    send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
    news_interval: float = 30.0,
    start_ns: int | None = None,
    burst: int | None = None,
    burst_frames: int | None = None,
    scripted_orders: float | None = None,
    scenario: str | Iterable[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[Emulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every Alpaca stream endpoint on ``host:port`` until cancelled.

    Use with ``emu = await nursery.start(serve_emulator, ...)``: reports the :class:`Emulator`
    handle once the port is bound (``port=0`` picks a free one; see ``emu.url``).

    Args:
        host, port: where to listen (127.0.0.1 by default).
        seed: seed of the synthetic market and the order flow.
        rate: mean trades + quotes per symbol per wall-clock second (0 = no generated data).
        symbols: the symbol universe (what ``"*"`` means); stocks, ``BTC/USD`` style crypto,
            ``BTC-PERP`` perpetuals and OCC option symbols are sorted into their families.
        speed: market time runs this many times faster than real time (60: a minute bar a second).
        credentials: accepted ``{key: secret}``; None accepts any non-empty pair.
        allowed_feeds: feeds in the plan (others get 409 at auth); None = all.
        symbol_limit: per-connection symbol limit (405 beyond it); None = unlimited.
        connection_limit: sessions per key per endpoint (406 beyond it).
        auth_timeout: seconds a client has to authenticate (404 after).
        send_buffer_limit: bytes queued per connection before 407 slow client and a close.
        news_interval: mean market seconds between news items.
        start_ns: market time at start (ns since the epoch; default: the wall clock).
        burst, burst_frames: burst mode (see :meth:`Emulator.set_burst`).
        scripted_orders: seconds between scripted orders on the trading stream (None: off).
        scenario: name(s) of fault scenarios to apply at start.
        ssl_context: serve TLS (``wss://``) with this server context, e.g.
            ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` with
            ``load_cert_chain(certfile, keyfile)``; ``emu.url`` then starts with ``wss://``.
            A client whose TLS handshake fails costs only its own socket.

    Raises:
        BindError: the port is in use or the host cannot be bound.
    """
    config = MarketConfig(
        seed=seed, rate=rate, speed=speed, symbols=tuple(symbols), news_interval=news_interval
    )
    emu = Emulator(
        host=host,
        port=port,
        config=config,
        credentials=credentials,
        allowed_feeds=allowed_feeds,
        symbol_limit=symbol_limit,
        connection_limit=connection_limit,
        auth_timeout=auth_timeout,
        send_buffer_limit=send_buffer_limit,
        start_ns=start_ns,
        burst=burst,
        burst_frames=burst_frames,
        scripted_orders=scripted_orders,
        ssl_context=ssl_context,
    )
    if scenario is not None:
        for name in [scenario] if isinstance(scenario, str) else scenario:
            emu.apply_scenario(name)
    await emu._run(task_status)


@asynccontextmanager
async def open_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    rate: float = 5.0,
    symbols: Sequence[str] = (),
    speed: float = 1.0,
    credentials: Mapping[str, str] | None = None,
    allowed_feeds: Collection[str] | None = None,
    symbol_limit: int | None = None,
    connection_limit: int = 1,
    auth_timeout: float = 10.0,
    send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
    news_interval: float = 30.0,
    start_ns: int | None = None,
    burst: int | None = None,
    burst_frames: int | None = None,
    scripted_orders: float | None = None,
    scenario: str | Iterable[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Emulator]:
    """``async with open_emulator(...) as emu:`` runs :func:`serve_emulator` (same keyword
    arguments) in a nursery for the duration of the block and yields the :class:`Emulator`
    handle; leaving the block closes every connection.

    Raises:
        ValueError: an unknown scenario name (before anything starts).
    """
    for name in [scenario] if isinstance(scenario, str) else scenario or ():
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(sorted(SCENARIOS))}")
    serve = functools.partial(
        serve_emulator,
        host=host,
        port=port,
        seed=seed,
        rate=rate,
        symbols=symbols,
        speed=speed,
        credentials=credentials,
        allowed_feeds=allowed_feeds,
        symbol_limit=symbol_limit,
        connection_limit=connection_limit,
        auth_timeout=auth_timeout,
        send_buffer_limit=send_buffer_limit,
        news_interval=news_interval,
        start_ns=start_ns,
        burst=burst,
        burst_frames=burst_frames,
        scripted_orders=scripted_orders,
        scenario=scenario,
        ssl_context=ssl_context,
    )
    with single_error():
        async with trio.open_nursery() as nursery:
            emu: Emulator = await nursery.start(serve)
            try:
                yield emu
            finally:
                nursery.cancel_scope.cancel()
