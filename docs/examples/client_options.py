"""Client options: stream type, feed, raw dicts, reconnect limit, heartbeat."""

import trio

from trioalpaca import AlpacaWebSocketClient, UsageError


async def main(messages=5):
    client = AlpacaWebSocketClient(
        stream_type="data",  # "data" (market data) or "trading" (your trade_updates)
        feed="iex",  # "iex" (free plan, the default), "sip" (paid), "delayed_sip", ...
        raw_data=True,  # plain wire dicts instead of typed models
        max_reconnect_attempts=10,  # consecutive failures before giving up (None: forever)
        heartbeat_interval=30,  # seconds between websocket pings
        trades=["AAPL"],
    )
    async with client:
        received = 0
        async for message in client:
            if message["T"] == "t":  # trades; corrections, cancels and markers look different
                print(message["S"], message["p"], message["t"])  # "t": int nanoseconds
                received += 1
                if received == messages:
                    break

    try:
        AlpacaWebSocketClient(feed="otc")
    except UsageError as error:
        print(error)  # Alpaca has no otc websocket feed; the message lists the valid ones


if __name__ == "__main__":
    trio.run(main)
