"""Hypothesis strategies for every trioalpaca message model.

Use them to property-test code that consumes trioalpaca messages::

    from hypothesis import given
    from trioalpaca.testing import strategies as tst

    @given(tst.frames("stocks"))
    def test_my_handler(messages): ...

Every generated value can be encoded by the codec (``trioalpaca._codec``) in both encodings and
decodes back to an equal value: timestamps span the whole supported range (years 0001-9999,
biased towards edge cases and present-day values), floats are finite, integers fit the wire
types, text is valid UTF-8.

Requires ``hypothesis`` (a test dependency, not a runtime one).
"""

from __future__ import annotations

import string
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from trioalpaca import models as m
from trioalpaca._time import MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS
from trioalpaca.endpoints import FEEDS

__all__ = [
    "CONTROL_TYPES",
    "DATA_TYPES",
    "any_message",
    "authenticateds",
    "bars",
    "conditions",
    "connecteds",
    "crypto_bars",
    "crypto_daily_bars",
    "crypto_pricings",
    "crypto_quotes",
    "crypto_symbols",
    "crypto_trades",
    "crypto_updated_bars",
    "daily_bars",
    "data_messages",
    "droppeds",
    "frames",
    "imbalances",
    "listenings",
    "lulds",
    "malformed_messages",
    "market_data",
    "news",
    "news_images",
    "option_quotes",
    "option_symbols",
    "option_trades",
    "orderbook_levels",
    "orderbooks",
    "prices",
    "quotes",
    "reconnecteds",
    "server_errors",
    "server_messages",
    "sizes",
    "stock_symbols",
    "strategy_for",
    "subscription_changes",
    "texts",
    "timestamps_ns",
    "trade_cancels",
    "trade_corrections",
    "trade_updates",
    "trades",
    "trading_statuses",
    "unknown_messages",
    "updated_bars",
]

_NS = 1_000_000_000
# Boundaries where the smallest msgpack timestamp form changes (32 -> 64 -> 96 bit).
_EDGE_TIMESTAMPS = (
    MIN_TIMESTAMP_NS,
    MAX_TIMESTAMP_NS,
    -1,
    0,
    1,
    _NS - 1,
    _NS,
    (2**32 - 1) * _NS,
    2**32 * _NS,
    (2**32) * _NS + 1,
    (2**34 - 1) * _NS + _NS - 1,
    2**34 * _NS,
    -_NS,
)
_NOW_NS = 1_700_000_000 * _NS


