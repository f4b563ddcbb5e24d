"""Typed, immutable values for every message on Alpaca's real-time streams.

Every message class is a frozen, slotted attrs class with:

* ``wire_type`` -- the ``T`` code on the wire (``"t"``, ``"q"``, ...; for trading-stream messages,
  which carry no ``T``, the ``stream`` name; for events trioalpaca makes up locally, a name that the
  server never sends);
* ``channel`` -- the wire channel it belongs to (``"trades"``, ``"dailyBars"``, ...; ``"control"``
  for control events);
* ``from_wire(d)`` -- build from a *canonical wire dict* (the map exactly as on the wire, with
  every timestamp as ``int`` nanoseconds since the epoch; RFC 3339 strings and datetimes are
  accepted too).
  Unknown keys are ignored so newer server payloads keep decoding;
* ``to_wire()`` -- the canonical wire dict, ``T`` first.

Timestamps are ``int`` nanoseconds since the epoch (UTC) and are never truncated; the ``timestamp``
properties give a UTC :class:`~datetime.datetime` (microsecond precision) for convenience.

The same ``T`` code means different things on different endpoints (``"t"`` is :class:`Trade` on
stock feeds, :class:`CryptoTrade` on crypto and :class:`OptionTrade` on options): pick the class by
endpoint, as the codec (``trioalpaca._codec.Decoder``) does.

This module imports neither trio nor msgpack nor anything that touches sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import attrs

from trioalpaca._time import datetime_to_ns, format_rfc3339_ns, ns_to_datetime, parse_rfc3339_ns

if TYPE_CHECKING:
    from typing import TypeAlias

    from typing_extensions import Self

__all__ = [
    "CHANNEL_BY_WIRE_TYPE",
    "LULD",
    "MARKET_DATA_TYPES",
    "Authenticated",
    "Bar",
    "Connected",
    "CryptoBar",
    "CryptoDailyBar",
    "CryptoPricing",
    "CryptoQuote",
    "CryptoTrade",
    "CryptoUpdatedBar",
    "DailyBar",
    "Dropped",
    "Imbalance",
    "Listening",
    "Message",
    "News",
    "OptionQuote",
    "OptionTrade",
    "Orderbook",
    "OrderbookLevel",
    "Quote",
    "Reconnected",
    "ServerError",
    "SubscriptionChanged",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradeUpdate",
    "TradingStatus",
    "UnknownMessage",
    "UpdatedBar",
]


def _ts(value: Any) -> int:
    """Timestamp field from a wire dict: int ns, RFC 3339 text or a datetime."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        return parse_rfc3339_ns(value)
    if isinstance(value, datetime):
        return datetime_to_ns(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"expected a timestamp (int nanoseconds or RFC 3339 text), got {value!r:.60}")


def _opt_ts(value: Any) -> int | None:
    return None if value is None else _ts(value)


def _strs(value: Any) -> tuple[str, ...]:
    """A list of strings from the wire (``None`` means empty)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"expected a list of strings, got {value!r:.60}")
    return tuple(value)


def _opt_decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r:.60}") from None
    if isinstance(value, float):
        return Decimal(repr(value))
    raise TypeError(f"expected a decimal number, got {value!r:.60}")


def _opt_decimal_wire(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class _Timestamped:
    """Mixin: ``timestamp`` property for classes with a ``timestamp_ns`` field."""

    __slots__ = ()
    timestamp_ns: int

    @property
    def timestamp(self) -> datetime:
        """``timestamp_ns`` as an aware UTC datetime (floored to the microsecond)."""
        return ns_to_datetime(self.timestamp_ns)


# --------------------------------------------------------------------------------------- stocks


class _BarWire(_Timestamped):
    """Mixin: the wire form shared by stock and crypto bars (same keys, different volume type)."""

    __slots__ = ()
    wire_type: ClassVar[str]
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float

    if TYPE_CHECKING:  # attrs writes the real __init__ on each concrete class

        def __init__(
            self,
            symbol: str,
            open: float,
            high: float,
            low: float,
            close: float,
            volume: Any,
            trade_count: int,
            vwap: float,
            timestamp_ns: int,
        ) -> None: ...

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], d["o"], d["h"], d["l"], d["c"], d["v"], d.get("n", 0), d.get("vw", 0.0),
            _ts(d["t"]),
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "o": self.open,
            "h": self.high,
            "l": self.low,
            "c": self.close,
            "v": self.volume,
            "n": self.trade_count,
            "vw": self.vwap,
            "t": self.timestamp_ns,
        }


@attrs.frozen
class Trade(_Timestamped):
    """A stock trade (``T`` = ``"t"``, channel ``trades``)."""

    wire_type: ClassVar[str] = "t"
    channel: ClassVar[str] = "trades"

    symbol: str
    """Ticker (``S``)."""
    trade_id: int
    """Trade id (``i``), unique per exchange and symbol."""
    exchange: str
    """Exchange code (``x``)."""
    price: float
    """Trade price (``p``)."""
    size: int
    """Trade size in shares (``s``)."""
    conditions: tuple[str, ...]
    """Trade condition codes (``c``)."""
    timestamp_ns: int
    """Trade time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape ``A``/``B``/``C`` (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], d["i"], d["x"], d["p"], d["s"], _strs(d.get("c")), _ts(d["t"]), d.get("z", "")
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "i": self.trade_id,
            "x": self.exchange,
            "p": self.price,
            "s": self.size,
            "c": list(self.conditions),
            "t": self.timestamp_ns,
            "z": self.tape,
        }


