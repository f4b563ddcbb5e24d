"""``trioalpaca hub``: publish one Alpaca stream into Redis Streams, with hot standby.

Run the same command on two machines: one leads (holds the Alpaca connection and publishes), the
other waits and takes over within ``--lease-ttl`` seconds when the leader dies. Consumers read
with :func:`trioalpaca.fanout.open_redis_stream`. coredis (and prometheus-client for
``--metrics-port``) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from trioalpaca._cli_common import CHANNEL_FLAGS, add_channel_arguments, usage_or_runtime_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``hub`` options to ``parser``."""
    parser.add_argument("--redis", required=True, metavar="URL", help="redis://host:port[/db]")
    parser.add_argument("--cluster", action="store_true", help="--redis names a cluster node")
    parser.add_argument("--feed", default="iex", help="market data feed (default: iex)")
    parser.add_argument(
        "--trading",
        action="store_true",
        help="publish the trading stream (trade_updates) of the API key instead of market data",
    )
    add_channel_arguments(parser, dest_prefix="", default="", help="comma-separated symbols or '*'")
    parser.add_argument("--url", default=None, help="upstream websocket URL (e.g. an emulator)")
    parser.add_argument("--per-symbol", action="store_true", help="one stream per symbol")
    parser.add_argument("--prefix", default="ta", help="key prefix (default: ta)")
    retention = parser.add_mutually_exclusive_group()
    retention.add_argument(
        "--maxlen", type=int, default=100_000, help="entries kept per stream, about (100000)"
    )
    retention.add_argument(
        "--retention", type=float, default=None, metavar="SECONDS", help="keep a time window"
    )
    parser.add_argument(
        "--queue-size", type=int, default=100_000, help="messages queued for Redis (100000)"
    )
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="leader lease, seconds (5)")
    parser.add_argument(
        "--reap-floor",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="minimum delay after a 406 connection-limit error (90)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics and /healthz on this port (0: any free port)",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="interface for the metrics")


def _symbols(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def run(args: argparse.Namespace) -> int:
    """Run the hub until interrupted; returns the exit code."""
    import logging

    import trio

    from trioalpaca._credentials import env_credentials
    from trioalpaca._errors import TrioAlpacaError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    channels = {kw: _symbols(getattr(args, kw)) for kw in CHANNEL_FLAGS.values()}
    channels = {k: v for k, v in channels.items() if v}
    found = env_credentials()
    key = found[0] if found else None
    account = None
    if args.trading:
        if channels:
            print("trioalpaca hub: --trading takes no market data channels", file=sys.stderr)
            return 2
        if not key:
            print("trioalpaca hub: --trading needs APCA_API_KEY_ID", file=sys.stderr)
            return 2
        account = key
    elif not channels:
        print("trioalpaca hub: give at least one channel, e.g. --trades '*'", file=sys.stderr)
        return 2

    async def main() -> None:
        from trioalpaca._groups import single_error
        from trioalpaca.fanout.hub import serve_hub

        with single_error():
            await _supervise(serve_hub)

    async def _supervise(serve_hub: Any) -> None:
        async with trio.open_nursery() as nursery:
            hub = await nursery.start(
                _serve,
                args.redis,
                {
                    "feed": args.feed,
                    "account": account,
                    "channels": channels,
                    "url": args.url,
                    "lease_ttl": args.lease_ttl,
                    "reap_floor": args.reap_floor,
                    "per_symbol": args.per_symbol,
                    "prefix": args.prefix,
                    "cluster": args.cluster,
                    "maxlen": None if args.retention is not None else args.maxlen,
                    "retention": args.retention,
                    "queue_size": args.queue_size,
                },
                serve_hub,
            )
            if args.metrics_port is not None:
                from trioalpaca._ops import serve_ops_http
                from trioalpaca.fanout._metrics import hub_registry

                ops = await nursery.start(
                    functools.partial(serve_ops_http, host=args.metrics_host),
                    args.metrics_port,
                    hub_registry(hub),
                    hub.healthy,
                )
                print(f"trioalpaca hub: metrics on {ops.url}/metrics", file=sys.stderr, flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except TrioAlpacaError as exc:
        return usage_or_runtime_exit("hub", exc, sys.stderr, runtime_type=True)
    return 0


async def _serve(redis_url: str, options: dict[str, Any], serve_hub: Any, task_status: Any) -> None:
    await serve_hub(redis_url, task_status=task_status, **options)
