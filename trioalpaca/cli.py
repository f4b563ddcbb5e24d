"""The ``trioalpaca`` command line.

Subcommands live next to the code they drive; this module only wires them into one parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# Each entry: (name, help, add_arguments(parser), run(args) -> exit code). Modules are imported
# lazily so ``trioalpaca --help`` stays fast.
Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]


def _commands() -> list[Command]:
    commands: list[Command] = []
    # --- commands (one line each; keep sorted) ---
    commands.append(("demo", "live trades/quotes from the built-in emulator", lambda p: __import__("trioalpaca._demo", fromlist=["_"]).add_arguments(p), lambda a: __import__("trioalpaca._demo", fromlist=["_"]).run(a)))  # fmt: skip  # noqa: E501
    commands.append(("emulator", "run the local Alpaca-compatible stream emulator", lambda p: __import__("trioalpaca.testing._cli", fromlist=["_"]).add_arguments(p), lambda a: __import__("trioalpaca.testing._cli", fromlist=["_"]).run(a)))  # fmt: skip  # noqa: E501
    # --- end commands ---
    return commands


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trioalpaca",
        description="trio client, pool and local emulator for Alpaca's real-time streams",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add_arguments, run in _commands():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
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
