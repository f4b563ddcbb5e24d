"""Testing tools: a local Alpaca-compatible stream server (the emulator) and hypothesis strategies.

The emulator serves every Alpaca stream endpoint on one port (stocks, crypto, options, news and the
trading ``trade_updates`` stream), speaks the same wire protocol as the real service (it reuses
trioalpaca's codec and the server half of its protocol state machine), plays a deterministic
synthetic market and lets tests inject faults::

    async with open_emulator(seed=1, speed=60) as emu:
        url = emu.url_for("iex")          # ws://127.0.0.1:PORT/v2/iex
        emu.drop(after_messages=100)      # reset the next connection after 100 messages
        ...

or, for ``nursery.start``::

    emu = await nursery.start(serve_emulator)

Hypothesis strategies for messages live in ``trioalpaca.testing.strategies``.
"""

from __future__ import annotations

from ._faults import SCENARIOS, DropHow, Scenario
from ._market import DEFAULT_SYMBOLS, MarketConfig
from ._orders import PLANS, OrderPlan
from ._server import (
    DEFAULT_SEND_BUFFER_LIMIT,
    ConnectionStats,
    Emulator,
    open_emulator,
    serve_emulator,
)

__all__ = [
    "DEFAULT_SEND_BUFFER_LIMIT",
    "DEFAULT_SYMBOLS",
    "PLANS",
    "SCENARIOS",
    "ConnectionStats",
    "DropHow",
    "Emulator",
    "MarketConfig",
    "OrderPlan",
    "Scenario",
    "open_emulator",
    "serve_emulator",
]
