"""Trading side of the emulator: trading connections and the playback of orders.

:class:`TradingDesk` serves the reader loop of every trading (``trade_updates``) connection, plays
the life-cycle steps of submitted orders on trio time, sends each resulting ``trade_updates``
message to the listening connections (only those of the order's key when it has one) and runs the
CLI's scripted order flow. The order book itself is :class:`~trioalpaca.testing._orders.OrderFlow`
(``Emulator.orders``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from .._protocol.server import TradingServerProtocol
from ._orders import Step

if TYPE_CHECKING:
    from ._server import Emulator, _Conn

__all__ = ["TradingDesk"]


class TradingDesk:
    """Trading connections and order playback of one emulator."""

    def __init__(self, emu: Emulator, conns: dict[int, _Conn]) -> None:
        self._emu = emu
        self._conns = conns  # the emulator's open connections (shared, never replaced)
        self._order_keys: dict[str, str] = {}

    async def serve(self, conn: _Conn) -> None:
        """The reader loop of one trading connection (until it ends)."""
        emu = self._emu
        proto = TradingServerProtocol(
            conn.encoding,
            lambda key, secret: emu._auth.check(conn, key, secret),
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

    def play(self, order_id: str, steps: list[Step], key: str | None) -> None:
        """Start playing an order's steps (its updates go only to ``key``'s connections when
        given)."""
        emu = self._emu
        assert emu._nursery is not None, "emulator is not running"
        if key is not None:
            self._order_keys[order_id] = key
        emu._nursery.start_soon(self._play, order_id, steps)

    async def _play(self, order_id: str, steps: list[Step]) -> None:
        emu = self._emu
        for step in steps:
            if step.delay:
                await trio.sleep(step.delay)
            data = emu.orders.apply(order_id, step, emu.market_ns())
            if data is None:
                return
            self.broadcast(data, self._order_keys.get(order_id))

    def cancel(self, order_id: str) -> bool:
        """Cancel an open order now and send the update; False if unknown or already done."""
        data = self._emu.orders.cancel(order_id, self._emu.market_ns())
        if data is not None:
            self.broadcast(data, self._order_keys.get(order_id))
        return data is not None

    def expire(self, order_id: str) -> bool:
        """Expire an open order now and send the update; False if unknown or already done."""
        data = self._emu.orders.expire(order_id, self._emu.market_ns())
        if data is not None:
            self.broadcast(data, self._order_keys.get(order_id))
        return data is not None

    def broadcast(self, data: dict[str, Any], key: str | None = None) -> None:
        """Send one ``trade_updates`` payload to every listening trading connection (of ``key``,
        when given)."""
        for c in self._conns.values():
            listening = c.tproto is not None and c.tproto.is_listening("trade_updates")
            if listening and (key is None or c.stats.key == key):
                c.send_trade_update(data)

    async def scripted_loop(self, interval: float) -> None:
        """Submit the CLI's scripted orders every ``interval`` seconds while a trading connection
        is open."""
        emu = self._emu
        n = 0
        while True:
            await trio.sleep(interval)
            if any(c.family == "trading" for c in self._conns.values()):
                symbol, qty, side, plan = emu.orders.scripted(n)
                emu.submit_order(symbol, str(qty), side, plan=plan, step_delay=interval / 4)
                n += 1
