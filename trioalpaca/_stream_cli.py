"""``trioalpaca stream``: print a live Alpaca stream as JSON lines, CSV or a terminal table.

::

    trioalpaca stream --feed iex --trades AAPL,MSFT --quotes AAPL --bars '*'
    trioalpaca stream --stream crypto --trades BTC/USD --orderbooks BTC/USD --limit 100
    trioalpaca stream --stream options --trades AAPL250117C00150000
    trioalpaca stream --stream news                        # every headline
    trioalpaca stream --stream trading                     # your order updates (paper)
    trioalpaca stream --emulator --trades AAPL --table     # no account needed
    trioalpaca stream --trades AAPL -o trades.jsonl.zst --duration 3600

Output (see the ``trioalpaca stream`` section of the quick start):

* JSON lines (default), one object per message, flushed as they arrive. Keys are the models'
  attribute names (``symbol``, ``price``, ``size``, ``timestamp_ns``, ...) after a ``type`` key
  holding the class name (``Trade``, ``CryptoQuote``, ``News``...). Every ``*_ns`` timestamp
  comes twice: as int nanoseconds and, without the ``_ns`` suffix, as RFC 3339 text
  (``"timestamp": "2026-01-02T15:04:05.123456789Z"``). Decimals are strings. Gaps and drops are
  lines too: ``{"type": "Reconnected", "gap_start_ns": ..., ...}`` and
  ``{"type": "Dropped", "count": n, "reason": ...}``.
* ``--raw``: the canonical wire dicts instead (wire keys, ``t`` as int ns), markers as
  ``{"T": "reconnected", ...}`` / ``{"T": "dropped", ...}``.
* ``--csv``: one header row (``type``, ``symbol``, ``timestamp_ns``, ``timestamp``, then the
  fields of every message type the subscription can carry, then ``detail``); markers are rows
  whose ``detail`` cell holds their fields as JSON; lists and dicts are JSON text.
* ``--table``: a live per-symbol view (last trade, bid/ask, rates), as ``trioalpaca demo``.
* ``--output FILE``: ``.jsonl`` (also ``.ndjson``, ``.json``), ``.csv``, or either compressed with
  zstandard (``.jsonl.zst``, ``.csv.zst``; a bare ``.zst`` is JSON lines).

When the output is not a terminal, a status line goes to stderr every ``--status-interval``
seconds (rate, gaps, drops). Errors are one line on stderr. Exit codes: 0 done (``--limit``,
``--duration``, Ctrl-C or SIGTERM, with the output flushed and closed, or the reader of stdout went
away), 1 runtime error, 2 usage or authentication error.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from typing import IO, Any

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["add_arguments", "amain", "run"]

STREAMS = ("stocks", "crypto", "options", "news", "trading")

#: CLI flag -> channel keyword of the client.
CHANNEL_FLAGS: dict[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "daily-bars": "daily_bars",
    "updated-bars": "updated_bars",
    "statuses": "statuses",
    "lulds": "lulds",
    "imbalances": "imbalances",
    "orderbooks": "orderbooks",
    "news": "news",
    "pricing": "pricing",
}

#: Default feed per stream, and short names accepted by ``--feed`` per stream.
_DEFAULT_FEED = {"stocks": "iex", "crypto": "crypto/us", "options": "indicative", "news": "news"}
_SHORT_FEEDS = {
    "crypto": {
        "us": "crypto/us",
        "us-1": "crypto/us-1",
        "eu-1": "crypto/eu-1",
        "perps": "crypto-perps/global",
    },
}

_AUTH_ERRORS = (
    "CredentialsError",
    "AuthFailedError",
    "InsufficientSubscriptionError",
    "InsufficientScopeError",
    "V2NotEnabledError",
)


class _Usage(Exception):
    """A usage error found by the command itself (exit 2)."""


class _OutputClosed(Exception):
    """The reader of our output went away (``| head``): end quietly."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``stream`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  trioalpaca stream --feed iex --trades AAPL,MSFT --quotes AAPL --bars '*'\n"
        "  trioalpaca stream --stream crypto --trades BTC/USD --limit 10\n"
        "  trioalpaca stream --emulator --trades AAPL --quotes AAPL --table\n"
        "credentials: APCA_API_KEY_ID/APCA_API_SECRET_KEY or ALPACA_API_KEY/ALPACA_API_SECRET;\n"
        "DATA_PROXY_WS redirects market data streams (emulator, relay, proxy).\n"
        "exit codes: 0 ok, 1 runtime error, 2 usage or authentication error"
    )
    where = parser.add_argument_group("what to stream")
    where.add_argument(
        "--stream",
        choices=STREAMS,
        default=None,
        help="stream family (default: the --feed's, else stocks)",
    )
    where.add_argument(
        "--feed",
        default=None,
        help="stocks: iex (default), sip, delayed_sip, boats, overnight, test; crypto: us "
        "(default), us-1, eu-1, perps; options: indicative (default), opra",
    )
    for flag, keyword in CHANNEL_FLAGS.items():
        where.add_argument(
            f"--{flag}",
            dest=f"ch_{keyword}",
            metavar="SYMBOLS",
            default=None,
            help=f"comma-separated symbols for {keyword} ('*' = all)",
        )
    out = parser.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    fmt.add_argument("--table", action="store_true", help="live per-symbol table")
    out.add_argument("--raw", action="store_true", help="wire dicts (wire keys) instead of models")
    out.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (.jsonl, .csv, .jsonl.zst, .csv.zst)"
    )
    out.add_argument("--limit", type=int, metavar="N", help="stop after N messages")
    out.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    out.add_argument(
        "--status-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between status lines on stderr when the output is not a terminal (5)",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no status or reconnect lines")
    conn = parser.add_argument_group("connection")
    conn.add_argument("--url", help="websocket URL (emulator, relay, replay); overrides the feed's")
    conn.add_argument(
        "--emulator", action="store_true", help="start an embedded emulator and stream from it"
    )
    conn.add_argument(
        "--emulator-rate",
        type=float,
        default=20.0,
        metavar="R",
        help="embedded emulator: trades + quotes per symbol per second (20)",
    )
    conn.add_argument(
        "--emulator-speed",
        type=float,
        default=1.0,
        metavar="X",
        help="embedded emulator: market time runs X times faster (60: a bar a second)",
    )
    conn.add_argument(
        "--overflow",
        choices=("block", "drop_oldest"),
        default="block",
        help="when the output falls behind: pause reading (block, default) or drop the oldest "
        "messages with a Dropped marker",
    )
    conn.add_argument(
        "--max-reconnects",
        type=int,
        default=10,
        metavar="N",
        help="give up after N consecutive failed reconnects (10; -1 = never)",
    )


# --------------------------------------------------------------------------- planning


class _Plan:
    """Everything decided from the arguments before any I/O."""

    def __init__(self, args: argparse.Namespace) -> None:
        from trioalpaca.endpoints import StreamKind, resolve_feed

        stream = args.stream
        if args.feed is not None and stream is None:
            stream = resolve_feed(_SHORT_FEEDS["crypto"].get(args.feed, args.feed)).kind.value
        stream = stream or "stocks"
        self.stream: str = stream
        self.trading = stream == "trading"
        channels: dict[str, list[str]] = {}
        for keyword in CHANNEL_FLAGS.values():
            value = getattr(args, f"ch_{keyword}")
            if value is None:
                continue
            syms = [s.strip() for s in value.split(",")]
            if not all(syms):
                raise _Usage(f"--{_flag(keyword)}: empty symbol in {value!r}")
            channels[keyword] = syms
        if self.trading:
            if args.feed not in (None, "trading"):
                raise _Usage("the trading stream has no feed; drop --feed")
            if channels:
                raise _Usage("the trading stream has no market data channels")
            self.feed = "trading"
        else:
            name = args.feed or _DEFAULT_FEED[stream]
            name = _SHORT_FEEDS.get(stream, {}).get(name, name)
            endpoint = resolve_feed(name)
            if endpoint.kind is not StreamKind(stream):
                raise _Usage(f"feed {args.feed!r} is not a {stream} feed")
            self.feed = endpoint.feed
            if not channels and stream == "news":
                channels = {"news": ["*"]}
            if not channels:
                raise _Usage(
                    "nothing to stream: name at least one channel, e.g. --trades AAPL "
                    "(see trioalpaca stream --help)"
                )
        self.channels = channels
        self.raw: bool = args.raw
        self.limit: int | None = args.limit
        if self.limit is not None and self.limit < 1:
            raise _Usage("--limit must be at least 1")
        self.duration: float | None = args.duration
        if self.duration is not None and not self.duration > 0:
            raise _Usage("--duration must be positive")
        if not args.status_interval > 0:
            raise _Usage("--status-interval must be positive")
        if args.url and args.emulator:
            raise _Usage("--url and --emulator exclude each other")
        self.output: str | None = args.output if args.output not in (None, "-") else None
        self.compressed = False
        self.format = "csv" if args.csv else "table" if args.table else "jsonl"
        if self.output is not None:
            self.format, self.compressed = _file_format(self.output, self.format)
        if self.format == "table" and self.stream in ("news", "trading"):
            raise _Usage(f"--table shows trades and quotes; the {self.stream} stream has neither")
        if self.format == "csv" and self.raw:
            raise _Usage("--raw writes wire dicts as JSON lines; CSV columns are the model fields")


def _flag(keyword: str) -> str:
    return next(f for f, k in CHANNEL_FLAGS.items() if k == keyword)


def _file_format(path: str, requested: str) -> tuple[str, bool]:
    name = path.lower()
    compressed = name.endswith(".zst")
    if compressed:
        name = name[:-4]
    ext = os.path.splitext(name)[1]
    if ext == ".csv":
        fmt = "csv"
    elif ext in (".jsonl", ".ndjson", ".json") or (compressed and ext == ""):
        fmt = "jsonl"
    else:
        raise _Usage(f"--output {path!r}: use a .jsonl, .csv, .jsonl.zst or .csv.zst file")
    if requested == "table":
        raise _Usage("--table draws on the terminal; drop --output")
    if requested == "csv" and fmt != "csv":
        raise _Usage(f"--csv with --output {path!r}: name the file .csv or .csv.zst")
    return fmt, compressed


# --------------------------------------------------------------------------- records


def _jsonable(value: Any) -> Any:
    import attrs

    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if attrs.has(type(value)):
        return {f.name: _jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    return str(value)  # Decimal and anything else: exact text


def readable(msg: Any) -> dict[str, Any]:
    """A message as a JSON-ready dict with readable keys (the ``stream`` command's JSON lines).

    ``type`` is the class name, then every attribute; each ``*_ns`` timestamp also appears as RFC
    3339 text under the name without ``_ns``. Raw dicts (``raw_data=True``) pass through.
    """
    import attrs

    from trioalpaca._time import format_rfc3339_ns

    if isinstance(msg, dict):
        return msg
    out: dict[str, Any] = {"type": type(msg).__name__}
    for field in attrs.fields(type(msg)):
        value = getattr(msg, field.name)
        out[field.name] = _jsonable(value)
        if field.name.endswith("_ns") and type(value) is int:
            try:
                out[field.name[:-3]] = format_rfc3339_ns(value)
            except ValueError:
                out[field.name[:-3]] = None
    return out


def _is_marker(msg: Any) -> str | None:
    """``"gap"`` / ``"drop"`` for markers, else ``None``."""
    from trioalpaca.models import Dropped, Reconnected

    if isinstance(msg, dict):
        t = msg.get("T")
        return "gap" if t == "reconnected" else "drop" if t == "dropped" else None
    if isinstance(msg, Reconnected):
        return "gap"
    if isinstance(msg, Dropped):
        return "drop"
    return None


def _dropped_count(msg: Any) -> int:
    return int(msg["count"] if isinstance(msg, dict) else msg.count)


def csv_columns(stream: str, channels: dict[str, list[str]]) -> list[str]:
    """The CSV header for a subscription: common columns, then each possible type's fields."""
    import attrs

    from trioalpaca.endpoints import channel_to_wire
    from trioalpaca.models import MARKET_DATA_TYPES, TradeUpdate

    wanted = {channel_to_wire(c) for c in channels}
    if "trades" in wanted and stream == "stocks":
        wanted |= {"corrections", "cancelErrors"}
    classes = (
        [TradeUpdate]
        if stream == "trading"
        else [c for c in MARKET_DATA_TYPES[stream] if c.channel in wanted]
    )
    cols = ["type", "symbol", "timestamp_ns", "timestamp"]
    for cls in classes:
        for field in attrs.fields(cls):
            names = [field.name]
            if field.name.endswith("_ns"):
                names.append(field.name[:-3])
            for name in names:
                if name not in cols:
                    cols.append(name)
    cols.append("detail")
    return cols


class _Writer:
    """Formats messages onto a text stream; raises :class:`_OutputClosed` on a broken pipe."""

    def __init__(self, fh: IO[str], fmt: str, columns: list[str], flush_each: bool) -> None:
        import csv
        import json

        self._fh = fh
        self._flush_each = flush_each
        self._dumps = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), default=str
        ).encode
        self._csv = csv.writer(fh, lineterminator="\n") if fmt == "csv" else None
        self._columns = columns
        if self._csv is not None:
            self._guard(lambda: self._csv.writerow(columns))  # type: ignore[union-attr]

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except (BrokenPipeError, ConnectionResetError):
            raise _OutputClosed from None
        except ValueError:
            if self._fh.closed:  # our stdout was closed under us
                raise _OutputClosed from None
            raise

    def write(self, msgs: list[Any]) -> None:
        if self._csv is None:
            dumps = self._dumps
            text = "".join(dumps(readable(m)) + "\n" for m in msgs)
            self._guard(lambda: self._fh.write(text))
        else:
            rows = [self._row(m) for m in msgs]
            self._guard(lambda: self._csv.writerows(rows))  # type: ignore[union-attr]
        if self._flush_each:
            self.flush()

    def _row(self, msg: Any) -> list[Any]:
        rec = readable(msg)
        if getattr(type(msg), "channel", None) == "control":  # markers, MalformedMessage, ...
            detail = {k: v for k, v in rec.items() if k != "type"}
            rec = {"type": rec["type"], "detail": self._dumps(detail)}
        return [_cell(rec.get(c), self._dumps) for c in self._columns]

    def flush(self) -> None:
        self._guard(self._fh.flush)


