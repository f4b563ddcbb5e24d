"""Exporting a recording to Parquet (pyarrow) or CSV: one dataset per channel, by date.

The recording is replayed through the typed decoder (:func:`~trioalpaca.record.open_replay`), so
the columns are the model attributes: ``symbol`` (dictionary-encoded in Parquet), prices and sizes
as numbers, lists as lists, every ``*_ns`` attribute as ``timestamp[ns, tz=UTC]`` named without
the ``_ns`` suffix, plus ``received`` (the receive time). Layout::

    OUT/trades/date=2026-12-01/part-0000.parquet
    OUT/quotes/date=2026-12-01/part-0000.parquet
    OUT/reconnected/date=.../part-0000.parquet     # markers: gaps and drops are kept visible
    OUT/dropped/...

``date`` is the UTC date of the message's own timestamp (the receive time for markers). Read a
dataset back with ``pyarrow.dataset.dataset("OUT/trades", partitioning="hive")``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio

from trioalpaca._errors import UsageError
from trioalpaca._time import format_rfc3339_ns
from trioalpaca.record._format import RecordingError
from trioalpaca.record.replay import TimeBound, open_replay

__all__ = ["ExportResult", "export_csv", "export_parquet"]

#: Rows buffered per dataset before its part files are written.
ROWS_PER_FLUSH = 200_000

_NS_PER_DAY = 86_400 * 1_000_000_000


@attrs.define
class ExportResult:
    """What an export wrote."""

    rows: dict[str, int] = attrs.Factory(dict)
    """Dataset name -> rows written."""
    files: list[str] = attrs.Factory(list)
    """Every file written."""
    messages: int = 0
    """Messages and markers exported."""


@attrs.frozen
class _Column:
    attr: str
    name: str
    kind: str  # symbol, str, int, float, bool, ts, strs, levels, json, decimal


def _columns(cls: type[Any]) -> list[_Column]:
    hints = typing.get_type_hints(cls)
    cols = []
    for field in attrs.fields(cls):
        hint = str(hints[field.name])
        name = field.name
        if name.endswith("_ns") and "int" in hint:
            cols.append(_Column(name, name[:-3], "ts"))
        elif name == "symbol":
            cols.append(_Column(name, name, "symbol"))
        elif "OrderbookLevel" in hint:
            cols.append(_Column(name, name, "levels"))
        elif hint.startswith("tuple[str"):
            cols.append(_Column(name, name, "strs"))
        elif "Decimal" in hint:
            cols.append(_Column(name, name, "decimal"))
        elif hint.startswith("dict"):
            cols.append(_Column(name, name, "json"))
        elif "bool" in hint:
            cols.append(_Column(name, name, "bool"))
        elif "float" in hint:
            cols.append(_Column(name, name, "float"))
        elif "int" in hint:
            cols.append(_Column(name, name, "int"))
        else:
            cols.append(_Column(name, name, "str"))
    return cols


class _Dataset:
    def __init__(self, name: str, cls: type[Any]) -> None:
        self.name = name
        self.cls = cls
        self.columns = _columns(cls)
        self.date_attr = next((c.attr for c in self.columns if c.kind == "ts"), None)
        self.rows: dict[str, list[tuple[int, Any]]] = {}
        self.buffered = 0
        self.parts: dict[str, int] = {}
        self.written = 0

    def add(self, rx_ns: int, msg: Any) -> None:
        ts = getattr(msg, self.date_attr, None) if self.date_attr else None
        day_ns = ts if isinstance(ts, int) else rx_ns
        date = _dt.date(1970, 1, 1) + _dt.timedelta(days=day_ns // _NS_PER_DAY)
        self.rows.setdefault(date.isoformat(), []).append((rx_ns, msg))
        self.buffered += 1

    def take(self) -> list[tuple[str, int, list[tuple[int, Any]]]]:
        out = []
        for date, rows in self.rows.items():
            part = self.parts.get(date, 0)
            self.parts[date] = part + 1
            out.append((date, part, rows))
            self.written += len(rows)
        self.rows = {}
        self.buffered = 0
        return out


def _dataset_key(msg: Any, datasets: dict[type[Any], _Dataset]) -> _Dataset:
    cls = type(msg)
    ds = datasets.get(cls)
    if ds is None:
        channel = getattr(cls, "channel", "unknown")
        if channel == "control":
            name = {"Reconnected": "reconnected", "Dropped": "dropped"}.get(cls.__name__, "unknown")
        else:
            name = channel
        if any(d.name == name for d in datasets.values()):
            name = f"{name}-{cls.__name__}"
        ds = datasets[cls] = _Dataset(name, cls)
    return ds


# ----------------------------------------------------------------------------- writers


def _arrow_table(ds: _Dataset, rows: list[tuple[int, Any]]) -> Any:
    import pyarrow as pa

    utc = pa.timestamp("ns", tz="UTC")
    arrays: list[Any] = []
    names: list[str] = []
    for col in ds.columns:
        values = [getattr(m, col.attr) for _, m in rows]
        kind = col.kind
        if kind == "ts":
            arr = pa.array(values, type=pa.int64()).cast(utc)
        elif kind == "symbol":
            arr = pa.array(values, type=pa.string()).dictionary_encode()
        elif kind == "strs":
            arr = pa.array([list(v) for v in values], type=pa.list_(pa.string()))
        elif kind == "levels":
            level = pa.struct([("price", pa.float64()), ("size", pa.float64())])
            arr = pa.array(
                [[{"price": lv.price, "size": lv.size} for lv in v] for v in values],
                type=pa.list_(level),
            )
        elif kind == "decimal":
            arr = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        elif kind == "json":
            arr = pa.array([json.dumps(v, default=str) for v in values], type=pa.string())
        elif kind == "bool":
            arr = pa.array(values, type=pa.bool_())
        elif kind == "float":
            arr = pa.array(values, type=pa.float64())
        elif kind == "int":
            arr = pa.array(values, type=pa.int64())
        else:
            arr = pa.array(values, type=pa.string())
        arrays.append(arr)
        names.append(col.name)
    arrays.append(pa.array([rx for rx, _ in rows], type=pa.int64()).cast(utc))
    names.append("received")
    return pa.Table.from_arrays(arrays, names=names)


def _csv_value(kind: str, v: Any) -> Any:
    if v is None:
        return ""
    if kind == "ts":
        return format_rfc3339_ns(v)
    if kind == "strs":
        return json.dumps(list(v))
    if kind == "levels":
        return json.dumps([[lv.price, lv.size] for lv in v])
    if kind == "json":
        return json.dumps(v, default=str)
    if isinstance(v, Decimal):
        return str(v)
    return v


def _write_parts(
    out: str, ds: _Dataset, parts: list[tuple[str, int, list[tuple[int, Any]]]], fmt: str
) -> list[str]:
    files = []
    for date, part, rows in parts:
        folder = os.path.join(out, ds.name, f"date={date}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"part-{part:04d}.{fmt}")
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(_arrow_table(ds, rows), path)
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow([c.name for c in ds.columns] + ["received"])
                for rx, msg in rows:
                    writer.writerow(
                        [_csv_value(c.kind, getattr(msg, c.attr)) for c in ds.columns]
                        + [format_rfc3339_ns(rx)]
                    )
        files.append(path)
    return files


async def _export(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str,
    start: TimeBound,
    end: TimeBound,
    progress: Callable[[int], None] | None,
) -> ExportResult:
    out = os.fspath(out)

    def prepare() -> None:
        if os.path.isdir(out) and os.listdir(out):
            raise UsageError(f"{out} is not empty; export into a new or empty directory")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create {out}: {exc}") from exc

    await trio.to_thread.run_sync(prepare)
    result = ExportResult()
    datasets: dict[type[Any], _Dataset] = {}

    async def flush(ds: _Dataset) -> None:
        parts = ds.take()
        files = await trio.to_thread.run_sync(_write_parts, out, ds, parts, fmt)
        result.files.extend(files)

    async with open_replay(path, start=start, end=end, receive_times=True) as stream:
        while True:
            try:
                batch = await stream.receive_timed_batch(50_000)
            except trio.EndOfChannel:
                break
            for rx, msg in batch:
                ds = _dataset_key(msg, datasets)
                ds.add(rx, msg)
                if ds.buffered >= ROWS_PER_FLUSH:
                    await flush(ds)
            result.messages += len(batch)
            if progress is not None:
                progress(result.messages)
    for ds in datasets.values():
        if ds.buffered:
            await flush(ds)
        result.rows[ds.name] = ds.written
    return result


async def export_parquet(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    start: TimeBound = None,
    end: TimeBound = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export a recording to Parquet datasets under ``out`` (see the module docs for the layout).

    Needs pyarrow (``pip install 'trioalpaca[parquet]'``). ``progress`` is called with the number
    of messages exported so far, after every batch.

    Raises:
        UsageError: pyarrow is missing, or ``out`` is a non-empty directory.
        RecordingError: no readable recording at ``path``.
    """
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(
            "Parquet export needs pyarrow: pip install 'trioalpaca[parquet]'"
        ) from None
    return await _export(path, out, "parquet", start, end, progress)


async def export_csv(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    start: TimeBound = None,
    end: TimeBound = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export a recording to CSV files under ``out``, laid out like :func:`export_parquet`.

    Timestamps are RFC 3339 text with nanoseconds; lists are JSON. No extra dependency.
    """
    return await _export(path, out, "csv", start, end, progress)
