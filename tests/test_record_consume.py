"""Ways of consuming an unpaced replay (async for, receive, receive_batch, mixed, interrupted)
all hand out the same items in the same order, once each.

Every test runs twice: ``async for`` through the C accelerator's ``Items`` (when it is built;
CI requires it) and through the pure-Python async generator."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import replay_iteration  # noqa: F401 (the iteration fixture)
from trioalpaca.record import RecordingWriter, RecordKind, open_replay

BASE = 1_700_000_000_000_000_000

pytestmark = pytest.mark.usefixtures("iteration")


def write_recording(
    path: Path, frames: int = 40, per_frame: int = 25, chunk_bytes: int = 4000
) -> list[int]:
    """A raw-mode stocks recording; returns the trade ids in order."""
    import msgpack

    w = RecordingWriter(path, {"kind": "stocks", "encoding": "msgpack"}, chunk_bytes=chunk_bytes)
    ids = []
    i = 0
    for f in range(frames):
        ns = BASE + f * 1_000_000
        msgs = []
        for _ in range(per_frame):
            msg = {"T": "t", "S": "AAPL", "i": i, "x": "V", "p": 1.5, "s": 1, "c": [], "z": "C"}
            msgs.append({**msg, "t": ns})
            ids.append(i)
            i += 1
        w.add(RecordKind.FRAME_IN_BINARY, ns, msgpack.packb(msgs))
    w.close()
    assert len(w.index) >= 3 or chunk_bytes != 4000  # several chunks (by default)
    return ids


async def test_async_for_break_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "r.tarec"
    ids = write_recording(path)
    got: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        async with open_replay(path, raw_data=True) as stream:
            async for msg in stream:
                got.append(msg["i"])
                if len(got) == 7:
                    break
            got.append((await stream.receive())["i"])
            got += [m["i"] for m in await stream.receive_batch(3)]
            async for msg in stream:
                got.append(msg["i"])
                if len(got) == 300:
                    break
            # abandoned mid-block: open_replay closes the generator (no ResourceWarning)
        gc.collect()
    assert got == ids[:300]


async def test_receive_and_batches_interleaved(tmp_path: Path) -> None:
    path = tmp_path / "r.tarec"
    ids = write_recording(path)
    got: list[int] = []
    async with open_replay(path, raw_data=True) as stream:
        turn = 0
        while True:
            try:
                if turn % 3 == 0:
                    got.append((await stream.receive())["i"])
                elif turn % 3 == 1:
                    batch = await stream.receive_batch(max_items=1 + turn % 17)
                    assert 1 <= len(batch) <= 1 + turn % 17
                    got += [m["i"] for m in batch]
                else:
                    got += [m["i"] for m in await stream.receive_batch()]
            except trio.EndOfChannel:
                break
            turn += 1
        with pytest.raises(trio.EndOfChannel):
            await stream.receive_batch()
        assert [m async for m in stream] == []
    assert got == ids


async def test_cancelled_iteration_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.tarec"
    ids = write_recording(path)
    got: list[int] = []
    cancelled = 0
    async with open_replay(path, raw_data=True) as stream:
        while True:
            with trio.CancelScope() as scope:
                async for msg in stream:
                    got.append(msg["i"])
                    if len(got) % 40 == 0:
                        scope.cancel()  # the next checkpoint (a refill's) raises Cancelled
                break  # the stream ended
            cancelled += 1
    assert cancelled > 0  # the refills' checkpoints did raise
    assert got == ids


@pytest.mark.parametrize("typed", [False, True])
async def test_timed_batches_match(tmp_path: Path, typed: bool) -> None:
    path = tmp_path / "r.tarec"
    ids = write_recording(path, frames=12)
    async with open_replay(path, raw_data=not typed, receive_times=True) as stream:
        first = await stream.receive()
        rest = []
        while True:
            try:
                rest += await stream.receive_timed_batch(50)
            except trio.EndOfChannel:
                break
    key = (lambda m: m.trade_id) if typed else (lambda m: m["i"])
    assert [key(first)] + [key(m) for _, m in rest] == ids
    # each item's receive time is its frame's
    assert all(ns == BASE + (key(m) // 25) * 1_000_000 for ns, m in rest)


async def test_batches_are_the_consumers_own(tmp_path: Path) -> None:
    """Unpaced batches are handed out without a copy: a batch taken must not change when
    the replay goes on decoding (into a new list), whichever way the next items are taken."""
    path = tmp_path / "r.tarec"
    ids = write_recording(path)
    kept: list[tuple[list[Any], list[int]]] = []
    got: list[int] = []
    async with open_replay(path, raw_data=True) as stream:
        turn = 0
        while True:
            try:
                batch = await stream.receive_batch(None if turn % 2 else 30)
            except trio.EndOfChannel:
                break
            kept.append((batch, [m["i"] for m in batch]))
            got += kept[-1][1]
            if turn % 3 == 0:
                async for msg in stream:  # one item, from the block receive_batch cut
                    got.append(msg["i"])
                    break
            turn += 1
    assert got == ids
    assert len(kept) > 3
    assert all([m["i"] for m in batch] == seen for batch, seen in kept)


async def test_a_second_consumer_task_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one task waits for the replay's next chunk, another one asking for messages gets
    a UsageError (it would race the first for the decoder's state); the first goes on."""
    from trioalpaca._errors import UsageError
    from trioalpaca.record.replay import ReplayStream

    path = tmp_path / "r.tarec"
    ids = write_recording(path)
    real = ReplayStream._fetched
    delays = [0.2]  # the first chunk arrives late, so the first consumer waits for it

    async def late(self: ReplayStream, i: int) -> Any:
        if delays:
            await trio.sleep(delays.pop())
        return await real(self, i)

    monkeypatch.setattr(ReplayStream, "_fetched", late)
    got: list[int] = []
    async with open_replay(path, raw_data=True) as stream:

        async def consume() -> None:
            async for msg in stream:
                got.append(msg["i"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.sleep(0.05)
            assert not got
            for second in (stream.receive, stream.receive_batch, lambda: anext(aiter(stream))):
                with pytest.raises(UsageError, match="one consumer task per replay"):
                    await second()
    assert got == ids