def _cell(value: Any, dumps: Callable[[Any], str]) -> Any:
    if isinstance(value, (list, dict)):
        return dumps(value)
    return "" if value is None else value


# --------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    import trio

    try:
        return trio.run(_until_signal, args)
    except KeyboardInterrupt:
        return 0
    finally:
        if getattr(args, "_stdout_closed", False):
            # Python flushes stdout again at exit; point it at /dev/null so that a reader that
            # went away (`| head`) causes no "Exception ignored" noise.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass


async def _until_signal(args: argparse.Namespace) -> int:
    """:func:`amain`, ended cleanly (output flushed and closed, exit 0) by SIGINT or SIGTERM."""
    import signal

    import trio

    result = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def main() -> None:
                nonlocal result
                result = await amain(args, sys.stdout, sys.stderr)
                nursery.cancel_scope.cancel()

            nursery.start_soon(main)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return result


def _say(err: IO[str], text: str) -> None:
    try:
        err.write(f"trioalpaca stream: {text}\n")
        err.flush()
    except (OSError, ValueError):
        pass


async def amain(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """The command inside ``trio.run``: plan, connect, write; returns the exit code."""
    from trioalpaca._errors import TrioAlpacaError

    try:
        plan = _Plan(args)
    except (_Usage, TrioAlpacaError) as exc:
        _say(err, f"error: {exc}")
        return 2
    try:
        return await _stream(plan, args, out, err)
    except _Usage as exc:
        _say(err, f"error: {exc}")
        return 2
    except _OutputClosed:
        if out is sys.stdout:
            args._stdout_closed = True
        return 0
    except TrioAlpacaError as exc:
        _say(err, f"error: {exc}")
        return 2 if _is_usage_or_auth(exc) else 1
    except OSError as exc:
        _say(err, f"error: {exc.strerror or exc}")
        return 1
    except BaseExceptionGroup as group:  # several errors at once: report the first
        from trioalpaca._groups import exception_leaves

        leaves = [e for e in exception_leaves(group) if isinstance(e, Exception)]
        if not leaves or any(isinstance(e, _OutputClosed) for e in leaves):
            return 0
        _say(err, f"error: {leaves[0]}")
        return 1


def _is_usage_or_auth(exc: BaseException) -> bool:
    from trioalpaca._errors import UsageError

    if isinstance(exc, UsageError) or type(exc).__name__ in _AUTH_ERRORS:
        return True
    return getattr(exc, "status_code", None) in (401, 403)  # upgrade refused


def _open_output(plan: _Plan, out: IO[str]) -> tuple[IO[str], Callable[[], None]]:
    if plan.output is None:
        return out, lambda: None
    if plan.compressed:
        import zstandard  # a dependency of trioalpaca (recordings use it too)

        raw = open(plan.output, "wb")  # noqa: SIM115 - closed by the returned closer
        writer = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)
        fh: IO[str] = io.TextIOWrapper(writer, encoding="utf-8", newline="")
    else:
        fh = open(plan.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
    return fh, fh.close


async def _stream(plan: _Plan, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    import logging
    from contextlib import AsyncExitStack

    import trio

    from trioalpaca._groups import single_error
    from trioalpaca.client import open_stream

    try:
        fh, close = _open_output(plan, out)
    except OSError as exc:  # a directory that does not exist, no permission, ...
        raise _Usage(f"cannot write {plan.output!r}: {exc.strerror or exc}") from None
    restore_logging = _configure_logging(err, args.quiet)
    try:
        async with AsyncExitStack() as stack:
            url = args.url
            key = secret = None
            if args.emulator:
                from trioalpaca.testing import open_emulator

                symbols = sorted({s for syms in plan.channels.values() for s in syms} - {"*"})
                emu = await stack.enter_async_context(
                    open_emulator(
                        symbols=[s.upper() for s in symbols],
                        rate=args.emulator_rate,
                        speed=args.emulator_speed,
                        news_interval=5.0,
                        scripted_orders=1.0 if plan.trading else None,
                    )
                )
                url = emu.url_for(plan.feed)
                if not _have_env_credentials():
                    key, secret = "emulator-key", "emulator-secret"
            stream = await stack.enter_async_context(
                open_stream(
                    key,
                    secret,
                    stream_type="trading" if plan.trading else "data",
                    feed=None if plan.trading else plan.feed,
                    url=url,
                    raw_data=plan.raw,
                    overflow=args.overflow,
                    max_reconnect_attempts=None if args.max_reconnects < 0 else args.max_reconnects,
                    **plan.channels,
                )
            )
            logging.getLogger("trioalpaca").debug("streaming from %s", stream.url)
            if plan.format == "table":
                await _table(plan, stream, out)
                return 0
            columns = csv_columns(plan.stream, plan.channels) if plan.format == "csv" else []
            writer = _Writer(fh, plan.format, columns, flush_each=plan.output is None)
            status = not args.quiet and (plan.output is not None or not _isatty(out))
            counts = _Counts()
            with single_error():
                async with trio.open_nursery() as nursery:
                    if status:
                        nursery.start_soon(_status_loop, stream, counts, err, args.status_interval)
                    with trio.move_on_after(plan.duration if plan.duration else float("inf")):
                        await _pump(stream, writer, counts, plan.limit)
                    nursery.cancel_scope.cancel()
            writer.flush()
            return 0
    finally:
        restore_logging()
        if fh is not out:
            close()


class _Counts:
    __slots__ = ("drops", "gaps", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.gaps = 0
        self.drops = 0


async def _pump(stream: Any, writer: _Writer, counts: _Counts, limit: int | None) -> None:
    import trio

    while True:
        try:
            batch = await stream.receive_batch()
        except trio.EndOfChannel:
            return
        keep: list[Any] = []
        for msg in batch:
            marker = _is_marker(msg)
            if marker == "gap":
                counts.gaps += 1
            elif marker == "drop":
                counts.drops += _dropped_count(msg)
            else:
                if limit is not None and counts.messages >= limit:
                    break
                counts.messages += 1
            keep.append(msg)
        writer.write(keep)
        if limit is not None and counts.messages >= limit:
            return


async def _status_loop(stream: Any, counts: _Counts, err: IO[str], interval: float) -> None:
    import trio

    while True:
        await trio.sleep(interval)
        m = stream.get_metrics()
        _say(
            err,
            f"{counts.messages} messages, {m['messages_per_second']:.1f}/s, "
            f"{counts.gaps} gap(s), {counts.drops} dropped, {m['state']}",
        )


def _have_env_credentials() -> bool:
    from trioalpaca._credentials import env_credentials

    return env_credentials() is not None


def _isatty(fh: IO[str]) -> bool:
    try:
        return fh.isatty()
    except (AttributeError, ValueError):
        return False


def _configure_logging(err: IO[str], quiet: bool) -> Callable[[], None]:
    """Reconnect warnings as one line each on stderr (errors are reported by the command
    itself); returns the function that restores the previous logging setup."""
    import logging

    log = logging.getLogger("trioalpaca")
    saved = (log.level, log.propagate)
    log.propagate = False
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("trioalpaca stream: %(message)s"))
    handler.addFilter(lambda record: record.levelno < logging.ERROR)
    if quiet:
        log.setLevel(logging.CRITICAL + 1)
    else:
        log.addHandler(handler)
        log.setLevel(logging.WARNING)

    def restore() -> None:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]

    return restore


async def _table(plan: _Plan, stream: Any, out: IO[str]) -> None:
    """The live per-symbol view, drawn with ``trioalpaca demo``'s renderer."""
    import trio

    from trioalpaca import _demo

    explicit = [s.upper() for syms in plan.channels.values() for s in syms if s != "*"]
    views: dict[str, Any] = {s: _demo._SymbolView() for s in dict.fromkeys(explicit)}
    dynamic = any("*" in syms for syms in plan.channels.values())
    events: list[str] = []
    tty = _isatty(out)
    title = f"trioalpaca stream — {plan.feed} at {stream.url} (Ctrl-C to quit)"

    async def consume() -> None:
        async for msg in stream:
            if dynamic and len(views) < _TABLE_ROWS:
                sym = msg.get("S") if isinstance(msg, dict) else getattr(msg, "symbol", None)
                if isinstance(sym, str) and sym not in views:
                    views[sym] = _demo._SymbolView()
            _demo._apply(msg, views, events, plan.raw)

    start = trio.current_time()
    printed = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        with trio.move_on_after(plan.duration if plan.duration else float("inf")):
            while True:
                await trio.sleep(0.5 if tty else 1.0)
                now = trio.current_time()
                metrics = stream.get_metrics()
                try:
                    if tty:
                        _demo._draw(now - start, metrics, views, events, now, title=title)
                    else:
                        for event in events[printed:]:
                            print(f"event: {event}", file=out, flush=True)
                        printed = len(events)
                        _demo._line(now - start, metrics, views, now, file=out)
                except (BrokenPipeError, ConnectionResetError):
                    raise _OutputClosed from None
        nursery.cancel_scope.cancel()


_TABLE_ROWS = 30
