"""The client's counters beyond the per-frame receipts, and the metrics views.

:class:`Tally` counts what happened to one :class:`~trioalpaca.client.AlpacaWebSocketClient`
across its sessions (reconnects, errors per code or class, malformed messages) and computes the
derived figures of :meth:`~trioalpaca.client.AlpacaWebSocketClient.statistics` /
:meth:`~trioalpaca.client.AlpacaWebSocketClient.get_metrics`. The per-frame counters
(``_Receipts``) stay next to the reader's hot path in ``trioalpaca.client``.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import trio

from trioalpaca._malformed import MalformedTally

if TYPE_CHECKING:
    from trioalpaca.client import ClientStatistics, _Receipts
    from trioalpaca.models import MalformedMessage

__all__ = ["RATE_WINDOW", "Tally"]

#: Window of ``messages_per_second`` in :meth:`AlpacaWebSocketClient.get_metrics` (seconds).
RATE_WINDOW = 10.0


class Tally:
    """Reconnects, errors and malformed messages of one client (it outlives sessions)."""

    def __init__(self, logger: logging.Logger, label: str) -> None:
        self.reconnects = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.malformed = MalformedTally(logger, label)
        self._rate_resolution = RATE_WINDOW / 20

    def count_error(self, exc: BaseException) -> None:
        """Count ``exc`` under its server code, else under its class name."""
        code = getattr(exc, "code", None)
        key = str(code) if isinstance(code, int) and code else type(exc).__name__
        self.errors[key] += 1

    def count_handler_failure(self) -> None:
        """A message handler raised."""
        self.errors["handler"] += 1

    def note_malformed(self, msg: MalformedMessage) -> None:
        """The protocol delivered a :class:`~trioalpaca.models.MalformedMessage`."""
        self.malformed.note(msg, trio.current_time())

    def messages_per_second(self, rx: _Receipts, now: float) -> float:
        """Over the last 10 s, or since the first message when that is more recent (no
        ramp-up)."""
        if rx.first_rx is None:
            return 0.0
        span = min(RATE_WINDOW, max(now - rx.first_rx, self._rate_resolution))
        return rx.rate.count(now) / span

    def metrics(self, st: ClientStatistics) -> dict[str, Any]:
        """``get_metrics()``: the statistics ``st`` as a plain dict, latencies in ms."""
        lat = st.latency
        rtt = st.heartbeat_rtt
        return {
            "state": st.state,
            "feed": st.feed,
            "messages_received": st.messages_received,
            "messages_per_second": st.messages_per_second,
            "frames_received": st.frames_received,
            "bytes_received": st.bytes_received,
            "avg_latency_ms": lat.mean * 1e3 if lat.count else None,
            "p50_latency_ms": lat.p50 * 1e3 if lat.count else None,
            "p99_latency_ms": lat.p99 * 1e3 if lat.count else None,
            "heartbeat_rtt_ms": None if rtt is None else rtt * 1e3,
            "reconnects": st.reconnects,
            "errors": dict(st.errors),
            "malformed_messages": self.malformed.messages,
            "undecodable_frames": self.malformed.frames,
            "dropped": st.dropped,
            "buffered": st.buffered,
            "last_message_age_s": st.last_message_age,
            "subscriptions": st.subscriptions,
        }
