"""Run the trioalpaca emulator in its own process for the benchmarks.

Prints one JSON line ``{"port": N}`` once listening, then serves until killed (or until stdin
closes, so it never outlives the benchmark driver).

    python bench/emulator_proc.py --burst 100 --frames 2000
    python bench/emulator_proc.py --rate 1000 --symbols 20
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from trioalpaca.testing import serve_emulator

SYMBOLS = [
    "AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY", "QQQ", "META", "GOOG", "AMD",
    "INTC", "NFLX", "ORCL", "IBM", "CSCO", "PEP", "KO", "XOM", "CVX", "JPM",
]  # fmt: skip


async def _stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def main(args: argparse.Namespace) -> None:
    symbols = SYMBOLS[: args.symbols]
    async with trio.open_nursery() as nursery:
        emu = await nursery.start(
            lambda task_status: serve_emulator(
                task_status=task_status,
                port=0,
                symbols=symbols,
                rate=args.rate,
                burst=args.burst,
                burst_frames=args.frames,
                connection_limit=1000,
                send_buffer_limit=256 * 1024 * 1024,
            )
        )
        print(json.dumps({"port": emu.port, "symbols": symbols}), flush=True)
        await _stdin_closed()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=None, help="messages per burst frame")
    parser.add_argument("--frames", type=int, default=None, help="burst frames per connection")
    parser.add_argument("--rate", type=float, default=0.0, help="paced msgs/s per symbol")
    parser.add_argument("--symbols", type=int, default=10)
    trio.run(main, parser.parse_args())
