"""``trioalpaca stream``: output formats against the emulator, markers, status, exit codes.

Most tests run the command's ``amain`` in this test's trio run (fast); a few run the real command
in a subprocess: a wrong secret, a reader that closes the pipe early, ``--limit``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import zstandard

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import Dropped, MalformedMessage, Reconnected
from trioalpaca._stream_cli import _Writer, amain, csv_columns, readable
from trioalpaca._time import parse_rfc3339_ns
from trioalpaca.cli import build_parser
from trioalpaca.testing import open_emulator

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "PKSTREAMCLI", "stream-cli-secret"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "APCA_API_KEY_ID",
        "APCA_API_SECRET_KEY",
        "DATA_PROXY_WS",
        "DATA_CRYPTO_PROXY_WS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ALPACA_API_KEY", KEY)
    monkeypatch.setenv("ALPACA_API_SECRET", SECRET)


async def stream_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``trioalpaca stream ARGV`` in-process; return (exit code, stdout, stderr)."""
    args = build_parser().parse_args(["stream", *argv])
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(30):
        code = await amain(args, out, err)
    return code, out.getvalue(), err.getvalue()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def emulator(**kwargs: Any) -> Any:
    kwargs.setdefault("symbols", ["AAPL", "MSFT", "BTC/USD"])
    kwargs.setdefault("rate", 300.0)
    return open_emulator(**kwargs)


async def test_json_lines_readable_keys_and_both_timestamps() -> None:
    async with emulator() as emu:
        url = emu.url_for("iex")
        code, out, err = await stream_cli(
            "--url", url, "--trades", "AAPL,msft", "--quotes", "AAPL", "--limit", "40", "-q"
        )
    assert (code, err) == (0, "")
    recs = lines(out)
    assert len(recs) == 40
    types = {r["type"] for r in recs}
    assert types <= {"Trade", "Quote", "TradeCorrection", "TradeCancel"}
    assert {"Trade", "Quote"} <= types
    for r in recs:
        assert isinstance(r["timestamp_ns"], int)
        assert parse_rfc3339_ns(r["timestamp"]) == r["timestamp_ns"]
        if r["type"] == "Trade":
            assert r["symbol"] in ("AAPL", "MSFT")
            assert isinstance(r["price"], float) and isinstance(r["size"], int)
        if r["type"] == "Quote":
            assert r["symbol"] == "AAPL"
            assert {"bid_price", "ask_price", "bid_size", "ask_size"} <= r.keys()


async def test_data_proxy_ws_without_url(monkeypatch: pytest.MonkeyPatch) -> None:
    async with emulator() as emu:
        monkeypatch.setenv("DATA_PROXY_WS", emu.url)
        code, out, _ = await stream_cli("--feed", "sip", "--quotes", "MSFT", "--limit", "3", "-q")
        assert [c.feed for c in emu.connections] == ["sip"]
    assert code == 0
    assert [r["symbol"] for r in lines(out)] == ["MSFT"] * 3


async def test_raw_wire_dicts() -> None:
    async with emulator() as emu:
        code, out, _ = await stream_cli(
            "--url", emu.url_for("crypto/us"), "--stream", "crypto", "--trades", "BTC/USD",
            "--raw", "--limit", "5", "-q",
        )  # fmt: skip
    assert code == 0
    recs = lines(out)
    assert len(recs) == 5
    for r in recs:
        assert r["T"] == "t" and r["S"] == "BTC/USD"
        assert isinstance(r["t"], int) and isinstance(r["p"], float)


async def test_csv_header_and_rows() -> None:
    async with emulator() as emu:
        code, out, _ = await stream_cli(
            "--url", emu.url_for("iex"), "--trades", "AAPL", "--quotes", "AAPL", "--csv",
            "--limit", "30", "-q",
        )  # fmt: skip
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    header, body = rows[0], rows[1:]
    assert header == csv_columns("stocks", {"trades": ["AAPL"], "quotes": ["AAPL"]})
    assert header[:4] == ["type", "symbol", "timestamp_ns", "timestamp"]
    assert header[-1] == "detail"
    assert len(body) == 30
    for row in body:
        rec = dict(zip(header, row, strict=True))
        assert rec["symbol"] == "AAPL"
        assert parse_rfc3339_ns(rec["timestamp"]) == int(rec["timestamp_ns"])
        if rec["type"] == "Trade":
            assert float(rec["price"]) > 0 and rec["bid_price"] == ""
            assert isinstance(json.loads(rec["conditions"]), list)
        elif rec["type"] == "Quote":
            assert float(rec["ask_price"]) >= float(rec["bid_price"]) and rec["price"] == ""


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.zst", "out.csv.zst"])
async def test_output_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    async with emulator() as emu:
        code, out, err = await stream_cli(
            "--url", emu.url_for("iex"), "--trades", "MSFT", "-o", str(path), "--limit", "12",
            "-q",
        )  # fmt: skip
    assert (code, out, err) == (0, "", "")
    data = path.read_bytes()
    if name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    text = data.decode()
    if ".csv" in name:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 12 and all(r["symbol"] == "MSFT" for r in rows)
    else:
        recs = lines(text)
        assert len(recs) == 12 and all(r["symbol"] == "MSFT" for r in recs)


