"""Unit tests for trioalpaca.pipeline against in-memory message sources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca._errors import UsageError
from trioalpaca.backoff import Backoff
from trioalpaca.models import Dropped, Quote, Reconnected, Trade
from trioalpaca.pipeline import (
    MessageHandler,
    ProcessingFailure,
    ProcessorError,
    open_message_handler,
)


def trade(symbol: str, i: int) -> Trade:
    return Trade(symbol, i, "V", 100.0 + i, 1, (), 1_700_000_000_000_000_000 + i, "C")


def quote(symbol: str, i: int) -> Quote:
    return Quote(
        symbol, "V", 99.0 + i, 1, "V", 101.0 + i, 1, (), 1_700_000_000_000_000_000 + i, "C"
    )


async def agen(msgs: Iterable[Any], *, settle: bool = False) -> AsyncIterator[Any]:
    """Yield ``msgs``; with ``settle`` let every other task block between messages."""
    for m in msgs:
        if settle:
            await trio.testing.wait_all_tasks_blocked()
        yield m


def check_invariant(handler: MessageHandler) -> None:
    """Per-channel depths add up to what the lanes actually hold."""
    m = handler.get_metrics()
    for ch, d in m["by_type"].items():
        assert d["received"] == d["count"] + d["dropped"] + d["queue_depth"], ch
        assert d["queue_depth"] >= 0, ch
    lanes = sum(w["queue_depth"] for w in m["workers"]) + m["control"]["queue_depth"]
    assert m["total"]["queue_depth"] == lanes


# ---------------------------------------------------------------- basics


async def test_consume_delivers_everything_and_metrics() -> None:
    got: list[Trade] = []
    quotes: list[Quote] = []

    async def on_trades(batch: list[Trade]) -> None:
        got.extend(batch)

    def on_quotes(batch: list[Quote]) -> None:  # plain functions work too
        quotes.extend(batch)

    msgs: list[Any] = [trade(s, i) for i in range(50) for s in ("AAPL", "MSFT", "TSLA")]
    msgs += [quote("AAPL", i) for i in range(7)]
    async with open_message_handler(buffer_size=16, batch_size=10, worker_count=4) as handler:
        handler.register_processor("trades", on_trades)
        handler.register_processor("quotes", on_quotes)
        await handler.consume(agen(msgs))
    assert sorted(got, key=lambda t: (t.symbol, t.trade_id)) == sorted(
        (m for m in msgs if isinstance(m, Trade)), key=lambda t: (t.symbol, t.trade_id)
    )
    assert len(quotes) == 7
    m = handler.get_metrics()
    t = m["by_type"]["trades"]
    assert t["count"] == t["received"] == t["processed"] == 150
    assert t["dropped"] == t["errors"] == t["failed"] == t["queue_depth"] == 0
    assert t["rate"] > 0
    assert isinstance(handler.get_metrics()["by_type"]["trades"]["rate"], float)
    assert t["latency_p99"] >= t["latency_p50"] >= 0.0
    assert m["total"]["count"] == 157
    assert sum(w["batches"] for w in m["workers"]) >= 150 // 10
    check_invariant(handler)


async def test_rate_is_sliding_window(autojump_clock: trio.testing.MockClock) -> None:
    async with open_message_handler(batch_timeout=0, rate_window=10.0) as handler:
        handler.register_processor("trades", lambda batch: None)
        await handler.consume(agen([trade("A", i) for i in range(100)]))
        await trio.testing.wait_all_tasks_blocked()
        assert handler.get_metrics()["by_type"]["trades"]["rate"] == pytest.approx(10.0)
        await trio.sleep(11)
        assert handler.get_metrics()["by_type"]["trades"]["rate"] == 0.0
        assert handler.get_metrics()["by_type"]["trades"]["count"] == 100


async def test_metrics_list_registered_channels_before_data() -> None:
    async with open_message_handler() as handler:
        handler.register_processor("trades", print)
        handler.register_processor("daily_bars", print)
        m = handler.get_metrics()
        assert m["by_type"]["trades"]["rate"] == 0.0
        assert m["by_type"]["dailyBars"]["count"] == 0
        assert m["total"]["count"] == 0


async def test_consume_after_lanes_closed_raises() -> None:
    handler = MessageHandler(batch_timeout=0)
    handler.register_processor("trades", print)
    async with trio.open_nursery() as nursery:
        await nursery.start(handler.run)
        handler.close()
    with pytest.raises(trio.ClosedResourceError):
        await handler._router.route_all([trade("A", 1)])


async def test_unhandled_and_star_processor() -> None:
    star: list[Any] = []
    async with open_message_handler() as handler:
        await handler.consume(agen([trade("A", 1), quote("A", 1)]))
        handler.register_processor("*", star.extend)
        await handler.consume(agen([trade("A", 2), quote("A", 2)]))
    m = handler.get_metrics()["by_type"]
    assert m["trades"]["unhandled"] == 1
    assert m["quotes"]["unhandled"] == 1
    assert star == [trade("A", 2), quote("A", 2)]


async def test_registration_rules() -> None:
    h = MessageHandler()
    h.register_processor("daily_bars", print)
    with pytest.raises(UsageError):
        h.register_processor("dailyBars", print)  # same channel, other spelling
    with pytest.raises(UsageError):
        h.register_processor("nonsense", print)
    h.unregister_processor("dailyBars")
    h.register_processor("dailyBars", print)
    with pytest.raises(KeyError):
        h.unregister_processor("trades")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"buffer_size": 0},
        {"batch_size": 0},
        {"batch_timeout": -1},
        {"worker_count": 0},
        {"error_policy": "ignore"},
        {"max_retries": -1},
        {"overflow": "conflate"},
        {"overflow": "explode"},
        {"overflow": {"trades": "conflate"}},
        {"overflow": {"*": "conflate"}},
        {"overflow": {"control": "drop_newest"}},
        {"overflow": {"quotes": "nope"}},
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        MessageHandler(**kwargs)


async def test_nursery_start_and_close() -> None:
    got: list[Any] = []
    handler = MessageHandler(worker_count=2, batch_timeout=0)
    handler.register_processor("trades", got.extend)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(handler.run)
        assert started is handler
        async with handler.intake_channel() as ch:
            for i in range(10):
                await ch.send(trade("X", i))
        await handler.send(trade("X", 10))
        handler.close()
        handler.close()  # idempotent
    assert [t.trade_id for t in got] == list(range(11))
    assert handler.closed
    with pytest.raises(trio.ClosedResourceError):
        await handler.consume(agen([]))
    with pytest.raises(trio.ClosedResourceError):
        handler.intake_channel()
    with pytest.raises(UsageError):
        await handler.run()


async def test_body_exception_cancels_and_leaves_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_message_handler() as handler:
            handler.register_processor("trades", lambda b: None)
            raise KeyError("boom")


async def test_raw_dicts_are_routed() -> None:
    got: dict[str, list[Any]] = {"trades": [], "dailyBars": [], "trade_updates": [], "control": []}
    async with open_message_handler(worker_count=3) as handler:
        for k, v in got.items():
            handler.register_processor(k, v.extend)
        await handler.consume(
            agen(
                [
                    {"T": "t", "S": "AAPL", "i": 1},
                    {"T": "d", "S": "AAPL"},
                    {"stream": "trade_updates", "data": {"order": {"symbol": "AAPL"}}},
                    {"T": "reconnected", "gap_start": 1, "gap_end": 2},
                    {"T": "dropped", "count": 5, "reason": "x"},
                ]
            )
        )
    assert [len(v) for v in got.values()] == [1, 1, 1, 2]
    m = handler.get_metrics()
    assert m["reconnects"] == 1
    assert m["upstream_dropped"] == 5


# ---------------------------------------------------------------- control events


async def test_control_events_reach_control_processor() -> None:
    control: list[Any] = []
    async with open_message_handler() as handler:
        handler.register_processor("trades", lambda b: None)
        handler.register_processor("control", control.extend)
        await handler.consume(
            agen([trade("A", 1), Reconnected(1, 2, 3), trade("A", 2), Dropped(7, "overflow")])
        )
    assert control == [Reconnected(1, 2, 3), Dropped(7, "overflow")]
    m = handler.get_metrics()
    assert m["reconnects"] == 1
    assert m["upstream_dropped"] == 7
    assert m["by_type"]["control"]["processed"] == 2
    assert m["control"]["batches"] >= 1


async def test_control_events_without_processor_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trioalpaca.pipeline")
    async with open_message_handler() as handler:
        handler.register_processor("trades", lambda b: None)
        await handler.consume(agen([Reconnected(1, 2), Dropped(3, "overflow")]))
    assert handler.get_metrics()["by_type"]["control"]["unhandled"] == 2
    assert sum("unhandled control event" in r.getMessage() for r in caplog.records) == 2


# ---------------------------------------------------------------- batching


async def test_batch_sizes(autojump_clock: trio.testing.MockClock) -> None:
    sizes: list[int] = []

    async def proc(batch: list[Trade]) -> None:
        sizes.append(len(batch))

    async with open_message_handler(batch_size=100, worker_count=1, batch_timeout=5.0) as handler:
        handler.register_processor("trades", proc)
        start = trio.current_time()
        await handler.consume(agen([trade("A", i) for i in range(250)]))
        await trio.testing.wait_all_tasks_blocked()
        # Two full batches go out at once; the partial one waits for the timeout.
        assert sizes == [100, 100]
        assert trio.current_time() == start
        await trio.sleep(4.9)
        assert sizes == [100, 100]
        await trio.sleep(0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert sizes == [100, 100, 50]


async def test_batch_timeout_bounds_latency(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[tuple[float, list[int]]] = []

    async def proc(batch: list[Trade]) -> None:
        calls.append((trio.current_time(), [t.trade_id for t in batch]))

    async with open_message_handler(batch_size=10, worker_count=1, batch_timeout=0.5) as handler:
        handler.register_processor("trades", proc)
        t0 = trio.current_time()
        await handler.send(trade("A", 0))
        await trio.sleep(0.2)
        await handler.send(trade("A", 1))
        await trio.sleep(1.0)
        await handler.send(trade("A", 2))
        await trio.sleep(1.0)
    # First batch: collected until 0.5 s after its first message.
    assert [c[1] for c in calls] == [[0, 1], [2]]
    assert [c[0] - t0 for c in calls] == pytest.approx([0.5, 1.2 + 0.5])


async def test_zero_timeout_takes_what_is_queued(autojump_clock: trio.testing.MockClock) -> None:
    sizes: list[int] = []
    async with open_message_handler(batch_size=10, worker_count=1, batch_timeout=0) as handler:
        handler.register_processor("trades", lambda b: sizes.append(len(b)))
        await handler.consume(agen([trade("A", i) for i in range(25)]))
    assert sizes == [10, 10, 5]


async def test_mixed_batch_is_split_by_channel() -> None:
    seen: list[tuple[str, list[int]]] = []
    async with open_message_handler(batch_size=10, worker_count=1, batch_timeout=0) as handler:
        handler.register_processor("trades", lambda b: seen.append(("t", [m.trade_id for m in b])))
        handler.register_processor(
            "quotes", lambda b: seen.append(("q", [int(m.bid_price) - 99 for m in b]))
        )
        await handler.consume(agen([trade("A", 0), quote("A", 0), trade("A", 1), quote("A", 1)]))
    assert seen == [("t", [0, 1]), ("q", [0, 1])]


# ---------------------------------------------------------------- ordering


@settings(max_examples=40, deadline=None)
@given(
    msgs=st.lists(
        st.tuples(
            st.sampled_from(["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOG", "META"]), st.booleans()
        ),
        min_size=1,
        max_size=120,
    ),
    delays=st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=1, max_size=30),
    batch_size=st.integers(min_value=1, max_value=16),
    batch_timeout=st.sampled_from([0.0, 0.001, 0.01]),
)
def test_per_symbol_order_with_four_workers(
    msgs: list[tuple[str, bool]], delays: list[float], batch_size: int, batch_timeout: float
) -> None:
    """Random processing delays never reorder one symbol's messages of one channel."""
    stream: list[Any] = [
        trade(sym, i) if is_trade else quote(sym, i) for i, (sym, is_trade) in enumerate(msgs)
    ]
    seen: dict[tuple[str, str], list[int]] = {}
    active: set[str] = set()
    calls = 0

    async def proc(batch: list[Any]) -> None:
        nonlocal calls
        syms = {m.symbol for m in batch}
        # One worker owns each symbol: no symbol is processed by two workers at once.
        assert not (syms & active)
        active.update(syms)
        await trio.sleep(delays[calls % len(delays)])
        calls += 1
        active.difference_update(syms)
        for m in batch:
            idx = m.trade_id if isinstance(m, Trade) else m.timestamp_ns - 1_700_000_000_000_000_000
            seen.setdefault((type(m).channel, m.symbol), []).append(idx)

    async def main() -> None:
        async with open_message_handler(
            buffer_size=8, batch_size=batch_size, batch_timeout=batch_timeout, worker_count=4
        ) as handler:
            handler.register_processor("trades", proc)
            handler.register_processor("quotes", proc)
            await handler.consume(agen(stream))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    expected: dict[tuple[str, str], list[int]] = {}
    for i, (sym, is_trade) in enumerate(msgs):
        expected.setdefault(("trades" if is_trade else "quotes", sym), []).append(i)
    assert seen == expected


