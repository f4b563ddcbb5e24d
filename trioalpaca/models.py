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

from trioalpaca._errors import MalformedMessageError
from trioalpaca._time import (
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    datetime_to_ns,
    format_rfc3339_ns,
    ns_to_datetime,
    parse_rfc3339_ns,
)

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
    "MalformedMessage",
    "Message",
    "News",
    "NewsImage",
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


# ------------------------------------------------------------------ wire specs and normalisation

_REQUIRED: Any = object()
"""Default of a field spec whose wire key must be present."""

#: Largest integral float that is turned into an int (above it, floats skip integers).
_MAX_EXACT_INT = 2**53

_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "ts": "a timestamp",
    "strs": "a list of strings",
    "bool": "a boolean",
    "levels": "a list of {p, s} price levels",
    "images": "a list of {size, url} images",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_sent(value: Any) -> Any:
    """Tuples (msgpack arrays) as lists, recursively: errors read the same for both encodings."""
    if type(value) is tuple or type(value) is list:
        return [_as_sent(x) for x in value]
    if type(value) is dict:
        return {k: _as_sent(x) for k, x in value.items()}
    return value


def _refuse(kind: str, key: str, v: Any, t: str) -> MalformedMessageError:
    return MalformedMessageError(
        f"{t!r} message: {key!r} must be {_EXPECTED[kind]}, got {_short(_as_sent(v))}"
    )


def _norm(kind: str, key: str, v: Any, t: str) -> Any:
    """One field value of a ``T`` message, normalised by the documented rules, or refused.

    The one implementation behind both ``from_wire`` and the stream decoder's careful path, so
    the two always agree. Raises :class:`~trioalpaca._errors.MalformedMessageError`.
    """
    if kind == "str":
        if isinstance(v, str):
            return v
    elif kind == "int":
        if isinstance(v, int) and not isinstance(v, bool):
            return int(v)
        if isinstance(v, float) and v.is_integer() and -_MAX_EXACT_INT <= v <= _MAX_EXACT_INT:
            return int(v)  # rule: an integral float where an integer is expected
    elif kind == "float":
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                return float(v)  # rule: an integer where a float (price) is expected
            except OverflowError:
                pass
    elif kind == "ts":
        if isinstance(v, int) and not isinstance(v, bool):
            if MIN_TIMESTAMP_NS <= v <= MAX_TIMESTAMP_NS:
                return int(v)
            raise MalformedMessageError(
                f"{t!r} message: {key!r} is outside the years 0001-9999: {v} ns"
            )
        if isinstance(v, str):
            try:
                return parse_rfc3339_ns(v)  # rule: RFC 3339 text, also inside msgpack frames
            except ValueError as exc:
                raise MalformedMessageError(
                    f"{t!r} message: {key!r} is not a valid timestamp: {exc}"
                ) from None
        if isinstance(v, datetime):
            try:
                return datetime_to_ns(v)
            except (ValueError, TypeError, OverflowError) as exc:
                raise MalformedMessageError(
                    f"{t!r} message: {key!r} is not a valid timestamp: {exc}"
                ) from None
    elif kind == "strs":
        if isinstance(v, str):
            return (v,)  # rule: a single string where a list of strings is expected
        if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
            return tuple(v)
    elif kind == "bool":
        if isinstance(v, bool):
            return v
    elif kind == "levels":
        if isinstance(v, (list, tuple)):
            levels = []
            for lv in v:
                if isinstance(lv, OrderbookLevel):
                    levels.append(lv)
                    continue
                if not isinstance(lv, Mapping) or "p" not in lv or "s" not in lv:
                    break
                price = _norm("float", "p", lv["p"], t)
                size = _norm("float", "s", lv["s"], t)
                levels.append(OrderbookLevel(price, size))
            else:
                return tuple(levels)
    elif kind == "images" and isinstance(v, (list, tuple)):
        images = []
        for im in v:
            if isinstance(im, NewsImage):
                images.append(im)
                continue
            if not isinstance(im, Mapping):
                break
            size, url = im.get("size", ""), im.get("url", "")
            if not isinstance(size, str) or not isinstance(url, str):
                break
            images.append(NewsImage(size, url))
        else:
            return tuple(images)
    raise _refuse(kind, key, v, t)