@attrs.frozen
class Quote(_Timestamped):
    """A stock NBBO / exchange quote (``T`` = ``"q"``, channel ``quotes``)."""

    wire_type: ClassVar[str] = "q"
    channel: ClassVar[str] = "quotes"

    symbol: str
    """Ticker (``S``)."""
    bid_exchange: str
    """Bid exchange code (``bx``)."""
    bid_price: float
    """Bid price (``bp``)."""
    bid_size: int
    """Bid size in round lots (``bs``)."""
    ask_exchange: str
    """Ask exchange code (``ax``)."""
    ask_price: float
    """Ask price (``ap``)."""
    ask_size: int
    """Ask size in round lots (``as``)."""
    conditions: tuple[str, ...]
    """Quote condition codes (``c``)."""
    timestamp_ns: int
    """Quote time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"],
            d["bx"],
            d["bp"],
            d["bs"],
            d["ax"],
            d["ap"],
            d["as"],
            _strs(d.get("c")),
            _ts(d["t"]),
            d.get("z", ""),
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "bx": self.bid_exchange,
            "bp": self.bid_price,
            "bs": self.bid_size,
            "ax": self.ask_exchange,
            "ap": self.ask_price,
            "as": self.ask_size,
            "c": list(self.conditions),
            "t": self.timestamp_ns,
            "z": self.tape,
        }


@attrs.frozen
class Bar(_BarWire):
    """A stock minute bar (``T`` = ``"b"``, channel ``bars``).

    :class:`DailyBar` and :class:`UpdatedBar` are subclasses with the same fields; compare
    ``type(bar)`` (or use ``isinstance`` with the subclass) to tell them apart.
    """

    wire_type: ClassVar[str] = "b"
    channel: ClassVar[str] = "bars"

    symbol: str
    """Ticker (``S``)."""
    open: float
    """Open price (``o``)."""
    high: float
    """High price (``h``)."""
    low: float
    """Low price (``l``)."""
    close: float
    """Close price (``c``)."""
    volume: int
    """Volume in shares (``v``)."""
    trade_count: int
    """Number of trades (``n``)."""
    vwap: float
    """Volume-weighted average price (``vw``)."""
    timestamp_ns: int
    """Bar start time, nanoseconds since the epoch (``t``)."""


@attrs.frozen
class DailyBar(Bar):
    """A stock daily bar, cumulative for the day (``T`` = ``"d"``, channel ``dailyBars``)."""

    wire_type: ClassVar[str] = "d"
    channel: ClassVar[str] = "dailyBars"


@attrs.frozen
class UpdatedBar(Bar):
    """A corrected stock minute bar after late trades (``T`` = ``"u"``, channel ``updatedBars``)."""

    wire_type: ClassVar[str] = "u"
    channel: ClassVar[str] = "updatedBars"


@attrs.frozen
class TradingStatus(_Timestamped):
    """A trading status change, e.g. a halt (``T`` = ``"s"``, channel ``statuses``)."""

    wire_type: ClassVar[str] = "s"
    channel: ClassVar[str] = "statuses"

    symbol: str
    """Ticker (``S``)."""
    status_code: str
    """Status code (``sc``)."""
    status_message: str
    """Status message (``sm``)."""
    reason_code: str
    """Reason code (``rc``)."""
    reason_message: str
    """Reason message (``rm``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], d.get("sc", ""), d.get("sm", ""), d.get("rc", ""), d.get("rm", ""),
            _ts(d["t"]), d.get("z", ""),
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "sc": self.status_code,
            "sm": self.status_message,
            "rc": self.reason_code,
            "rm": self.reason_message,
            "t": self.timestamp_ns,
            "z": self.tape,
        }