def timestamps_ns(
    min_value: int = MIN_TIMESTAMP_NS, max_value: int = MAX_TIMESTAMP_NS
) -> st.SearchStrategy[int]:
    """Nanosecond timestamps in ``[min_value, max_value]`` (default: the whole supported range).

    Mixes uniform values, present-day values and the edges of the msgpack timestamp forms.
    """
    edges = [t for t in _EDGE_TIMESTAMPS if min_value <= t <= max_value]
    recent_lo = max(min_value, _NOW_NS - 10 * 365 * 86_400 * _NS)
    recent_hi = min(max_value, _NOW_NS + 10 * 365 * 86_400 * _NS)
    parts: list[st.SearchStrategy[int]] = [st.integers(min_value, max_value)]
    if recent_lo <= recent_hi:
        parts.append(st.integers(recent_lo, recent_hi))
        # whole seconds and milliseconds (shorter RFC 3339 fractions, 32-bit msgpack form)
        parts.append(st.integers(recent_lo // _NS, recent_hi // _NS).map(lambda s: s * _NS))
    if edges:
        parts.append(st.sampled_from(edges))
    return st.one_of(parts)


def texts(max_size: int = 20) -> st.SearchStrategy[str]:
    """Any text that is valid UTF-8 (no lone surrogates)."""
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def stock_symbols() -> st.SearchStrategy[str]:
    """Stock tickers such as ``AAPL`` or ``BRK.B``."""
    return st.one_of(
        st.sampled_from(["AAPL", "MSFT", "SPY", "BRK.B", "FAKEPACA", "TSLA"]),
        st.text(string.ascii_uppercase, min_size=1, max_size=5),
    )


def crypto_symbols() -> st.SearchStrategy[str]:
    """Crypto pairs such as ``BTC/USD``."""
    return st.builds(
        lambda a, b: f"{a}/{b}",
        st.text(string.ascii_uppercase, min_size=2, max_size=5),
        st.sampled_from(["USD", "USDT", "USDC", "BTC"]),
    )


def option_symbols() -> st.SearchStrategy[str]:
    """OCC option symbols such as ``AAPL240119C00190000``."""
    return st.builds(
        lambda root, y, mo, d, cp, strike: f"{root}{y:02d}{mo:02d}{d:02d}{cp}{strike:08d}",
        st.text(string.ascii_uppercase, min_size=1, max_size=5),
        st.integers(0, 99),
        st.integers(1, 12),
        st.integers(1, 28),
        st.sampled_from("CP"),
        st.integers(0, 99_999_999),
    )


def prices() -> st.SearchStrategy[float]:
    """Finite float64 prices (mostly realistic, sometimes extreme)."""
    return st.one_of(
        st.floats(0.0001, 100_000.0, allow_nan=False, allow_infinity=False),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def sizes() -> st.SearchStrategy[int]:
    """Integer sizes / volumes / counts (uint32 range, the Go SDK's ``DecodeUint32``)."""
    return st.integers(0, 2**32 - 1)


def _ids() -> st.SearchStrategy[int]:
    return st.integers(0, 2**63 - 1)


def _float_sizes() -> st.SearchStrategy[float]:
    return st.floats(0.0, 1e12, allow_nan=False, allow_infinity=False)


def _codes() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list("ABCDHIJKLMNPQUVWXYZ")), texts(3))


def _opt_exchange() -> st.SearchStrategy[str | None]:
    return st.none() | _codes()


def conditions() -> st.SearchStrategy[tuple[str, ...]]:
    """Trade/quote condition code tuples."""
    return st.lists(_codes(), max_size=4).map(tuple)


def trades() -> st.SearchStrategy[m.Trade]:
    """Stock :class:`~trioalpaca.models.Trade` values."""
    return st.builds(
        m.Trade,
        stock_symbols(),
        _ids(),
        _codes(),
        prices(),
        sizes(),
        conditions(),
        timestamps_ns(),
        st.sampled_from("ABC"),
        st.none() | timestamps_ns(),
    )


def quotes() -> st.SearchStrategy[m.Quote]:
    """Stock :class:`~trioalpaca.models.Quote` values."""
    return st.builds(
        m.Quote,
        stock_symbols(),
        _codes(),
        prices(),
        sizes(),
        _codes(),
        prices(),
        sizes(),
        conditions(),
        timestamps_ns(),
        st.sampled_from("ABC"),
        st.none() | timestamps_ns(),
    )


def _bar_args(volume: st.SearchStrategy[Any], symbol: st.SearchStrategy[str]) -> tuple[Any, ...]:
    return (symbol, prices(), prices(), prices(), prices(), volume, sizes(), prices())


def bars() -> st.SearchStrategy[m.Bar]:
    """Stock minute :class:`~trioalpaca.models.Bar` values."""
    return st.builds(m.Bar, *_bar_args(sizes(), stock_symbols()), timestamps_ns())


def daily_bars() -> st.SearchStrategy[m.DailyBar]:
    """Stock :class:`~trioalpaca.models.DailyBar` values."""
    return st.builds(m.DailyBar, *_bar_args(sizes(), stock_symbols()), timestamps_ns())


def updated_bars() -> st.SearchStrategy[m.UpdatedBar]:
    """Stock :class:`~trioalpaca.models.UpdatedBar` values."""
    return st.builds(m.UpdatedBar, *_bar_args(sizes(), stock_symbols()), timestamps_ns())


def trading_statuses() -> st.SearchStrategy[m.TradingStatus]:
    """:class:`~trioalpaca.models.TradingStatus` values."""
    return st.builds(
        m.TradingStatus,
        stock_symbols(),
        _codes(),
        texts(),
        _codes(),
        texts(),
        timestamps_ns(),
        st.sampled_from("ABCO"),
    )


def lulds() -> st.SearchStrategy[m.LULD]:
    """:class:`~trioalpaca.models.LULD` values."""
    return st.builds(
        m.LULD,
        stock_symbols(),
        prices(),
        prices(),
        _codes(),
        timestamps_ns(),
        st.sampled_from("ABC"),
    )


def trade_corrections() -> st.SearchStrategy[m.TradeCorrection]:
    """:class:`~trioalpaca.models.TradeCorrection` values."""
    return st.builds(
        m.TradeCorrection,
        stock_symbols(),
        _codes(),
        _ids(),
        prices(),
        sizes(),
        conditions(),
        _ids(),
        prices(),
        sizes(),
        conditions(),
        timestamps_ns(),
        st.sampled_from("ABC"),
    )


def trade_cancels() -> st.SearchStrategy[m.TradeCancel]:
    """:class:`~trioalpaca.models.TradeCancel` values."""
    return st.builds(
        m.TradeCancel,
        stock_symbols(),
        _ids(),
        _codes(),
        prices(),
        sizes(),
        st.sampled_from("CE"),
        timestamps_ns(),
        st.sampled_from("ABC"),
    )


def imbalances() -> st.SearchStrategy[m.Imbalance]:
    """:class:`~trioalpaca.models.Imbalance` values."""
    return st.builds(
        m.Imbalance, stock_symbols(), prices(), timestamps_ns(), st.sampled_from("ABC")
    )


def crypto_trades() -> st.SearchStrategy[m.CryptoTrade]:
    """:class:`~trioalpaca.models.CryptoTrade` values (fractional sizes)."""
    return st.builds(
        m.CryptoTrade,
        crypto_symbols(),
        _ids(),
        prices(),
        _float_sizes(),
        st.sampled_from("BS"),
        timestamps_ns(),
        _opt_exchange(),
    )


def crypto_quotes() -> st.SearchStrategy[m.CryptoQuote]:
    """:class:`~trioalpaca.models.CryptoQuote` values."""
    return st.builds(
        m.CryptoQuote,
        crypto_symbols(),
        prices(),
        _float_sizes(),
        prices(),
        _float_sizes(),
        timestamps_ns(),
        _opt_exchange(),
    )


def crypto_bars() -> st.SearchStrategy[m.CryptoBar]:
    """:class:`~trioalpaca.models.CryptoBar` values (fractional volume)."""
    return st.builds(
        m.CryptoBar, *_bar_args(_float_sizes(), crypto_symbols()), timestamps_ns(), _opt_exchange()
    )


def crypto_daily_bars() -> st.SearchStrategy[m.CryptoDailyBar]:
    """:class:`~trioalpaca.models.CryptoDailyBar` values."""
    return st.builds(
        m.CryptoDailyBar,
        *_bar_args(_float_sizes(), crypto_symbols()),
        timestamps_ns(),
        _opt_exchange(),
    )


def crypto_updated_bars() -> st.SearchStrategy[m.CryptoUpdatedBar]:
    """:class:`~trioalpaca.models.CryptoUpdatedBar` values."""
    return st.builds(
        m.CryptoUpdatedBar,
        *_bar_args(_float_sizes(), crypto_symbols()),
        timestamps_ns(),
        _opt_exchange(),
    )


def orderbook_levels() -> st.SearchStrategy[m.OrderbookLevel]:
    """:class:`~trioalpaca.models.OrderbookLevel` values (size 0 = delete)."""
    return st.builds(m.OrderbookLevel, prices(), st.one_of(st.just(0.0), _float_sizes()))


def orderbooks() -> st.SearchStrategy[m.Orderbook]:
    """:class:`~trioalpaca.models.Orderbook` snapshots and deltas."""
    levels = st.lists(orderbook_levels(), max_size=5).map(tuple)
    return st.builds(
        m.Orderbook,
        crypto_symbols(),
        timestamps_ns(),
        levels,
        levels,
        st.booleans(),
        _opt_exchange(),
    )


def crypto_pricings() -> st.SearchStrategy[m.CryptoPricing]:
    """:class:`~trioalpaca.models.CryptoPricing` (perpetuals) values."""
    return st.builds(
        m.CryptoPricing,
        crypto_symbols(),
        _codes(),
        prices(),
        prices(),
        st.floats(-1.0, 1.0),
        _float_sizes(),
        timestamps_ns(),
        timestamps_ns(),
    )


def option_trades() -> st.SearchStrategy[m.OptionTrade]:
    """:class:`~trioalpaca.models.OptionTrade` values (single-string condition)."""
    return st.builds(
        m.OptionTrade, option_symbols(), prices(), sizes(), _codes(), _codes(), timestamps_ns()
    )


def option_quotes() -> st.SearchStrategy[m.OptionQuote]:
    """:class:`~trioalpaca.models.OptionQuote` values."""
    return st.builds(
        m.OptionQuote,
        option_symbols(),
        _codes(),
        prices(),
        sizes(),
        _codes(),
        prices(),
        sizes(),
        _codes(),
        timestamps_ns(),
    )


def news() -> st.SearchStrategy[m.News]:
    """:class:`~trioalpaca.models.News` values."""
    return st.builds(
        m.News,
        _ids(),
        texts(40),
        texts(40),
        texts(),
        timestamps_ns(),
        timestamps_ns(),
        texts(60),
        texts(30),
        st.lists(stock_symbols(), max_size=4).map(tuple),
        st.sampled_from(["benzinga", "reuters", ""]),
        st.none() | st.lists(news_images(), max_size=3).map(tuple),
    )


def news_images() -> st.SearchStrategy[m.NewsImage]:
    """:class:`~trioalpaca.models.NewsImage` values."""
    return st.builds(m.NewsImage, st.sampled_from(["thumb", "small", "large"]), texts(30))


def _decimals() -> st.SearchStrategy[Decimal]:
    return st.decimals(allow_nan=False, allow_infinity=False, places=None)


_ORDER_EVENTS = (
    "new",
    "fill",
    "partial_fill",
    "canceled",
    "expired",
    "done_for_day",
    "replaced",
    "accepted",
    "rejected",
    "pending_new",
)


def _orders() -> st.SearchStrategy[dict[str, Any]]:
    scalar = st.one_of(st.none(), st.booleans(), texts(), st.integers(-(2**53), 2**53))
    return st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "client_order_id": st.uuids().map(str),
            "symbol": stock_symbols(),
            "qty": _decimals().map(str),
            "side": st.sampled_from(["buy", "sell"]),
            "status": st.sampled_from(_ORDER_EVENTS),
        },
        optional={"extended_hours": st.booleans(), "extra": scalar},
    )