def _build(cls: type[Any], d: Any) -> Any:
    """Build ``cls`` from a wire dict by its spec, normalising every field (the slow path)."""
    t = cls.wire_type
    if not isinstance(d, Mapping):
        raise MalformedMessageError(f"expected a map for a {t!r} message, got {_short(d)}")
    values = []
    for _attr, key, kind, default in _SPECS[cls]:
        v = d.get(key)
        if v is None:  # absent, or null: the default (rule: null at an optional key = absent)
            if default is _REQUIRED:
                if key in d:
                    raise _refuse(kind, key, v, t)
                raise MalformedMessageError(
                    f"{t!r} ({cls.__name__}) message without required key {key!r}"
                )
            values.append(default)
        else:
            values.append(_norm(kind, key, v, t))
    return cls(*values)


class _WireAccess:
    """Mixin: read-only, mapping-style access by wire key (``msg["S"]``, ``msg.get("x")``).

    ``msg[key]`` gives the attribute the wire key ``key`` maps to (``msg["p"]`` is
    ``msg.price``, ``msg["T"]`` is ``msg.wire_type``). The keys are those of :meth:`to_wire`; a
    key whose attribute is ``None`` (an optional field the server did not send) is absent.
    Values are the model's own: timestamps ``int`` nanoseconds, lists as tuples, order book
    levels and news images as their models (which support the same access).
    """

    __slots__ = ()
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType({})
    #: Models are not iterable (that would iterate over wire keys by surprise); use ``keys()``.
    __iter__: ClassVar[None] = None

    def __getitem__(self, key: str) -> Any:
        """The value at wire key ``key`` (:class:`KeyError` if unknown or not sent)."""
        attr = self._wire_keys.get(key)
        value = None if attr is None else getattr(self, attr)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value at wire key ``key``, or ``default`` if unknown or not sent."""
        attr = self._wire_keys.get(key)
        value = None if attr is None else getattr(self, attr)
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        attr = self._wire_keys.get(key) if isinstance(key, str) else None
        return attr is not None and getattr(self, attr) is not None

    def keys(self) -> tuple[str, ...]:
        """The wire keys present (``T`` first), so ``dict(msg)`` works."""
        return tuple(k for k, a in self._wire_keys.items() if getattr(self, a) is not None)


class _WireData(_WireAccess):
    """Mixin: the spec-driven ``from_wire`` shared by every market data class."""

    __slots__ = ()

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from a canonical wire dict; unknown keys ignored.

        Normalises or refuses exactly like the stream decoder (see :ref:`normalisation`):
        a single string for a list of strings becomes a 1-tuple, an integral float for an
        integer field an ``int``, an ``int`` price a ``float``, RFC 3339 text (or a datetime) a
        timestamp in nanoseconds, and a null at an optional key counts as absent.

        Raises:
            MalformedMessageError: a required key is missing or a value cannot be normalised
                (the decoder delivers a :class:`MalformedMessage` with the same text instead).
        """
        built: Self = _build(cls, d)
        return built


class _Timestamped:
    """Mixin: ``timestamp`` property for classes with a ``timestamp_ns`` field."""

    __slots__ = ()
    timestamp_ns: int

    @property
    def timestamp(self) -> datetime:
        """``timestamp_ns`` as an aware UTC datetime (floored to the microsecond)."""
        return ns_to_datetime(self.timestamp_ns)


# --------------------------------------------------------------------------------------- stocks