def test_worker_assignment_is_stable() -> None:
    h = MessageHandler(worker_count=4)
    # crc32-based, independent of PYTHONHASHSEED: fixed expectations.
    assert [h.worker_for(s) for s in ("AAPL", "MSFT", "TSLA", "SPY")] == [
        __import__("zlib").crc32(s.encode()) % 4 for s in ("AAPL", "MSFT", "TSLA", "SPY")
    ]
    assert len({h.worker_for(f"S{i}") for i in range(100)}) == 4


# ---------------------------------------------------------------- overflow policies


async def _stalled_handler_run(
    overflow: Any, msgs: list[Any], *, buffer_size: int = 2
) -> tuple[list[Any], MessageHandler, list[dict[str, Any]]]:
    """One worker, batch_size 1; the first message stalls the worker until all are routed."""
    release = trio.Event()
    got: list[Any] = []
    snapshots: list[dict[str, Any]] = []

    async def proc(batch: list[Any]) -> None:
        if not got:
            await release.wait()
        got.extend(batch)

    async with open_message_handler(
        buffer_size=buffer_size, batch_size=1, worker_count=1, batch_timeout=0, overflow=overflow
    ) as handler:
        handler.register_processor("trades", proc)
        handler.register_processor("quotes", proc)
        await handler.consume(agen(msgs[:1]))
        await trio.testing.wait_all_tasks_blocked()  # worker holds msg 0
        await handler.consume(agen(msgs[1:]))
        check_invariant(handler)
        snapshots.append(handler.get_metrics())
        release.set()
    return got, handler, snapshots


