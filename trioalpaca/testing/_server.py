"""The emulator server: every Alpaca stream endpoint on one trio-websocket listener.

Per connection there is a reader loop (the handler task) that feeds frames to the sans-IO server
protocol and a sender task that drains a per-connection queue. The reader never waits on sending:
replies and data are queued, and data that would push the queued bytes past the send buffer limit
triggers the slow-client policy (error 407, then close) instead of blocking. Market data comes from
one task per market family that advances a :class:`~trioalpaca.testing._market.Market` on
``trio.current_time()`` and hands every connection the messages it subscribed to.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
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
from .._protocol.server import DataServerProtocol, TradingServerProtocol
from .._server_conn import (
    Outgoing,
    ServerConnection,
    handle_guarded,
    resolve_request,
    start_listener,
)
from ..endpoints import FEEDS, Endpoint, StreamKind, resolve_feed
from ..models import MARKET_DATA_TYPES
from ._faults import SCENARIOS, DropHow, DropRule, Faults, MuteRule
from ._market import NS, Event, Market, MarketConfig
from ._orders import OrderFlow, OrderPlan, Step

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
# Shortest interval between two market deliveries: 5 ms on the real clock (low latency), 20 ms
# under a virtual clock such as pytest-trio's autojump_clock (each wake-up costs real CPU).
_TICK_REAL = 0.005
_TICK_VIRTUAL = 0.02
_HISTORY = 10_000
_DELAY_NS = 15 * 60 * NS  # delayed_sip: timestamps 15 minutes old


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


def _malformed(encoding: str) -> bytes | str:
    """A frame that is neither valid msgpack (0xc1 is never used) nor valid JSON."""
    return b"\xc1\xc1 not msgpack" if encoding == "msgpack" else "[{not json"


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
        self._order_keys: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._history: deque[ConnectionStats] = deque(maxlen=_HISTORY)
        self._markets: dict[str, Market] = {}
        self._market_wake: dict[str, trio.Event] = {}
        self._idle: dict[str, bool] = {}
        self._slots: dict[tuple[str, str], list[int]] = {}
        self._held: dict[tuple[str, str], list[float]] = {}
        self._t0 = trio.current_time()
        if start_ns is None:
            import time

            start_ns = time.time_ns()
        self._start_ns = start_ns
        self._burst = burst
        self._burst_frames = burst_frames
        self._scripted_orders = scripted_orders
        self._nursery: trio.Nursery | None = None
        self._garbage_running = False

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
        self, n: int = 1, *, feed: str | None = None, authenticated: bool = False
    ) -> list[ConnectionStats]:
        """Wait until at least ``n`` matching connections are open (and authenticated, if asked)."""
        while True:
            conns = [c for c in self.open_connections(feed) if c.authenticated or not authenticated]
            if len(conns) >= n:
                return conns
            await trio.sleep(0.005)

    def market(self, family: str) -> Market | None:
        """The market of a family (``"stocks"``, ``"test"``, ``"crypto"``, ``"perps"``,
        ``"options"``, ``"news"``) once a connection started it."""
        return self._markets.get(family)

    # ------------------------------------------------------------------ fault control
    def _live(self, feed: str | None, connection: int | None = None) -> list[_Conn]:
        f = None if feed is None else resolve_feed(feed).feed
        return [
            c
            for c in self._conns.values()
            if (f is None or c.endpoint.feed == f)
            and (connection is None or c.stats.id == connection)
        ]

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
        if after_messages is None and after_seconds is None:
            for c in self._live(feed, connection):
                assert self._nursery is not None
                self._nursery.start_soon(c.drop, how)
            return
        rule = DropRule(
            None if feed is None else resolve_feed(feed).feed,
            count,
            how,
            after_messages,
            after_seconds,
        )
        if connection is not None:
            for c in self._live(feed, connection):
                self._arm_drop(c, attrs.evolve(rule, remaining=None), from_now=True)
        else:
            self.faults.drops.append(rule)

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
        if after_seconds is None:
            for c in self._live(feed):
                c.mute(pings)
            return
        f = None if feed is None else resolve_feed(feed).feed
        self.faults.mutes.append(MuteRule(f, count, pings, after_seconds))

    def unmute(self, *, feed: str | None = None) -> None:
        """Resume data (and pongs) on the open mute connections."""
        for c in self._live(feed):
            c.unmute()

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
        if seconds is not None and not self._garbage_running and self._nursery is not None:
            self._garbage_running = True
            self._nursery.start_soon(self._garbage_loop)

    def set_burst(self, messages_per_frame: int | None = 100, *, frames: int | None = None) -> None:
        """Burst mode for connections subscribed later: pre-encoded frames of ``messages_per_frame``
        messages (half trades, half quotes of the subscribed symbols), sent as fast as the socket
        takes them, ``frames`` in total per connection (``None``: unlimited). ``None`` turns it
        off."""
        self._burst = messages_per_frame
        self._burst_frames = frames

    def clear_faults(self) -> None:
        """Remove every fault rule and unmute every connection."""
        self.faults.clear()
        self._send_buffer_limit = DEFAULT_SEND_BUFFER_LIMIT
        for c in self._conns.values():
            c.unmute()

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
        for c in self._live(feed):
            c.send_control(frame)

    def inject_malformed(self, *, feed: str | None = None) -> None:
        """Send a frame that is not valid msgpack / JSON to every open data connection."""
        for c in self._live(feed):
            if c.encoder is not None:
                c.send_control(_malformed(c.encoding))

    def inject_unknown(self, *, feed: str | None = None) -> None:
        """Send a well-formed frame with an unknown message type to every open data connection."""
        msg = {"T": "zz", "S": "AAPL", "t": self.market_ns(), "note": "unknown type"}
        for c in self._live(feed):
            if c.encoder is not None:
                c.send_control(c.encoder.encode_raw([msg]))

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
        self._dispatch(family, events)

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
        assert self._nursery is not None, "emulator is not running"
        if key is not None:
            self._order_keys[order.id] = key
        self._nursery.start_soon(self._play_order, order.id, steps)
        return order.id

    def cancel_order(self, order_id: str) -> bool:
        """Cancel an open order now (emits ``canceled``); False if unknown or already done."""
        data = self.orders.cancel(order_id, self.market_ns())
        if data is not None:
            self._broadcast_trade_update(data, self._order_keys.get(order_id))
        return data is not None

    def expire_order(self, order_id: str) -> bool:
        """Expire an open order now (emits ``expired``); False if unknown or already done."""
        data = self.orders.expire(order_id, self.market_ns())
        if data is not None:
            self._broadcast_trade_update(data, self._order_keys.get(order_id))
        return data is not None

    async def _play_order(self, order_id: str, steps: list[Step]) -> None:
        for step in steps:
            if step.delay:
                await trio.sleep(step.delay)
            data = self.orders.apply(order_id, step, self.market_ns())
            if data is None:
                return
            self._broadcast_trade_update(data, self._order_keys.get(order_id))

    def _broadcast_trade_update(self, data: dict[str, Any], key: str | None = None) -> None:
        for c in self._conns.values():
            listening = c.tproto is not None and c.tproto.is_listening("trade_updates")
            if listening and (key is None or c.stats.key == key):
                c.send_trade_update(data)

    async def _scripted_order_loop(self, interval: float) -> None:
        n = 0
        while True:
            await trio.sleep(interval)
            if any(c.family == "trading" for c in self._conns.values()):
                symbol, qty, side, plan = self.orders.scripted(n)
                self.submit_order(symbol, str(qty), side, plan=plan, step_delay=interval / 4)
                n += 1

    # ------------------------------------------------------------------ market
    def _ensure_market(self, family: str) -> Market:
        market = self._markets.get(family)
        if market is None:
            market = Market(family, self.config, self.market_ns())
            self._markets[family] = market
            self._market_wake[family] = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._market_loop, family)
        return market

    def _advance(self, family: str) -> None:
        market = self._markets[family]
        if self._idle.get(family):
            # nobody listened: skip the time instead of generating unseen messages
            market.fast_forward(self.market_ns())
            self._idle[family] = False
            return
        events = market.advance(self.market_ns())
        if events:
            self._dispatch(family, events)

    def _has_listeners(self, family: str) -> bool:
        return any(
            c.family == family
            and c.stats.authenticated
            and not c.closing
            and any(c.stats.subscriptions.values())
            for c in self._conns.values()
        )

    async def _market_loop(self, family: str) -> None:
        market = self._markets[family]
        last = trio.current_time()
        virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        tick = _TICK_VIRTUAL if virtual else _TICK_REAL
        while True:
            if not self._has_listeners(family):
                self._idle[family] = True
                await self._market_wake[family].wait()
                self._market_wake[family] = trio.Event()
                self._advance(family)  # fast-forwards unless a subscription already did
                last = trio.current_time()
                continue
            nxt = market.next_event_ns()
            deadline = math.inf if nxt is None else self._trio_time_for(nxt)
            deadline = max(deadline, last + tick)
            with trio.move_on_at(deadline):
                await self._market_wake[family].wait()
            if self._market_wake[family].is_set():
                self._market_wake[family] = trio.Event()
            last = trio.current_time()
            self._advance(family)

    def _dispatch(self, family: str, events: list[Event]) -> None:
        for c in list(self._conns.values()):
            if c.family != family or not c.stats.authenticated or c.closing:
                continue
            if c.burst_frames is not None:
                continue
            proto = c.proto
            if proto is None:
                continue
            wants = proto.is_subscribed
            out: list[dict[str, Any]] = []
            for channel, symbol, msg in events:
                if channel == "news":
                    if proto.is_subscribed_any("news", msg.get("symbols", ())):
                        out.append(msg)
                elif wants(channel, symbol):
                    out.append(msg)
            if out:
                if c.endpoint.feed == "delayed_sip":
                    out = [{**m, "t": m["t"] - _DELAY_NS} if "t" in m else m for m in out]
                try:
                    c.send_data(out)
                except Exception as exc:  # one connection must never stop the shared market
                    logger.exception("emulator connection %d: delivery failed", c.stats.id)
                    self.errors.append(exc)
                    c.close_after_flush(1011)

    # ------------------------------------------------------------------ auth / slots
    def _slot_free(self, key: str, feed: str) -> bool:
        now = trio.current_time()
        held = [t for t in self._held.get((key, feed), []) if t > now]
        self._held[(key, feed)] = held
        return len(self._slots.get((key, feed), [])) + len(held) < self.connection_limit

    def _check_auth(self, conn: _Conn, key: str, secret: str) -> int | None:
        feed = conn.endpoint.feed
        code = self.faults.take_auth_error(feed)
        if code is not None:
            return code
        if not key or not secret:
            return 402
        if self.credentials is not None and self.credentials.get(key) != secret:
            return 402
        if self.allowed_feeds is not None and feed not in self.allowed_feeds:
            return 409
        if feed != "trading":  # the connection limit is a market data rule
            if not self._slot_free(key, feed):
                return 406
            self._slots.setdefault((key, feed), []).append(conn.stats.id)
        conn.stats.key = key
        return None

    def _release_slot(self, conn: _Conn) -> None:
        key = conn.stats.key
        if key is None:
            return
        slot = (key, conn.endpoint.feed)
        ids = self._slots.get(slot, [])
        if conn.stats.id in ids:
            ids.remove(conn.stats.id)
            if conn.abnormal and self.faults.reap_period > 0:
                self._held.setdefault(slot, []).append(
                    trio.current_time() + self.faults.reap_period
                )

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
            serve = self._serve_trading if ep.kind is StreamKind.TRADING else self._serve_data
            await conn.serve(
                functools.partial(serve, conn), functools.partial(self._arm_rules, conn)
            )
        finally:
            if ws.closed is not None and ws.closed.code == 1006:
                conn.abnormal = True
            conn.finished()
            del self._conns[conn.stats.id]
            self._release_slot(conn)
            if conn.stats.subscriptions:
                self._retain_symbols(conn.family)

    def _arm_rules(self, conn: _Conn) -> None:
        rule = self.faults.take_drop(conn.endpoint.feed)
        if rule is not None:
            self._arm_drop(conn, rule, from_now=True)
        mute = self.faults.take_mute(conn.endpoint.feed)
        if mute is not None:
            conn.spawn(self._mute_later, conn, mute)

    def _arm_drop(self, conn: _Conn, rule: DropRule, *, from_now: bool) -> None:
        if rule.after_messages is not None:
            conn.drop_rule = rule
            conn.data_enqueued = 0 if from_now else conn.data_enqueued
        if rule.after_seconds is not None:
            conn.spawn(self._drop_later, conn, rule)

    @staticmethod
    async def _drop_later(conn: _Conn, rule: DropRule) -> None:
        assert rule.after_seconds is not None
        await trio.sleep(rule.after_seconds)
        await conn.drop(rule.how)

    @staticmethod
    async def _mute_later(conn: _Conn, rule: MuteRule) -> None:
        await trio.sleep(rule.after_seconds)
        conn.mute(rule.pings)

    async def _serve_data(self, conn: _Conn) -> None:
        proto = DataServerProtocol(
            conn.endpoint,
            conn.encoding,
            lambda key, secret: self._check_auth(conn, key, secret),
            symbol_limit=self.symbol_limit,
            close_on=self.faults.close_on,
        )
        await conn.open_data(proto, self.auth_timeout, functools.partial(self._on_data_frame, conn))
        market = self._ensure_market(conn.family)
        ws = conn.ws
        stats = conn.stats
        while True:
            frame = await ws.get_message()
            stats.received_frames += 1
            before = stats.subscriptions
            self._on_data_frame(conn, frame)
            if proto.should_close:
                await trio.sleep_forever()
            state = proto.subscriptions
            if state != before:
                stats.subscriptions = state
                self._on_subscribed(conn, market, before)

    @staticmethod
    def _on_data_frame(conn: _Conn, frame: bytes | str) -> None:
        proto = conn.proto
        assert proto is not None
        for reply in proto.receive(frame):
            conn.send_control(reply)
        conn.stats.errors_sent = list(proto.errors_sent)
        conn.stats.authenticated = proto.authenticated
        if proto.should_close:
            conn.close_after_flush(1008)

    def _retain_symbols(self, family: str) -> None:
        """Stop simulating symbols no open connection of ``family`` subscribes to any more (a
        client that subscribed to 5,000 symbols and left must not keep the market busy)."""
        market = self._markets.get(family)
        if market is None:
            return
        wanted = {
            s
            for c in self._conns.values()
            if c.family == family
            for syms in c.stats.subscriptions.values()
            for s in syms
            if s != "*"
        }
        market.retain(wanted)

    def _on_subscribed(
        self, conn: _Conn, market: Market, before: dict[str, tuple[str, ...]]
    ) -> None:
        family = conn.family
        self._advance(family)
        subs = conn.stats.subscriptions
        explicit = {s for syms in subs.values() for s in syms if s != "*"}
        known = set(market.symbols)
        new = [s for s in explicit if s not in known]
        if new:
            market.add_symbols(sorted(new))
        if any(s not in explicit for syms in before.values() for s in syms if s != "*"):
            self._retain_symbols(family)
        self._market_wake[family].set()
        if family == "crypto":
            books = set(subs.get("orderbooks", ()))
            old = set(before.get("orderbooks", ()))
            if "*" in books and "*" not in old:
                wanted: Sequence[str] = market.symbols
            else:
                wanted = sorted(books - old - {"*"})
            snaps = [s for s in (market.orderbook_snapshot(x) for x in wanted) if s is not None]
            if snaps:
                conn.send_data(snaps)
        if self._burst and conn.burst_frames is None and any(subs.values()):
            self._start_burst(conn, market)

    def _start_burst(self, conn: _Conn, market: Market) -> None:
        assert conn.encoder is not None
        n = max(2, int(self._burst or 100))
        symbols = (
            sorted(
                {s for ch in ("trades", "quotes") for s in conn.stats.subscriptions.get(ch, ())}
                - {"*"}
            )
            or list(market.universe)
            or ["AAPL"]
        )
        ts = self.market_ns()
        frames: list[bytes | str] = []
        for variant in range(8):
            msgs: list[dict[str, Any]] = []
            for i in range(n):
                sym = symbols[(i // 2 + variant) % len(symbols)]
                t = ts + variant * n + i
                price = 100.0 + ((i * 7 + variant) % 50) / 100
                if i % 2 == 0:
                    msgs.append(self._burst_trade(conn.family, sym, price, t, variant * n + i))
                else:
                    msgs.append(self._burst_quote(conn.family, sym, price, t))
            frames.append(conn.encoder.encode_raw(msgs))
        conn.burst_frames = frames
        conn.burst_n = n
        conn.burst_cycle = itertools.cycle(frames)
        conn.burst_left = self._burst_frames
        conn.wake.set()

    @staticmethod
    def _burst_trade(family: str, sym: str, price: float, t: int, i: int) -> dict[str, Any]:
        if family in ("crypto", "perps"):
            return {"T": "t", "S": sym, "p": price, "s": 0.5, "t": t, "i": i, "tks": "B"}
        if family == "options":
            return {"T": "t", "S": sym, "t": t, "x": "C", "p": price, "s": 1, "c": "I"}
        return {
            "T": "t",
            "S": sym,
            "i": i,
            "x": "V",
            "p": price,
            "s": 100,
            "c": ["@"],
            "t": t,
            "z": "C",
        }

    @staticmethod
    def _burst_quote(family: str, sym: str, price: float, t: int) -> dict[str, Any]:
        bid, ask = round(price - 0.01, 2), round(price + 0.01, 2)
        if family in ("crypto", "perps"):
            return {"T": "q", "S": sym, "bp": bid, "bs": 1.0, "ap": ask, "as": 1.0, "t": t}
        if family == "options":
            return {"T": "q", "S": sym, "t": t, "bx": "C", "bp": bid, "bs": 1, "ax": "C", "ap": ask}
        q = {"T": "q", "S": sym, "bx": "V", "bp": bid, "bs": 1, "ax": "V", "ap": ask, "as": 1}
        q.update({"c": ["R"], "t": t, "z": "C"})
        return q

    async def _serve_trading(self, conn: _Conn) -> None:
        proto = TradingServerProtocol(
            conn.encoding,
            lambda key, secret: self._check_auth(conn, key, secret),
        )
        conn.tproto = proto
        ws = conn.ws
        while True:
            frame = await ws.get_message()
            conn.stats.received_frames += 1
            for reply in proto.receive(frame):
                conn.send_control(reply.encode() if isinstance(reply, str) else reply)
            conn.stats.authenticated = proto.authenticated
            conn.stats.listening = proto.listening
            if proto.should_close:
                conn.close_after_flush(1008)
                await trio.sleep_forever()

    async def _garbage_loop(self) -> None:
        try:
            while self.faults.garbage_interval is not None:
                await trio.sleep(self.faults.garbage_interval)
                unknown = {"T": "zz", "S": "AAPL", "t": self.market_ns(), "note": "unknown type"}
                for c in list(self._conns.values()):
                    if c.encoder is not None and c.stats.authenticated:
                        c.send_control(_malformed(c.encoding))
                        c.send_control(c.encoder.encode_raw([unknown]))
        finally:
            self._garbage_running = False

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
                nursery.start_soon(self._scripted_order_loop, self._scripted_orders)
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
