"""Fault injection of the emulator: applying the fault plan to connections.

:class:`~trioalpaca.testing._faults.Faults` (``Emulator.faults``) is the plan: rules for the next
connections. :class:`FaultInjector` carries it out: it arms each new connection with the drop and
mute rules meant for it, drops and mutes open connections on request, runs the periodic garbage
injection and sends injected frames (raw, malformed, unknown-type). The public controls are the
methods of :class:`~trioalpaca.testing.Emulator` (``drop``, ``mute``, ``inject_frame``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from ..endpoints import resolve_feed
from ._faults import DropHow, DropRule, MuteRule

if TYPE_CHECKING:
    from ._server import Emulator, _Conn

__all__ = ["FaultInjector", "malformed_frame"]


def malformed_frame(encoding: str) -> bytes | str:
    """A frame that is neither valid msgpack (0xc1 is never used) nor valid JSON."""
    return b"\xc1\xc1 not msgpack" if encoding == "msgpack" else "[{not json"


def _feed(feed: str | None) -> str | None:
    return None if feed is None else resolve_feed(feed).feed


class FaultInjector:
    """Applies one emulator's fault plan to its connections."""

    def __init__(self, emu: Emulator, conns: dict[int, _Conn]) -> None:
        self._emu = emu
        self._conns = conns  # the emulator's open connections (shared, never replaced)
        self._garbage_running = False

    def live(self, feed: str | None, connection: int | None = None) -> list[_Conn]:
        """The open connections on ``feed`` (all feeds: None), or only the one with id
        ``connection``."""
        f = _feed(feed)
        return [
            c
            for c in self._conns.values()
            if (f is None or c.endpoint.feed == f)
            and (connection is None or c.stats.id == connection)
        ]

    # ------------------------------------------------------------------ rules of new connections
    def arm(self, conn: _Conn) -> None:
        """Arm a new connection with the drop and mute rules meant for it (consumes them)."""
        faults = self._emu.faults
        rule = faults.take_drop(conn.endpoint.feed)
        if rule is not None:
            self._arm_drop(conn, rule, from_now=True)
        mute = faults.take_mute(conn.endpoint.feed)
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

    # ------------------------------------------------------------------ controls
    def drop(
        self,
        feed: str | None,
        how: DropHow,
        after_messages: int | None,
        after_seconds: float | None,
        connection: int | None,
        count: int | None,
    ) -> None:
        """:meth:`Emulator.drop <trioalpaca.testing.Emulator.drop>`."""
        if after_messages is None and after_seconds is None:
            nursery = self._emu._nursery
            for c in self.live(feed, connection):
                assert nursery is not None
                nursery.start_soon(c.drop, how)
            return
        rule = DropRule(_feed(feed), count, how, after_messages, after_seconds)
        if connection is not None:
            for c in self.live(feed, connection):
                self._arm_drop(c, attrs.evolve(rule, remaining=None), from_now=True)
        else:
            self._emu.faults.drops.append(rule)

    def mute(
        self, feed: str | None, pings: bool, after_seconds: float | None, count: int | None
    ) -> None:
        """:meth:`Emulator.mute <trioalpaca.testing.Emulator.mute>`."""
        if after_seconds is None:
            for c in self.live(feed):
                c.mute(pings)
            return
        self._emu.faults.mutes.append(MuteRule(_feed(feed), count, pings, after_seconds))

    def unmute(self, feed: str | None) -> None:
        """Resume data (and pongs) on the open connections on ``feed`` (None: all)."""
        for c in self.live(feed):
            c.unmute()

    # ------------------------------------------------------------------ injected frames
    def inject_frame(self, frame: bytes | str, feed: str | None) -> None:
        """Send ``frame`` as-is to every open connection on ``feed``."""
        for c in self.live(feed):
            c.send_control(frame)

    def inject_malformed(self, feed: str | None) -> None:
        """Send a malformed frame to every open data connection on ``feed``."""
        for c in self.live(feed):
            if c.encoder is not None:
                c.send_control(malformed_frame(c.encoding))

    def inject_unknown(self, feed: str | None) -> None:
        """Send a frame with an unknown message type to every open data connection on ``feed``."""
        msg = {"T": "zz", "S": "AAPL", "t": self._emu.market_ns(), "note": "unknown type"}
        for c in self.live(feed):
            if c.encoder is not None:
                c.send_control(c.encoder.encode_raw([msg]))

    def start_garbage(self) -> None:
        """Start the garbage loop if the plan has an interval, the emulator runs and the loop
        does not."""
        emu = self._emu
        if emu.faults.garbage_interval is None or self._garbage_running or emu._nursery is None:
            return
        self._garbage_running = True
        emu._nursery.start_soon(self._garbage_loop)

    async def _garbage_loop(self) -> None:
        emu = self._emu
        try:
            while emu.faults.garbage_interval is not None:
                await trio.sleep(emu.faults.garbage_interval)
                unknown = {"T": "zz", "S": "AAPL", "t": emu.market_ns(), "note": "unknown type"}
                for c in list(self._conns.values()):
                    if c.encoder is not None and c.stats.authenticated:
                        c.send_control(malformed_frame(c.encoding))
                        c.send_control(c.encoder.encode_raw([unknown]))
        finally:
            self._garbage_running = False