async def test_overflow_drop_newest() -> None:
    msgs = [trade("A", i) for i in range(6)]
    got, handler, snaps = await _stalled_handler_run("drop_newest", msgs)
    assert [m.trade_id for m in got] == [0, 1, 2]
    assert snaps[0]["by_type"]["trades"]["dropped"] == 3
    assert snaps[0]["by_type"]["trades"]["queue_depth"] == 2
    assert snaps[0]["workers"][0]["queue_depth"] == 2
    assert handler.get_metrics()["total"]["dropped"] == 3
    check_invariant(handler)


async def test_overflow_drop_oldest() -> None:
    msgs = [trade("A", i) for i in range(6)]
    got, handler, snaps = await _stalled_handler_run("drop_oldest", msgs)
    assert [m.trade_id for m in got] == [0, 4, 5]
    assert snaps[0]["by_type"]["trades"]["dropped"] == 3
    check_invariant(handler)


async def test_overflow_block_waits_for_room() -> None:
    release = trio.Event()
    got: list[int] = []
    progress: list[int] = []

    async def proc(batch: list[Trade]) -> None:
        await release.wait()
        got.extend(t.trade_id for t in batch)

    async def source() -> AsyncIterator[Trade]:
        for i in range(6):
            progress.append(i)
            yield trade("A", i)

    async with open_message_handler(
        buffer_size=2, batch_size=1, worker_count=1, batch_timeout=0, overflow="block"
    ) as handler:
        handler.register_processor("trades", proc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler.consume, source())
            await trio.testing.wait_all_tasks_blocked()
            # 1 in the processor, 2 queued, the 4th waits for room: backpressure, no drop.
            assert progress == [0, 1, 2, 3]
            assert handler.get_metrics()["by_type"]["trades"]["dropped"] == 0
            release.set()
    assert got == list(range(6))
    check_invariant(handler)


