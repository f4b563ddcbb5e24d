"""Stream trades and quotes; notice gaps and drops."""

import trio

import trioalpaca


async def main(limit=None):
    # credentials: arguments, else APCA_API_KEY_ID / APCA_API_SECRET_KEY,
    # else ALPACA_API_KEY / ALPACA_API_SECRET
    async with trioalpaca.open_stream(feed="iex", trades=["AAPL"], quotes=["MSFT"]) as stream:
        print("subscribed:", stream.subscriptions)  # what the server confirmed
        received = 0
        async for msg in stream:
            if isinstance(msg, trioalpaca.Trade):
                print(msg.symbol, msg.price, msg.size, msg.timestamp)
            elif isinstance(msg, trioalpaca.Quote):
                print(msg.symbol, msg.bid_price, msg.ask_price)
            elif isinstance(msg, trioalpaca.Reconnected):
                print(f"gap of {msg.gap_seconds:.1f} s: backfill it if you need it")
            elif isinstance(msg, trioalpaca.Dropped):
                print(f"consumer too slow: {msg.count} messages dropped ({msg.reason})")
            received += 1
            if received == limit:
                break


if __name__ == "__main__":
    trio.run(main)
