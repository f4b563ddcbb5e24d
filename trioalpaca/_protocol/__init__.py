"""Sans-IO protocol state machines (no I/O, no clocks, no logging).

* :class:`DataClientProtocol` - client side of the market data streams;
* :class:`TradingClientProtocol` - client side of the trading ``trade_updates`` stream;
* :class:`DataServerProtocol`, :class:`TradingServerProtocol` - the emulator's side.
"""

from __future__ import annotations

from .client import ClientState, DataClientProtocol, SubscriptionRequest, endpoint_for
from .common import apply_change, build_request, normalize_channels
from .server import (
    DEFAULT_CLOSE_ON,
    ERROR_MESSAGES,
    AuthCheck,
    DataServerProtocol,
    TradingServerProtocol,
)
from .trading import TradingClientProtocol

__all__ = [
    "DEFAULT_CLOSE_ON",
    "ERROR_MESSAGES",
    "AuthCheck",
    "ClientState",
    "DataClientProtocol",
    "DataServerProtocol",
    "SubscriptionRequest",
    "TradingClientProtocol",
    "TradingServerProtocol",
    "apply_change",
    "build_request",
    "endpoint_for",
    "normalize_channels",
]
