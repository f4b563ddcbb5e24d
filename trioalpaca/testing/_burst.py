"""Burst mode of the emulator: pre-encoded frames sent as fast as a connection's socket takes them.

:class:`Burst` holds the setting (``Emulator.set_burst``) and, when a connection first subscribes
while it is on, builds that connection's eight frames of ``messages_per_frame`` messages (half
trades, half quotes of the subscribed symbols); the connection's sender then cycles through them
while nothing else is queued.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._market import Market
    from ._server import _Conn

__all__ = ["Burst"]

_VARIANTS = 8


class Burst:
    """The burst-mode setting of one emulator and the builder of each connection's frames."""

    def __init__(self, messages_per_frame: int | None, frames: int | None) -> None:
        #: Messages per pre-encoded frame (None or 0: burst mode off).
        self.messages_per_frame = messages_per_frame
        #: Frames sent per connection in total (None: unlimited).
        self.frames = frames

    def wants(self, conn: _Conn) -> bool:
        """True if burst mode is on and ``conn`` subscribed to something but has no frames yet."""
        return bool(
            self.messages_per_frame
            and conn.burst_frames is None
            and any(conn.stats.subscriptions.values())
        )

    def start(self, conn: _Conn, market: Market, ts: int) -> None:
        """Build ``conn``'s burst frames (timestamps from market time ``ts``) and wake its
        sender."""
        assert conn.encoder is not None
        n = max(2, int(self.messages_per_frame or 100))
        symbols = (
            sorted(
                {s for ch in ("trades", "quotes") for s in conn.stats.subscriptions.get(ch, ())}
                - {"*"}
            )
            or list(market.universe)
            or ["AAPL"]
        )
        frames: list[bytes | str] = []
        for variant in range(_VARIANTS):
            msgs: list[dict[str, Any]] = []
            for i in range(n):
                sym = symbols[(i // 2 + variant) % len(symbols)]
                t = ts + variant * n + i
                price = 100.0 + ((i * 7 + variant) % 50) / 100
                if i % 2 == 0:
                    msgs.append(burst_trade(conn.family, sym, price, t, variant * n + i))
                else:
                    msgs.append(burst_quote(conn.family, sym, price, t))
            frames.append(conn.encoder.encode_raw(msgs))
        conn.burst_frames = frames
        conn.burst_n = n
        conn.burst_cycle = itertools.cycle(frames)
        conn.burst_left = self.frames
        conn.wake.set()


def burst_trade(family: str, sym: str, price: float, t: int, i: int) -> dict[str, Any]:
    """One trade of a burst frame in the wire shape of ``family``."""
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


def burst_quote(family: str, sym: str, price: float, t: int) -> dict[str, Any]:
    """One quote of a burst frame in the wire shape of ``family``."""
    bid, ask = round(price - 0.01, 2), round(price + 0.01, 2)
    if family in ("crypto", "perps"):
        return {"T": "q", "S": sym, "bp": bid, "bs": 1.0, "ap": ask, "as": 1.0, "t": t}
    if family == "options":
        return {"T": "q", "S": sym, "t": t, "bx": "C", "bp": bid, "bs": 1, "ax": "C", "ap": ask}
    q = {"T": "q", "S": sym, "bx": "V", "bp": bid, "bs": 1, "ax": "V", "ap": ask, "as": 1}
    q.update({"c": ["R"], "t": t, "z": "C"})
    return q