class _BarWire(_WireData, _Timestamped):
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
class Trade(_WireData, _Timestamped):
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
    receive_time_ns: int | None = None
    """When Alpaca received the trade, nanoseconds since the epoch (``r``, an internal field
    some feeds add); ``None`` when not sent."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``r`` only when set)."""
        out = {
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
        if self.receive_time_ns is not None:
            out["r"] = self.receive_time_ns
        return out


@attrs.frozen
class Quote(_WireData, _Timestamped):
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
    receive_time_ns: int | None = None
    """When Alpaca received the quote, nanoseconds since the epoch (``r``, an internal field
    some feeds add); ``None`` when not sent."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``r`` only when set)."""
        out = {
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
        if self.receive_time_ns is not None:
            out["r"] = self.receive_time_ns
        return out


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
class TradingStatus(_WireData, _Timestamped):
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
class LULD(_WireData, _Timestamped):
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
class TradeCorrection(_WireData, _Timestamped):
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
class TradeCancel(_WireData, _Timestamped):
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
class Imbalance(_WireData, _Timestamped):
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
class CryptoTrade(_WireData, _Timestamped):
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
    exchange: str | None = None
    """Exchange code (``x``), when the server sends one; ``None`` otherwise."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``x`` only when set)."""
        out: dict[str, Any] = {
            "T": self.wire_type,
            "S": self.symbol,
            "p": self.price,
            "s": self.size,
            "t": self.timestamp_ns,
            "i": self.trade_id,
            "tks": self.taker_side,
        }
        if self.exchange is not None:
            out["x"] = self.exchange
        return out


@attrs.frozen
class CryptoQuote(_WireData, _Timestamped):
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
    exchange: str | None = None
    """Exchange code (``x``), when the server sends one; ``None`` otherwise."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``x`` only when set)."""
        out: dict[str, Any] = {
            "T": self.wire_type,
            "S": self.symbol,
            "bp": self.bid_price,
            "bs": self.bid_size,
            "ap": self.ask_price,
            "as": self.ask_size,
            "t": self.timestamp_ns,
        }
        if self.exchange is not None:
            out["x"] = self.exchange
        return out


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
    exchange: str | None = None
    """Exchange code (``x``), when the server sends one; ``None`` otherwise."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``x`` only when set)."""
        out = super().to_wire()
        if self.exchange is not None:
            out["x"] = self.exchange
        return out


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
class OrderbookLevel(_WireAccess):
    """One price level of an :class:`Orderbook` (``{"p": price, "s": size}``); size 0 deletes it."""

    price: float
    """Level price (``p``)."""
    size: float
    """Total size at the price (``s``); 0 in a delta means "remove this level"."""

    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"p": "price", "s": "size"})

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from ``{"p": ..., "s": ...}`` (integers become floats).

        Raises:
            MalformedMessageError: not a map with numbers at ``p`` and ``s``.
        """
        (level,) = _norm("levels", "b", [d], "o")
        built: Self = level
        return built

    def to_wire(self) -> dict[str, Any]:
        """``{"p": price, "s": size}``."""
        return {"p": self.price, "s": self.size}


@attrs.frozen
class Orderbook(_WireData, _Timestamped):
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
    exchange: str | None = None
    """Exchange code (``x``), when the server sends one; ``None`` otherwise."""

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``x`` only when set)."""
        out: dict[str, Any] = {
            "T": self.wire_type,
            "S": self.symbol,
            "t": self.timestamp_ns,
            "b": [{"p": lv.price, "s": lv.size} for lv in self.bids],
            "a": [{"p": lv.price, "s": lv.size} for lv in self.asks],
            "r": self.reset,
        }
        if self.exchange is not None:
            out["x"] = self.exchange
        return out


@attrs.frozen
class CryptoPricing(_WireData, _Timestamped):
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
class OptionTrade(_WireData, _Timestamped):
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
class OptionQuote(_WireData, _Timestamped):
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
class NewsImage(_WireAccess):
    """One image of a :class:`News` article (``{"size": "thumb", "url": "https://..."}``)."""

    size: str
    """``thumb``, ``small`` or ``large`` (``size``)."""
    url: str
    """Image URL (``url``)."""

    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"size": "size", "url": "url"})

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from ``{"size": ..., "url": ...}`` (missing keys become ``""``)."""
        (image,) = _norm("images", "images", [d], "n")
        built: Self = image
        return built

    def to_wire(self) -> dict[str, Any]:
        """``{"size": size, "url": url}``."""
        return {"size": self.size, "url": self.url}


@attrs.frozen
class News(_WireData):
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
    images: tuple[NewsImage, ...] | None = None
    """Images of the article (``images``: ``[{"size": ..., "url": ...}]``); ``None`` when not
    sent."""

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

    def to_wire(self) -> dict[str, Any]:
        """The canonical wire dict, ``T`` first (``images`` only when set)."""
        out: dict[str, Any] = {
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
        if self.images is not None:
            out["images"] = [im.to_wire() for im in self.images]
        return out


# -------------------------------------------------------------------------------------- trading


@attrs.frozen
class TradeUpdate(_WireAccess):
    """An order event from the trading stream (``stream`` = ``"trade_updates"``).

    The wire form is the ``data`` object of ``{"stream": "trade_updates", "data": {...}}``. Unlike
    market data it is JSON-native: ``to_wire`` writes ``timestamp``/``at`` as RFC 3339 text and
    ``price``/``qty``/``position_qty`` as decimal strings, exactly as Alpaca sends them;
    ``from_wire`` accepts text, int nanoseconds or datetimes for the times.
    """

    wire_type: ClassVar[str] = "trade_updates"
    channel: ClassVar[str] = "trade_updates"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "event": "event",
            "order": "order",
            "timestamp": "timestamp_ns",
            "price": "price",
            "qty": "qty",
            "position_qty": "position_qty",
            "execution_id": "execution_id",
            "event_id": "event_id",
            "at": "at_ns",
        }
    )

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
class Listening(_WireAccess):
    """The trading stream's acknowledgement of ``listen`` (``stream`` = ``"listening"``)."""

    wire_type: ClassVar[str] = "listening"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"streams": "streams"})

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
class Connected(_WireAccess):
    """The server's welcome, ``{"T": "success", "msg": "connected"}``."""

    wire_type: ClassVar[str] = "success"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "msg": "_wire_msg"}
    )
    _wire_msg: ClassVar[str] = "connected"

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the welcome message."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "success", "msg": "connected"}``."""
        return {"T": "success", "msg": "connected"}


