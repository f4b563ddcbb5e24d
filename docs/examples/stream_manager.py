"""StreamManager: several consumers share one connection's subscriptions.

Each ``subscribe`` call adds a reference-counted subscription with its own handler; the manager
coalesces the changes into as few requests as possible and routes every message to the handlers
whose symbols and data types it matches.
"""

import trio

from trioalpaca import AlpacaWebSocketClient, open_stream_manager


async def handle_market_data(message):
    print(f"{type(message).__name__}: {message.symbol}")


async def main(seconds=60.0):
    # credentials from APCA_API_KEY_ID / APCA_API_SECRET_KEY or ALPACA_API_KEY / ALPACA_API_SECRET
    async with (
        AlpacaWebSocketClient(feed="sip") as client,
        open_stream_manager(client) as manager,
    ):
        await manager.subscribe(
            symbols=["AAPL", "MSFT"],
            data_types=["trades", "quotes"],
            handler=handle_market_data,
        )
        await trio.sleep(seconds)


if __name__ == "__main__":
    trio.run(main)
