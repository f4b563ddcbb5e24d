"""The client as a task: ``nursery.start`` and ``aclose()``."""

import trio

import trioalpaca


async def main(count=10):
    async with trio.open_nursery() as nursery:
        # returns once connected and subscribed; the client runs in the nursery's task
        stream = await nursery.start(trioalpaca.open_stream(feed="iex", trades=["AAPL"]).serve)
        for _ in range(count):
            msg = await stream.receive()
            print(type(msg).__name__, msg.symbol)
        await stream.aclose()  # ends the task; the nursery block can finish


if __name__ == "__main__":
    trio.run(main)
