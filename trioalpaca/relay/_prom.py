"""Prometheus view of a relay: a collector that reads :meth:`Relay.get_metrics` when scraped.

Nothing runs on the data path: the counters the relay keeps anyway are turned into metric
families only when ``/metrics`` is requested (see :mod:`trioalpaca._ops`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._server import Relay

__all__ = ["RelayCollector", "relay_registry"]

_P = "trioalpaca_relay"


class RelayCollector(Collector):
    """Metric families of one relay: per downstream client, per upstream and totals."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        m = self.relay.get_metrics()
        labels = ["client", "feed", "account"]

        def client_family(cls: Any, name: str, doc: str, key: str) -> Metric:
            fam: Any = cls(f"{_P}_client_{name}", doc, labels=labels)
            for cid, c in m["clients"].items():
                fam.add_metric([str(cid), c["feed"], c["account"] or ""], c[key])
            return fam  # type: ignore[no-any-return]

        yield client_family(CounterMetricFamily, "messages", "data messages sent", "messages")
        yield client_family(CounterMetricFamily, "bytes", "bytes sent", "bytes")
        yield client_family(CounterMetricFamily, "frames", "frames sent", "frames")
        yield client_family(
            CounterMetricFamily, "dropped", "data messages dropped (queue full)", "dropped"
        )
        yield client_family(
            GaugeMetricFamily, "queue_bytes", "bytes waiting to be sent", "queue_bytes"
        )
        yield client_family(
            GaugeMetricFamily, "queue_frames", "frames waiting to be sent", "queue_frames"
        )

        up_labels = ["account", "feed"]

        def up_family(cls: Any, name: str, doc: str, value: Any) -> Metric:
            fam: Any = cls(f"{_P}_upstream_{name}", doc, labels=up_labels)
            for u in m["upstreams"].values():
                fam.add_metric([u["account"], u["feed"]], float(value(u)))
            return fam  # type: ignore[no-any-return]

        yield up_family(
            GaugeMetricFamily, "connected", "1 while connected", lambda u: u["state"] == "connected"
        )
        yield up_family(
            GaugeMetricFamily, "clients", "downstream clients attached", lambda u: u["clients"]
        )
        yield up_family(
            GaugeMetricFamily, "pairs", "(channel, symbol) pairs wanted", lambda u: u["pairs"]
        )
        yield up_family(
            CounterMetricFamily, "messages", "messages received", lambda u: u["messages_in"]
        )
        yield up_family(
            CounterMetricFamily, "reconnects", "upstream reconnects", lambda u: u["reconnects"]
        )
        yield up_family(
            CounterMetricFamily, "dropped", "messages dropped upstream", lambda u: u["dropped"]
        )
        yield up_family(
            CounterMetricFamily,
            "subscribe_requests",
            "subscribe requests sent upstream",
            lambda u: u["subscribe_requests"],
        )
        yield up_family(
            CounterMetricFamily,
            "unsubscribe_requests",
            "unsubscribe requests sent upstream",
            lambda u: u["unsubscribe_requests"],
        )

        yield GaugeMetricFamily(
            f"{_P}_clients", "downstream clients connected", m["clients_connected"]
        )
        yield CounterMetricFamily(
            f"{_P}_sessions", "downstream sessions accepted", m["sessions_total"]
        )
        yield CounterMetricFamily(
            f"{_P}_auth_failures", "refused local keys (402)", m["auth_failures"]
        )
        yield CounterMetricFamily(
            f"{_P}_slow_clients", "sessions cut with 407 slow client", m["slow_clients"]
        )
        yield CounterMetricFamily(f"{_P}_messages_out", "data messages sent", m["messages_out"])
        yield CounterMetricFamily(f"{_P}_dropped", "data messages dropped", m["dropped"])
        yield CounterMetricFamily(f"{_P}_markers", "gap markers seen upstream", m["markers"])
        lat = GaugeMetricFamily(
            f"{_P}_latency_seconds",
            "upstream batch received -> written downstream",
            labels=["quantile"],
        )
        for q, key in (("0.5", "p50_latency_ms"), ("0.99", "p99_latency_ms")):
            if m[key] is not None:
                lat.add_metric([q], m[key] / 1e3)
        yield lat


def relay_registry(relay: Relay) -> CollectorRegistry:
    """A registry holding a :class:`RelayCollector` for ``relay``."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(relay))
    return registry
