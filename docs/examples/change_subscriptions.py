"""Change subscriptions while streaming; each call returns once the server confirmed it."""

import trio

import trioalpaca


async def main():
    async with trioalpaca.open_stream(feed="iex", trades=["AAPL"], quotes=["MSFT"]) as stream:
        await stream.subscribe(bars=["SPY"], trades="TSLA")  # returns after the server's ack
        print(stream.subscriptions)
        await stream.unsubscribe(quotes=["MSFT"])
        print(stream.subscriptions)
        try:
            await stream.subscribe(trades=["BRK B"])  # refused before anything is sent
        except trioalpaca.UsageError as error:
            print(error)


if __name__ == "__main__":
    trio.run(main)