async def test_overflow_conflate_keeps_latest_per_symbol() -> None:
    msgs: list[Any] = [trade("A", 0)]
    msgs += [quote("A", i) for i in range(1, 5)] + [quote("B", i) for i in range(5, 8)]
    msgs += [trade("A", 8)]
    got, handler, snaps = await _stalled_handler_run(
        {"quotes": "conflate", "*": "drop_newest"}, msgs, buffer_size=3
    )
    # The lane held one token per symbol (A, B) plus trade 8; contents are the latest quotes.
    assert [(type(m).__name__, m.symbol, m.timestamp_ns % 100) for m in got] == [
        ("Trade", "A", 0),
        ("Quote", "A", 4),
        ("Quote", "B", 7),
        ("Trade", "A", 8),
    ]
    q = snaps[0]["by_type"]["quotes"]
    assert q["conflated"] == 5
    assert q["dropped"] == 5
    assert q["queue_depth"] == 2
    check_invariant(handler)


async def test_overflow_conflate_falls_back_when_full() -> None:
    msgs: list[Any] = [trade("A", 0), quote("A", 1), quote("B", 2), quote("C", 3), quote("A", 4)]
    got, handler, snaps = await _stalled_handler_run(
        {"quotes": "conflate", "*": "drop_newest"}, msgs, buffer_size=2
    )
    # C arrives with the lane full: the default policy (drop_newest) drops it; A conflates.
    assert [(m.symbol, m.timestamp_ns % 100) for m in got] == [("A", 0), ("A", 4), ("B", 2)]
    assert snaps[0]["by_type"]["quotes"]["dropped"] == 2
    assert snaps[0]["by_type"]["quotes"]["conflated"] == 1
    check_invariant(handler)


