"""Record a live client (emulator) and replay it: identical messages, markers, pacing, seeking."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import Dropped, Reconnected, open_stream
from trioalpaca.record import (
    RecordingError,
    RecordingReader,
    RecordingWriter,
    RecordKind,
    open_recorder,
    open_replay,
)
from trioalpaca.testing import open_emulator

KEY, SECRET = "PKRECORDKEY", "record-secret-value"


async def record_live(
    out: Path, n: int, *, drop_after: int | None = None, raw: bool = False, **kw: Any
) -> list[Any]:
    """Run a live client against the emulator while recording it; return what it yielded."""
    live: list[Any] = []
    async with open_emulator(seed=3, rate=400, symbols=["AAPL", "MSFT"]) as emu:
        if drop_after is not None:
            emu.drop(feed="iex", after_messages=drop_after)
        client = open_stream(
            KEY,
            SECRET,
            feed="iex",
            url=emu.url_for("iex"),
            raw_data=raw,
            trades=["AAPL", "MSFT"],
            quotes=["AAPL"],
        )
        async with open_recorder(out, client, **kw), client:
            async for msg in client:
                live.append(msg)
                if len(live) >= n:
                    break
    return live


async def replay_all(path: Path, **kw: Any) -> list[Any]:
    async with open_replay(path, **kw) as stream:
        return [msg async for msg in stream]


@pytest.mark.parametrize("raw", [False, True])
async def test_round_trip_identical_with_reconnect_marker(
    tmp_path: Path, autojump_clock: trio.abc.Clock, raw: bool
) -> None:
    live = await record_live(tmp_path, 400, drop_after=150, raw=raw)
    markers = [
        m for m in live if isinstance(m, Reconnected) or (raw and m.get("T") == "reconnected")
    ]
    assert len(markers) == 1
    replayed = await replay_all(tmp_path, raw_data=raw)
    # the recording may hold a few frames the consumer had not taken yet when it stopped
    assert replayed[: len(live)] == live
    if not raw:
        assert all(type(a) is type(b) for a, b in zip(live, replayed, strict=False))
        ts = [m.timestamp_ns for m in live if hasattr(m, "timestamp_ns")]
        assert ts == [m.timestamp_ns for m in replayed[: len(live)] if hasattr(m, "timestamp_ns")]


async def test_recording_content_and_no_credentials(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    await record_live(tmp_path, 50)
    (name,) = os.listdir(tmp_path)
    with RecordingReader(tmp_path / name) as r:
        assert r.truncated is None
        header = r.header
        assert header is not None
        assert header["feed"] == "iex" and header["encoding"] == "msgpack"
        assert header["subscriptions"] == {"trades": ["AAPL", "MSFT"], "quotes": ["AAPL"]}
        recs = list(r.records())
    blob = b"".join(d for _, _, d in recs) + repr(header).encode()
    assert KEY.encode() not in blob and SECRET.encode() not in blob
    kinds = [k for k, _, _ in recs]
    assert RecordKind.FRAME_OUT_BINARY in kinds  # auth (redacted) and subscribe
    events = [d for k, _, d in recs if k == RecordKind.EVENT]
    names = [json.loads(e)["event"] for e in events]
    assert names[:4] == ["connect", "authenticated", "subscribed", "ready"]
    rx = [ns for _, ns, _ in recs]
    assert rx == sorted(rx)


async def test_paced_replay_at_exact_virtual_times(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "p.tarec"
    w = RecordingWriter(path, {"kind": "stocks", "encoding": "json"})
    base = 1_700_000_000_000_000_000
    offsets = [0, 0.25, 0.25, 1.0, 3.5, 10.0]
    for i, off in enumerate(offsets):
        ns = base + int(off * 1e9)
        frame = f'[{{"T":"t","S":"AAPL","i":{i},"x":"V","p":1.5,"s":1,"c":[],"z":"C","t":{ns}}}]'
        w.add(RecordKind.FRAME_IN_TEXT, ns, frame.encode())
    w.close()
    for speed in (1.0, 10.0):
        times = []
        async with open_replay(path, speed=speed) as stream:
            t0 = trio.current_time()
            async for _msg in stream:
                times.append(trio.current_time() - t0)
        assert times == pytest.approx([o / speed for o in offsets], abs=1e-9)


async def test_seek_reads_only_needed_chunks(tmp_path: Path) -> None:
    path = tmp_path / "s.tarec"
    w = RecordingWriter(path, {"kind": "stocks", "encoding": "json"}, chunk_ns=1_000_000_000)
    base = 1_700_000_000_000_000_000
    for i in range(600):  # 10 records per 100 ms: one chunk per second, 6 chunks
        ns = base + i * 10_000_000
        frame = f'[{{"T":"t","S":"AAPL","i":{i},"x":"V","p":1.5,"s":1,"c":[],"z":"C","t":{ns}}}]'
        w.add(RecordKind.FRAME_IN_TEXT, ns, frame.encode())
    w.close()
    assert len(w.index) == 6
    start, end = base + 2_500_000_000, base + 3_200_000_000
    async with open_replay(path, start=start, end=end) as stream:
        got = [m async for m in stream]
        assert stream.statistics()["chunks_read"] == 2
    assert [m.trade_id for m in got] == list(range(250, 321))
    # the same bounds as aware datetimes / RFC 3339 text
    from trioalpaca._time import format_rfc3339_ns

    async with open_replay(path, start=format_rfc3339_ns(start), end=end) as stream:
        assert [m.trade_id async for m in stream] == list(range(250, 321))


async def test_truncated_recording_replays_with_marker(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    await record_live(tmp_path, 300, chunk_bytes=2000)
    (name,) = os.listdir(tmp_path)
    full = (tmp_path / name).read_bytes()
    with RecordingReader(tmp_path / name) as r:
        chunks = r.chunks
    assert len(chunks) >= 3
    cut = chunks[2].offset + 40  # inside the third chunk: like a kill -9 while writing it
    (tmp_path / name).write_bytes(full[:cut])
    got = await replay_all(tmp_path)
    assert isinstance(got[-1], Dropped)
    assert f"byte {chunks[2].offset}" in got[-1].reason
    assert got[-1].count == chunks[2].records
    assert not any(isinstance(m, Dropped) for m in got[:-1])


async def test_recorder_overflow_drops_with_marker(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # a tiny pending bound: the writer thread cannot keep up with a burst
    live = await record_live(tmp_path, 2000, max_pending_bytes=300)
    replayed = await replay_all(tmp_path)
    dropped = [m for m in replayed if isinstance(m, Dropped)]
    assert dropped and all("disk could not keep up" in d.reason for d in dropped)
    data = [m for m in replayed if not isinstance(m, Dropped)]
    assert len(data) < len(live)
    assert set(data) <= set(live)


async def test_rotation_by_size_and_replay_across_files(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    live = await record_live(tmp_path, 600, max_bytes=3000, chunk_bytes=1000)
    names = sorted(os.listdir(tmp_path))
    assert len(names) >= 3 and all(n.startswith("stream-") for n in names)
    with RecordingReader(tmp_path / names[1]) as r:
        assert r.header is not None and r.header["continues"] == names[0]
        assert r.header["subscriptions"]  # carried over
    replayed = await replay_all(tmp_path)
    assert replayed[: len(live)] == live


async def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no recording"):
        await replay_all(tmp_path / "nothing")
    with pytest.raises(RecordingError, match=r"no \.tarec files"):
        await replay_all(tmp_path)
    from trioalpaca import UsageError

    path = tmp_path / "x.tarec"
    RecordingWriter(path, {"kind": "stocks", "encoding": "json"}).close()
    for kw in ({"speed": 0}, {"speed": float("nan")}, {"start": 5, "end": 4}, {"start": "yes"}):
        with pytest.raises(UsageError):
            await replay_all(path, **kw)
    with pytest.raises(UsageError, match="never overwrites"):
        async with open_recorder(path):
            pass
    with pytest.raises(UsageError, match="max_bytes"):
        async with open_recorder(tmp_path / "y.tarec", max_bytes=10):
            pass


@pytest.mark.parametrize("raw", [False, True])
async def test_trading_stream_round_trip(
    tmp_path: Path, autojump_clock: trio.abc.Clock, raw: bool
) -> None:
    live: list[Any] = []
    async with open_emulator(seed=5) as emu:
        client = open_stream(
            KEY, SECRET, stream_type="trading", url=emu.url_for("trading"), raw_data=raw
        )
        async with open_recorder(tmp_path / "t.tarec", client), client:
            emu.submit_order("AAPL", qty=3, plan="partial")
            async for msg in client:
                live.append(msg)
                if len(live) >= 3:
                    break
    async with open_replay(tmp_path / "t.tarec", raw_data=raw) as stream:
        assert stream.header["kind"] == "trading"
        replayed = [m async for m in stream]
    assert replayed[: len(live)] == live
    assert len(live) == 3


async def test_hourly_rotation(tmp_path: Path) -> None:
    client = open_stream(KEY, SECRET, url="ws://127.0.0.1:9/v2/iex", trades=["AAPL"])
    hour = 3_600_000_000_000
    base = 1_764_604_800_000_000_000 + hour - 2_000_000_000  # 2 s before a UTC hour
    async with open_recorder(tmp_path, client, stream="s") as rec:
        (tap,) = client.observers  # the recorder's tap, fed by hand here: no connection needed
        for i in range(8):
            ns = base + i * 1_000_000_000  # 16:59:58 ... 17:00:05
            trade = (
                f'[{{"T":"t","S":"AAPL","i":{i},"x":"V","p":1.5,"s":1,"c":[],"z":"C","t":{ns}}}]'
            )
            tap.frame_in(trade, ns)
        await trio.sleep(0)
    names = sorted(os.listdir(tmp_path))
    assert names == ["s-20251201T165958Z-0000.tarec", "s-20251201T170000Z-0001.tarec"]
    assert rec.files == [str(tmp_path / n) for n in names]
    with RecordingReader(tmp_path / names[1]) as r:
        assert r.header is not None and r.header["continues"] == names[0]
        assert [ns for _, ns, _ in r.records()] == [base + i * 1_000_000_000 for i in range(2, 8)]
    async with open_replay(tmp_path) as stream:
        assert [m.trade_id async for m in stream] == list(range(8))
