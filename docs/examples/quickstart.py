"""Quick start: a handler per message type, explicit connect / subscribe / disconnect.

The original design's first example, translated to trio: the client lives in an ``async with``
block (trio needs a scope that owns the client's tasks) and ``trio.sleep`` replaces
``asyncio.sleep``. Offline: ``DATA_PROXY_WS=ws://127.0.0.1:8765`` with ``trioalpaca emulator``.
"""

import os

import trio

from trioalpaca import AlpacaWebSocketClient


async def handle_trade(message):
    # typed models are also readable by wire key: message["S"] is message.symbol
    print(f"Trade: {message['S']} @ ${message['p']}")


async def handle_error(error):
    # one argument: an ErrorReport (error.exception, error.message, error.handler, ...)
    print(f"Error in {error.handler}: {error.exception!r}")


def make_client():
    return AlpacaWebSocketClient(
        api_key=os.environ["ALPACA_API_KEY"],
        api_secret=os.environ["ALPACA_API_SECRET"],
        stream_type="data",
        feed="sip",
        auto_connect=False,  # connect explicitly below, as the original did
    )


async def main(seconds=60.0):
    client = make_client()
    client.register_handler("t", handle_trade)
    client.set_error_handler(handle_error)
    async with client:
        await client.connect()
        await client.subscribe(trades=["AAPL", "MSFT", "GOOGL"])
        await trio.sleep(seconds)
        await client.disconnect()


if __name__ == "__main__":
    trio.run(main)