async def test_drop_oldest_drops_a_conflated_token() -> None:
    msgs: list[Any] = [trade("A", 0), quote("A", 1), trade("A", 2), trade("A", 3), quote("A", 4)]
    got, handler, _ = await _stalled_handler_run(
        {"quotes": "conflate", "*": "drop_oldest"}, msgs, buffer_size=2
    )
    # trade 3 pushes the quote-1 token out; quote 4 then pushes trade 2 out.
    assert [(type(m).__name__, m.timestamp_ns % 100) for m in got] == [
        ("Trade", 0),
        ("Trade", 3),
        ("Quote", 4),
    ]
    check_invariant(handler)


# ---------------------------------------------------------------- error policies


async def test_error_policy_skip_reports_and_continues() -> None:
    failures: list[ProcessingFailure] = []
    got: list[int] = []

    def proc(batch: list[Trade]) -> None:
        if any(t.trade_id == 3 for t in batch):
            raise RuntimeError("bad trade")
        got.extend(t.trade_id for t in batch)

    async with open_message_handler(batch_size=1, worker_count=1, batch_timeout=0) as handler:
        handler.register_processor("trades", proc)
        handler.set_error_handler(failures.append)
        await handler.consume(agen([trade("A", i) for i in range(6)]))
    assert got == [0, 1, 2, 4, 5]
    assert len(failures) == 1
    f = failures[0]
    assert (f.kind, f.attempt, f.action) == ("trades", 1, "skip")
    assert isinstance(f.error, RuntimeError)
    assert [t.trade_id for t in f.batch] == [3]
    t = handler.get_metrics()["by_type"]["trades"]
    assert (t["errors"], t["failed"], t["processed"]) == (1, 1, 5)


