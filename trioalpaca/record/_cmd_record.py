"""``trioalpaca record``: record a live stream to rotated ``.tarec`` files.

::

    trioalpaca record --feed iex --trades AAPL --quotes AAPL --out recordings/
    trioalpaca record --emulator --trades AAPL --out /tmp/rec --duration 60

Prints a status line on stderr every ``--status-interval`` seconds (messages per second, MB
written, gaps, drops, files); Ctrl-C or SIGTERM closes the files cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import IO, Any

from trioalpaca._cli_common import (
    add_channel_arguments,
    add_emulator_arguments,
    channels_from_args,
    check_url_or_emulator,
    embedded_emulator,
    status_loop,
)
from trioalpaca.record._cli import CommandUsage, run_command, say

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``record`` options to ``parser``."""
    parser.add_argument(
        "--feed",
        default="iex",
        help="feed to record: iex (default), sip, crypto/us, opra, news, trading, ...",
    )
    add_channel_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    parser.add_argument(
        "--rotate",
        choices=("hour", "none"),
        default="hour",
        help="start a new file every UTC hour (default) or never",
    )
    parser.add_argument(
        "--max-mb", type=float, default=None, metavar="MB", help="also rotate at this file size"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--status-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between status lines on stderr (5)",
    )
    add_emulator_arguments(
        parser,
        url_help="websocket URL override (emulator, relay, replay server)",
        emulator_help="record from an embedded emulator (no account)",
        speed=False,
    )


def status_line(metrics: dict[str, Any], rate: float) -> str:
    """The one-line status: ``N msgs/s, X MB written, G gaps, D dropped, F files``."""
    return (
        f"{rate:,.0f} msgs/s, {metrics['bytes_written'] / 1e6:.2f} MB written, "
        f"{metrics['gaps']} gaps, {metrics['dropped']} dropped, {metrics['files']} files"
    )


async def amain(args: argparse.Namespace, err: IO[str]) -> int:
    """The command inside ``trio.run``."""
    import signal
    from contextlib import AsyncExitStack

    import trio

    from trioalpaca._credentials import resolve_credentials
    from trioalpaca.client import AlpacaWebSocketClient
    from trioalpaca.endpoints import StreamKind, resolve_feed
    from trioalpaca.record.recorder import open_recorder

    endpoint = resolve_feed(args.feed)
    trading = endpoint.kind is StreamKind.TRADING
    channels = channels_from_args(args, name_flag=False)
    if not trading and not channels:
        if endpoint.kind is StreamKind.NEWS:
            channels = {"news": ["*"]}
        else:
            raise CommandUsage("nothing to record: name a channel, e.g. --trades AAPL")
    if trading and channels:
        raise CommandUsage("the trading stream has no market data channels")
    check_url_or_emulator(args)
    if not args.status_interval > 0 or (args.duration is not None and not args.duration > 0):
        raise CommandUsage("--status-interval and --duration must be positive")
    if args.max_mb is not None and not args.max_mb > 0:
        raise CommandUsage("--max-mb must be positive")
    count = 0

    async def consume(client: AlpacaWebSocketClient) -> None:
        nonlocal count
        while True:
            try:
                batch = await client.receive_batch()
            except trio.EndOfChannel:
                return
            count += len(batch)

    async with AsyncExitStack() as stack:
        url = args.url
        if args.emulator:
            emu = await stack.enter_async_context(embedded_emulator(args))
            url = emu.url_for(endpoint)
            key, secret = "emulator", "emulator"
        else:
            key, secret = resolve_credentials(None, None)
        kwargs: dict[str, Any] = {"url": url, "raw_data": True, "max_reconnect_attempts": None}
        if trading:
            kwargs["stream_type"] = "trading"
        else:
            kwargs["feed"] = endpoint.feed
            kwargs.update(channels)
        client = AlpacaWebSocketClient(key, secret, **kwargs)
        max_bytes = None if args.max_mb is None else int(args.max_mb * 1e6)
        rotate = None if args.rotate == "none" else "hour"
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                open_recorder(args.out, client, rotate=rotate, max_bytes=max_bytes) as rec,
                client,
            ):
                say(err, "record", f"recording {endpoint.feed} to {args.out} (Ctrl-C stops)")

                async def stop_on_signal(scope: trio.CancelScope) -> None:
                    async for _ in signals:
                        scope.cancel()
                        return

                with trio.move_on_after(args.duration if args.duration else math.inf):
                    async with trio.open_nursery() as inner:
                        inner.start_soon(consume, client)
                        inner.start_soon(stop_on_signal, inner.cancel_scope)
                        last, last_n = trio.current_time(), 0

                        def line() -> str:
                            nonlocal last, last_n
                            now = trio.current_time()
                            rate = (count - last_n) / max(now - last, 1e-9)
                            last, last_n = now, count
                            return status_line(rec.get_metrics(), rate)

                        await status_loop(args.status_interval, line, err, "record")
            say(err, "record", "stopped; " + status_line(rec.get_metrics(), 0.0))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    return run_command("record", amain, args, sys.stderr)
