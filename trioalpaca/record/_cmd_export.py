"""``trioalpaca export``: a recording to Parquet (needs pyarrow) or CSV, one dataset per channel.

::

    trioalpaca export recordings/ --parquet out/     # out/trades/date=2026-12-01/part-0000.parquet
    trioalpaca export rec.tarec --csv out/

Progress goes to stderr; the summary (rows per dataset) too.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO

from trioalpaca.record._cli import run_command, say

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to ``parser``."""
    parser.add_argument(
        "path", metavar="FILE_OR_DIR", help="a .tarec file or a recording directory"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--parquet", metavar="DIR", help="write Parquet datasets to DIR")
    target.add_argument("--csv", metavar="DIR", help="write CSV files to DIR")
    parser.add_argument("--start", metavar="TIME", help="RFC 3339 time or int ns to start at")
    parser.add_argument("--end", metavar="TIME", help="RFC 3339 time or int ns to stop at")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


async def amain(args: argparse.Namespace, err: IO[str]) -> int:
    """The command inside ``trio.run``."""
    import trio

    from trioalpaca.record.export import export_csv, export_parquet

    start = int(args.start) if args.start and args.start.isdigit() else args.start
    end = int(args.end) if args.end and args.end.isdigit() else args.end
    last = [trio.current_time()]

    def progress(n: int) -> None:
        now = trio.current_time()
        if not args.quiet and now - last[0] >= 2.0:
            last[0] = now
            say(err, "export", f"{n:,} messages exported")

    if args.parquet:
        result = await export_parquet(
            args.path, args.parquet, start=start, end=end, progress=progress
        )
    else:
        result = await export_csv(args.path, args.csv, start=start, end=end, progress=progress)
    summary = ", ".join(f"{name}: {rows:,} rows" for name, rows in sorted(result.rows.items()))
    say(err, "export", f"done: {summary or 'nothing to export'} in {len(result.files)} files")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    return run_command("export", amain, args, sys.stderr)
