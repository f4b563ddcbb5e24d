"""Admission of the emulator: credentials, the plan's feeds and the per-key connection slots.

:class:`AuthGate` answers each auth request of a connection with the error code the real service
would send (or None to accept it): an injected auth fault, 402 for bad credentials, 409 for a feed
not in the plan, 406 when the key already holds ``connection_limit`` sessions on that market data
endpoint. The slot of a connection that closed abnormally stays taken for the fault plan's reaping
period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._server import Emulator, _Conn

__all__ = ["AuthGate"]


class AuthGate:
    """Auth checks and connection slots of one emulator (its settings are read at each check)."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self._slots: dict[tuple[str, str], list[int]] = {}
        self._held: dict[tuple[str, str], list[float]] = {}

    def _slot_free(self, key: str, feed: str) -> bool:
        now = trio.current_time()
        held = [t for t in self._held.get((key, feed), []) if t > now]
        self._held[(key, feed)] = held
        return len(self._slots.get((key, feed), [])) + len(held) < self._emu.connection_limit

    def check(self, conn: _Conn, key: str, secret: str) -> int | None:
        """The error code to answer ``conn``'s auth with, or None (accepted; a slot is taken)."""
        emu = self._emu
        feed = conn.endpoint.feed
        code = emu.faults.take_auth_error(feed)
        if code is not None:
            return code
        if not key or not secret:
            return 402
        if emu.credentials is not None and emu.credentials.get(key) != secret:
            return 402
        if emu.allowed_feeds is not None and feed not in emu.allowed_feeds:
            return 409
        if feed != "trading":  # the connection limit is a market data rule
            if not self._slot_free(key, feed):
                return 406
            self._slots.setdefault((key, feed), []).append(conn.stats.id)
        conn.stats.key = key
        return None

    def release(self, conn: _Conn) -> None:
        """Give back ``conn``'s slot (held for the reaping period after an abnormal close)."""
        key = conn.stats.key
        if key is None:
            return
        slot = (key, conn.endpoint.feed)
        ids = self._slots.get(slot, [])
        if conn.stats.id in ids:
            ids.remove(conn.stats.id)
            reap = self._emu.faults.reap_period
            if conn.abnormal and reap > 0:
                self._held.setdefault(slot, []).append(trio.current_time() + reap)
