"""Metrics: every layer reports a plain dict."""

import trio

from trioalpaca import AlpacaWebSocketClient, open_message_handler, open_pool


async def count(trades):
    pass


async def main(seconds=5.0):
    async with (
        open_message_handler(batch_size=100, worker_count=4) as handler,
        AlpacaWebSocketClient(feed="sip", trades=["AAPL", "MSFT"]) as client,
    ):
        handler.register_processor("trades", count)
        with trio.move_on_after(seconds):
            await handler.consume(client)
        print(f"Average latency: {client.get_metrics()['avg_latency_ms']:.2f} ms")
        print(f"Trades per second: {handler.get_metrics()['by_type']['trades']['rate']:.1f}")

    async with open_pool(pool_size=3, max_connections_per_key=3, feed="sip") as pool:
        connection = await pool.get_connection(["AAPL", "MSFT"])
        with trio.move_on_after(seconds):
            async for _ in connection:
                pass
        print(f"Healthy connections: {pool.get_pool_metrics()['healthy_connections']}")


if __name__ == "__main__":
    trio.run(main)
