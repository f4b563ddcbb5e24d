"""A deterministic synthetic market for the emulator.

Pure code: no trio, no sockets, no clocks. :class:`Market` produces canonical wire dicts (the map
exactly as on the wire, every timestamp an ``int`` of nanoseconds since the epoch) for one *family*
of streams (stocks, the ``FAKEPACA`` test feed, crypto, crypto perpetuals, options, news) as market
time advances.

Everything is derived from per-symbol random generators seeded with ``(seed, family, symbol)``, and
events are produced strictly in market-time order, so the output for a seed does not depend on how
often :meth:`Market.advance` is called.

Bars are aggregated from the trades the market emitted: a minute bar (``b``) covers the trades whose
timestamp falls in that minute; a few trades arrive *late* (timestamp in the previous minute, sent
during the first half of the next one) and produce an updated bar (``u``) for that minute just after
the half-minute mark; daily bars (``d``) are cumulative for the UTC day and sent at every minute
mark. Corrections and cancel errors refer to earlier trades but do not change the bars.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "DEFAULT_SYMBOLS",
    "FAMILIES",
    "Market",
    "MarketConfig",
    "family_of_symbol",
    "is_occ_symbol",
]

NS = 1_000_000_000
MINUTE_NS = 60 * NS
DAY_NS = 86_400 * NS

#: Every market family the emulator simulates.
FAMILIES = ("stocks", "test", "crypto", "perps", "options", "news")

#: Default symbol universe per family (what ``"*"`` subscriptions receive).
DEFAULT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "stocks": ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY"),
    "test": ("FAKEPACA",),
    "crypto": ("BTC/USD", "ETH/USD", "SOL/USD"),
    "perps": ("BTC-PERP", "ETH-PERP"),
    "options": ("AAPL250117C00150000", "AAPL250117P00150000", "SPY250321C00500000"),
    "news": ("AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY"),
}

_OCC = re.compile(r"^[A-Z]{1,6}\d{6}[CP]\d{8}$")
_STOCK_EXCHANGES = ("V", "P", "Q", "N", "K", "Z", "D")
_OPTION_EXCHANGES = ("A", "B", "C", "H", "I", "M", "N", "Q", "X", "Z")
_SIZES = (1, 1, 5, 10, 10, 50, 100, 100, 100, 200, 300, 500)
_HEADLINES = (
    "{s} shares move after analyst update",
    "{s} announces quarterly dividend",
    "Options traders eye {s} ahead of earnings",
    "{s} expands partnership in new markets",
    "Market wrap: {s} among notable movers",
)


def is_occ_symbol(symbol: str) -> bool:
    """True for an OCC option symbol such as ``AAPL250117C00150000``."""
    return _OCC.match(symbol) is not None


def family_of_symbol(symbol: str) -> str:
    """Guess the family of a symbol: ``crypto`` (``BTC/USD``), ``perps`` (``BTC-PERP``), ``options``
    (OCC symbols) or ``stocks``."""
    if "/" in symbol:
        return "crypto"
    if symbol.endswith("-PERP"):
        return "perps"
    if is_occ_symbol(symbol):
        return "options"
    return "stocks"


@attrs.frozen
class MarketConfig:
    """Parameters of the synthetic market.

    ``rate`` is the mean number of trades plus quotes per symbol per **wall-clock** second,
    independent of ``speed``; ``speed`` is how many times faster than real time market time runs
    (``60`` closes a minute bar every second). ``rate=0`` turns the generated market data off (order
    book snapshots and injected messages still flow). ``news_interval`` is the mean number of market
    seconds between news items.
    """

    seed: int = 0
    rate: float = 5.0
    speed: float = 1.0
    symbols: tuple[str, ...] = ()
    news_interval: float = 30.0
    status_interval: float = 120.0
    late_trade_probability: float = 0.03
    correction_probability: float = 0.01
    cancel_probability: float = 0.01

    def universe(self, family: str) -> tuple[str, ...]:
        """The symbols ``"*"`` stands for in ``family``."""
        if family == "test":
            return DEFAULT_SYMBOLS["test"]
        wanted = family if family != "news" else "stocks"
        chosen = tuple(s for s in self.symbols if family_of_symbol(s) == wanted)
        return chosen or DEFAULT_SYMBOLS[family]


Event = tuple[str, str, dict[str, Any]]
"""One generated message: ``(wire channel, symbol, canonical wire dict)``; news items have symbol
``""`` (route them by their ``symbols`` list)."""


@attrs.define
class _Agg:
    open: float
    high: float
    low: float
    close: float
    open_t: int
    close_t: int
    volume: float = 0.0
    count: int = 0
    notional: float = 0.0

    def add(self, price: float, size: float, t: int) -> None:
        """Add a trade; open/close follow the trade timestamps (a late print can be the open)."""
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        if t < self.open_t:
            self.open, self.open_t = price, t
        if t >= self.close_t:
            self.close, self.close_t = price, t
        self.volume += size
        self.count += 1
        self.notional += price * size


def _new_agg(price: float, size: float, t: int) -> _Agg:
    agg = _Agg(price, price, price, price, t, t)
    agg.volume, agg.count, agg.notional = size, 1, price * size
    return agg


@attrs.define
class _Symbol:
    name: str
    rng: random.Random
    price: float
    tick: float
    next_id: int = 1
    halted: bool = False
    minutes: dict[int, _Agg] = attrs.Factory(dict)
    dirty: set[int] = attrs.Factory(set)
    day: int = -1
    daily: _Agg | None = None
    recent: list[dict[str, Any]] = attrs.Factory(list)
    bids: dict[float, float] = attrs.Factory(dict)
    asks: dict[float, float] = attrs.Factory(dict)


class Market:
    """Deterministic market for one family.

    Call :meth:`advance` with increasing market times; it returns the events due up to then, in
    timestamp order of generation. :meth:`add_symbols` starts simulating further symbols (explicit
    subscriptions outside the universe). :meth:`orderbook_snapshot` gives the current crypto book.
    """

    def __init__(self, family: str, config: MarketConfig, start_ns: int) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown market family {family!r}; valid: {', '.join(FAMILIES)}")
        self.family = family
        self.config = config
        self.now_ns = start_ns
        self._symbols: dict[str, _Symbol] = {}
        self._heap: list[tuple[int, int, str, str]] = []
        self._seq = 0
        self._news_id = 1
        self._rng = random.Random(f"{config.seed}:{family}:*")
        self.universe = config.universe(family)
        #: Per-symbol trades emitted, keyed by minute start (ns): ``(price, size, t)``; used by
        #: tests.
        self.sent_trades = 0
        minute = (start_ns // MINUTE_NS + 1) * MINUTE_NS
        if family in ("stocks", "test", "crypto"):
            self._push(minute, "minute", "")
        if family == "news" and config.news_interval > 0 < config.rate:
            self._push(start_ns + self._exp(config.news_interval), "news", "")
        self.add_symbols(self.universe)

    # ------------------------------------------------------------------ scheduling
    def _push(self, t: int, what: str, symbol: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, what, symbol))

    def _exp(self, mean_s: float, rng: random.Random | None = None) -> int:
        r = rng or self._rng
        return max(1, int(r.expovariate(1.0 / mean_s) * NS))

    @property
    def _mean_gap_s(self) -> float:
        """Mean market seconds between two trade-or-quote events of one symbol."""
        return self.config.speed / self.config.rate

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol simulated so far."""
        return tuple(self._symbols)

    def add_symbols(self, symbols: Iterable[str]) -> None:
        """Start simulating ``symbols`` (unknown ones get their own deterministic price path)."""
        for name in symbols:
            if name == "*" or name in self._symbols or self.family == "news":
                continue
            rng = random.Random(f"{self.config.seed}:{self.family}:{name}")
            if self.family == "crypto" or self.family == "perps":
                price = round(rng.uniform(20, 60000), 2)
                tick = 0.01 if price < 1000 else 0.5
            elif self.family == "options":
                price = round(rng.uniform(0.5, 20), 2)
                tick = 0.01
            else:
                price = round(rng.uniform(20, 500), 2)
                tick = 0.01
            sym = _Symbol(name, rng, price, tick)
            self._symbols[name] = sym
            t = self.now_ns
            if self.config.rate > 0:
                self._push(t + self._exp(self._mean_gap_s, rng), "tq", name)
            if (
                self.family in ("stocks", "test")
                and self.config.status_interval > 0 < self.config.rate
            ):
                self._push(t + self._exp(self.config.status_interval, rng), "status", name)
            if self.family == "crypto":
                self._init_book(sym)
                if self.config.rate > 0:
                    self._push(t + self._exp(self._mean_gap_s * 2, rng), "book", name)
            if self.family == "perps" and self.config.rate > 0:
                self._push(t + self._exp(self._mean_gap_s * 2, rng), "pricing", name)

    def retain(self, wanted: Iterable[str]) -> int:
        """Stop simulating the symbols outside the universe that are not in ``wanted``.

        The emulator calls this when a connection closes, so symbols only a departed client
        asked for stop costing work. A symbol added again later restarts its (deterministic)
        price path. Returns how many symbols were dropped.
        """
        keep = set(wanted) | set(self.universe)
        gone = [name for name in self._symbols if name not in keep]
        if not gone:
            return 0
        for name in gone:
            del self._symbols[name]
        dropped = set(gone)
        self._heap = [entry for entry in self._heap if entry[3] not in dropped]
        heapq.heapify(self._heap)
        return len(gone)

    def fast_forward(self, until_ns: int) -> None:
        """Skip market time to ``until_ns`` without generating messages (nobody is listening).

        Prices keep their last value, pending bar aggregates are discarded (no bar will cover the
        skipped time) and halted symbols resume silently; the recurring events are rescheduled
        after ``until_ns``.
        """
        if until_ns <= self.now_ns:
            return
        old, self._heap = self._heap, []
        gap = self._mean_gap_s if self.config.rate > 0 else 0.0
        for t, seq, what, name in old:
            if t > until_ns:
                heapq.heappush(self._heap, (t, seq, what, name))
                continue
            sym = self._symbols.get(name)
            if what == "minute":
                self._push((until_ns // MINUTE_NS + 1) * MINUTE_NS, "minute", "")
            elif what == "half":
                continue
            elif what in ("tq", "book") and sym is not None:
                mean = gap if what == "tq" else gap * 2
                self._push(until_ns + self._exp(mean, sym.rng), what, name)
            elif what == "pricing" and sym is not None:
                self._push(until_ns + self._exp(gap * 2, sym.rng), what, name)
            elif what in ("status", "resume") and sym is not None:
                sym.halted = False
                self._push(
                    until_ns + self._exp(self.config.status_interval, sym.rng), "status", name
                )
            elif what == "news":
                self._push(until_ns + self._exp(self.config.news_interval), "news", "")
        for sym in self._symbols.values():
            sym.minutes.clear()
            sym.dirty.clear()
            sym.recent.clear()
            if sym.day != (until_ns // DAY_NS) * DAY_NS:
                sym.daily = None
        self.now_ns = until_ns

    def next_event_ns(self) -> int | None:
        """Market time of the next scheduled event, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def advance(self, until_ns: int) -> list[Event]:
        """Generate every event due at or before ``until_ns`` (market time, ns)."""
        out: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= until_ns:
            t, _, what, name = heapq.heappop(heap)
            self.now_ns = t
            if what == "tq":
                sym = self._symbols[name]
                if not sym.halted:
                    if sym.rng.random() < 0.4:
                        self._trade(sym, t, out)
                    else:
                        self._quote(sym, t, out)
                self._push(t + self._exp(self._mean_gap_s, sym.rng), what, name)
            elif what == "minute":
                self._minute(t, out)
                self._push(t + MINUTE_NS // 2, "half", "")
                self._push(t + MINUTE_NS, "minute", "")
            elif what == "half":
                self._half(t, out)
            elif what == "status":
                self._status(self._symbols[name], t, out)
            elif what == "book":
                sym = self._symbols[name]
                self._book_delta(sym, t, out)
                self._push(t + self._exp(self._mean_gap_s * 2, sym.rng), what, name)
            elif what == "pricing":
                sym = self._symbols[name]
                self._pricing(sym, t, out)
                self._push(t + self._exp(self._mean_gap_s * 2, sym.rng), what, name)
            elif what == "resume":
                self._resume(self._symbols[name], t, out)
            elif what == "news":
                self._news(t, out)
                self._push(t + self._exp(self.config.news_interval), "news", "")
        self.now_ns = max(self.now_ns, until_ns)
        return out

    # ------------------------------------------------------------------ price path
    def _step(self, sym: _Symbol) -> float:
        vol = 0.0008 if self.family != "options" else 0.004
        p = sym.price * math.exp(vol * sym.rng.gauss(0.0, 1.0))
        p = max(sym.tick, round(round(p / sym.tick) * sym.tick, 2))
        sym.price = p
        return p

    # ------------------------------------------------------------------ trades / quotes
    def _trade(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        rng = sym.rng
        price = self._step(sym)
        fam = self.family
        minute = (t // MINUTE_NS) * MINUTE_NS
        ts = t
        if (
            fam in ("stocks", "test", "crypto")
            and t - minute < MINUTE_NS // 2
            and (minute - MINUTE_NS) in sym.minutes
            and rng.random() < self.config.late_trade_probability
        ):
            # a late print: belongs to the previous (already published) minute, after its first
            # trade (never inside time skipped by fast_forward)
            lo = sym.minutes[minute - MINUTE_NS].open_t
            ts = lo + rng.randrange(minute - lo)
        tid = sym.next_id
        sym.next_id += 1
        msg: dict[str, Any]
        size: float
        if fam == "crypto":
            size = round(rng.uniform(0.0001, 2.0), 4)
            msg = {"T": "t", "S": sym.name, "p": price, "s": size, "t": ts, "i": tid}
            msg["tks"] = "B" if rng.random() < 0.5 else "S"
        elif fam == "options":
            size = rng.choice((1, 1, 2, 5, 10, 20))
            msg = {"T": "t", "S": sym.name, "t": ts, "x": rng.choice(_OPTION_EXCHANGES)}
            msg.update({"p": price, "s": size, "c": rng.choice(("I", "a", "f", "S"))})
        elif fam == "perps":
            size = round(rng.uniform(0.001, 5.0), 3)
            msg = {"T": "t", "S": sym.name, "p": price, "s": size, "t": ts, "i": tid}
            msg["tks"] = "B" if rng.random() < 0.5 else "S"
        else:
            size = rng.choice(_SIZES)
            msg = {"T": "t", "S": sym.name, "i": tid, "x": rng.choice(_STOCK_EXCHANGES)}
            msg.update({"p": price, "s": size, "c": ["@"] if size >= 100 else ["@", "I"]})
            msg.update({"t": ts, "z": self._tape(sym.name)})
        out.append(("trades", sym.name, msg))
        self.sent_trades += 1
        if fam in ("stocks", "test", "crypto"):
            self._aggregate(sym, ts, price, size)
        if fam in ("stocks", "test"):
            sym.recent.append(msg)
            del sym.recent[:-20]
            if len(sym.recent) > 1 and rng.random() < self.config.correction_probability:
                self._correction(sym, t, out)
            elif len(sym.recent) > 1 and rng.random() < self.config.cancel_probability:
                self._cancel(sym, t, out)

    def _tape(self, name: str) -> str:
        return (
            "C"
            if name in ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA")
            else "A"
            if len(name) < 4
            else "B"
        )

    def _quote(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        rng = sym.rng
        price = sym.price
        spread_ticks = rng.choice((1, 1, 2, 3, 5))
        bid = max(sym.tick, round(price - sym.tick * rng.randint(0, spread_ticks), 2))
        ask = round(bid + sym.tick * spread_ticks, 2)
        if ask <= bid:
            ask = round(bid + sym.tick, 2)
        fam = self.family
        msg: dict[str, Any]
        if fam == "crypto" or fam == "perps":
            msg = {"T": "q", "S": sym.name, "bp": bid, "bs": round(rng.uniform(0.01, 5), 4)}
            msg.update({"ap": ask, "as": round(rng.uniform(0.01, 5), 4), "t": t})
        elif fam == "options":
            msg = {"T": "q", "S": sym.name, "t": t, "bx": rng.choice(_OPTION_EXCHANGES)}
            msg.update({"bp": bid, "bs": rng.randint(1, 200), "ax": rng.choice(_OPTION_EXCHANGES)})
            msg.update({"ap": ask, "as": rng.randint(1, 200), "c": "A"})
        else:
            msg = {"T": "q", "S": sym.name, "bx": rng.choice(_STOCK_EXCHANGES), "bp": bid}
            msg.update({"bs": rng.randint(1, 10), "ax": rng.choice(_STOCK_EXCHANGES), "ap": ask})
            msg.update({"as": rng.randint(1, 10), "c": ["R"], "t": t, "z": self._tape(sym.name)})
        out.append(("quotes", sym.name, msg))

    def _correction(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        orig = sym.rng.choice(sym.recent[:-1])
        new_price = round(orig["p"] + sym.tick * sym.rng.choice((-2, -1, 1, 2)), 2)
        msg = {"T": "c", "S": sym.name, "x": orig["x"], "oi": orig["i"], "op": orig["p"]}
        msg.update(
            {"os": orig["s"], "oc": orig["c"], "ci": sym.next_id, "cp": max(0.01, new_price)}
        )
        msg.update({"cs": orig["s"], "cc": orig["c"], "z": orig["z"], "t": t})
        sym.next_id += 1
        out.append(("corrections", sym.name, msg))

    def _cancel(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        orig = sym.rng.choice(sym.recent[:-1])
        msg = {"T": "x", "S": sym.name, "i": orig["i"], "x": orig["x"], "p": orig["p"]}
        msg.update({"s": orig["s"], "a": "C", "z": orig["z"], "t": t})
        out.append(("cancelErrors", sym.name, msg))

    # ------------------------------------------------------------------ bars
    def _aggregate(self, sym: _Symbol, ts: int, price: float, size: float) -> None:
        minute = (ts // MINUTE_NS) * MINUTE_NS
        agg = sym.minutes.get(minute)
        if agg is None:
            sym.minutes[minute] = _new_agg(price, size, ts)
        else:
            agg.add(price, size, ts)
        if minute < (self.now_ns // MINUTE_NS) * MINUTE_NS:
            sym.dirty.add(minute)
        day = (ts // DAY_NS) * DAY_NS
        if day != sym.day or sym.daily is None:
            sym.day = day
            sym.daily = _new_agg(price, size, ts)
        else:
            sym.daily.add(price, size, ts)

    def _bar(self, kind: str, name: str, t: int, agg: _Agg) -> dict[str, Any]:
        crypto = self.family == "crypto"
        vol: float = round(agg.volume, 8) if crypto else int(agg.volume)
        vwap = agg.notional / agg.volume if agg.volume else 0.0
        return {
            "T": kind,
            "S": name,
            "o": agg.open,
            "h": agg.high,
            "l": agg.low,
            "c": agg.close,
            "v": vol,
            "t": t,
            "n": agg.count,
            "vw": round(vwap, 6),
        }

    def _minute(self, t: int, out: list[Event]) -> None:
        prev = t - MINUTE_NS
        for sym in self._symbols.values():
            agg = sym.minutes.get(prev)
            if agg is not None:
                out.append(("bars", sym.name, self._bar("b", sym.name, prev, agg)))
            if sym.daily is not None:
                out.append(("dailyBars", sym.name, self._bar("d", sym.name, sym.day, sym.daily)))
            for old in [m for m in sym.minutes if m < prev]:
                del sym.minutes[old]
            if self.family in ("stocks", "test") and self.config.rate > 0:
                band = round(sym.price * 0.05, 2)
                msg = {"T": "l", "S": sym.name, "u": round(sym.price + band, 2)}
                msg.update({"d": round(max(0.01, sym.price - band), 2), "i": "B", "t": t})
                msg["z"] = self._tape(sym.name)
                out.append(("lulds", sym.name, msg))
                if sym.rng.random() < 0.2:
                    imb = {"T": "i", "S": sym.name, "p": sym.price, "z": self._tape(sym.name)}
                    imb["t"] = t
                    out.append(("imbalances", sym.name, imb))

    def _half(self, t: int, out: list[Event]) -> None:
        minute = (t // MINUTE_NS) * MINUTE_NS - MINUTE_NS
        for sym in self._symbols.values():
            if minute in sym.dirty:
                out.append(
                    ("updatedBars", sym.name, self._bar("u", sym.name, minute, sym.minutes[minute]))
                )
            sym.dirty.clear()

    # ------------------------------------------------------------------ statuses
    def _status(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        sym.halted = True
        msg: dict[str, Any] = {"T": "s", "S": sym.name, "sc": "H", "sm": "Trading Halt", "rc": "T1"}
        msg.update({"rm": "Halt News Pending", "t": t, "z": self._tape(sym.name)})
        out.append(("statuses", sym.name, msg))
        self._push(t + int(sym.rng.uniform(2, 10) * NS), "resume", sym.name)

    def _resume(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        sym.halted = False
        msg: dict[str, Any] = {
            "T": "s",
            "S": sym.name,
            "sc": "T",
            "sm": "Trading Resumption",
            "rc": "T2",
        }
        msg.update({"rm": "Halt News Dissemination", "t": t, "z": self._tape(sym.name)})
        out.append(("statuses", sym.name, msg))
        self._push(t + self._exp(self.config.status_interval, sym.rng), "status", sym.name)

    # ------------------------------------------------------------------ crypto books
    def _init_book(self, sym: _Symbol) -> None:
        for i in range(1, 11):
            sym.bids[round(sym.price - i * sym.tick, 2)] = round(sym.rng.uniform(0.01, 3), 4)
            sym.asks[round(sym.price + i * sym.tick, 2)] = round(sym.rng.uniform(0.01, 3), 4)

    def orderbook_snapshot(self, symbol: str) -> dict[str, Any] | None:
        """The full current book of ``symbol`` as an ``r: true`` orderbook message (crypto only)."""
        sym = self._symbols.get(symbol)
        if sym is None or self.family != "crypto":
            return None
        return {
            "T": "o",
            "S": symbol,
            "t": self.now_ns,
            "b": [{"p": p, "s": s} for p, s in sorted(sym.bids.items(), reverse=True)],
            "a": [{"p": p, "s": s} for p, s in sorted(sym.asks.items())],
            "r": True,
        }

    def _book_delta(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        rng = sym.rng
        mid = sym.price
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        # levels crossing the current price are deleted
        for p in [p for p in sym.bids if p >= mid]:
            del sym.bids[p]
            bids[p] = 0.0
        for p in [p for p in sym.asks if p <= mid]:
            del sym.asks[p]
            asks[p] = 0.0
        for _ in range(rng.randint(1, 3)):
            side, book, sign = rng.choice(((bids, sym.bids, -1), (asks, sym.asks, 1)))
            roll = rng.random()
            if roll < 0.25 and len(book) > 3:
                p = rng.choice(sorted(book))
                del book[p]
                side[p] = 0.0
            else:
                p = round(mid + sign * sym.tick * rng.randint(1, 12), 2)
                s = round(rng.uniform(0.01, 3), 4)
                book[p] = s
                side[p] = s
        # keep both sides non-empty
        if not sym.bids:
            p = round(mid - sym.tick, 2)
            sym.bids[p] = bids[p] = 0.5
        if not sym.asks:
            p = round(mid + sym.tick, 2)
            sym.asks[p] = asks[p] = 0.5
        msg = {
            "T": "o",
            "S": sym.name,
            "t": t,
            "b": [{"p": p, "s": s} for p, s in sorted(bids.items(), reverse=True)],
            "a": [{"p": p, "s": s} for p, s in sorted(asks.items())],
            "r": False,
        }
        out.append(("orderbooks", sym.name, msg))

    # ------------------------------------------------------------------ perps / news
    def _pricing(self, sym: _Symbol, t: int, out: list[Event]) -> None:
        rng = sym.rng
        price = self._step(sym)
        funding = ((t // (8 * 3600 * NS)) + 1) * 8 * 3600 * NS
        msg = {
            "T": "p",
            "S": sym.name,
            "x": "ERSX",
            "ip": round(price * (1 + rng.gauss(0, 1e-4)), 2),
        }
        msg.update({"mp": price, "fr": round(rng.uniform(-1e-4, 1e-4), 8)})
        msg.update({"oi": round(rng.uniform(1e3, 1e5), 2), "t": t, "ft": funding})
        out.append(("pricing", sym.name, msg))

    def _news(self, t: int, out: list[Event]) -> None:
        rng = self._rng
        universe: Sequence[str] = self.universe
        k = rng.randint(1, min(2, len(universe)))
        symbols = sorted(rng.sample(list(universe), k))
        nid = self._news_id
        self._news_id += 1
        headline = rng.choice(_HEADLINES).format(s=symbols[0])
        msg = {
            "T": "n",
            "id": 40_000_000 + nid,
            "headline": headline,
            "summary": f"Synthetic news item {nid} about {', '.join(symbols)}.",
            "author": "Emulator Newsroom",
            "created_at": t,
            "updated_at": t,
            "content": f"<p>{headline}.</p>",
            "url": f"https://example.com/news/{nid}",
            "symbols": symbols,
            "source": "benzinga",
        }
        out.append(("news", "", msg))
