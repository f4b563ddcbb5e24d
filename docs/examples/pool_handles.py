"""A pool of three connections (three keys) handing out handles that survive failover."""

import trio

import trioalpaca

KEYS = [("KEY1", "SECRET1"), ("KEY2", "SECRET2"), ("KEY3", "SECRET3")]  # your three key pairs


async def consume(handle):
    async for msg in handle:
        if isinstance(msg, trioalpaca.Reconnected):
            print("gap:", msg.gap_start, "->", msg.gap_end)


async def main(seconds=60.0):
    async with trioalpaca.open_pool(
        credentials=KEYS,
        feed="sip",
        pool_size=3,
        max_subscriptions_per_connection=200,
    ) as pool:
        tech = await pool.get_connection(["AAPL", "MSFT"])
        etfs = await pool.get_connection(["SPY", "QQQ"], channels=["trades"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, tech)
            nursery.start_soon(consume, etfs)
            await trio.sleep(seconds)
            print("healthy connections:", pool.get_pool_metrics()["healthy_connections"])
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
