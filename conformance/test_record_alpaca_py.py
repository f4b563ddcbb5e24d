"""Conformance: alpaca-py (unmodified) consumes a recording served by ``trioalpaca replay --serve``.

A small msgpack recording is written with the recording writer (trades and quotes for three
symbols, with nanosecond timestamps), served by the ``replay`` command in a subprocess (the same
Alpaca-compatible server as the emulator), and alpaca-py's ``StockDataStream`` subscribes to a
subset. It must get exactly the recorded messages of its subscription, in order, as typed models.
A recording of the emulator's trading stream, served the same way, reaches alpaca-py's
``TradingStream`` as the recorded trade updates, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

alpaca = pytest.importorskip("alpaca")

from _support import problems, running_command  # noqa: E402
from alpaca.data.enums import DataFeed  # noqa: E402
from alpaca.data.live import StockDataStream  # noqa: E402
from alpaca.data.models import Quote, Trade  # noqa: E402
from alpaca.trading.stream import TradingStream  # noqa: E402

from trioalpaca._codec import Encoder  # noqa: E402
from trioalpaca.record import RecordingWriter, RecordKind  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BASE_NS = 1_764_604_800_123_456_789  # 2025-12-01T16:00:00.123456789Z


def write_recording(path: Path) -> list[dict[str, Any]]:
    enc = Encoder("stocks", "msgpack")
    w = RecordingWriter(
        path, {"kind": "stocks", "encoding": "msgpack", "feed": "iex", "stream": "rec"}
    )
    messages: list[dict[str, Any]] = []
    for i in range(90):
        ns = BASE_NS + i * 10_000_000
        sym = ("AAPL", "MSFT", "TSLA")[i % 3]
        if i % 2 == 0:
            m = {
                "T": "t",
                "S": sym,
                "i": 1000 + i,
                "x": "V",
                "p": 100.0 + i / 100,
                "s": i + 1,
                "c": ["@"],
                "t": ns,
                "z": "C",
            }
        else:
            m = {
                "T": "q",
                "S": sym,
                "bx": "V",
                "bp": 99.0 + i / 100,
                "bs": 2,
                "ax": "P",
                "ap": 101.0 + i / 100,
                "as": 3,
                "c": ["R"],
                "t": ns,
                "z": "C",
            }
        messages.append(m)
        frame = enc.encode_raw([m])
        assert isinstance(frame, bytes)
        w.add(RecordKind.FRAME_IN_BINARY, ns + 1_000, frame)
    w.close()
    return messages


@contextmanager
def serving(path: Path) -> Iterator[str]:
    args = ["replay", str(path), "--serve", "--port", "0", "--speed", "20", "--wait-clients", "1"]
    with running_command(args, "replay server") as url:
        yield url


def run_until(stream: Any, done: threading.Event) -> bool:
    """Run an alpaca-py stream in a thread until ``done`` is set (30 s at most), then 0.3 s more
    in which nothing else may arrive, then stop it; whether ``done`` was set."""
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        finished = done.wait(30)
        time.sleep(0.3)  # nothing else may arrive
    finally:
        deadline = time.monotonic() + 5
        while getattr(stream, "_loop", None) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        stream.stop()
        thread.join(15)
    return finished


def test_alpaca_py_consumes_a_served_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = write_recording(tmp_path / "rec.tarec")
    want_trades = [m for m in recorded if m["T"] == "t" and m["S"] == "AAPL"]
    want_quotes = [m for m in recorded if m["T"] == "q" and m["S"] == "MSFT"]
    got: dict[str, list[Any]] = {"trades": [], "quotes": []}
    done = threading.Event()

    def handler(channel: str) -> Any:
        async def handle(msg: Any) -> None:
            got[channel].append(msg)
            if len(got["trades"]) >= len(want_trades) and len(got["quotes"]) >= len(want_quotes):
                done.set()

        return handle

    caplog.set_level(logging.INFO)
    with serving(tmp_path / "rec.tarec") as url:
        stream = StockDataStream("key", "secret", feed=DataFeed.IEX, url_override=url + "/v2/iex")
        stream.subscribe_trades(handler("trades"), "AAPL")
        stream.subscribe_quotes(handler("quotes"), "MSFT")
        finished = run_until(stream, done)
    assert finished, f"got {len(got['trades'])} trades, {len(got['quotes'])} quotes"
    assert not problems(caplog.records, logging.WARNING)
    assert all(isinstance(t, Trade) for t in got["trades"])
    assert all(isinstance(q, Quote) for q in got["quotes"])
    assert [(t.symbol, t.id, t.price, t.size) for t in got["trades"]] == [
        (m["S"], m["i"], m["p"], m["s"]) for m in want_trades
    ]
    assert [(q.symbol, q.bid_price, q.ask_price) for q in got["quotes"]] == [
        (m["S"], m["bp"], m["ap"]) for m in want_quotes
    ]
    # timestamps survive to alpaca-py's microsecond precision
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    micros = [(t.timestamp - epoch) // timedelta(microseconds=1) for t in got["trades"]]
    assert micros == [m["t"] // 1000 for m in want_trades]


def record_trading(path: Path) -> list[Any]:
    """Record the emulator's trading stream (an order filled in parts, one canceled) with a
    trioalpaca trading client; return the raw trade_updates it got."""
    import trio

    from trioalpaca import open_stream
    from trioalpaca.record import open_recorder
    from trioalpaca.testing import open_emulator

    async def main() -> list[Any]:
        live: list[Any] = []
        async with open_emulator(seed=5) as emu:
            client = open_stream(
                "key", "secret", stream_type="trading", url=emu.url_for("trading"), raw_data=True
            )
            async with open_recorder(path, client), client:
                emu.submit_order("AAPL", qty=3, plan="partial", step_delay=0.01)
                emu.submit_order("MSFT", qty=2, side="sell", plan="cancel", step_delay=0.01)
                async for msg in client:
                    live.append(msg)
                    if {"fill", "canceled"} <= {m["event"] for m in live}:
                        break
        return live

    return trio.run(main)


def test_alpaca_py_trading_stream_consumes_a_served_trading_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from alpaca.trading.models import TradeUpdate

    recorded = record_trading(tmp_path / "trading.tarec")
    got: list[Any] = []
    done = threading.Event()

    async def on_update(update: Any) -> None:
        got.append(update)
        if len(got) >= len(recorded):
            done.set()

    caplog.set_level(logging.INFO)
    with serving(tmp_path / "trading.tarec") as url:
        stream = TradingStream("key", "secret", url_override=url + "/stream")
        stream.subscribe_trade_updates(on_update)
        finished = run_until(stream, done)
    assert finished, f"got {len(got)} of {len(recorded)} trade updates"
    assert not problems(caplog.records, logging.WARNING)
    assert all(isinstance(u, TradeUpdate) for u in got)
    assert [str(getattr(u.event, "value", u.event)) for u in got] == [m["event"] for m in recorded]
    assert [str(u.order.id) for u in got] == [m["order"]["id"] for m in recorded]
    assert [u.execution_id and str(u.execution_id) for u in got] == [
        m.get("execution_id") for m in recorded
    ]
