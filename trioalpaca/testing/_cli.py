"""``trioalpaca emulator``: run the emulator as a standalone server.

Prints the URL of every endpoint, then serves until Ctrl-C or SIGTERM (exit code 0).
"""

from __future__ import annotations

import argparse
import signal
import ssl
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
        "--certfile",
        default=None,
        metavar="PEM",
        help="serve TLS (wss://) with this certificate chain (PEM; may include the key)",
    )
    parser.add_argument(
        "--keyfile", default=None, metavar="PEM", help="private key of --certfile (PEM)"
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
            raise _CLIError(f"--credentials expects KEY:SECRET, got {item!r}")
        out[key] = secret
    return out


def _server_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The TLS server context of ``--certfile`` / ``--keyfile`` (``None`` without them)."""
    if certfile is None:
        if keyfile is not None:
            raise _CLIError("--keyfile needs --certfile")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise _CLIError(f"cannot read {exc.filename or certfile}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise _CLIError(f"cannot load the certificate/key from {certfile}: {exc}") from None
    return ctx


class _CLIError(Exception):
    """A usage problem: printed as one line, exit code 2."""


async def _main(args: argparse.Namespace, out: TextIO) -> None:
    from .._groups import single_error

    ssl_context = _server_context(args.certfile, args.keyfile)
    credentials = _parse_credentials(args.credentials)
    with single_error():
        await _serve(args, out, ssl_context, credentials)


async def _serve(
    args: argparse.Namespace,
    out: TextIO,
    ssl_context: ssl.SSLContext | None,
    credentials: dict[str, str] | None,
) -> None:
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
                    credentials=credentials,
                    connection_limit=args.connection_limit,
                    news_interval=args.news_interval,
                    burst=args.burst,
                    burst_frames=args.burst_frames,
                    scripted_orders=args.orders_every or None,
                    scenario=args.scenario,
                    ssl_context=ssl_context,
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
    """Run the emulator until SIGINT/SIGTERM; returns the exit code.

    0 on a clean stop; 2, with one line on stderr, when the port is in use, the host cannot be
    bound or the certificate cannot be loaded.
    """
    from .._errors import BindError

    try:
        trio.run(_main, args, sys.stdout)
    except (_CLIError, BindError) as exc:
        print(f"trioalpaca emulator: {exc}", file=sys.stderr)
        return 2
    return 0
