"""The sidecar index (FILE.idx) of a recording that is still open or was never closed."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import open_stream
from trioalpaca.record import (
    RecordingReader,
    RecordingWriter,
    RecordKind,
    open_recorder,
    open_replay,
)
from trioalpaca.record._format import sidecar_path
from trioalpaca.testing import open_emulator

BASE = 1_700_000_000_000_000_000
HEADER = {"kind": "stocks", "encoding": "json"}


def open_writer(path: Path, chunks: int = 6) -> RecordingWriter:
    """A writer left open with ``chunks`` one-second chunks written and a few records pending."""
    w = RecordingWriter(path, HEADER, chunk_ns=1_000_000_000)
    for i in range(chunks * 100 + 5):  # 10 records per 100 ms
        ns = BASE + i * 10_000_000
        frame = f'[{{"T":"t","S":"AAPL","i":{i},"x":"V","p":1.5,"s":1,"c":[],"z":"C","t":{ns}}}]'
        w.add(RecordKind.FRAME_IN_TEXT, ns, frame.encode())
    assert len(w.index) == chunks  # the last 5 records are in the open chunk (in memory)
    return w


async def test_seeking_an_open_file_reads_only_the_needed_chunks(tmp_path: Path) -> None:
    path = tmp_path / "open.tarec"
    w = open_writer(path)
    try:
        with RecordingReader(path) as r:
            assert r.index_source == "sidecar"
            assert r.chunks_scanned == 0  # no payload read to index it
            assert r.chunks == w.index
            assert r.truncated is not None and r.truncated.lost_records == 0
        start, end = BASE + 2_500_000_000, BASE + 3_200_000_000
        async with open_replay(path, start=start, end=end) as stream:
            got = [m async for m in stream]
            assert stream.statistics()["chunks_read"] == 2
        assert [m.trade_id for m in got] == list(range(250, 321))
        # the same file without its sidecar is walked: every payload read
        os.rename(sidecar_path(path), tmp_path / "saved.idx")
        with RecordingReader(path) as r:
            assert r.index_source == "scan" and r.chunks_scanned == 6 and r.chunks == w.index
        os.rename(tmp_path / "saved.idx", sidecar_path(path))
        # a chunk written after the reader's last look: a new reader sees it too
        for i in range(100):
            ns = BASE + 7_000_000_000 + i * 10_000_000
            w.add(RecordKind.FRAME_IN_TEXT, ns, b"[]")
        with RecordingReader(path) as r:
            assert r.index_source == "sidecar" and r.chunks == w.index
    finally:
        w.close()
    assert not os.path.exists(sidecar_path(path))
    with RecordingReader(path) as r:
        assert r.index_source == "footer" and r.chunks == w.index


def _entry_at(k: int) -> int:
    return 20 + 32 * k  # the sidecar header is 20 bytes, each entry 32


@pytest.mark.parametrize(
    "damage",
    ["flip-entry-3", "forged-entry-3", "bad-header", "foreign", "newer-version", "empty"],
)
def test_a_bad_sidecar_falls_back_to_walking(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "open.tarec"
    w = open_writer(path)
    try:
        side = Path(sidecar_path(path))
        raw = bytearray(side.read_bytes())
        assert len(raw) == _entry_at(6)
        trusted = 6
        if damage == "flip-entry-3":  # fails the entry's CRC
            raw[_entry_at(3) + 5] ^= 0x40
            trusted = 3
        elif damage == "forged-entry-3":  # a valid CRC, but not what the chunk header says
            at = _entry_at(3)
            offset, first, last, records = struct.unpack_from("<QQQI", raw, at)
            entry = struct.pack("<QQQI", offset, first, last, records + 1)
            raw[at : at + 32] = entry + struct.pack("<I", zlib.crc32(entry))
            trusted = 3
        elif damage == "bad-header":
            raw[0] ^= 1
            trusted = 0
        elif damage == "foreign":  # another recording's sidecar (its header CRC differs)
            other = RecordingWriter(tmp_path / "other.tarec", {**HEADER, "stream": "x"})
            other.add(RecordKind.FRAME_IN_TEXT, BASE, b"[]")
            other.flush()
            raw = bytearray(Path(sidecar_path(tmp_path / "other.tarec")).read_bytes())
            other.close()
            trusted = 0
        elif damage == "newer-version":
            head = struct.pack("<8sHHI", bytes(raw[:8]), 2, 0, *struct.unpack_from("<I", raw, 12))
            raw[:20] = head + struct.pack("<I", zlib.crc32(head))
            trusted = 0
        else:
            raw = bytearray()
            trusted = 0
        side.write_bytes(bytes(raw))
        with RecordingReader(path) as r:
            assert r.chunks == w.index  # the same index, whatever the sidecar says
            assert r.chunks_scanned == 6 - trusted
            assert r.index_source == ("sidecar" if trusted else "scan")
            assert [ns for _, ns, _ in r.records()] == [BASE + i * 10_000_000 for i in range(600)]
    finally:
        w.close()


async def test_recorder_keeps_a_sidecar_while_recording(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "live.tarec"
    async with open_emulator(seed=3, rate=400, symbols=["AAPL"]) as emu:
        client = open_stream(
            "PKKEY", "secret-value", feed="iex", url=emu.url_for("iex"), trades=["AAPL"]
        )
        async with open_recorder(path, client, chunk_bytes=2000), client:
            n = 0
            async for _msg in client:
                n += 1
                if n == 300:
                    break
            await trio.sleep(1.0)  # the writer thread took the last batch
            with RecordingReader(path) as r:  # the file is open: no footer yet
                assert r.truncated is not None
                assert r.index_source == "sidecar" and r.chunks_scanned == 0
                assert len(r.chunks) >= 2
    assert not os.path.exists(sidecar_path(path))
    with RecordingReader(path) as r:
        assert r.index_source == "footer"
