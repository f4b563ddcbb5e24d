"""Handlers instead of a loop: several may listen to the same kind."""

import logging

import trio

import trioalpaca

log = logging.getLogger(__name__)


async def on_trade(trade):
    print("AAPL trade", trade.price)


async def on_anything(msg):
    print("any", type(msg).__name__)


def on_error(report):  # plain or async; one argument: an ErrorReport
    log.warning("handler %s failed on %r: %s", report.handler, report.message, report.exception)


async def main(seconds=60.0):
    stream = trioalpaca.open_stream(feed="iex", trades=["AAPL", "MSFT"])
    stream.register_handler("t", on_trade, symbols=["AAPL"])  # wire code, or "trades"
    handle = stream.register_handler("*", on_anything)
    stream.set_error_handler(on_error)
    async with stream:
        await trio.sleep(seconds / 2)
        handle.remove()  # on_anything gets nothing more
        await trio.sleep(seconds / 2)


if __name__ == "__main__":
    trio.run(main)