def trade_updates() -> st.SearchStrategy[m.TradeUpdate]:
    """:class:`~trioalpaca.models.TradeUpdate` values (with and without fill details)."""
    opt_dec = st.one_of(st.none(), _decimals())
    opt_text = st.one_of(st.none(), st.uuids().map(str))
    return st.builds(
        m.TradeUpdate,
        st.sampled_from(_ORDER_EVENTS),
        _orders(),
        timestamps_ns(),
        opt_dec,
        opt_dec,
        opt_dec,
        opt_text,
        opt_text,
        st.one_of(st.none(), timestamps_ns()),
    )


def listenings() -> st.SearchStrategy[m.Listening]:
    """:class:`~trioalpaca.models.Listening` values."""
    return st.lists(st.sampled_from(["trade_updates", "account_updates"]), max_size=2).map(
        lambda s: m.Listening(tuple(s))
    )


def connecteds() -> st.SearchStrategy[m.Connected]:
    """The :class:`~trioalpaca.models.Connected` event."""
    return st.just(m.Connected())


def authenticateds() -> st.SearchStrategy[m.Authenticated]:
    """The :class:`~trioalpaca.models.Authenticated` event."""
    return st.just(m.Authenticated())


_ERROR_CODES = (400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 500)


def server_errors() -> st.SearchStrategy[m.ServerError]:
    """:class:`~trioalpaca.models.ServerError` values (known and unknown codes)."""
    codes = st.one_of(st.sampled_from(_ERROR_CODES), st.integers(0, 999))
    return st.builds(m.ServerError, codes, texts(40))


