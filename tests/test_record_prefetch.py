"""Replay reads each stream's chunks ahead (open_replay's prefetch task), in a worker thread
when the OS does not have them cached: it reads ahead, hands read failures and corrupt chunks
to the consumer as plain errors, and leaves cleanly in the middle of a read.

These tests take the worker-thread path (the ``uncached`` fixture turns the non-blocking
cached reads off); ``test_record_cached_reads.py`` tests the other."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from trioalpaca.record import (
    RecordingFormatError,
    RecordingReader,
    RecordingWriter,
    RecordKind,
    open_replay,
)
from trioalpaca.record._format import CHUNK_HEADER, ChunkInfo

BASE = 1_700_000_000_000_000_000


@pytest.fixture(autouse=True)
def uncached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk read goes through ``fetch_chunk`` in a worker thread."""
    monkeypatch.setattr(RecordingReader, "fetch_chunk_cached", lambda self, chunk: None)


def write_chunks(path: Path, chunks: int = 4, per_chunk: int = 10) -> list[ChunkInfo]:
    """A closed JSON recording of ``chunks`` chunks (one per second) of ``per_chunk`` trades."""
    w = RecordingWriter(path, {"kind": "stocks", "encoding": "json"}, chunk_ns=1_000_000_000)
    for i in range(chunks * per_chunk):
        ns = BASE + i * (1_000_000_000 // per_chunk)
        frame = f'[{{"T":"t","S":"AAPL","i":{i},"x":"V","p":1.5,"s":1,"c":[],"z":"C","t":{ns}}}]'
        w.add(RecordKind.FRAME_IN_TEXT, ns, frame.encode())
    w.close()
    assert len(w.index) == chunks
    return list(w.index)


def spy_fetches(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[int]:
    """Record the offset of every chunk fetched from a file; raise OSError at ``fail_at``."""
    fetched: list[int] = []
    real = RecordingReader.fetch_chunk

    def fetch(self: RecordingReader, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        fetched.append(chunk.offset)
        if fail_at is not None and len(fetched) == fail_at:
            raise OSError(5, "Input/output error")
        return real(self, chunk)

    monkeypatch.setattr(RecordingReader, "fetch_chunk", fetch)
    return fetched


async def replay_until_corrupt(path: Path) -> list[int]:
    """The trade ids replayed before the replay fails on a corrupt chunk (it must fail)."""
    got: list[int] = []
    with pytest.raises(RecordingFormatError, match="corrupt chunk"):
        async with open_replay(path) as stream:
            async for msg in stream:
                got.append(msg.trade_id)
    return got


async def test_the_next_chunk_is_read_before_it_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    fetched = spy_fetches(monkeypatch)
    async with open_replay(tmp_path / "a.tarec") as stream:
        first = await stream.receive()
        assert first.trade_id == 0
        # while chunk 1 is decoded, chunks 2 and 3 are read (one waits in the channel, one
        # for room in it), without the consumer asking; then the reading stops
        with trio.fail_after(5):
            while len(fetched) < 3:
                await trio.sleep(0.001)
        await trio.sleep(0.05)
        assert fetched == [c.offset for c in index[:3]]
        assert stream.statistics()["chunks_read"] == 1  # decoded: only the first
        rest = [m.trade_id async for m in stream]
    assert rest == list(range(1, 40))
    assert fetched == [c.offset for c in index]


async def test_a_failed_read_reaches_the_consumer_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_chunks(tmp_path / "a.tarec")
    spy_fetches(monkeypatch, fail_at=3)
    got: list[int] = []
    async with open_replay(tmp_path / "a.tarec") as stream:
        with pytest.raises(OSError, match="Input/output error"):
            async for msg in stream:
                got.append(msg.trade_id)
        # every message before the failed chunk was delivered, and the error stays
        assert got == list(range(20))
        with pytest.raises(OSError, match="Input/output error"):
            await stream.receive_batch()


async def test_a_corrupt_chunk_is_a_format_error_after_the_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "a.tarec"
    index = write_chunks(path)
    data = bytearray(path.read_bytes())
    data[index[2].offset + CHUNK_HEADER.size + 3] ^= 0xFF  # a payload byte: the CRC fails
    path.write_bytes(bytes(data))
    assert await replay_until_corrupt(path) == list(range(20))


async def test_leaving_while_a_read_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_chunks(tmp_path / "a.tarec")
    real = RecordingReader.fetch_chunk
    entered, release = threading.Event(), threading.Event()
    calls: list[Any] = []

    def slow_fetch(self: RecordingReader, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        calls.append(chunk.offset)
        if len(calls) == 2:  # the first read ahead hangs until released
            entered.set()
            release.wait(5)
        return real(self, chunk)

    monkeypatch.setattr(RecordingReader, "fetch_chunk", slow_fetch)
    async with open_replay(tmp_path / "a.tarec") as stream:
        assert (await stream.receive()).trade_id == 0
        await trio.to_thread.run_sync(entered.wait, 5)
        # leaving waits for the thread's read to finish before the file is closed
        trio.lowlevel.current_trio_token().run_sync_soon(release.set)
    assert release.is_set()
    assert len(calls) == 2


async def test_merged_streams_a_failed_read_loses_nothing_read_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two streams of a directory, merged by receive time; stream b's third chunk cannot be read
    write_chunks(tmp_path / "a-20231114T221320Z-0.tarec")
    b_index = write_chunks(tmp_path / "b-20231114T221320Z-0.tarec")
    real = RecordingReader.fetch_chunk

    def fetch(self: RecordingReader, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        if self.path.endswith("b-20231114T221320Z-0.tarec") and chunk.offset == b_index[2].offset:
            raise OSError(5, "Input/output error")
        return real(self, chunk)

    monkeypatch.setattr(RecordingReader, "fetch_chunk", fetch)
    got: list[int] = []
    async with open_replay(tmp_path) as stream:
        with pytest.raises(OSError, match="Input/output error"):
            async for msg in stream:
                got.append(msg.trade_id)
    # both streams' first two chunks (0..19 each), stream b's last frame held back included
    assert sorted(got) == sorted(list(range(20)) * 2)