@attrs.frozen
class LULD(_Timestamped):
    """Limit up / limit down price bands (``T`` = ``"l"``, channel ``lulds``)."""

    wire_type: ClassVar[str] = "l"
    channel: ClassVar[str] = "lulds"

    symbol: str
    """Ticker (``S``)."""
    limit_up: float
    """Limit-up price (``u``)."""
    limit_down: float
    """Limit-down price (``d``)."""
    indicator: str
    """Indicator (``i``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["u"], d["d"], d.get("i", ""), _ts(d["t"]), d.get("z", ""))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "u": self.limit_up,
            "d": self.limit_down,
            "i": self.indicator,
            "t": self.timestamp_ns,
            "z": self.tape,
        }


@attrs.frozen
class TradeCorrection(_Timestamped):
    """A correction of an earlier trade (``T`` = ``"c"``, channel ``corrections``)."""

    wire_type: ClassVar[str] = "c"
    channel: ClassVar[str] = "corrections"

    symbol: str
    """Ticker (``S``)."""
    exchange: str
    """Exchange code (``x``)."""
    original_id: int
    """Id of the corrected trade (``oi``)."""
    original_price: float
    """Original price (``op``)."""
    original_size: int
    """Original size (``os``)."""
    original_conditions: tuple[str, ...]
    """Original conditions (``oc``)."""
    corrected_id: int
    """Id of the corrected trade (``ci``)."""
    corrected_price: float
    """Corrected price (``cp``)."""
    corrected_size: int
    """Corrected size (``cs``)."""
    corrected_conditions: tuple[str, ...]
    """Corrected conditions (``cc``)."""
    timestamp_ns: int
    """Correction time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"],
            d["x"],
            d["oi"],
            d["op"],
            d["os"],
            _strs(d.get("oc")),
            d["ci"],
            d["cp"],
            d["cs"],
            _strs(d.get("cc")),
            _ts(d["t"]),
            d.get("z", ""),
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "x": self.exchange,
            "oi": self.original_id,
            "op": self.original_price,
            "os": self.original_size,
            "oc": list(self.original_conditions),
            "ci": self.corrected_id,
            "cp": self.corrected_price,
            "cs": self.corrected_size,
            "cc": list(self.corrected_conditions),
            "z": self.tape,
            "t": self.timestamp_ns,
        }


@attrs.frozen
class TradeCancel(_Timestamped):
    """A trade cancellation or error (``T`` = ``"x"``, channel ``cancelErrors``)."""

    wire_type: ClassVar[str] = "x"
    channel: ClassVar[str] = "cancelErrors"

    symbol: str
    """Ticker (``S``)."""
    trade_id: int
    """Id of the cancelled trade (``i``)."""
    exchange: str
    """Exchange code (``x``)."""
    price: float
    """Trade price (``p``)."""
    size: int
    """Trade size (``s``)."""
    action: str
    """``"C"`` cancel or ``"E"`` error (``a``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["i"], d["x"], d["p"], d["s"], d["a"], _ts(d["t"]), d.get("z", ""))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "i": self.trade_id,
            "x": self.exchange,
            "p": self.price,
            "s": self.size,
            "a": self.action,
            "z": self.tape,
            "t": self.timestamp_ns,
        }


@attrs.frozen
class Imbalance(_Timestamped):
    """An order imbalance indication (``T`` = ``"i"``, channel ``imbalances``)."""

    wire_type: ClassVar[str] = "i"
    channel: ClassVar[str] = "imbalances"

    symbol: str
    """Ticker (``S``)."""
    price: float
    """Reference price (``p``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``t``)."""
    tape: str
    """SIP tape (``z``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["p"], _ts(d["t"]), d.get("z", ""))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "p": self.price,
            "z": self.tape,
            "t": self.timestamp_ns,
        }