async def test_gap_marker_line_and_status_line() -> None:
    async with emulator() as emu:
        args = build_parser().parse_args(
            ["stream", "--url", emu.url_for("iex"), "--trades", "AAPL", "--status-interval",
             "0.2", "--duration", "20"]
        )  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(amain, args, out, err)
                while out.getvalue().count("\n") < 5:
                    await trio.sleep(0.02)
                emu.drop(feed="iex")
                while '"Reconnected"' not in out.getvalue() or "1 gap(s)" not in err.getvalue():
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
    (gap,) = [r for r in lines(out.getvalue()) if r["type"] == "Reconnected"]
    assert gap["gap_end_ns"] >= gap["gap_start_ns"]
    assert parse_rfc3339_ns(gap["gap_start"]) == gap["gap_start_ns"]
    status = [s for s in err.getvalue().splitlines() if "gap(s)" in s]
    assert status[0].startswith("trioalpaca stream: ")
    assert "/s, " in status[0] and "dropped" in status[0]
    # the reconnect was reported as one line, naming the URL it lost
    assert any(f"stream iex at {emu.url_for('iex')} lost" in s for s in err.getvalue().splitlines())


def test_markers_as_json_lines_and_csv_rows() -> None:
    out = io.StringIO()
    writer = _Writer(out, "jsonl", [], flush_each=True)
    writer.write([Dropped(7, "buffer overflow (drop_oldest)"), Reconnected(10**18, 10**18 + 5)])
    drop, gap = lines(out.getvalue())
    assert drop == {"type": "Dropped", "count": 7, "reason": "buffer overflow (drop_oldest)"}
    assert gap["type"] == "Reconnected" and gap["gap_start"] == "2001-09-09T01:46:40Z"
    cols = csv_columns("stocks", {"trades": ["AAPL"]})
    out = io.StringIO()
    writer = _Writer(out, "csv", cols, flush_each=True)
    writer.write([Dropped(7, "slow")])
    header, row = list(csv.reader(io.StringIO(out.getvalue())))
    rec = dict(zip(header, row, strict=True))
    assert rec["type"] == "Dropped" and json.loads(rec["detail"]) == {"count": 7, "reason": "slow"}
    assert readable({"T": "t", "S": "X"}) == {"T": "t", "S": "X"}
    out = io.StringIO()
    writer = _Writer(out, "csv", cols, flush_each=True)
    writer.write([MalformedMessage({"T": "t", "S": 5}, "S is not a string")])
    header, row = list(csv.reader(io.StringIO(out.getvalue())))
    rec = dict(zip(header, row, strict=True))
    assert rec["type"] == "MalformedMessage" and rec["symbol"] == ""
    assert json.loads(rec["detail"])["error"] == "S is not a string"


async def test_duration_and_table(autojump_clock: trio.abc.Clock) -> None:
    async with emulator() as emu:
        start = trio.current_time()
        code, out, _ = await stream_cli(
            "--url", emu.url_for("iex"), "--trades", "AAPL", "--quotes", "AAPL", "--table",
            "--duration", "1.3", "-q",
        )  # fmt: skip
        elapsed = trio.current_time() - start
    assert code == 0
    assert 1.3 <= elapsed < 5
    # not a terminal: the demo's plain line per second
    (line,) = out.splitlines()
    assert "state=connected" in line and "AAPL last=" in line and "bid=" in line


