"""Serving a recording as Alpaca (per-client subscriptions), Parquet/CSV export, the commands."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from tests.test_record_replay import record_live, replay_all
from trioalpaca import Quote, Trade, open_stream
from trioalpaca.cli import main as cli_main
from trioalpaca.record import RecordingWriter, RecordKind
from trioalpaca.record.export import export_csv, export_parquet
from trioalpaca.record.serve import serve_replay


async def take(stream: Any, n: int) -> list[Any]:
    out: list[Any] = []
    async for msg in stream:
        out.append(msg)
        if len(out) >= n:
            break
    return out


async def test_served_replay_gives_each_client_its_subscription(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    live = await record_live(tmp_path, 300)
    data = [m for m in await replay_all(tmp_path) if hasattr(m, "symbol")]
    # corrections and cancels follow the trades subscription, as on Alpaca
    trade_like = ("trades", "corrections", "cancelErrors")
    want_a = [m for m in data if m.channel in trade_like and m.symbol == "AAPL"]
    want_b = [
        m
        for m in data
        if (m.channel == "quotes" and m.symbol == "AAPL")
        or (m.channel in trade_like and m.symbol == "MSFT")
    ]
    assert any(isinstance(m, Trade) for m in want_a)
    assert any(isinstance(m, Quote) for m in want_b)
    assert want_a and want_b and len(live) >= 300
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_replay, tmp_path, speed=50.0, wait_for_clients=2)
        )
        url = server.url_for("iex")
        async with (
            open_stream("k1", "s1", url=url, trades=["AAPL"]) as a,
            open_stream(
                "k2", "s2", url=url, encoding="json", quotes=["AAPL"], trades=["MSFT"]
            ) as b,
        ):
            got_a = await take(a, len(want_a))
            got_b = await take(b, len(want_b))
        await server.finished.wait()
        nursery.cancel_scope.cancel()
    assert got_a == want_a
    assert got_b == want_b  # the JSON client decodes the same values (ns timestamps included)


def _bars_recording(path: Path) -> list[tuple[int, str]]:
    """A small JSON recording with trades on two UTC days and one reconnect marker."""
    w = RecordingWriter(path, {"kind": "stocks", "encoding": "json", "feed": "iex"})
    day1 = 1_764_547_199_000_000_000  # 2025-11-30T23:59:59Z
    rows = []
    for i in range(6):
        ns = day1 + i * 400_000_000  # crosses midnight after the third trade
        sym = "AAPL" if i % 2 else "MSFT"
        frame = (
            f'[{{"T":"t","S":"{sym}","i":{i},"x":"V","p":{100 + i}.25,"s":{i + 1},'
            f'"c":["@","I"],"z":"C","t":{ns}}}]'
        )
        w.add(RecordKind.FRAME_IN_TEXT, ns + 5, frame.encode())
        rows.append((ns, sym))
        if i == 2:
            event = (
                f'{{"event":"reconnected","gap_start_ns":{ns},"gap_end_ns":{ns + 10},"attempts":2}}'
            )
            w.add(RecordKind.EVENT, ns + 6, event.encode())
    w.close()
    return rows


async def test_parquet_export_reads_back_typed(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as pads

    rec = tmp_path / "r.tarec"
    rows = _bars_recording(rec)
    result = await export_parquet(rec, tmp_path / "out")
    assert result.rows == {"trades": 6, "reconnected": 1}
    dates = sorted(os.listdir(tmp_path / "out" / "trades"))
    assert dates == ["date=2025-11-30", "date=2025-12-01"]
    table = pads.dataset(tmp_path / "out" / "trades", partitioning="hive").to_table()
    schema = table.schema
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("received").type == pa.timestamp("ns", tz="UTC")
    assert pa.types.is_dictionary(schema.field("symbol").type)
    assert schema.field("price").type == pa.float64()
    assert schema.field("size").type == pa.int64()
    assert schema.field("conditions").type == pa.list_(pa.string())
    table = table.sort_by("trade_id")
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [ns for ns, _ in rows]
    assert table.column("received").cast(pa.int64()).to_pylist() == [ns + 5 for ns, _ in rows]
    assert table.column("symbol").to_pylist() == [s for _, s in rows]
    assert table.column("price").to_pylist() == [100.25 + i for i in range(6)]
    assert table.column("conditions").to_pylist() == [["@", "I"]] * 6
    gaps = pads.dataset(tmp_path / "out" / "reconnected", partitioning="hive").to_table()
    assert gaps.column("attempts").to_pylist() == [2]
    assert gaps.schema.field("gap_start").type == pa.timestamp("ns", tz="UTC")


async def test_csv_export(tmp_path: Path) -> None:
    rec = tmp_path / "r.tarec"
    rows = _bars_recording(rec)
    result = await export_csv(rec, tmp_path / "out")
    assert result.rows["trades"] == 6
    got = []
    for date in sorted(os.listdir(tmp_path / "out" / "trades")):
        with open(tmp_path / "out" / "trades" / date / "part-0000.csv", encoding="utf-8") as f:
            got += list(csv.DictReader(f))
    assert [r["symbol"] for r in got] == [s for _, s in rows]
    assert got[0]["timestamp"] == "2025-11-30T23:59:59Z"
    assert got[3]["timestamp"] == "2025-12-01T00:00:00.2Z"  # exact, shortest form
    assert got[0]["conditions"] == '["@", "I"]'


async def test_export_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    from trioalpaca import UsageError

    rec = tmp_path / "r.tarec"
    _bars_recording(rec)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        await export_parquet(rec, tmp_path / "out")


def test_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec_dir = tmp_path / "rec"
    code = cli_main(
        [
            "record",
            "--emulator",
            "--emulator-rate",
            "200",
            "--trades",
            "AAPL",
            "--quotes",
            "AAPL",
            "--out",
            str(rec_dir),
            "--duration",
            "1.5",
            "--status-interval",
            "0.5",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "msgs/s" in err and "MB written" in err and "gaps" in err
    assert os.listdir(rec_dir)
    assert cli_main(["replay", str(rec_dir), "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all('"type":"' in line for line in lines)
    assert cli_main(["export", str(rec_dir), "--csv", str(tmp_path / "csv"), "-q"]) == 0
    assert "trades" in os.listdir(tmp_path / "csv")
    assert "trades:" in capsys.readouterr().err  # the summary line
    # errors: one line, exit 2 (usage) / 1 (runtime), no traceback
    assert cli_main(["replay", str(tmp_path / "missing")]) == 1
    assert cli_main(["replay", str(rec_dir), "--start", "not-a-time"]) == 2
    assert cli_main(["record", "--emulator", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 3


async def test_parquet_without_pyarrow_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from trioalpaca import UsageError

    rec = tmp_path / "r.tarec"
    _bars_recording(rec)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if missing
    with pytest.raises(UsageError, match=r"pip install 'trioalpaca\[parquet\]'"):
        await export_parquet(rec, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
