"""Market data side of the emulator: data connections, the markets, and the per-family schedule.

:class:`DataFeeds` serves the reader loop of every market data connection (auth, subscriptions),
starts one :class:`~trioalpaca.testing._market.Market` and one scheduling task per market family the
first time a connection of that family opens, advances it on ``trio.current_time()`` and hands
each connection the messages it subscribed to (:meth:`DataFeeds.dispatch`, also behind
:meth:`Emulator.publish <trioalpaca.testing.Emulator.publish>`). A family nobody listens to skips
its time instead of generating unseen messages.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from .._protocol.server import DataServerProtocol
from ._market import NS, Event, Market

if TYPE_CHECKING:
    from ._server import Emulator, _Conn

__all__ = ["DataFeeds"]

logger = logging.getLogger("trioalpaca.testing")

# Shortest interval between two market deliveries: 5 ms on the real clock (low latency), 20 ms
# under a virtual clock such as pytest-trio's autojump_clock (each wake-up costs real CPU).
_TICK_REAL = 0.005
_TICK_VIRTUAL = 0.02
_DELAY_NS = 15 * 60 * NS  # delayed_sip: timestamps 15 minutes old


class DataFeeds:
    """The markets of one emulator and the delivery of their data to its data connections."""

    def __init__(self, emu: Emulator, conns: dict[int, _Conn]) -> None:
        self._emu = emu
        self._conns = conns  # the emulator's open connections (shared, never replaced)
        #: The market of each family started so far.
        self.markets: dict[str, Market] = {}
        self._wake: dict[str, trio.Event] = {}
        self._idle: dict[str, bool] = {}

    # ------------------------------------------------------------------ data connections
    async def serve(self, conn: _Conn) -> None:
        """The reader loop of one market data connection (until it ends)."""
        emu = self._emu
        proto = DataServerProtocol(
            conn.endpoint,
            conn.encoding,
            lambda key, secret: emu._auth.check(conn, key, secret),
            symbol_limit=emu.symbol_limit,
            close_on=emu.faults.close_on,
        )
        await conn.open_data(proto, emu.auth_timeout, functools.partial(self.on_frame, conn))
        market = self.ensure(conn.family)
        ws = conn.ws
        stats = conn.stats
        while True:
            frame = await ws.get_message()
            stats.received_frames += 1
            before = stats.subscriptions
            self.on_frame(conn, frame)
            if proto.should_close:
                await trio.sleep_forever()
            state = proto.subscriptions
            if state != before:
                stats.subscriptions = state
                self._on_subscribed(conn, market, before)

    @staticmethod
    def on_frame(conn: _Conn, frame: bytes | str) -> None:
        """Feed one client frame to the connection's protocol and queue its replies."""
        proto = conn.proto
        assert proto is not None
        for reply in proto.receive(frame):
            conn.send_control(reply)
        conn.stats.errors_sent = list(proto.errors_sent)
        conn.stats.authenticated = proto.authenticated
        if proto.should_close:
            conn.close_after_flush(1008)

    def closed(self, conn: _Conn) -> None:
        """A connection ended (already removed from the open ones): release its symbols."""
        if conn.stats.subscriptions:
            self.retain_symbols(conn.family)

    def retain_symbols(self, family: str) -> None:
        """Stop simulating symbols no open connection of ``family`` subscribes to any more (a
        client that subscribed to 5,000 symbols and left must not keep the market busy)."""
        market = self.markets.get(family)
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
        self.advance(family)
        subs = conn.stats.subscriptions
        explicit = {s for syms in subs.values() for s in syms if s != "*"}
        known = set(market.symbols)
        new = [s for s in explicit if s not in known]
        if new:
            market.add_symbols(sorted(new))
        if any(s not in explicit for syms in before.values() for s in syms if s != "*"):
            self.retain_symbols(family)
        self._wake[family].set()
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
        burst = self._emu._burst
        if burst.wants(conn):
            burst.start(conn, market, self._emu.market_ns())

    # ------------------------------------------------------------------ markets
    def ensure(self, family: str) -> Market:
        """The market of ``family``, started (with its scheduling task) if it was not yet."""
        market = self.markets.get(family)
        if market is None:
            emu = self._emu
            market = Market(family, emu.config, emu.market_ns())
            self.markets[family] = market
            self._wake[family] = trio.Event()
            assert emu._nursery is not None
            emu._nursery.start_soon(self._market_loop, family)
        return market

    def advance(self, family: str) -> None:
        """Advance ``family``'s market to now and dispatch what it produced."""
        market = self.markets[family]
        now = self._emu.market_ns()
        if self._idle.get(family):
            # nobody listened: skip the time instead of generating unseen messages
            market.fast_forward(now)
            self._idle[family] = False
            return
        events = market.advance(now)
        if events:
            self.dispatch(family, events)

    def _has_listeners(self, family: str) -> bool:
        return any(
            c.family == family
            and c.stats.authenticated
            and not c.closing
            and any(c.stats.subscriptions.values())
            for c in self._conns.values()
        )

    async def _market_loop(self, family: str) -> None:
        market = self.markets[family]
        last = trio.current_time()
        virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        tick = _TICK_VIRTUAL if virtual else _TICK_REAL
        while True:
            if not self._has_listeners(family):
                self._idle[family] = True
                await self._wake[family].wait()
                self._wake[family] = trio.Event()
                self.advance(family)  # fast-forwards unless a subscription already did
                last = trio.current_time()
                continue
            nxt = market.next_event_ns()
            deadline = math.inf if nxt is None else self._emu._trio_time_for(nxt)
            deadline = max(deadline, last + tick)
            with trio.move_on_at(deadline):
                await self._wake[family].wait()
            if self._wake[family].is_set():
                self._wake[family] = trio.Event()
            last = trio.current_time()
            self.advance(family)

    def dispatch(self, family: str, events: list[Event]) -> None:
        """Hand every authenticated connection of ``family`` the events it subscribed to."""
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
                    self._emu.errors.append(exc)
                    c.close_after_flush(1011)
