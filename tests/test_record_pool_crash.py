"""Recording a pool (one stream per connection), a recorder killed with SIGKILL, write errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import trioalpaca
from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import open_stream
from trioalpaca.pool import open_pool
from trioalpaca.record import (
    RecordingError,
    RecordingReader,
    RecordKind,
    find_streams,
    open_recorder,
    open_replay,
)
from trioalpaca.testing import open_emulator

CREDS = {"PKREC1": "secret-one", "PKREC2": "secret-two"}


def events(path: str) -> list[dict[str, Any]]:
    with RecordingReader(path) as r:
        return [json.loads(d) for k, _, d in r.records() if k == RecordKind.EVENT]


async def test_pool_connections_are_recorded_as_streams(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with (
        open_emulator(symbols=["AAPL", "MSFT"], rate=50, credentials=CREDS) as emu,
        open_pool(
            credentials=list(CREDS.items()),
            feed="iex",
            url=emu.url_for("iex"),
            heartbeat_interval=1.0,
            backoff=trioalpaca.Backoff(initial=0.2, cap=1.0, seed=1),
        ) as pool,
        open_recorder(tmp_path, pool),
    ):
        a = await pool.get_connection(["AAPL"], channels=["trades"])
        b = await pool.get_connection(["MSFT"], channels=["trades"])
        assert (a.connections, b.connections) == ((0,), (1,))
        got_a = [await a.receive() for _ in range(10)]
        (serving_a,) = [
            c for c in emu.open_connections("iex") if "AAPL" in c.subscriptions.get("trades", ())
        ]
        emu.drop(feed="iex", connection=serving_a.id)  # the connection behind handle a
        got_a += [await a.receive() for _ in range(10)]
        got_b = [await b.receive() for _ in range(5)]
    streams = find_streams(tmp_path)
    assert set(streams) == {"conn0", "conn1"}
    # the pool replaced connection 0's client after the drop; the new client is in the same stream
    names = {s: [e["event"] for f in fs for e in events(f)] for s, fs in streams.items()}
    assert names["conn0"][0] == names["conn1"][0] == "attached"  # to running clients
    assert "subscribed" in names["conn1"]
    # the pool replaced connection 0's client after the drop: the new client (and its whole
    # handshake) is recorded in the same stream
    after = names["conn0"][names["conn0"].index("disconnect") + 1 :]
    assert after[:3] == ["connect", "authenticated", "ready"]
    async with open_replay(tmp_path, streams=["conn0"]) as stream:
        replay0 = [m async for m in stream]
    async with open_replay(tmp_path, streams=["conn1"]) as stream:
        replay1 = [m async for m in stream]
    # what the handles got came from the connections' recordings (AAPL may have failed over to
    # connection 1 while connection 0 was down)
    trades_a = [m for m in got_a if isinstance(m, trioalpaca.Trade)]
    assert trades_a and all(m in replay0 or m in replay1 for m in trades_a)
    assert trades_a[0] in replay0  # before the drop
    assert (
        got_b
        == [m for m in replay1 if isinstance(m, trioalpaca.Trade) and m.symbol == "MSFT"][
            : len(got_b)
        ]
    )
    # the merged replay of the directory holds both, in receive order
    async with open_replay(tmp_path) as stream:
        merged = [m async for m in stream]
    assert sorted(map(repr, merged)) == sorted(map(repr, replay0 + replay1))


def test_killed_recorder_loses_at_most_the_open_chunk(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    cmd = [sys.executable, "-m", "trioalpaca", "record", "--emulator", "--emulator-rate", "300"]
    cmd += ["--trades", "AAPL", "--quotes", "AAPL", "--out", str(out), "--status-interval", "0.2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        chunks = 0
        while chunks < 2 and time.monotonic() < deadline:  # wait for a few complete chunks
            line = proc.stderr.readline()
            assert line, "the recorder exited early"
            files = list(out.glob("*.tarec")) if out.exists() else []
            if files:
                with RecordingReader(files[0]) as r:
                    chunks = len(r.chunks)
        assert chunks >= 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    (path,) = out.glob("*.tarec")
    size = os.path.getsize(path)
    with RecordingReader(path) as r:
        assert r.truncated is not None  # no footer: it was killed
        assert len(r.chunks) >= 2
        assert r.truncated.offset <= size
        recs = list(r.records())
    assert recs and recs[0][0] == RecordKind.EVENT  # the handshake is there


async def test_write_error_leaves_the_block_as_one_error(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_emulator(symbols=["AAPL"], rate=50) as emu:
        client = open_stream("k", "s", url=emu.url_for("iex"), trades=["AAPL"])
        # the parent directory does not exist: the first write fails
        with pytest.raises(RecordingError, match="cannot create recording"):
            async with open_recorder(tmp_path / "missing" / "x.tarec", client), client:
                async for _msg in client:
                    pass
