"""Explicit connect / disconnect inside the block."""

import trio

import trioalpaca


async def main():
    async with trioalpaca.open_stream(feed="iex", trades=["AAPL"], auto_connect=False) as stream:
        print(stream.state)  # not connected yet: "idle"
        await stream.connect()  # returns once subscribed
        print(stream.state, stream.subscriptions)
        await stream.disconnect()  # close; iteration ends after the buffered messages
        print(stream.state)
        await stream.connect()  # again, with the same subscriptions
        print(stream.state, stream.subscriptions)


if __name__ == "__main__":
    trio.run(main)
