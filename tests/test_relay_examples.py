"""The relay guide's example, run against the emulator (the shared ``emu`` fixture)."""

from __future__ import annotations

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from tests.test_seed_examples import emu, load, printed, run_main
from trioalpaca.testing import Emulator

__all__ = ["emu"]


async def test_relay_example(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("relay"), 5)
    out = printed(capsys)
    assert out[0] == "notebook {'trades': ('AAPL',)}"
    assert out[1] == "strategy {'quotes': ('MSFT',)}"
    data = out[2:-1]
    assert len(data) == 10
    assert {line for line in data[:5]} <= {"Trade AAPL", "TradeCorrection AAPL", "TradeCancel AAPL"}
    assert set(data[5:]) == {"Quote MSFT"}
    assert out[-1].startswith("relay ws://127.0.0.1:") and "2 clients, 1 upstreams" in out[-1]
    # one upstream connection carried both clients
    assert len([c for c in emu.connections if c.feed == "iex"]) == 1
