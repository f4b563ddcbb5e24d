"""MessageHandler: a multi-worker pipeline behind the stream.

Messages are routed to ``worker_count`` workers by symbol (so each symbol keeps its order) and
handed to the processor in batches of up to ``batch_size``; every lane holds at most
``buffer_size`` messages.
"""

import trio

from trioalpaca import AlpacaWebSocketClient, open_message_handler


async def process_trades(trades):
    for trade in trades:
        print(f"{trade.symbol}: {trade.price}")


async def handle_processing_error(error):  # an ErrorReport: exception, batch, attempt, ...
    print(f"processing failed: {error.exception!r} ({len(error.batch)} trades)")


async def main(seconds=60.0):
    async with open_message_handler(buffer_size=10000, batch_size=100, worker_count=4) as handler:
        handler.register_processor("trades", process_trades)
        handler.set_error_handler(handle_processing_error)
        async with AlpacaWebSocketClient(feed="sip", trades=["AAPL", "MSFT"]) as client:
            with trio.move_on_after(seconds):
                await handler.consume(client)


if __name__ == "__main__":
    trio.run(main)