#: Channels per stream kind, in the order of the server's ``subscription`` acknowledgement
#: (crypto with the perpetuals' ``pricing``).
_CHANNELS = {
    "stocks": FEEDS["sip"].ack_channels,
    "crypto": FEEDS["crypto-perps/global"].ack_channels,
    "options": FEEDS["opra"].ack_channels,
    "news": FEEDS["news"].ack_channels,
}


def subscription_changes(kind: str = "stocks") -> st.SearchStrategy[m.SubscriptionChanged]:
    """:class:`~trioalpaca.models.SubscriptionChanged` states for the channels of ``kind``."""
    channels = _CHANNELS.get(kind, _CHANNELS["stocks"])
    symbols = st.lists(st.one_of(stock_symbols(), st.just("*")), max_size=4, unique=True)
    return st.dictionaries(st.sampled_from(channels), symbols.map(tuple)).map(m.SubscriptionChanged)


def reconnecteds() -> st.SearchStrategy[m.Reconnected]:
    """:class:`~trioalpaca.models.Reconnected` local events."""
    return st.builds(m.Reconnected, timestamps_ns(), timestamps_ns(), st.integers(1, 100))


def droppeds() -> st.SearchStrategy[m.Dropped]:
    """:class:`~trioalpaca.models.Dropped` local events."""
    return st.builds(m.Dropped, st.integers(0, 2**40), texts(40))


def _json_values() -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(),
    )
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(texts(5), inner, max_size=3)
        ),
        max_leaves=6,
    )


def malformed_messages() -> st.SearchStrategy[m.MalformedMessage]:
    """:class:`~trioalpaca.models.MalformedMessage` events (bad elements and whole frames)."""
    element = st.builds(m.MalformedMessage, _json_values(), texts(40), st.just(False))
    frame = st.builds(
        m.MalformedMessage, st.binary(max_size=20) | texts(20), texts(40), st.just(True)
    )
    return element | frame