async def test_news_and_trading_streams() -> None:
    async with emulator(news_interval=0.5, speed=10, scripted_orders=0.2) as emu:
        code, out, _ = await stream_cli(
            "--url", emu.url_for("news"), "--stream", "news", "--limit", "1", "-q"
        )
        assert code == 0
        (news,) = lines(out)
        assert news["type"] == "News" and news["headline"]
        assert parse_rfc3339_ns(news["created_at"]) == news["created_at_ns"]
        code, out, _ = await stream_cli(
            "--url", emu.url_for("trading"), "--stream", "trading", "--limit", "2", "-q"
        )
        assert code == 0
        updates = lines(out)
        assert [u["type"] for u in updates] == ["TradeUpdate", "TradeUpdate"]
        assert all(isinstance(u["order"], dict) and u["event"] for u in updates)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to stream"),
        (["--feed", "otc", "--trades", "AAPL"], "no real-time websocket feed 'otc'"),
        (["--stream", "crypto", "--feed", "iex", "--trades", "A"], "not a crypto feed"),
        (["--stream", "news", "--table"], "--table shows trades and quotes"),
        (["--trades", "A", "--raw", "--csv"], "--raw writes wire dicts"),
        (["--trades", "A", "-o", "x.txt"], "use a .jsonl, .csv"),
        (["--trades", "A", "--csv", "-o", "x.jsonl"], "name the file .csv"),
        (["--trades", "A,,B"], "empty symbol"),
        (["--trades", "A B"], "invalid symbol 'A B'"),
        (["--stream", "news", "--bars", "A"], "has no channel 'bars'"),
        (["--stream", "trading", "--trades", "A"], "no market data channels"),
        (["--trades", "A", "--limit", "0"], "--limit must be at least 1"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str) -> None:
    code, out, err = await stream_cli(*argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("trioalpaca stream: error: ")
    assert message in err


async def test_missing_credentials_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPACA_API_SECRET")
    code, _, err = await stream_cli("--trades", "AAPL", "--url", "ws://127.0.0.1:9/v2/iex")
    assert code == 2 and "no API credentials" in err and err.count("\n") == 1


async def test_runtime_error_exit_1() -> None:
    async with emulator(rate=0) as emu:
        emu.reject_upgrades(503)
        code, _, err = await stream_cli(
            "--url", emu.url_for("iex"), "--trades", "AAPL", "--max-reconnects", "0", "-q"
        )
    assert code == 1
    assert err.count("\n") == 1 and "error: gave up after 0" in err


# ------------------------------------------------------------------ the real command


def _env_for_subprocess(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "ALPACA_", "DATA_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


CMD = [sys.executable, "-m", "trioalpaca", "stream"]


async def test_wrong_secret_one_line_exit_2() -> None:
    async with emulator(rate=0, credentials={KEY: SECRET}) as emu:
        env = _env_for_subprocess(ALPACA_API_KEY=KEY, ALPACA_API_SECRET="wrong")
        with trio.fail_after(30):
            proc = await trio.run_process(
                [*CMD, "--url", emu.url_for("iex"), "--trades", "AAPL"],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert proc.stdout == b""
    assert err.count("\n") == 1, err
    assert err.startswith("trioalpaca stream: error: ") and "402" in err


@pytest.fixture
def popen_stream() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def test_reader_closing_the_pipe_ends_quietly(
    popen_stream: list[subprocess.Popen[bytes]],
) -> None:
    # like `trioalpaca stream ... | head -n 3`
    proc = subprocess.Popen(
        [*CMD, "--emulator", "--trades", "AAPL", "--emulator-rate", "400"],
        env=_env_for_subprocess(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    popen_stream.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    got = [proc.stdout.readline() for _ in range(3)]
    assert all(json.loads(line)["symbol"] == "AAPL" for line in got)
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "Exception ignored" not in err and "Broken" not in err, err


def test_sigterm_closes_a_compressed_file_cleanly(
    tmp_path: Path, popen_stream: list[subprocess.Popen[bytes]]
) -> None:
    path = tmp_path / "live.jsonl.zst"
    proc = subprocess.Popen(
        [*CMD, "--emulator", "--trades", "AAPL", "-o", str(path), "--status-interval", "0.2"],
        env=_env_for_subprocess(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    popen_stream.append(proc)
    assert proc.stderr is not None
    while True:  # wait until data is flowing into the file
        status = proc.stderr.readline().decode()
        assert status.startswith("trioalpaca stream: "), status
        if not status.startswith("trioalpaca stream: 0 messages"):
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    text = decompressor.decompress(path.read_bytes()).decode()
    assert decompressor.eof  # the frame was ended: nothing lost in a buffer
    recs = lines(text)
    assert recs and all(r["symbol"] == "AAPL" for r in recs)
