"""The original design's examples in trio (docs/examples/*.py), run against the emulator.

Each example is the file the docs include. The only switch to go offline is ``DATA_PROXY_WS``
(credentials come from ``ALPACA_API_KEY`` / ``ALPACA_API_SECRET``, which the emulator accepts).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import UsageError
from trioalpaca.testing import Emulator, open_emulator

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def emu(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> AsyncIterator[Emulator]:
    # virtual time (jumping only while nothing is in flight): the examples' sleeps cost nothing
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "DATA_CRYPTO_PROXY_WS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ALPACA_API_KEY", "PKSEEDEXAMPLE")
    monkeypatch.setenv("ALPACA_API_SECRET", "seed-example-secret")
    async with open_emulator(
        symbols=["AAPL", "MSFT", "GOOGL"], rate=300, connection_limit=3
    ) as emulator:
        monkeypatch.setenv("DATA_PROXY_WS", emulator.url)
        yield emulator


async def run_main(module: ModuleType, *args: Any) -> None:
    with trio.fail_after(30):
        await module.main(*args)


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


async def test_quick_start(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("quickstart"), 1.0)
    out = printed(capsys)
    assert len(out) > 10
    for line in out:
        assert re.fullmatch(r"Trade: (AAPL|MSFT|GOOGL) @ \$\d+(\.\d+)?", line), line


async def test_quick_start_error_handler_takes_one_argument(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("quickstart")

    async def broken(message: Any) -> None:
        raise LookupError(message["S"])

    example.handle_trade = broken  # main() registers whatever handle_trade is
    await run_main(example, 0.5)
    out = printed(capsys)
    assert out
    for line in out:
        assert re.fullmatch(r"Error in .*broken: LookupError\('(AAPL|MSFT|GOOGL)'\)", line), line


async def test_stream_manager(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("stream_manager"), 1.0)
    out = printed(capsys)
    assert out
    kinds = {line.split(":")[0] for line in out}
    assert {"Trade", "Quote"} <= kinds <= {"Trade", "Quote", "TradeCorrection", "TradeCancel"}
    assert {line.split(": ")[1] for line in out} <= {"AAPL", "MSFT"}


async def test_message_handler(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("message_handler")
    await run_main(example, 1.0)
    out = printed(capsys)
    assert len(out) > 10
    for line in out:
        symbol, price = line.split(": ")
        assert symbol in ("AAPL", "MSFT") and float(price) > 0


async def test_message_handler_error_handler_gets_one_argument(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("message_handler")

    async def broken(trades: list[Any]) -> None:
        raise RuntimeError("boom")

    example.process_trades = broken  # the example registers whatever process_trades is
    await run_main(example, 0.5)
    out = printed(capsys)
    assert out
    for line in out:
        assert re.fullmatch(r"processing failed: RuntimeError\('boom'\) \(\d+ trades\)", line)


async def test_connection_pool(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("connection_pool"), 1.0)
    out = printed(capsys)
    assert out
    assert {line.split(": ")[1] for line in out} <= {"AAPL", "MSFT", "GOOGL"}
    assert {line.split(":")[0] for line in out} >= {"Trade", "Quote"}


async def test_metrics(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("metrics"), 1.0)
    latency, rate, healthy = printed(capsys)
    assert re.fullmatch(r"Average latency: \d+\.\d\d ms", latency)
    match = re.fullmatch(r"Trades per second: (\d+\.\d)", rate)
    assert match and float(match.group(1)) > 0
    assert healthy == "Healthy connections: 3"


async def test_client_options(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("client_options"), 5)
    *trades, refusal = printed(capsys)
    assert len(trades) == 5
    for line in trades:
        symbol, price, ts = line.split()
        assert symbol == "AAPL" and float(price) > 0 and int(ts) > 1_600_000_000 * 10**9
    assert "no real-time websocket feed 'otc'" in refusal and "valid feeds:" in refusal
    assert "iex" in refusal and "sip" in refusal


def test_otc_refused_with_usage_error() -> None:
    from trioalpaca import AlpacaWebSocketClient

    with pytest.raises(UsageError, match=r"valid feeds: .*iex.*sip"):
        AlpacaWebSocketClient("k", "s", feed="otc")
