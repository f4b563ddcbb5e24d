"""React to a gap: the Reconnected marker comes before any data of the new connection."""

import trio

import trioalpaca


async def backfill_from_rest(start, end):
    print(f"backfill {start:%H:%M:%S.%f} .. {end:%H:%M:%S.%f}")


async def main():
    async with trioalpaca.open_stream(feed="iex", trades=["AAPL"]) as stream:
        async for msg in stream:
            if isinstance(msg, trioalpaca.Reconnected):
                # data between these instants may be missing
                await backfill_from_rest(msg.gap_start, msg.gap_end)
                print(f"{msg.gap_seconds:.3f} s gap after {msg.attempts} attempt(s)")
                break


if __name__ == "__main__":
    trio.run(main)