async def test_error_policy_retry_with_backoff(autojump_clock: trio.testing.MockClock) -> None:
    failures: list[ProcessingFailure] = []
    attempts: list[float] = []

    async def proc(batch: list[Trade]) -> None:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ValueError("transient")

    async def on_error(f: ProcessingFailure) -> None:
        failures.append(f)

    async with open_message_handler(
        batch_timeout=0,
        error_policy="retry",
        max_retries=5,
        retry_backoff=Backoff(initial=1.0, multiplier=2.0, cap=10.0, jitter="none"),
    ) as handler:
        handler.register_processor("trades", proc)
        handler.set_error_handler(on_error)
        t0 = trio.current_time()
        await handler.consume(agen([trade("A", 0)]))
    assert [a - t0 for a in attempts] == pytest.approx([0.0, 1.0, 3.0])
    assert [(f.attempt, f.action) for f in failures] == [(1, "retry"), (2, "retry")]
    t = handler.get_metrics()["by_type"]["trades"]
    assert (t["errors"], t["failed"], t["processed"]) == (2, 0, 1)


async def test_error_policy_retry_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    failures: list[ProcessingFailure] = []
    got: list[int] = []

    def proc(batch: list[Trade]) -> None:
        if batch[0].trade_id == 0:
            raise ValueError("permanent")
        got.append(batch[0].trade_id)

    async with open_message_handler(
        batch_size=1, worker_count=1, batch_timeout=0, error_policy="retry", max_retries=2
    ) as handler:
        handler.register_processor("trades", proc)
        handler.set_error_handler(failures.append)
        await handler.consume(agen([trade("A", 0), trade("A", 1)]))
    assert [(f.attempt, f.action) for f in failures] == [(1, "retry"), (2, "retry"), (3, "skip")]
    assert got == [1]  # the worker kept running, order kept
    assert handler.get_metrics()["by_type"]["trades"]["failed"] == 1


async def test_error_policy_stop_raises_processor_error() -> None:
    failures: list[ProcessingFailure] = []

    def proc(batch: list[Trade]) -> None:
        raise ZeroDivisionError("stop me")

    with pytest.raises(ProcessorError) as info:
        async with open_message_handler(error_policy="stop", batch_timeout=0) as handler:
            handler.register_processor("trades", proc)
            handler.set_error_handler(failures.append)
            await handler.consume(agen([trade("A", 0)]))
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.failure.action == "stop"
    assert failures[0].action == "stop"


async def test_no_error_handler_logs_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def proc(batch: list[Trade]) -> None:
        raise RuntimeError("visible")

    async with open_message_handler(batch_timeout=0) as handler:
        handler.register_processor("trades", proc)
        await handler.consume(agen([trade("A", 0)]))
    [rec] = [r for r in caplog.records if r.name == "trioalpaca.pipeline"]
    assert rec.levelno == logging.ERROR
    assert rec.exc_info is not None
    assert isinstance(rec.exc_info[1], RuntimeError)


