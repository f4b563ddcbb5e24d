"""``trioalpaca demo``: the embedded emulator and the client, with a live view.

Starts :func:`trioalpaca.testing.open_emulator` on 127.0.0.1, connects an
:class:`~trioalpaca.AlpacaWebSocketClient` to it and shows, per symbol, the last trade and quote
with rates, plus the stream's throughput, latency percentiles, reconnects and drops. With
``--chaos`` the emulator drops the connection every few seconds so you can watch the client heal
(a ``Reconnected`` marker after each drop). When stdout is not a terminal it prints one plain line
per second instead of redrawing.

This module imports trio and the client lazily so ``trioalpaca --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

DEFAULT_SYMBOLS = "AAPL,MSFT,TSLA,NVDA"
_WINDOW = 5.0


def _positive(text: str) -> float:
    """argparse type: a finite number > 0 (argparse prints the error and exits with 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _non_negative(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be zero or a positive number, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        help="exit after N seconds (default: run until ^C)",
    )
    parser.add_argument(
        "--symbols", default=DEFAULT_SYMBOLS, help=f"comma-separated symbols ({DEFAULT_SYMBOLS})"
    )
    parser.add_argument(
        "--rate",
        type=_non_negative,
        default=250.0,
        help="emulated trades + quotes per symbol per second (250)",
    )
    parser.add_argument(
        "--chaos",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="drop the connection every SECONDS to show reconnects (default: off)",
    )
    parser.add_argument(
        "--raw", action="store_true", help="consume raw dicts instead of typed models"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    import logging

    import trio

    # Reconnects show up in the view itself; keep the library's warnings off the screen.
    logging.getLogger("trioalpaca").setLevel(logging.ERROR)
    symbols = [s.strip().upper() for s in str(args.symbols).split(",") if s.strip()]
    if not symbols:
        print("trioalpaca demo: give at least one symbol", file=sys.stderr)
        return 2
    try:
        trio.run(_main, args, symbols)
    except KeyboardInterrupt:
        pass
    return 0


class _SymbolView:
    __slots__ = ("ask", "bid", "last_price", "last_size", "quote_meter", "trade_meter")

    def __init__(self) -> None:
        from trioalpaca.metrics import RateMeter

        self.last_price: float | None = None
        self.last_size: float | None = None
        self.bid: float | None = None
        self.ask: float | None = None
        self.trade_meter = RateMeter(_WINDOW)
        self.quote_meter = RateMeter(_WINDOW)


def _per_second(meter: Any, now: float, elapsed: float) -> float:
    """Events per second over the meter's window, or over the run so far while it is shorter."""
    return float(meter.count(now)) / min(_WINDOW, max(elapsed, 0.25))


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


async def _main(args: argparse.Namespace, symbols: list[str]) -> None:
    import trio

    from trioalpaca.client import open_stream
    from trioalpaca.testing import open_emulator

    views = {s: _SymbolView() for s in symbols}
    tty = sys.stdout.isatty()
    events: list[str] = []
    async with open_emulator(symbols=symbols, rate=args.rate) as emu:
        url = emu.url_for("iex")
        async with (
            open_stream(
                "demo-key",
                "demo-secret",
                feed="iex",
                url=url,
                raw_data=args.raw,
                overflow="drop_oldest",
                trades=symbols,
                quotes=symbols,
            ) as stream,
            trio.open_nursery() as nursery,
        ):
            start = trio.current_time()

            async def consume() -> None:
                async for msg in stream:
                    _apply(msg, views, events, args.raw)

            async def chaos() -> None:
                while True:
                    await trio.sleep(args.chaos)
                    await _drop_connections(emu)

            nursery.start_soon(consume)
            if args.chaos > 0:
                nursery.start_soon(chaos)
            printed = 0
            duration = args.duration if args.duration is not None else float("inf")
            with trio.move_on_after(duration):
                while True:
                    await trio.sleep(0.5 if tty else 1.0)
                    now = trio.current_time()
                    metrics = stream.get_metrics()
                    if tty:
                        _draw(now - start, metrics, views, events, now)
                    else:
                        for event in events[printed:]:
                            print(f"event: {event}", flush=True)
                        printed = len(events)
                        _line(now - start, metrics, views, now)
            nursery.cancel_scope.cancel()
    if tty:
        sys.stdout.write("\n")
    sys.stdout.flush()


async def _drop_connections(emu: Any) -> None:
    """Ask the emulator to reset the client's connection (fault injection)."""
    emu.drop(feed="iex", how="reset")


def _apply(msg: Any, views: dict[str, _SymbolView], events: list[str], raw: bool) -> None:
    import trio

    if raw:
        code = msg.get("T")
        view = views.get(msg.get("S", ""))
        if view is not None and code == "t":
            view.last_price, view.last_size = msg.get("p"), msg.get("s")
            view.trade_meter.add(1, trio.current_time())
        elif view is not None and code == "q":
            view.bid, view.ask = msg.get("bp"), msg.get("ap")
            view.quote_meter.add(1, trio.current_time())
        elif code in ("reconnected", "dropped"):
            events.append(_event_text(code, msg))
        return
    from trioalpaca.models import (
        CryptoQuote,
        CryptoTrade,
        Dropped,
        OptionQuote,
        OptionTrade,
        Quote,
        Reconnected,
        Trade,
    )

    if isinstance(msg, (Trade, CryptoTrade, OptionTrade)):
        view = views.get(msg.symbol)
        if view is not None:
            view.last_price, view.last_size = msg.price, msg.size
            view.trade_meter.add(1, trio.current_time())
    elif isinstance(msg, (Quote, CryptoQuote, OptionQuote)):
        view = views.get(msg.symbol)
        if view is not None:
            view.bid, view.ask = msg.bid_price, msg.ask_price
            view.quote_meter.add(1, trio.current_time())
    elif isinstance(msg, Reconnected):
        events.append(_event_text("reconnected", msg.to_wire()))
    elif isinstance(msg, Dropped):
        events.append(_event_text("dropped", msg.to_wire()))


def _event_text(code: str, d: dict[str, Any]) -> str:
    if code == "reconnected":
        gap = (d["gap_end"] - d["gap_start"]) / 1e9
        return f"reconnected after a {gap:.3f} s gap ({d.get('attempts', 1)} attempt(s))"
    return f"dropped {d['count']} message(s): {d.get('reason', '')}"


def _header(elapsed: float, m: dict[str, Any]) -> str:
    return (
        f"t={elapsed:5.1f}s state={m['state']} msgs={m['messages_received']} "
        f"rate={m['messages_per_second']:.0f}/s p50={_fmt(m['p50_latency_ms'])}ms "
        f"p99={_fmt(m['p99_latency_ms'])}ms reconnects={m['reconnects']} dropped={m['dropped']}"
    )


def _line(
    elapsed: float,
    m: dict[str, Any],
    views: dict[str, _SymbolView],
    now: float,
    file: IO[str] | None = None,
) -> None:
    parts = [_header(elapsed, m)]
    for sym, v in views.items():
        parts.append(
            f"{sym} last={_fmt(v.last_price)} bid={_fmt(v.bid)} ask={_fmt(v.ask)} "
            f"t/s={_per_second(v.trade_meter, now, elapsed):.0f} "
            f"q/s={_per_second(v.quote_meter, now, elapsed):.0f}"
        )
    print(" | ".join(parts), file=file or sys.stdout, flush=True)


def _draw(
    elapsed: float,
    m: dict[str, Any],
    views: dict[str, _SymbolView],
    events: list[str],
    now: float,
    *,
    title: str = "trioalpaca demo — embedded emulator (Ctrl-C to quit)",
    file: IO[str] | None = None,
) -> None:
    out = ["\x1b[H\x1b[2J", f"{title}\n\n"]
    out.append(_header(elapsed, m) + "\n\n")
    out.append(f"{'symbol':<8}{'last':>10}{'size':>8}{'bid':>10}{'ask':>10}{'trades/s':>10}")
    out.append(f"{'quotes/s':>10}\n")
    for sym, v in views.items():
        out.append(
            f"{sym:<8}{_fmt(v.last_price):>10}{_fmt(v.last_size, '.0f'):>8}"
            f"{_fmt(v.bid):>10}{_fmt(v.ask):>10}"
            f"{_per_second(v.trade_meter, now, elapsed):>10.0f}"
            f"{_per_second(v.quote_meter, now, elapsed):>10.0f}\n"
        )
    if events:
        out.append("\nevents:\n")
        out.extend(f"  {e}\n" for e in events[-5:])
    fh = file or sys.stdout
    fh.write("".join(out))
    fh.flush()
