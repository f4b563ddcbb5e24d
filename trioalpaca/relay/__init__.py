"""The relay: one Alpaca connection per key and endpoint, many local clients (alpaca-py included).

``serve_relay`` serves Alpaca's stream protocol on every endpoint path; downstream clients
authenticate with local keys, each gets its own subscription set, acknowledgements and codec, and
upstream carries the reference-counted union. See the relay guide in the documentation.
"""

from __future__ import annotations

from ._auth import DEFAULT_ACCOUNT, Account, LocalKey, load_keys_file
from ._server import (
    DEFAULT_SEND_BUFFER_LIMIT,
    Relay,
    RelayClientStats,
    RelayUpstream,
    UpstreamHook,
    UpstreamTap,
    serve_relay,
)


def __getattr__(name: str) -> object:
    # the Prometheus collector needs prometheus-client (the ``ops`` extra): import it on use
    if name in ("RelayCollector", "relay_registry"):
        from . import _prom

        return getattr(_prom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_SEND_BUFFER_LIMIT",
    "Account",
    "LocalKey",
    "Relay",
    "RelayClientStats",
    "RelayCollector",
    "RelayUpstream",
    "UpstreamHook",
    "UpstreamTap",
    "load_keys_file",
    "relay_registry",
    "serve_relay",
]
