"""The relay: one Alpaca connection per key and endpoint, many local clients (alpaca-py included).

``serve_relay`` serves Alpaca's stream protocol on every endpoint path; downstream clients
authenticate with local keys, each gets its own subscription set, acknowledgements and codec, and
upstream carries the reference-counted union. See the relay guide in the documentation.
"""

from __future__ import annotations

from ._auth import DEFAULT_ACCOUNT, Account, LocalKey, load_keys_file
from ._server import DEFAULT_SEND_BUFFER_LIMIT, Relay, RelayClientStats, serve_relay

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_SEND_BUFFER_LIMIT",
    "Account",
    "LocalKey",
    "Relay",
    "RelayClientStats",
    "load_keys_file",
    "serve_relay",
]
