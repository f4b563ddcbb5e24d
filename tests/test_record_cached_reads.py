"""Chunks the OS has cached are read without a worker thread (``preadv(..., RWF_NOWAIT)``):
the same bytes as the blocking read, and every way the non-blocking read can decline (not
cached, partly cached, not supported, an I/O error) falls back to the worker thread.

The fallbacks are driven by a stand-in for ``os.preadv``, so they are tested on every
platform; one test uses the real call where the platform has it."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_record_prefetch import replay_until_corrupt, write_chunks
from trioalpaca.record import RecordingReader, _format, open_replay
from trioalpaca.record._format import CHUNK_HEADER, ChunkInfo


def fake_preadv(decline: Callable[[int, int], OSError | int | None] | None = None) -> Any:
    """A stand-in for ``os.preadv`` that reads with ``os.pread``; ``decline(offset, size)`` may
    return an OSError to raise or a byte count to stop at (a short read)."""
    calls: list[tuple[int, int]] = []

    def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int) -> int:
        assert flags == 8 or flags == getattr(os, "RWF_NOWAIT", 8)
        (buf,) = buffers
        calls.append((offset, len(buf)))
        verdict = decline(offset, len(buf)) if decline is not None else None
        if isinstance(verdict, OSError):
            raise verdict
        size = len(buf) if verdict is None else verdict
        data = os.pread(fd, size, offset)
        buf[: len(data)] = data
        return len(data)

    preadv.calls = calls  # type: ignore[attr-defined]
    return preadv


@pytest.fixture
def nowait(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Install a fake ``preadv`` (and the RWF_NOWAIT flag, where the platform lacks it)."""

    def install(decline: Callable[[int, int], OSError | int | None] | None = None) -> Any:
        fake = fake_preadv(decline)
        monkeypatch.setattr(_format, "_RWF_NOWAIT", getattr(os, "RWF_NOWAIT", 8))
        monkeypatch.setattr(_format.os, "preadv", fake, raising=False)
        return fake

    return install


def spy_blocking(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(offset, in the main thread?) of every blocking ``fetch_chunk``."""
    calls: list[tuple[int, bool]] = []
    real = RecordingReader.fetch_chunk

    def fetch(self: RecordingReader, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        calls.append((chunk.offset, threading.current_thread() is threading.main_thread()))
        return real(self, chunk)

    monkeypatch.setattr(RecordingReader, "fetch_chunk", fetch)
    return calls


async def replayed(path: Path) -> list[int]:
    async with open_replay(path) as stream:
        return [m.trade_id async for m in stream]


def test_a_cached_read_gives_the_blocking_reads_bytes(
    tmp_path: Path, nowait: Callable[..., Any]
) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    fake = nowait()
    with RecordingReader(tmp_path / "a.tarec") as reader:
        for chunk in index:
            assert reader.fetch_chunk_cached(chunk) == reader.fetch_chunk(chunk)
        assert len(fake.calls) == 2 * len(index)  # the header, then the payload


def test_the_real_call_where_the_platform_has_it(tmp_path: Path) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    with RecordingReader(tmp_path / "a.tarec") as reader:
        for chunk in index:
            cached = reader.fetch_chunk_cached(chunk)
            # (None where the platform or file system cannot read without blocking)
            assert cached is None or cached == reader.fetch_chunk(chunk)
        if _format._RWF_NOWAIT is None:
            assert reader.fetch_chunk_cached(index[0]) is None


async def test_cached_chunks_are_replayed_without_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: Callable[..., Any]
) -> None:
    write_chunks(tmp_path / "a.tarec")
    fake = nowait()
    blocking = spy_blocking(monkeypatch)
    assert await replayed(tmp_path / "a.tarec") == list(range(40))
    assert blocking == []
    assert len(fake.calls) == 8


@pytest.mark.parametrize(
    "why",
    [
        OSError(errno.EAGAIN, "Resource temporarily unavailable"),  # not in the page cache
        "short",  # partly cached
    ],
)
async def test_an_uncached_chunk_is_read_in_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: Callable[..., Any], why: Any
) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    uncached = index[1].offset + CHUNK_HEADER.size  # chunk 1's payload is not cached

    def decline(offset: int, size: int) -> OSError | int | None:
        if offset != uncached:
            return None
        return size // 2 if why == "short" else why

    fake = nowait(decline)
    blocking = spy_blocking(monkeypatch)
    assert await replayed(tmp_path / "a.tarec") == list(range(40))
    # only chunk 1, in a worker thread; the non-blocking read is tried again for the next
    assert blocking == [(index[1].offset, False)]
    assert len(fake.calls) == 8


async def test_a_file_system_that_cannot_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: Callable[..., Any]
) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    fake = nowait(lambda offset, size: OSError(errno.EOPNOTSUPP, "Operation not supported"))
    blocking = spy_blocking(monkeypatch)
    assert await replayed(tmp_path / "a.tarec") == list(range(40))
    assert [offset for offset, _main in blocking] == [c.offset for c in index]
    assert not any(main for _offset, main in blocking)
    assert len(fake.calls) == 1


async def test_an_io_error_is_raised_by_the_blocking_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: Callable[..., Any]
) -> None:
    index = write_chunks(tmp_path / "a.tarec")
    bad = index[2].offset + CHUNK_HEADER.size
    nowait(lambda offset, size: OSError(errno.EIO, "Input/output error") if offset == bad else None)
    real = RecordingReader.fetch_chunk

    def fetch(self: RecordingReader, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        if chunk.offset == index[2].offset:
            raise OSError(errno.EIO, "Input/output error")
        return real(self, chunk)

    monkeypatch.setattr(RecordingReader, "fetch_chunk", fetch)
    got: list[int] = []
    with pytest.raises(OSError, match="Input/output error"):
        async with open_replay(tmp_path / "a.tarec") as stream:
            async for msg in stream:
                got.append(msg.trade_id)
    assert got == list(range(20))


@pytest.mark.parametrize("cached", [True, False])
async def test_a_corrupt_payload_length_is_a_format_error_not_a_huge_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nowait: Callable[..., Any], cached: bool
) -> None:
    path = tmp_path / "a.tarec"
    index = write_chunks(path)
    data = bytearray(path.read_bytes())
    at = index[2].offset + 4  # the payload length field of chunk 2's header
    data[at : at + 4] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    fake = nowait()
    if not cached:
        monkeypatch.setattr(RecordingReader, "fetch_chunk_cached", lambda self, chunk: None)
    assert await replay_until_corrupt(path) == list(range(20))
    # no read asked for more than the file holds
    assert all(size <= len(data) for _offset, size in fake.calls)