@attrs.frozen
class Authenticated(_WireAccess):
    """Successful authentication, ``{"T": "success", "msg": "authenticated"}``.

    Also used for the trading stream's ``authorization`` reply with status ``authorized``.
    """

    wire_type: ClassVar[str] = "success"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "msg": "_wire_msg"}
    )
    _wire_msg: ClassVar[str] = "authenticated"

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the authentication reply."""
        return cls()

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "success", "msg": "authenticated"}``."""
        return {"T": "success", "msg": "authenticated"}


@attrs.frozen
class SubscriptionChanged(_WireAccess):
    """The server's confirmation of a (un)subscribe: always the whole current state.

    ``subscriptions`` maps wire channel names (``trades``, ``dailyBars``, ``cancelErrors``, ...) to
    the symbols now subscribed (empty tuples for unused channels, as sent).
    """

    wire_type: ClassVar[str] = "subscription"
    channel: ClassVar[str] = "control"

    subscriptions: dict[str, tuple[str, ...]]
    """Wire channel name -> subscribed symbols (full confirmed state)."""

    def __getitem__(self, key: str) -> Any:
        """``"T"`` or a channel name (its symbols)."""
        return self.wire_type if key == "T" else self.subscriptions[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``"T"`` or a channel name (its symbols), or ``default``."""
        return self.wire_type if key == "T" else self.subscriptions.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key == "T" or key in self.subscriptions

    def keys(self) -> tuple[str, ...]:
        """``"T"`` and the channel names."""
        return ("T", *self.subscriptions)

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
class ServerError(_WireAccess):
    """An error reported by the server, ``{"T": "error", "code": 402, "msg": "auth failed"}``."""

    wire_type: ClassVar[str] = "error"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "code": "code", "msg": "message"}
    )

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
class Reconnected(_WireAccess):
    """Local event (never sent by the server): the stream reconnected after a gap.

    Yielded after every successful reconnect and before any new data. Data between
    ``gap_start_ns`` (when the old connection was lost) and ``gap_end_ns`` (when the new one was
    ready) may be missing.
    """

    wire_type: ClassVar[str] = "reconnected"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "T": "wire_type",
            "gap_start": "gap_start_ns",
            "gap_end": "gap_end_ns",
            "attempts": "attempts",
        }
    )

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
class Dropped(_WireAccess):
    """Local event (never sent by the server): ``count`` messages were dropped, and why."""

    wire_type: ClassVar[str] = "dropped"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "count": "count", "reason": "reason"}
    )

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
class UnknownMessage(_WireAccess):
    """A well-formed message of a type trioalpaca does not know (kept for forward compatibility)."""

    wire_type: ClassVar[str] = ""
    channel: ClassVar[str] = "control"

    raw: dict[str, Any]
    """The canonical wire dict as received."""

    def __getitem__(self, key: str) -> Any:
        """The raw dict's value at ``key``."""
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The raw dict's value at ``key``, or ``default``."""
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    def keys(self) -> tuple[str, ...]:
        """The raw dict's keys."""
        return tuple(self.raw)

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


@attrs.frozen
class MalformedMessage(_WireAccess):
    """Local event (never sent by the server): something the decoder could not decode.

    Delivered *in the place* of one frame element the decoder could neither decode nor
    normalise (``frame`` false; ``raw`` is that element as received, lists as lists), or of a
    whole frame that did not decode at all (``frame`` true; ``raw`` is the frame's ``bytes`` or
    ``str``). The rest of the frame is delivered and the connection stays up; the client counts
    these in ``get_metrics()["malformed_messages"]`` and logs them at most once per ``T`` per
    minute. See :ref:`malformed-data`.
    """

    wire_type: ClassVar[str] = "malformed"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "raw": "raw", "error": "error", "frame": "frame"}
    )

    raw: Any
    """The element (usually a dict) or, when ``frame`` is true, the whole frame as received."""
    error: str
    """Why it was refused, e.g. ``"'q' message: 'bp' must be a number, got 'abc'"``."""
    frame: bool = False
    """``True`` when the whole frame did not decode (bad msgpack/JSON, not an array)."""

    @property
    def element_type(self) -> Any:
        """The element's ``T`` when it has one (``None`` for whole frames and non-maps)."""
        return self.raw.get("T") if isinstance(self.raw, dict) else None

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the dict :meth:`to_wire` produces."""
        return cls(d.get("raw"), d.get("error", ""), bool(d.get("frame", False)))

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "malformed", "raw": ..., "error": text, "frame": bool}`` (raw mode)."""
        return {"T": "malformed", "raw": self.raw, "error": self.error, "frame": self.frame}


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
    | MalformedMessage
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


