"""Several subscription handles on one connection, reference counted."""

import trio

import trioalpaca

seen = {"tech": 0, "audit": 0}


async def handle_tech(msg):
    seen["tech"] += 1


async def audit(msg):
    seen["audit"] += 1


async def main(seconds=10.0):
    async with (
        trioalpaca.open_stream(feed="iex") as client,
        trioalpaca.open_stream_manager(client) as manager,
    ):
        tech = await manager.subscribe(
            symbols=["AAPL", "MSFT"], data_types=["trades", "quotes"], handler=handle_tech
        )
        apple = await manager.subscribe(symbols="AAPL", data_types="trades", handler=audit)
        await trio.sleep(seconds / 2)
        await tech.unsubscribe()  # AAPL trades keep flowing for `apple`
        print("on the wire:", sorted(manager.wanted["trades"]), apple.active, tech.active)
        before = seen["audit"]
        await trio.sleep(seconds / 2)
        print("audit still receives:", seen["audit"] > before)


if __name__ == "__main__":
    trio.run(main)
