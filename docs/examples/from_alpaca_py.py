"""alpaca-py's StockDataStream, the trioalpaca way (see "Coming from alpaca-py")."""

import trio

import trioalpaca


async def on_trade(trade):
    print(trade.symbol, trade.price)


async def main(seconds=60.0, url=None):
    # StockDataStream(key, secret, feed=DataFeed.IEX, url_override=url)
    async with trioalpaca.open_stream(feed="iex", url=url) as stream:
        # stream.subscribe_trades(on_trade, "AAPL", "MSFT"): a handler, then the subscription
        stream.register_handler("trades", on_trade)
        await stream.subscribe(trades=["AAPL", "MSFT"])  # returns once the server confirmed
        # stream.run(): the block is the lifetime; stream.stop(): leave it (or cancel it)
        with trio.move_on_after(seconds):
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
