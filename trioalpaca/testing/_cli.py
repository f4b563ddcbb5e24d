"""``trioalpaca emulator``: run the emulator as a standalone server.

Prints the URL of every endpoint, then serves until Ctrl-C or SIGTERM (exit code 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TextIO

import trio

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulator`` command's options to ``parser``."""
    from ._faults import SCENARIOS

    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    parser.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="trades + quotes per symbol per second (default 5; 0 = no generated data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="market seed (default 0)")
    parser.add_argument(
        "--symbols",
        nargs="+",
        default=(),
        metavar="SYMBOL",
        help="symbol universe, e.g. AAPL MSFT BTC/USD AAPL250117C00150000 (default: built-in)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="market time runs X times faster (60: a minute bar closes every second)",
    )
    parser.add_argument(
        "--credentials",
        nargs="+",
        default=None,
        metavar="KEY:SECRET",
        help="accepted key:secret pairs (default: any non-empty pair)",
    )
    parser.add_argument(
        "--connection-limit", type=int, default=1, help="sessions per key per endpoint (default 1)"
    )
    parser.add_argument(
        "--news-interval", type=float, default=30.0, help="mean market seconds between news items"
    )
    parser.add_argument(
        "--burst",
        type=int,
        nargs="?",
        const=100,
        default=None,
        metavar="N",
        help="burst mode: after subscribing, send pre-encoded frames of N messages (default 100; "
        "half trades, half quotes) as fast as the socket takes them",
    )
    parser.add_argument(
        "--burst-frames",
        type=int,
        default=None,
        metavar="F",
        help="burst mode: stop after F frames per connection (default: unlimited)",
    )
    parser.add_argument(
        "--orders-every",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="scripted order flow on the trading stream: one order every SECONDS (0 = off)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        choices=sorted(SCENARIOS),
        help="apply a named fault scenario (repeatable)",
    )


def _parse_credentials(items: list[str] | None) -> dict[str, str] | None:
    if items is None:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, secret = item.partition(":")
        if not sep or not key or not secret:
            raise SystemExit(f"--credentials expects KEY:SECRET, got {item!r}")
        out[key] = secret
    return out


async def _main(args: argparse.Namespace, out: TextIO) -> None:
    from ._server import serve_emulator

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            emu = await nursery.start(
                lambda task_status: serve_emulator(
                    host=args.host,
                    port=args.port,
                    seed=args.seed,
                    rate=args.rate,
                    symbols=tuple(args.symbols),
                    speed=args.speed,
                    credentials=_parse_credentials(args.credentials),
                    connection_limit=args.connection_limit,
                    news_interval=args.news_interval,
                    burst=args.burst,
                    burst_frames=args.burst_frames,
                    scripted_orders=args.orders_every or None,
                    scenario=args.scenario,
                    task_status=task_status,
                )
            )
            print(f"trioalpaca emulator listening on {emu.url}", file=out)
            for feed, url in emu.endpoint_urls().items():
                print(f"  {feed:<20} {url}", file=out)
            print("Ctrl-C or SIGTERM stops it.", file=out, flush=True)
            async for signum in signals:
                print(f"stopping ({signal.Signals(signum).name})", file=out, flush=True)
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace) -> int:
    """Run the emulator until SIGINT/SIGTERM; returns the exit code (0 on a clean stop)."""
    trio.run(_main, args, sys.stdout)
    return 0