# --------------------------------------------------------------------------------------- crypto


@attrs.frozen
class CryptoTrade(_Timestamped):
    """A crypto trade (``T`` = ``"t"`` on crypto endpoints, channel ``trades``)."""

    wire_type: ClassVar[str] = "t"
    channel: ClassVar[str] = "trades"

    symbol: str
    """Pair, e.g. ``BTC/USD`` (``S``)."""
    trade_id: int
    """Trade id (``i``)."""
    price: float
    """Trade price (``p``)."""
    size: float
    """Trade size, fractional (``s``)."""
    taker_side: str
    """``"B"`` buy or ``"S"`` sell (``tks``)."""
    timestamp_ns: int
    """Trade time, nanoseconds since the epoch (``t``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["i"], d["p"], d["s"], d.get("tks", ""), _ts(d["t"]))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "p": self.price,
            "s": self.size,
            "t": self.timestamp_ns,
            "i": self.trade_id,
            "tks": self.taker_side,
        }


@attrs.frozen
class CryptoQuote(_Timestamped):
    """A crypto best bid/offer (``T`` = ``"q"`` on crypto endpoints, channel ``quotes``)."""

    wire_type: ClassVar[str] = "q"
    channel: ClassVar[str] = "quotes"

    symbol: str
    """Pair (``S``)."""
    bid_price: float
    """Bid price (``bp``)."""
    bid_size: float
    """Bid size (``bs``)."""
    ask_price: float
    """Ask price (``ap``)."""
    ask_size: float
    """Ask size (``as``)."""
    timestamp_ns: int
    """Quote time, nanoseconds since the epoch (``t``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["bp"], d["bs"], d["ap"], d["as"], _ts(d["t"]))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "bp": self.bid_price,
            "bs": self.bid_size,
            "ap": self.ask_price,
            "as": self.ask_size,
            "t": self.timestamp_ns,
        }


@attrs.frozen
class CryptoBar(_BarWire):
    """A crypto minute bar (``T`` = ``"b"`` on crypto endpoints, channel ``bars``).

    ``volume`` is fractional; bars built from quote mid-prices may have ``volume == 0``,
    ``trade_count == 0`` and ``vwap == 0``.
    """

    wire_type: ClassVar[str] = "b"
    channel: ClassVar[str] = "bars"

    symbol: str
    """Pair (``S``)."""
    open: float
    """Open price (``o``)."""
    high: float
    """High price (``h``)."""
    low: float
    """Low price (``l``)."""
    close: float
    """Close price (``c``)."""
    volume: float
    """Volume, fractional (``v``)."""
    trade_count: int
    """Number of trades (``n``)."""
    vwap: float
    """Volume-weighted average price (``vw``)."""
    timestamp_ns: int
    """Bar start time, nanoseconds since the epoch (``t``)."""


@attrs.frozen
class CryptoDailyBar(CryptoBar):
    """A crypto daily bar (``T`` = ``"d"``, channel ``dailyBars``)."""

    wire_type: ClassVar[str] = "d"
    channel: ClassVar[str] = "dailyBars"


@attrs.frozen
class CryptoUpdatedBar(CryptoBar):
    """A corrected crypto minute bar (``T`` = ``"u"``, channel ``updatedBars``)."""

    wire_type: ClassVar[str] = "u"
    channel: ClassVar[str] = "updatedBars"


@attrs.frozen
class OrderbookLevel:
    """One price level of an :class:`Orderbook` (``{"p": price, "s": size}``); size 0 deletes it."""

    price: float
    """Level price (``p``)."""
    size: float
    """Total size at the price (``s``); 0 in a delta means "remove this level"."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from ``{"p": ..., "s": ...}``."""
        return cls(d["p"], d["s"])

    def to_wire(self) -> dict[str, Any]:
        """``{"p": price, "s": size}``."""
        return {"p": self.price, "s": self.size}