# ----------------------------------------------------------------------------------- wire specs

_R = _REQUIRED
#: Field specs per market data class: (attribute, wire key, kind, default), in attrs field order.
#: Kinds: ``str``, ``int``, ``float``, ``ts`` (timestamp), ``strs`` (list of strings), ``bool``,
#: ``levels`` (order book levels), ``images`` (news images). A default of ``None`` marks an
#: optional field Alpaca sends only sometimes. The stream decoder (``trioalpaca._codec``)
#: generates its fast constructors from the same table.
_SPECS: dict[type[Any], tuple[tuple[str, str, str, Any], ...]] = {
    Trade: (
        ("symbol", "S", "str", _R),
        ("trade_id", "i", "int", _R),
        ("exchange", "x", "str", _R),
        ("price", "p", "float", _R),
        ("size", "s", "int", _R),
        ("conditions", "c", "strs", ()),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
        ("receive_time_ns", "r", "ts", None),
    ),
    Quote: (
        ("symbol", "S", "str", _R),
        ("bid_exchange", "bx", "str", _R),
        ("bid_price", "bp", "float", _R),
        ("bid_size", "bs", "int", _R),
        ("ask_exchange", "ax", "str", _R),
        ("ask_price", "ap", "float", _R),
        ("ask_size", "as", "int", _R),
        ("conditions", "c", "strs", ()),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
        ("receive_time_ns", "r", "ts", None),
    ),
    Bar: (
        ("symbol", "S", "str", _R),
        ("open", "o", "float", _R),
        ("high", "h", "float", _R),
        ("low", "l", "float", _R),
        ("close", "c", "float", _R),
        ("volume", "v", "int", _R),
        ("trade_count", "n", "int", 0),
        ("vwap", "vw", "float", 0.0),
        ("timestamp_ns", "t", "ts", _R),
    ),
    TradingStatus: (
        ("symbol", "S", "str", _R),
        ("status_code", "sc", "str", ""),
        ("status_message", "sm", "str", ""),
        ("reason_code", "rc", "str", ""),
        ("reason_message", "rm", "str", ""),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
    ),
    LULD: (
        ("symbol", "S", "str", _R),
        ("limit_up", "u", "float", _R),
        ("limit_down", "d", "float", _R),
        ("indicator", "i", "str", ""),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
    ),
    TradeCorrection: (
        ("symbol", "S", "str", _R),
        ("exchange", "x", "str", _R),
        ("original_id", "oi", "int", _R),
        ("original_price", "op", "float", _R),
        ("original_size", "os", "int", _R),
        ("original_conditions", "oc", "strs", ()),
        ("corrected_id", "ci", "int", _R),
        ("corrected_price", "cp", "float", _R),
        ("corrected_size", "cs", "int", _R),
        ("corrected_conditions", "cc", "strs", ()),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
    ),
    TradeCancel: (
        ("symbol", "S", "str", _R),
        ("trade_id", "i", "int", _R),
        ("exchange", "x", "str", _R),
        ("price", "p", "float", _R),
        ("size", "s", "int", _R),
        ("action", "a", "str", _R),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
    ),
    Imbalance: (
        ("symbol", "S", "str", _R),
        ("price", "p", "float", _R),
        ("timestamp_ns", "t", "ts", _R),
        ("tape", "z", "str", ""),
    ),
    CryptoTrade: (
        ("symbol", "S", "str", _R),
        ("trade_id", "i", "int", _R),
        ("price", "p", "float", _R),
        ("size", "s", "float", _R),
        ("taker_side", "tks", "str", ""),
        ("timestamp_ns", "t", "ts", _R),
        ("exchange", "x", "str", None),
    ),
    CryptoQuote: (
        ("symbol", "S", "str", _R),
        ("bid_price", "bp", "float", _R),
        ("bid_size", "bs", "float", _R),
        ("ask_price", "ap", "float", _R),
        ("ask_size", "as", "float", _R),
        ("timestamp_ns", "t", "ts", _R),
        ("exchange", "x", "str", None),
    ),
    CryptoBar: (
        ("symbol", "S", "str", _R),
        ("open", "o", "float", _R),
        ("high", "h", "float", _R),
        ("low", "l", "float", _R),
        ("close", "c", "float", _R),
        ("volume", "v", "float", _R),
        ("trade_count", "n", "int", 0),
        ("vwap", "vw", "float", 0.0),
        ("timestamp_ns", "t", "ts", _R),
        ("exchange", "x", "str", None),
    ),
    Orderbook: (
        ("symbol", "S", "str", _R),
        ("timestamp_ns", "t", "ts", _R),
        ("bids", "b", "levels", ()),
        ("asks", "a", "levels", ()),
        ("reset", "r", "bool", False),
        ("exchange", "x", "str", None),
    ),
    CryptoPricing: (
        ("symbol", "S", "str", _R),
        ("exchange", "x", "str", ""),
        ("index_price", "ip", "float", _R),
        ("mark_price", "mp", "float", _R),
        ("funding_rate", "fr", "float", _R),
        ("open_interest", "oi", "float", _R),
        ("timestamp_ns", "t", "ts", _R),
        ("next_funding_time_ns", "ft", "ts", _R),
    ),
    OptionTrade: (
        ("symbol", "S", "str", _R),
        ("price", "p", "float", _R),
        ("size", "s", "int", _R),
        ("exchange", "x", "str", _R),
        ("condition", "c", "str", ""),
        ("timestamp_ns", "t", "ts", _R),
    ),
    OptionQuote: (
        ("symbol", "S", "str", _R),
        ("bid_exchange", "bx", "str", _R),
        ("bid_price", "bp", "float", _R),
        ("bid_size", "bs", "int", _R),
        ("ask_exchange", "ax", "str", _R),
        ("ask_price", "ap", "float", _R),
        ("ask_size", "as", "int", _R),
        ("condition", "c", "str", ""),
        ("timestamp_ns", "t", "ts", _R),
    ),
    News: (
        ("id", "id", "int", _R),
        ("headline", "headline", "str", ""),
        ("summary", "summary", "str", ""),
        ("author", "author", "str", ""),
        ("created_at_ns", "created_at", "ts", _R),
        ("updated_at_ns", "updated_at", "ts", _R),
        ("content", "content", "str", ""),
        ("url", "url", "str", ""),
        ("symbols", "symbols", "strs", ()),
        ("source", "source", "str", ""),
        ("images", "images", "images", None),
    ),
}
for _sub, _base in (
    (DailyBar, Bar),
    (UpdatedBar, Bar),
    (CryptoDailyBar, CryptoBar),
    (CryptoUpdatedBar, CryptoBar),
):
    _SPECS[_sub] = _SPECS[_base]
for _cls, _spec in _SPECS.items():
    if [a.name for a in attrs.fields(_cls)] != [f[0] for f in _spec]:  # pragma: no cover
        raise RuntimeError(f"wire spec of {_cls.__name__} does not match its fields")
    _cls._wire_keys = MappingProxyType({"T": "wire_type", **{f[1]: f[0] for f in _spec}})
del _R, _sub, _base, _cls, _spec
