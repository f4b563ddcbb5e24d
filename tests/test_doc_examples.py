"""The guides' code (docs/examples/*.py, pulled into the docs with literalinclude) runs against the
emulator with ``DATA_PROXY_WS`` as the only switch. Also: every example file is run by some test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from tests.test_seed_examples import EXAMPLES, emu, load, printed, run_main
from trioalpaca.testing import Emulator

__all__ = ["emu"]  # the fixture, shared with the seed examples

DOCS = EXAMPLES.parent


async def test_stream_market_data(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("stream_market_data"), 30)
    subscribed, *rest = printed(capsys)
    assert subscribed == "subscribed: {'trades': ('AAPL',), 'quotes': ('MSFT',)}"
    assert 15 <= len(rest) <= 30  # corrections and cancels are counted, not printed
    symbols = {line.split()[0] for line in rest}
    assert symbols <= {"AAPL", "MSFT"}


async def test_change_subscriptions(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("change_subscriptions"))
    added, removed, refused = printed(capsys)
    assert added == "{'trades': ('AAPL', 'TSLA'), 'quotes': ('MSFT',), 'bars': ('SPY',)}"
    assert removed == "{'trades': ('AAPL', 'TSLA'), 'bars': ('SPY',)}"
    assert "invalid symbol 'BRK B'" in refused


async def test_handlers(
    autojump_clock: trio.abc.Clock,
    emu: Emulator,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    example = load("handlers")

    async def failing(trade: object) -> None:
        raise ValueError("bad trade")

    example.on_trade = failing
    await run_main(example, 1.0)
    out = printed(capsys)
    assert out and all(line.startswith("any ") for line in out)
    failures = [r.getMessage() for r in caplog.records if "failed on" in r.getMessage()]
    assert failures and "bad trade" in failures[0] and "failing" in failures[0]


async def test_handlers_as_written(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("handlers"), 1.0)
    out = printed(capsys)
    assert any(line.startswith("AAPL trade ") for line in out)
    assert any(line.startswith("any Trade") for line in out)
    # after handle.remove() only the AAPL handler prints: the last line is one of its lines
    assert out[-1].startswith("AAPL trade ")


async def test_connect_disconnect(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("connect_disconnect"))
    assert printed(capsys) == [
        "idle",
        "connected {'trades': ('AAPL',)}",
        "disconnected",
        "connected {'trades': ('AAPL',)}",
    ]


async def test_nursery_start(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("nursery_start"), 10)
    out = printed(capsys)
    assert len(out) == 10 and all(line.endswith(" AAPL") for line in out)


async def test_from_alpaca_py(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("from_alpaca_py"), 1.0)
    out = printed(capsys)
    assert out and {line.split()[0] for line in out} <= {"AAPL", "MSFT"}
    # url_override's counterpart
    await run_main(load("from_alpaca_py"), 0.5, emu.url_for("sip"))
    assert printed(capsys)


def test_every_example_is_run_by_a_test() -> None:
    # an example is run here through load("name"), or by another test module naming its file
    here = Path(__file__)
    sources = [p.read_text() for p in here.parent.glob("test_*.py") if p != here]
    source = "".join(sources) + here.read_text()
    run = set(re.findall(r'load\("(\w+)"\)', source))
    run |= {stem for stem in re.findall(r"examples/(\w+)\.py", "".join(sources))}
    assert {p.stem for p in EXAMPLES.glob("*.py")} <= run


def test_every_example_is_in_the_docs() -> None:
    included = set()
    for rst in DOCS.rglob("*.rst"):
        text = rst.read_text()
        included |= set(re.findall(r"literalinclude:: [./]*examples/(\w+)\.py", text))
    assert {p.stem for p in EXAMPLES.glob("*.py")} <= included


async def test_pipeline(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("pipeline")
    await run_main(example, 1.0)
    (stored,) = printed(capsys)
    assert stored == f"{example.db.rows} trades stored" and example.db.rows > 50


async def test_pipeline_backfills_a_gap(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("pipeline")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_main, example, 3.0)
        while not emu.open_connections(feed="iex"):
            await trio.sleep(0.02)
        await trio.sleep(0.3)
        emu.drop(feed="iex")
    out = printed(capsys)
    assert len(out) == 2 and out[0].startswith("backfill 20") and " .. 20" in out[0]


async def test_manager_handles(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("manager_handles")
    await run_main(example, 1.0)
    assert printed(capsys) == ["on the wire: ['AAPL'] True False", "audit still receives: True"]
    assert example.seen["tech"] > 0


async def test_pool_handles(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_main(load("pool_handles"), 1.0)
    assert printed(capsys) == ["healthy connections: 3"]


async def test_gaps(
    autojump_clock: trio.abc.Clock, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_main, load("gaps"))
        while not emu.open_connections(feed="iex"):
            await trio.sleep(0.02)
        await trio.sleep(0.3)
        emu.drop(feed="iex")
    backfill, gap = printed(capsys)
    assert re.fullmatch(r"backfill \d\d:\d\d:\d\d\.\d{6} \.\. \d\d:\d\d:\d\d\.\d{6}", backfill)
    assert re.fullmatch(r"\d+\.\d{3} s gap after 1 attempt\(s\)", gap)


@pytest.mark.parametrize(
    "name",
    [
        "test_something",
        "test_in_a_nursery",
        "test_published_messages",
        "test_trade_updates",
        "test_reconnect_is_reported",
    ],
)
async def test_emulator_tests_example(name: str, autojump_clock: trio.abc.Clock) -> None:
    example = load("emulator_tests")
    with trio.fail_after(30):
        await getattr(example, name)()


def test_emulator_tests_example_is_complete() -> None:
    example = load("emulator_tests")
    names = {n for n in dir(example) if n.startswith("test_")}
    params = test_emulator_tests_example.pytestmark[0].args[1]  # type: ignore[attr-defined]
    assert names == set(params)