def _levels(value: Any) -> tuple[OrderbookLevel, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of order book levels, got {value!r:.60}")
    return tuple([OrderbookLevel(lv["p"], lv["s"]) for lv in value])


@attrs.frozen
class Orderbook(_Timestamped):
    """Crypto order book snapshot or delta (``T`` = ``"o"``, channel ``orderbooks``).

    The first message after subscribing is the full book with ``reset=True``; later ones are
    deltas where a level with size 0 is removed.
    """

    wire_type: ClassVar[str] = "o"
    channel: ClassVar[str] = "orderbooks"

    symbol: str
    """Pair (``S``)."""
    timestamp_ns: int
    """Book time, nanoseconds since the epoch (``t``)."""
    bids: tuple[OrderbookLevel, ...]
    """Bid levels (``b``)."""
    asks: tuple[OrderbookLevel, ...]
    """Ask levels (``a``)."""
    reset: bool
    """``True`` for a full snapshot that replaces the local book (``r``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], _ts(d["t"]), _levels(d.get("b")), _levels(d.get("a")), bool(d.get("r", False))
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "t": self.timestamp_ns,
            "b": [{"p": lv.price, "s": lv.size} for lv in self.bids],
            "a": [{"p": lv.price, "s": lv.size} for lv in self.asks],
            "r": self.reset,
        }


@attrs.frozen
class CryptoPricing(_Timestamped):
    """Crypto perpetual futures pricing (``T`` = ``"p"``, channel ``pricing``)."""

    wire_type: ClassVar[str] = "p"
    channel: ClassVar[str] = "pricing"

    symbol: str
    """Perpetual pair (``S``)."""
    exchange: str
    """Exchange code (``x``)."""
    index_price: float
    """Index price (``ip``)."""
    mark_price: float
    """Mark price (``mp``)."""
    funding_rate: float
    """Funding rate (``fr``)."""
    open_interest: float
    """Open interest (``oi``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``t``)."""
    next_funding_time_ns: int
    """Next funding time, nanoseconds since the epoch (``ft``)."""

    @property
    def next_funding_time(self) -> datetime:
        """``next_funding_time_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.next_funding_time_ns)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], d.get("x", ""), d["ip"], d["mp"], d["fr"], d["oi"], _ts(d["t"]), _ts(d["ft"])
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "x": self.exchange,
            "ip": self.index_price,
            "mp": self.mark_price,
            "fr": self.funding_rate,
            "oi": self.open_interest,
            "t": self.timestamp_ns,
            "ft": self.next_funding_time_ns,
        }


# -------------------------------------------------------------------------------------- options


@attrs.frozen
class OptionTrade(_Timestamped):
    """An option trade (``T`` = ``"t"`` on options endpoints, channel ``trades``)."""

    wire_type: ClassVar[str] = "t"
    channel: ClassVar[str] = "trades"

    symbol: str
    """OCC contract symbol (``S``)."""
    price: float
    """Trade price (``p``)."""
    size: int
    """Contracts (``s``)."""
    exchange: str
    """Exchange code (``x``)."""
    condition: str
    """Trade condition, a single string (``c``)."""
    timestamp_ns: int
    """Trade time, nanoseconds since the epoch (``t``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(d["S"], d["p"], d["s"], d["x"], d.get("c", ""), _ts(d["t"]))

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "t": self.timestamp_ns,
            "p": self.price,
            "s": self.size,
            "x": self.exchange,
            "c": self.condition,
        }


@attrs.frozen
class OptionQuote(_Timestamped):
    """An option quote (``T`` = ``"q"`` on options endpoints, channel ``quotes``)."""

    wire_type: ClassVar[str] = "q"
    channel: ClassVar[str] = "quotes"

    symbol: str
    """OCC contract symbol (``S``)."""
    bid_exchange: str
    """Bid exchange code (``bx``)."""
    bid_price: float
    """Bid price (``bp``)."""
    bid_size: int
    """Bid size in contracts (``bs``)."""
    ask_exchange: str
    """Ask exchange code (``ax``)."""
    ask_price: float
    """Ask price (``ap``)."""
    ask_size: int
    """Ask size in contracts (``as``)."""
    condition: str
    """Quote condition, a single string (``c``)."""
    timestamp_ns: int
    """Quote time, nanoseconds since the epoch (``t``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["S"], d["bx"], d["bp"], d["bs"], d["ax"], d["ap"], d["as"], d.get("c", ""),
            _ts(d["t"]),
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "S": self.symbol,
            "t": self.timestamp_ns,
            "bx": self.bid_exchange,
            "bp": self.bid_price,
            "bs": self.bid_size,
            "ax": self.ask_exchange,
            "ap": self.ask_price,
            "as": self.ask_size,
            "c": self.condition,
        }


# ----------------------------------------------------------------------------------------- news


