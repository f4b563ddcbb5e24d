"""ConnectionPool: spread many symbols over several connections.

Alpaca allows one connection per key and endpoint on most plans: three connections need three
keys (``credentials=[(key, secret), ...]``) or a plan with more sessions per key, declared with
``max_connections_per_key``.
"""

import trio

from trioalpaca import open_pool


async def main(seconds=60.0):
    async with open_pool(
        pool_size=3,
        max_subscriptions_per_connection=200,
        max_connections_per_key=3,  # your plan's sessions per key
        feed="sip",
    ) as pool:
        connection = await pool.get_connection(["AAPL", "MSFT", "GOOGL"])
        with trio.move_on_after(seconds):
            async for message in connection:
                print(f"{type(message).__name__}: {message.symbol}")


if __name__ == "__main__":
    trio.run(main)
