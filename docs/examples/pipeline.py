"""A pipeline behind the stream: batches per channel, control events in their own lane."""

import trio
import trio.lowlevel

import trioalpaca


class Database:
    """Stands in for your storage: keeps the row count."""

    def __init__(self):
        self.rows = 0

    async def insert_many(self, rows):
        await trio.lowlevel.checkpoint()  # a real database round trip goes here
        self.rows += len(rows)


db = Database()


async def backfill(gap_start, gap_end):
    print(f"backfill {gap_start} .. {gap_end} from the REST API")


async def process_trades(batch):  # a list of Trade, at most batch_size long
    await db.insert_many(batch)


async def on_control(events):  # Reconnected, Dropped, SubscriptionChanged, ...
    for event in events:
        if isinstance(event, trioalpaca.Reconnected):
            await backfill(event.gap_start, event.gap_end)


async def main(seconds=60.0):
    async with trioalpaca.open_message_handler(
        buffer_size=10_000, batch_size=100, worker_count=4
    ) as handler:
        handler.register_processor("trades", process_trades)
        handler.register_processor("control", on_control)
        async with trioalpaca.open_stream(trades=["*"], feed="iex") as stream:
            with trio.move_on_after(seconds):
                await handler.consume(stream)
    print(f"{db.rows} trades stored")


if __name__ == "__main__":
    trio.run(main)