@attrs.frozen
class News:
    """A news article (``T`` = ``"n"``, channel ``news``). News has ``symbols``, no ``symbol``."""

    wire_type: ClassVar[str] = "n"
    channel: ClassVar[str] = "news"

    id: int
    """Article id (``id``)."""
    headline: str
    """Headline (``headline``)."""
    summary: str
    """Summary (``summary``)."""
    author: str
    """Author (``author``)."""
    created_at_ns: int
    """Creation time, nanoseconds since the epoch (``created_at``)."""
    updated_at_ns: int
    """Last update time, nanoseconds since the epoch (``updated_at``)."""
    content: str
    """Body, may contain HTML (``content``)."""
    url: str
    """Link to the article (``url``)."""
    symbols: tuple[str, ...]
    """Related tickers (``symbols``)."""
    source: str
    """Provider, e.g. ``benzinga`` (``source``)."""

    @property
    def timestamp_ns(self) -> int:
        """Same as ``created_at_ns`` (so every market message has a ``timestamp_ns``)."""
        return self.created_at_ns

    @property
    def timestamp(self) -> datetime:
        """``created_at_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.created_at_ns)

    @property
    def created_at(self) -> datetime:
        """``created_at_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.created_at_ns)

    @property
    def updated_at(self) -> datetime:
        """``updated_at_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.updated_at_ns)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict (unknown keys ignored)."""
        return cls(
            d["id"],
            d.get("headline", ""),
            d.get("summary", ""),
            d.get("author", ""),
            _ts(d["created_at"]),
            _ts(d["updated_at"]),
            d.get("content", ""),
            d.get("url", ""),
            _strs(d.get("symbols")),
            d.get("source", ""),
        )

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first."""
        return {
            "T": self.wire_type,
            "id": self.id,
            "headline": self.headline,
            "summary": self.summary,
            "author": self.author,
            "created_at": self.created_at_ns,
            "updated_at": self.updated_at_ns,
            "content": self.content,
            "url": self.url,
            "symbols": list(self.symbols),
            "source": self.source,
        }


# -------------------------------------------------------------------------------------- trading


@attrs.frozen
class TradeUpdate:
    """An order event from the trading stream (``stream`` = ``"trade_updates"``).

    The wire form is the ``data`` object of ``{"stream": "trade_updates", "data": {...}}``. Unlike
    market data it is JSON-native: ``to_wire`` writes ``timestamp``/``at`` as RFC 3339 text and
    ``price``/``qty``/``position_qty`` as decimal strings, exactly as Alpaca sends them;
    ``from_wire`` accepts text, int nanoseconds or datetimes for the times.
    """

    wire_type: ClassVar[str] = "trade_updates"
    channel: ClassVar[str] = "trade_updates"

    event: str
    """The event (``new``, ``fill``, ``partial_fill``, ``canceled``, ...; wire key ``event``)."""
    order: dict[str, Any]
    """The REST order object, as sent (``order``)."""
    timestamp_ns: int
    """Event time, nanoseconds since the epoch (``timestamp``)."""
    price: Decimal | None = None
    """Fill price on fill events (``price``)."""
    qty: Decimal | None = None
    """Fill quantity on fill events (``qty``)."""
    position_qty: Decimal | None = None
    """Position after the fill (``position_qty``)."""
    execution_id: str | None = None
    """Execution id on fill events (``execution_id``)."""
    event_id: str | None = None
    """Event id, newer payloads only (``event_id``)."""
    at_ns: int | None = None
    """``at`` time, newer payloads only, nanoseconds since the epoch."""

    @property
    def timestamp(self) -> datetime:
        """``timestamp_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.timestamp_ns)

    @property
    def symbol(self) -> str:
        """The order's symbol (``order["symbol"]``), or ``""`` when absent."""
        value = self.order.get("symbol", "")
        return value if isinstance(value, str) else ""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the ``data`` object of a ``trade_updates`` message (unknown keys ignored)."""
        order = d["order"]
        if not isinstance(order, Mapping):
            raise TypeError(f"trade update 'order' must be an object, got {order!r:.60}")
        execution_id = d.get("execution_id")
        event_id = d.get("event_id")
        return cls(
            d["event"],
            dict(order),
            _ts(d["timestamp"]),
            _opt_decimal(d.get("price")),
            _opt_decimal(d.get("qty")),
            _opt_decimal(d.get("position_qty")),
            None if execution_id is None else str(execution_id),
            None if event_id is None else str(event_id),
            _opt_ts(d.get("at")),
        )

    def to_wire(self) -> dict[str, Any]:
        """The ``data`` object as on the wire (only set optional keys are written)."""
        out: dict[str, Any] = {
            "event": self.event,
            "order": self.order,
            "timestamp": format_rfc3339_ns(self.timestamp_ns),
        }
        if self.price is not None:
            out["price"] = str(self.price)
        if self.qty is not None:
            out["qty"] = str(self.qty)
        if self.position_qty is not None:
            out["position_qty"] = str(self.position_qty)
        if self.execution_id is not None:
            out["execution_id"] = self.execution_id
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.at_ns is not None:
            out["at"] = format_rfc3339_ns(self.at_ns)
        return out


@attrs.frozen
class Listening:
    """The trading stream's acknowledgement of ``listen`` (``stream`` = ``"listening"``)."""

    wire_type: ClassVar[str] = "listening"
    channel: ClassVar[str] = "control"

    streams: tuple[str, ...]
    """The streams now listened to (the set replaces the previous one)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the ``data`` object ``{"streams": [...]}``."""
        return cls(_strs(d.get("streams")))

    def to_wire(self) -> dict[str, Any]:
        """``{"streams": [...]}``."""
        return {"streams": list(self.streams)}