async def test_failing_error_handler_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[int] = []

    def proc(batch: list[Trade]) -> None:
        if batch[0].trade_id == 0:
            raise RuntimeError("first")
        got.append(batch[0].trade_id)

    def bad_handler(f: ProcessingFailure) -> None:
        raise LookupError("handler bug")

    async with open_message_handler(batch_size=1, worker_count=1, batch_timeout=0) as handler:
        handler.register_processor("trades", proc)
        handler.set_error_handler(bad_handler)
        await handler.consume(agen([trade("A", 0), trade("A", 1)]))
    assert got == [1]
    assert handler.get_metrics()["error_handler_errors"] == 1
    assert any("error handler raised" in r.getMessage() for r in caplog.records)


async def test_cancellation_is_not_an_error() -> None:
    failures: list[ProcessingFailure] = []

    async def proc(batch: list[Trade]) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.05):
        async with open_message_handler(batch_timeout=0) as handler:
            handler.register_processor("trades", proc)
            handler.set_error_handler(failures.append)
            await handler.consume(agen([trade("A", 0)]))
    assert failures == []
    assert handler.get_metrics()["by_type"]["trades"]["errors"] == 0


class BatchSource:
    """Mimics the client's ``receive_batch()`` fast path."""

    def __init__(self, msgs: list[Any], size: int) -> None:
        self.msgs = msgs
        self.size = size
        self.calls = 0

    async def receive_batch(self) -> list[Any]:
        await trio.lowlevel.checkpoint()
        if not self.msgs:
            raise trio.EndOfChannel
        self.calls += 1
        out, self.msgs = self.msgs[: self.size], self.msgs[self.size :]
        return out

    def __aiter__(self) -> AsyncIterator[Any]:  # pragma: no cover - must not be used
        raise AssertionError("consume() should use receive_batch()")


async def test_consume_uses_receive_batch() -> None:
    got: list[Any] = []
    msgs: list[Any] = [trade(f"S{i % 7}", i) for i in range(500)] + [Reconnected(1, 2)]
    src = BatchSource(msgs, 64)
    async with open_message_handler(worker_count=3, batch_size=50) as handler:
        handler.register_processor("*", got.extend)
        await handler.consume(src)
    assert src.calls == 8
    trades = [m for m in got if isinstance(m, Trade)]
    assert sorted(trades, key=lambda t: t.trade_id) == msgs[:-1]
    assert [m for m in got if not isinstance(m, Trade)] == [Reconnected(1, 2)]


async def test_many_producers_through_intake() -> None:
    got: list[Trade] = []
    async with open_message_handler(worker_count=2, buffer_size=8) as handler:
        handler.register_processor("trades", got.extend)
        async with trio.open_nursery() as nursery:
            for p in range(4):

                async def produce(p: int = p) -> None:
                    async with handler.intake_channel() as ch:
                        for i in range(50):
                            await ch.send(trade(f"P{p}", i))

                nursery.start_soon(produce)
    for p in range(4):
        assert [t.trade_id for t in got if t.symbol == f"P{p}"] == list(range(50))
    check_invariant(handler)


async def test_raw_dict_hot_path_keeps_order_and_policies() -> None:
    seen: dict[str, list[int]] = {}
    news: list[Any] = []

    async def proc(batch: list[dict[str, Any]]) -> None:
        await trio.sleep(0)
        for d in batch:
            seen.setdefault(d["S"], []).append(d["i"])

    msgs: list[Any] = [{"T": "t", "S": f"S{i % 5}", "i": i} for i in range(300)]
    msgs.insert(150, {"T": "n", "symbols": ["S1", "S2"], "headline": "h"})  # no "S": slow path
    async with open_message_handler(worker_count=4, batch_size=7, buffer_size=16) as handler:
        handler.register_processor("trades", proc)
        handler.register_processor("news", news.extend)
        await handler.consume(BatchSource(msgs, 50))
    for sym, ids in seen.items():
        assert ids == [i for i in range(300) if f"S{i % 5}" == sym]
    assert len(news) == 1
    check_invariant(handler)