def unknown_messages() -> st.SearchStrategy[m.UnknownMessage]:
    """:class:`~trioalpaca.models.UnknownMessage` values with a ``T`` no stream defines."""
    t_codes = texts(8).filter(lambda t: t not in _KNOWN_T)
    return st.builds(
        lambda t, rest: m.UnknownMessage({"T": t, **{k: v for k, v in rest.items() if k != "T"}}),
        t_codes,
        st.dictionaries(texts(5), _json_values(), max_size=4),
    )


DATA_TYPES: dict[str, tuple[type[Any], ...]] = {
    kind: classes for kind, classes in m.MARKET_DATA_TYPES.items() if classes
}
"""The market data classes each stream kind carries."""

CONTROL_TYPES: tuple[type[Any], ...] = (
    m.Connected,
    m.Authenticated,
    m.ServerError,
    m.SubscriptionChanged,
)
"""Control events the server sends on every data stream."""

#: Every ``T`` the data streams define, and the relay's in-band gap markers, which the
#: decoder reads as :class:`~trioalpaca.models.Reconnected` / :class:`~trioalpaca.models.Dropped`
#: (:func:`unknown_messages` avoids them all).
_KNOWN_T = frozenset(
    cls.wire_type
    for types in (*DATA_TYPES.values(), CONTROL_TYPES, (m.Reconnected, m.Dropped))
    for cls in types
)

_BY_CLASS: dict[type[Any], Any] = {
    m.Trade: trades,
    m.Quote: quotes,
    m.Bar: bars,
    m.DailyBar: daily_bars,
    m.UpdatedBar: updated_bars,
    m.TradingStatus: trading_statuses,
    m.LULD: lulds,
    m.TradeCorrection: trade_corrections,
    m.TradeCancel: trade_cancels,
    m.Imbalance: imbalances,
    m.CryptoTrade: crypto_trades,
    m.CryptoQuote: crypto_quotes,
    m.CryptoBar: crypto_bars,
    m.CryptoDailyBar: crypto_daily_bars,
    m.CryptoUpdatedBar: crypto_updated_bars,
    m.Orderbook: orderbooks,
    m.OrderbookLevel: orderbook_levels,
    m.CryptoPricing: crypto_pricings,
    m.OptionTrade: option_trades,
    m.OptionQuote: option_quotes,
    m.News: news,
    m.NewsImage: news_images,
    m.TradeUpdate: trade_updates,
    m.Listening: listenings,
    m.Connected: connecteds,
    m.Authenticated: authenticateds,
    m.SubscriptionChanged: subscription_changes,
    m.ServerError: server_errors,
    m.Reconnected: reconnecteds,
    m.Dropped: droppeds,
    m.MalformedMessage: malformed_messages,
    m.UnknownMessage: unknown_messages,
}


def strategy_for(cls: type[Any]) -> st.SearchStrategy[Any]:
    """The strategy generating instances of the model class ``cls``."""
    try:
        factory = _BY_CLASS[cls]
    except KeyError:
        raise ValueError(f"no strategy for {cls!r}") from None
    strategy: st.SearchStrategy[Any] = factory()
    return strategy


def market_data(kind: str = "stocks") -> st.SearchStrategy[Any]:
    """Any market data message of stream ``kind``: ``stocks``, ``crypto``, ``options``, ``news``."""
    return st.one_of([strategy_for(cls) for cls in DATA_TYPES[kind]])


def server_messages(kind: str = "stocks") -> st.SearchStrategy[Any]:
    """Control messages the server may send on stream ``kind`` (incl. unknown types)."""
    return st.one_of(
        connecteds(),
        authenticateds(),
        server_errors(),
        subscription_changes(kind),
        unknown_messages(),
    )


def data_messages(kind: str = "stocks") -> st.SearchStrategy[Any]:
    """Anything that can appear in a frame of stream ``kind``: mostly data, some control."""
    return st.one_of(market_data(kind), server_messages(kind))


def frames(kind: str = "stocks", max_size: int = 12) -> st.SearchStrategy[list[Any]]:
    """Lists of messages making one frame of stream ``kind`` (mixed types)."""
    return st.lists(data_messages(kind), max_size=max_size)


def any_message() -> st.SearchStrategy[Any]:
    """Any model instance of any class (for model-level tests)."""
    return st.one_of([factory() for factory in _BY_CLASS.values()])