# ------------------------------------------------------------------------------- control events


@attrs.frozen
class Connected:
    """The server's welcome, ``{"T": "success", "msg": "connected"}``."""

    wire_type: ClassVar[str] = "success"
    channel: ClassVar[str] = "control"

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the welcome message."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "success", "msg": "connected"}``."""
        return {"T": "success", "msg": "connected"}


@attrs.frozen
class Authenticated:
    """Successful authentication, ``{"T": "success", "msg": "authenticated"}``.

    Also used for the trading stream's ``authorization`` reply with status ``authorized``.
    """

    wire_type: ClassVar[str] = "success"
    channel: ClassVar[str] = "control"

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the authentication reply."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "success", "msg": "authenticated"}``."""
        return {"T": "success", "msg": "authenticated"}


@attrs.frozen
class SubscriptionChanged:
    """The server's confirmation of a (un)subscribe: always the whole current state.

    ``subscriptions`` maps wire channel names (``trades``, ``dailyBars``, ``cancelErrors``, ...) to
    the symbols now subscribed (empty tuples for unused channels, as sent).
    """

    wire_type: ClassVar[str] = "subscription"
    channel: ClassVar[str] = "control"

    subscriptions: dict[str, tuple[str, ...]]
    """Wire channel name -> subscribed symbols (full confirmed state)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from ``{"T": "subscription", "<channel>": [symbols], ...}``."""
        subs: dict[str, tuple[str, ...]] = {}
        for key, value in d.items():
            if key == "T":
                continue
            if value is None or isinstance(value, (list, tuple)):
                subs[key] = _strs(value)
        return cls(subs)

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "subscription", "<channel>": [symbols], ...}``."""
        out: dict[str, Any] = {"T": "subscription"}
        for key, value in self.subscriptions.items():
            out[key] = list(value)
        return out


@attrs.frozen
class ServerError:
    """An error reported by the server, ``{"T": "error", "code": 402, "msg": "auth failed"}``."""

    wire_type: ClassVar[str] = "error"
    channel: ClassVar[str] = "control"

    code: int
    """Alpaca error code (400-413, 500)."""
    message: str
    """The server's text (``msg``)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from an ``error`` message."""
        return cls(d["code"], d.get("msg", ""))

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "error", "code": ..., "msg": ...}``."""
        return {"T": "error", "code": self.code, "msg": self.message}


@attrs.frozen
class Reconnected:
    """Local event (never sent by the server): the stream reconnected after a gap.

    Yielded after every successful reconnect and before any new data. Data between
    ``gap_start_ns`` (when the old connection was lost) and ``gap_end_ns`` (when the new one was
    ready) may be missing.
    """

    wire_type: ClassVar[str] = "reconnected"
    channel: ClassVar[str] = "control"

    gap_start_ns: int
    """When the connection was lost, nanoseconds since the epoch (UTC wall clock)."""
    gap_end_ns: int
    """When the new connection was subscribed again, nanoseconds since the epoch."""
    attempts: int = 1
    """Connection attempts it took."""

    @property
    def gap_start(self) -> datetime:
        """``gap_start_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.gap_start_ns)

    @property
    def gap_end(self) -> datetime:
        """``gap_end_ns`` as an aware UTC datetime."""
        return ns_to_datetime(self.gap_end_ns)

    @property
    def gap_seconds(self) -> float:
        """Length of the gap in seconds."""
        return (self.gap_end_ns - self.gap_start_ns) / 1e9

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the dict :meth:`to_wire` produces."""
        return cls(d["gap_start"], d["gap_end"], d.get("attempts", 1))

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "reconnected", "gap_start": ns, "gap_end": ns, "attempts": n}`` (raw mode)."""
        return {
            "T": "reconnected",
            "gap_start": self.gap_start_ns,
            "gap_end": self.gap_end_ns,
            "attempts": self.attempts,
        }


