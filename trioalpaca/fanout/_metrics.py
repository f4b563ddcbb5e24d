"""Prometheus metrics of a hub, read from :meth:`Hub.status` when scraped (nothing on the data
path). Served by the shared ops endpoint (:func:`trioalpaca._ops.serve_ops_http`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from trioalpaca.fanout.hub import Hub

__all__ = ["HubCollector", "hub_registry"]


class HubCollector:
    """A ``prometheus_client`` collector for one :class:`~trioalpaca.fanout.Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by the registry at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.hub.status()
        labels = ["tag"]
        tag = [self.hub.layout.tag]

        def gauge(name: str, doc: str, value: Any) -> Any:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(tag, float(value) if value is not None else float("nan"))
            return g

        def counter(name: str, doc: str, value: Any) -> Any:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(tag, float(value or 0))
            return c

        yield gauge(
            "trioalpaca_hub_leader", "1 while this hub holds the lease", status["role"] == "leader"
        )
        yield gauge(
            "trioalpaca_hub_epoch", "epoch of the current or last leadership", status["epoch"]
        )
        yield counter(
            "trioalpaca_hub_takeovers", "times this hub became leader", status["takeovers"]
        )
        yield gauge(
            "trioalpaca_hub_queue_depth", "messages queued for Redis", status["queue_depth"]
        )
        yield gauge(
            "trioalpaca_hub_publish_rate",
            "messages per second written (10 s)",
            status["publish_rate"],
        )
        yield counter(
            "trioalpaca_hub_published_messages",
            "messages written to Redis",
            status["published_messages"],
        )
        yield counter(
            "trioalpaca_hub_dropped_messages", "messages lost with a marker", status["dropped"]
        )
        yield counter("trioalpaca_hub_redis_errors", "failed Redis calls", status["redis_errors"])
        yield gauge(
            "trioalpaca_hub_lag_seconds", "age of the last upstream message", status["lag_s"]
        )


def hub_registry(hub: Hub) -> Any:
    """A fresh ``CollectorRegistry`` holding a :class:`HubCollector` for ``hub``."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(HubCollector(hub))
    return registry
