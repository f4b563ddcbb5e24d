"""MessageHandler fed by the real client from the emulator: order per symbol, gaps visible."""

from __future__ import annotations

from typing import Any

import trio

from trioalpaca import Backoff, Quote, Reconnected, Trade, open_message_handler, open_stream
from trioalpaca.testing import open_emulator

KEY = "PKTESTKEY0123456789"
SECRET = "sEcReT-do-not-leak-0123456789abcdef"


async def test_client_into_handler_with_reconnect() -> None:
    """Real clock: see test_manager_emulator for why."""
    syms = ["AAPL", "MSFT", "TSLA", "NVDA"]
    trades: dict[str, list[int]] = {}
    quotes: dict[str, list[int]] = {}
    control: list[Any] = []

    async def on_trades(batch: list[Trade]) -> None:
        await trio.sleep(0.002)  # slow-ish processor, 4 of them in parallel
        for t in batch:
            trades.setdefault(t.symbol, []).append(t.timestamp_ns)

    def on_quotes(batch: list[Quote]) -> None:
        for q in batch:
            quotes.setdefault(q.symbol, []).append(q.timestamp_ns)

    async with (
        open_emulator(symbols=syms, rate=200.0) as emu,
        open_stream(
            KEY,
            SECRET,
            feed="iex",
            url=emu.url_for("iex"),
            trades=syms,
            quotes=syms,
            backoff=Backoff(initial=0.05, cap=0.2),
            heartbeat_interval=None,
        ) as cl,
        open_message_handler(worker_count=4, batch_size=50) as handler,
    ):
        handler.register_processor("trades", on_trades)
        handler.register_processor("quotes", on_quotes)
        handler.register_processor("control", control.extend)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler.consume, cl)
            with trio.fail_after(10):
                while sum(map(len, trades.values())) < 40:
                    await trio.sleep(0.01)
                emu.drop(feed="iex")
                while not control:
                    await trio.sleep(0.01)
                n = sum(map(len, trades.values()))
                while sum(map(len, trades.values())) < n + 40:  # data flows again
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    m = handler.get_metrics()  # after the block: everything queued was processed
    assert set(trades) == set(syms) and set(quotes) == set(syms)
    for d in (trades, quotes):
        for ts in d.values():
            # The emulator's timestamps grow per symbol; order kept by the symbol's worker.
            assert ts == sorted(ts)
    assert any(isinstance(c, Reconnected) for c in control)
    assert m["reconnects"] >= 1
    t = m["by_type"]["trades"]
    assert t["count"] == sum(map(len, trades.values()))
    assert t["errors"] == t["dropped"] == 0
    assert m["total"]["rate"] > 0
