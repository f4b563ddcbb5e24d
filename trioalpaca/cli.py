"""The ``trioalpaca`` command line.

Subcommands live next to the code they drive; this module only wires them into one parser. Each
command module provides ``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when
its command is used (or when the parser is built), so ``trioalpaca --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: name -> (module path, one-line help). One line per command; keep sorted by name.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("trioalpaca._demo", "live trades/quotes from the built-in emulator"),
    "hub": ("trioalpaca.fanout._cli", "publish a stream into Redis Streams (hot standby)"),
    "emulator": ("trioalpaca.testing._cli", "run the local Alpaca-compatible stream emulator"),
    "export": ("trioalpaca.record._cmd_export", "export a recording to Parquet or CSV"),
    "record": ("trioalpaca.record._cmd_record", "record a live stream to .tarec files"),
    "relay": ("trioalpaca.relay._cli", "share one Alpaca connection per key among local clients"),
    "replay": ("trioalpaca.record._cmd_replay", "replay a recording, or serve it as Alpaca"),
    "stream": ("trioalpaca._stream_cli", "print a live stream as JSON lines, CSV or a table"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trioalpaca",
        description="trio client, pool and local emulator for Alpaca's real-time streams",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioalpaca`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 0
    return int(run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
