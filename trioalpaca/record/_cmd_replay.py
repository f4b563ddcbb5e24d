"""``trioalpaca replay``: print a recording as JSON lines, or serve it as a live Alpaca stream.

::

    trioalpaca replay recordings/ --speed 10            # JSON lines, 10x the recorded pace
    trioalpaca replay rec.tarec --serve --port 8765 --speed 5
    trioalpaca replay recordings/ --start 2026-12-01T14:30:00Z --end 2026-12-01T14:31:00Z

With ``--serve`` the first line on stdout is ``serving PATH on ws://HOST:PORT``, then one line per
stream with its endpoint URL; playback starts once ``--wait-clients`` clients are subscribed, and
the server keeps running after the end of the recording until Ctrl-C or SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO

from trioalpaca.record._cli import CommandUsage, run_command, say

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``replay`` options to ``parser``."""
    parser.add_argument(
        "path", metavar="FILE_OR_DIR", help="a .tarec file or a recording directory"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help="pace by the recorded receive times, X times faster (default: unpaced; with "
        "--serve: 1)",
    )
    parser.add_argument("--start", metavar="TIME", help="RFC 3339 time or int ns to start at")
    parser.add_argument("--end", metavar="TIME", help="RFC 3339 time or int ns to stop at")
    parser.add_argument("--raw", action="store_true", help="wire dicts instead of readable JSON")
    parser.add_argument("--limit", type=int, metavar="N", help="stop after N messages")
    parser.add_argument(
        "--serve", action="store_true", help="serve over the Alpaca websocket protocol"
    )
    parser.add_argument("--host", default="127.0.0.1", help="--serve: interface (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="--serve: port (8765; 0 = any)")
    parser.add_argument(
        "--wait-clients",
        type=int,
        default=1,
        metavar="N",
        help="--serve: start playback once N clients are subscribed (1; 0 = at once)",
    )


def _bound(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text


async def amain(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """The command inside ``trio.run``."""
    import signal

    import trio

    from trioalpaca.record.replay import open_replay, to_ns

    start, end = _bound(args.start), _bound(args.end)
    to_ns(start), to_ns(end)  # validate before any I/O (UsageError -> exit 2)
    if args.limit is not None and args.limit < 1:
        raise CommandUsage("--limit must be at least 1")
    if args.serve:
        from trioalpaca.record.serve import serve_replay

        speed = 1.0 if args.speed is None else args.speed
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    lambda task_status: serve_replay(
                        args.path,
                        host=args.host,
                        port=args.port,
                        speed=speed,
                        start=start,
                        end=end,
                        wait_for_clients=args.wait_clients,
                        task_status=task_status,
                    )
                )
                print(f"serving {args.path} on {server.url}", file=out)
                for name, feed in server.streams.items():
                    print(f"  {name:<12} {feed:<12} {server.url_for(feed)}", file=out)
                out.flush()

                async def report() -> None:
                    await server.finished.wait()
                    say(err, "replay", f"end of recording: {server.published} messages served")

                nursery.start_soon(report)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
        return 0

    from trioalpaca._stream_cli import readable

    n = 0
    async with open_replay(
        args.path, speed=args.speed, start=start, end=end, raw_data=args.raw
    ) as s:
        async for msg in s:
            out.write(json.dumps(readable(msg), separators=(",", ":"), default=str) + "\n")
            n += 1
            if args.limit is not None and n >= args.limit:
                break
    out.flush()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    return run_command("replay", amain, args, sys.stdout, sys.stderr)