@attrs.frozen
class Dropped:
    """Local event (never sent by the server): ``count`` messages were dropped, and why."""

    wire_type: ClassVar[str] = "dropped"
    channel: ClassVar[str] = "control"

    count: int
    """How many messages were lost."""
    reason: str
    """Why, e.g. ``"buffer overflow (drop_oldest)"``."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the dict :meth:`to_wire` produces."""
        return cls(d["count"], d.get("reason", ""))

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "dropped", "count": n, "reason": text}`` (raw mode)."""
        return {"T": "dropped", "count": self.count, "reason": self.reason}


@attrs.frozen
class UnknownMessage:
    """A well-formed message of a type trioalpaca does not know (kept for forward compatibility)."""

    wire_type: ClassVar[str] = ""
    channel: ClassVar[str] = "control"

    raw: dict[str, Any]
    """The canonical wire dict as received."""

    @property
    def type(self) -> Any:
        """The message's ``T`` value (``None`` when it has none)."""
        return self.raw.get("T")

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Wrap a copy of ``d``."""
        return cls(dict(d))

    def to_wire(self) -> dict[str, Any]:
        """A copy of the raw dict with ``T`` (if any) first."""
        if "T" in self.raw:
            out: dict[str, Any] = {"T": self.raw["T"]}
            out.update(self.raw)
            return out
        return dict(self.raw)


Message: TypeAlias = (
    Trade
    | Quote
    | Bar
    | DailyBar
    | UpdatedBar
    | TradingStatus
    | LULD
    | TradeCorrection
    | TradeCancel
    | Imbalance
    | CryptoTrade
    | CryptoQuote
    | CryptoBar
    | CryptoDailyBar
    | CryptoUpdatedBar
    | Orderbook
    | CryptoPricing
    | OptionTrade
    | OptionQuote
    | News
    | TradeUpdate
    | Listening
    | Connected
    | Authenticated
    | SubscriptionChanged
    | ServerError
    | Reconnected
    | Dropped
    | UnknownMessage
)
"""Any value the streams can yield (market data, trading updates and control events)."""

#: The market data classes each stream kind carries, keyed by stream kind (the values of
#: :class:`~trioalpaca.endpoints.StreamKind`); the trading stream carries none.
MARKET_DATA_TYPES: Mapping[str, tuple[type[Any], ...]] = MappingProxyType(
    {
        "stocks": (
            Trade,
            Quote,
            Bar,
            DailyBar,
            UpdatedBar,
            TradingStatus,
            LULD,
            TradeCorrection,
            TradeCancel,
            Imbalance,
        ),
        "crypto": (
            CryptoTrade,
            CryptoQuote,
            CryptoBar,
            CryptoDailyBar,
            CryptoUpdatedBar,
            Orderbook,
            CryptoPricing,
        ),
        "options": (OptionTrade, OptionQuote),
        "news": (News,),
        "trading": (),
    }
)

#: ``wire_type`` -> ``channel`` of every message class (:class:`UnknownMessage` excepted), e.g.
#: ``"d"`` -> ``"dailyBars"``, ``"trade_updates"`` -> ``"trade_updates"``, ``"success"`` ->
#: ``"control"``. A ``T`` code means the same channel on every endpoint.
CHANNEL_BY_WIRE_TYPE: Mapping[str, str] = MappingProxyType(
    {cls.wire_type: cls.channel for cls in get_args(Message) if cls.wire_type}
)
