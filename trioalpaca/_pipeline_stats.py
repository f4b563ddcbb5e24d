"""The pipeline's statistics: per-channel counters, control-event tallies, the metrics view.

:class:`PipelineStats` is owned by :class:`~trioalpaca.pipeline.MessageHandler`; the router
(``trioalpaca._pipeline_router``) and the workers count into its :class:`ChannelStats` (plain
slotted attributes, bumped on the hot paths), and :meth:`PipelineStats.snapshot` builds the dicts
of :meth:`MessageHandler.get_metrics <trioalpaca.pipeline.MessageHandler.get_metrics>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trioalpaca.metrics import LatencyHistogram, RateMeter
from trioalpaca.models import Dropped, Reconnected, ServerError

if TYPE_CHECKING:
    from trioalpaca._pipeline_router import Lane

__all__ = ["ChannelStats", "PipelineStats"]


class ChannelStats:
    """The counters of one channel (see ``get_metrics`` for their meaning)."""

    __slots__ = (
        "batches",
        "conflated",
        "count",
        "dropped",
        "errors",
        "failed",
        "latency",
        "processed",
        "rate",
        "received",
        "unhandled",
    )

    def __init__(self, window_s: float) -> None:
        self.received = 0
        self.count = 0
        self.processed = 0
        self.batches = 0
        self.dropped = 0
        self.conflated = 0
        self.unhandled = 0
        self.errors = 0
        self.failed = 0
        self.rate = RateMeter(window_s)
        self.latency = LatencyHistogram()


class PipelineStats:
    """Every counter of one handler: :class:`ChannelStats` per channel (:attr:`by_channel`, in
    order of first use) and the handler-wide tallies."""

    __slots__ = ("by_channel", "handler_errors", "rate_window", "reconnects", "upstream_dropped")

    def __init__(self, rate_window: float) -> None:
        self.rate_window = rate_window
        self.by_channel: dict[str, ChannelStats] = {}
        self.reconnects = 0
        self.upstream_dropped = 0
        self.handler_errors = 0

    def for_channel(self, channel: str) -> ChannelStats:
        """The counters of ``channel``, created on first use."""
        st = self.by_channel.get(channel)
        if st is None:
            st = self.by_channel[channel] = ChannelStats(self.rate_window)
        return st

    def note_control(self, msg: Any) -> bool:
        """Count a control event (``reconnects``, ``upstream_dropped``); return whether it is one
        that must not go unnoticed (``Reconnected``, ``Dropped``, ``ServerError``)."""
        cls = type(msg)
        if cls is dict:
            t = msg.get("T")
            if t == "reconnected":
                self.reconnects += 1
            elif t == "dropped":
                self.upstream_dropped += int(msg.get("count", 0))
            return t in ("reconnected", "dropped", "error")
        if cls is Reconnected:
            self.reconnects += 1
        elif cls is Dropped:
            self.upstream_dropped += msg.count
        return cls in (Reconnected, Dropped, ServerError)

    def snapshot(self, lanes: Sequence[Lane], control: Lane, now: float) -> dict[str, Any]:
        """The ``get_metrics`` dict at ``now`` (the lanes' discards settled by the caller)."""
        stats = self.by_channel
        return {
            "by_type": {ch: self.summary([st], now) for ch, st in stats.items()},
            "total": self.summary(list(stats.values()), now),
            "workers": [
                {
                    "queue_depth": len(lane.q),
                    "capacity": lane.capacity,
                    "batches": lane.batches,
                }
                for lane in lanes
            ],
            "control": {
                "queue_depth": len(control.q),
                "batches": control.batches,
            },
            "reconnects": self.reconnects,
            "upstream_dropped": self.upstream_dropped,
            "error_handler_errors": self.handler_errors,
        }

    @staticmethod
    def summary(stats: list[ChannelStats], now: float) -> dict[str, Any]:
        """One ``by_type`` / ``total`` entry: ``stats`` summed, latency merged."""
        hist = (
            stats[0].latency
            if len(stats) == 1
            else LatencyHistogram.merged(s.latency for s in stats)
        )
        return {
            "received": sum(s.received for s in stats),
            "count": sum(s.count for s in stats),
            "rate": sum(s.rate.rate(now) for s in stats),
            "processed": sum(s.processed for s in stats),
            "batches": sum(s.batches for s in stats),
            "dropped": sum(s.dropped for s in stats),
            "conflated": sum(s.conflated for s in stats),
            "unhandled": sum(s.unhandled for s in stats),
            "errors": sum(s.errors for s in stats),
            "failed": sum(s.failed for s in stats),
            "queue_depth": sum(s.received - s.count - s.dropped for s in stats),
            "latency_p50": hist.percentile(50),
            "latency_p99": hist.percentile(99),
            "latency_mean": hist.mean,
            "latency_max": hist.max if hist.count else 0.0,
        }
