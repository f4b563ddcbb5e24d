"""Record a stream, replay it paced and unpaced, export it to Parquet (here: from the emulator)."""

from __future__ import annotations

import os
import sys
import tempfile

import trio

import trioalpaca
from trioalpaca.record import open_recorder, open_replay
from trioalpaca.record.export import export_parquet
from trioalpaca.testing import open_emulator


async def record(url: str, out_dir: str) -> list[object]:
    # [record]
    client = trioalpaca.open_stream("key", "secret", url=url, trades=["AAPL"], quotes=["AAPL"])
    seen = []
    # attach the recorder before the client connects, so the handshake is recorded too
    async with open_recorder(out_dir, client) as recorder, client:
        async for msg in client:
            seen.append(msg)
            if len(seen) == 200:
                break
    print(recorder.get_metrics(), file=sys.stderr)
    # [record end]
    return seen


async def replay(out_dir: str) -> list[object]:
    # [replay]
    async with open_replay(out_dir) as stream:  # unpaced: as fast as possible
        replayed = [msg async for msg in stream]
    async with open_replay(out_dir, speed=10.0) as stream:  # 10x the recorded pace
        async for _msg in stream:
            break
    # [replay end]
    return replayed


async def main() -> None:
    out_dir = tempfile.mkdtemp()
    async with open_emulator(rate=200, symbols=["AAPL"]) as emu:
        seen = await record(emu.url_for("iex"), out_dir)
    replayed = await replay(out_dir)
    assert replayed[: len(seen)] == seen  # the same objects, markers included
    # [export]
    result = await export_parquet(out_dir, os.path.join(out_dir, "parquet"))
    print(result.rows)  # e.g. {'trades': 61, 'quotes': 142}
    # [export end]


if __name__ == "__main__":
    trio.run(main)
