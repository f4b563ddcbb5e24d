"""Message models: construction, wire dicts, invariants (trioalpaca.models)."""

from __future__ import annotations

import ast
import pathlib
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trioalpaca
from trioalpaca import models as m
from trioalpaca.testing import strategies as tst

UTC = timezone.utc

ALL_CLASSES = sorted(tst._BY_CLASS, key=lambda c: c.__name__)
MESSAGE_CLASSES = [c for c in ALL_CLASSES if c not in (m.OrderbookLevel, m.NewsImage)]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_frozen_slotted_attrs(cls: type[Any], data: st.DataObject) -> None:
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    value = data.draw(tst.strategy_for(cls))
    assert not hasattr(value, "__dict__")
    fields = attrs.fields(cls)
    if fields:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(value, fields[0].name, None)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_class_metadata_and_docstrings(cls: type[Any]) -> None:
    assert isinstance(cls.wire_type, str)
    assert isinstance(cls.channel, str) and cls.channel
    assert cls.__doc__ and cls.from_wire.__doc__ and cls.to_wire.__doc__
    assert getattr(trioalpaca, cls.__name__) is cls


@pytest.mark.parametrize(
    ("cls", "wire_type", "channel"),
    [
        (m.Trade, "t", "trades"),
        (m.Quote, "q", "quotes"),
        (m.Bar, "b", "bars"),
        (m.DailyBar, "d", "dailyBars"),
        (m.UpdatedBar, "u", "updatedBars"),
        (m.TradingStatus, "s", "statuses"),
        (m.LULD, "l", "lulds"),
        (m.TradeCorrection, "c", "corrections"),
        (m.TradeCancel, "x", "cancelErrors"),
        (m.Imbalance, "i", "imbalances"),
        (m.CryptoTrade, "t", "trades"),
        (m.CryptoQuote, "q", "quotes"),
        (m.CryptoBar, "b", "bars"),
        (m.CryptoDailyBar, "d", "dailyBars"),
        (m.CryptoUpdatedBar, "u", "updatedBars"),
        (m.Orderbook, "o", "orderbooks"),
        (m.CryptoPricing, "p", "pricing"),
        (m.OptionTrade, "t", "trades"),
        (m.OptionQuote, "q", "quotes"),
        (m.News, "n", "news"),
        (m.TradeUpdate, "trade_updates", "trade_updates"),
        (m.Connected, "success", "control"),
        (m.Authenticated, "success", "control"),
        (m.SubscriptionChanged, "subscription", "control"),
        (m.ServerError, "error", "control"),
    ],
)
def test_wire_codes(cls: type[Any], wire_type: str, channel: str) -> None:
    assert cls.wire_type == wire_type
    assert cls.channel == channel


@settings(max_examples=300, deadline=None)
@given(tst.any_message())
def test_from_wire_to_wire_roundtrip(msg: Any) -> None:
    wire = msg.to_wire()
    assert type(msg).from_wire(wire) == msg
    if "T" in wire:
        assert next(iter(wire)) == "T"


@settings(max_examples=100, deadline=None)
@given(tst.any_message(), st.dictionaries(st.text(min_size=3), st.integers(), max_size=3))
def test_unknown_keys_are_ignored(msg: Any, extra: dict[str, Any]) -> None:
    if isinstance(msg, (m.UnknownMessage, m.SubscriptionChanged)):
        return  # these keep every key by design
    wire = msg.to_wire()
    extra = {k: v for k, v in extra.items() if k not in wire}
    assert type(msg).from_wire({**wire, **extra}) == msg


@settings(max_examples=100, deadline=None)
@given(tst.any_message())
def test_timestamp_properties(msg: Any) -> None:
    ns = getattr(msg, "timestamp_ns", None)
    if ns is None:
        return
    dt = msg.timestamp
    assert dt.tzinfo is UTC
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = dt - epoch
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    assert micros == ns // 1000


def test_timestamp_ns_is_not_truncated() -> None:
    trade = m.Trade("AAPL", 1, "V", 1.0, 1, (), 1_614_009_104_208_123_456, "C")
    assert trade.timestamp_ns == 1_614_009_104_208_123_456
    assert trade.timestamp == datetime(2021, 2, 22, 15, 51, 44, 208123, tzinfo=UTC)
    assert m.Trade.from_wire(trade.to_wire()).timestamp_ns == 1_614_009_104_208_123_456


def test_from_wire_accepts_rfc3339_and_datetime() -> None:
    wire = {"T": "t", "S": "A", "i": 1, "x": "V", "p": 1.5, "s": 2, "c": ["@"], "z": "C"}
    a = m.Trade.from_wire({**wire, "t": "2021-02-22T15:51:44.208123456Z"})
    b = m.Trade.from_wire({**wire, "t": 1_614_009_104_208_123_456})
    c = m.Trade.from_wire({**wire, "t": datetime(2021, 2, 22, 15, 51, 44, 208123, tzinfo=UTC)})
    assert a == b
    assert c.timestamp_ns == 1_614_009_104_208_123_000
    assert a.conditions == ("@",)


def test_optional_keys_default() -> None:
    bar = m.Bar.from_wire(
        {"T": "b", "S": "SPY", "o": 1.0, "h": 2.0, "l": 0.5, "c": 1.5, "v": 10, "t": 0}
    )
    assert (bar.trade_count, bar.vwap) == (0, 0.0)
    trade = m.Trade.from_wire({"T": "t", "S": "A", "i": 1, "x": "V", "p": 1.0, "s": 1, "t": 0})
    assert (trade.conditions, trade.tape) == ((), "")
    book = m.Orderbook.from_wire({"T": "o", "S": "BTC/USD", "t": 0})
    assert (book.bids, book.asks, book.reset) == ((), (), False)


def test_from_wire_missing_required_key() -> None:
    with pytest.raises(trioalpaca.MalformedMessageError, match="without required key 'i'"):
        m.Trade.from_wire({"T": "t", "S": "A"})


def test_bar_subclasses_are_distinct() -> None:
    args = ("A", 1.0, 2.0, 0.5, 1.5, 10, 2, 1.2, 0)
    assert m.DailyBar(*args) != m.Bar(*args)
    assert isinstance(m.DailyBar(*args), m.Bar)
    assert m.DailyBar(*args).to_wire()["T"] == "d"
    assert m.UpdatedBar(*args).to_wire()["T"] == "u"
    assert m.CryptoDailyBar(*args).to_wire()["T"] == "d"


def test_orderbook_wire_shape() -> None:
    book = m.Orderbook(
        "BTC/USD", 5, (m.OrderbookLevel(1.0, 2.0),), (m.OrderbookLevel(3.0, 0.0),), True
    )
    assert book.to_wire() == {
        "T": "o",
        "S": "BTC/USD",
        "t": 5,
        "b": [{"p": 1.0, "s": 2.0}],
        "a": [{"p": 3.0, "s": 0.0}],
        "r": True,
    }


def test_news_has_symbols_and_timestamps() -> None:
    item = m.News(7, "h", "s", "a", 10, 20, "<p>c</p>", "u", ("AAPL", "TSLA"), "benzinga")
    assert not hasattr(item, "symbol")
    assert item.symbols == ("AAPL", "TSLA")
    assert item.timestamp_ns == item.created_at_ns == 10
    assert item.updated_at == datetime(1970, 1, 1, tzinfo=UTC)


def test_trade_update_wire_form() -> None:
    wire = {
        "event": "fill",
        "execution_id": "e-1",
        "order": {"id": "o-1", "symbol": "AAPL", "qty": "10"},
        "position_qty": "10",
        "price": "179.08",
        "qty": "10",
        "timestamp": "2021-05-04T18:38:59.146452818Z",
        "at": "2021-05-04T18:38:59.1Z",
        "event_id": "01H",
        "position_qtys": {"AAPL": "10"},
    }
    update = m.TradeUpdate.from_wire(wire)
    assert update.price == Decimal("179.08")
    assert update.qty == update.position_qty == Decimal("10")
    assert update.timestamp_ns == 1_620_153_539_146_452_818
    assert update.at_ns == 1_620_153_539_100_000_000
    assert update.symbol == "AAPL"
    assert update.execution_id == "e-1"
    out = update.to_wire()
    assert out["timestamp"] == wire["timestamp"]
    assert out["price"] == "179.08"
    assert "position_qtys" not in out
    minimal = m.TradeUpdate.from_wire({"event": "new", "order": {}, "timestamp": 0})
    assert minimal.price is None and minimal.at_ns is None
    assert minimal.to_wire() == {"event": "new", "order": {}, "timestamp": "1970-01-01T00:00:00Z"}


def test_trade_update_rejects_bad_values() -> None:
    base = {"event": "fill", "order": {}, "timestamp": "2021-05-04T18:38:59Z"}
    with pytest.raises(ValueError, match="decimal"):
        m.TradeUpdate.from_wire({**base, "price": "abc"})
    with pytest.raises(TypeError, match="order"):
        m.TradeUpdate.from_wire({**base, "order": "x"})
    with pytest.raises(ValueError, match="RFC 3339"):
        m.TradeUpdate.from_wire({**base, "timestamp": "yesterday"})


def test_control_events() -> None:
    assert m.Connected().to_wire() == {"T": "success", "msg": "connected"}
    assert m.Authenticated().to_wire() == {"T": "success", "msg": "authenticated"}
    assert m.ServerError(402, "auth failed").to_wire() == {
        "T": "error",
        "code": 402,
        "msg": "auth failed",
    }
    sub = m.SubscriptionChanged.from_wire(
        {"T": "subscription", "trades": ["AAPL"], "quotes": [], "bars": None, "other": 1}
    )
    assert sub.subscriptions == {"trades": ("AAPL",), "quotes": (), "bars": ()}
    gap = m.Reconnected(1_000_000_000, 3_500_000_000, 2)
    assert gap.gap_seconds == 2.5
    assert gap.gap_start == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert m.Dropped(3, "overflow").to_wire() == {"T": "dropped", "count": 3, "reason": "overflow"}
    unknown = m.UnknownMessage({"x": 1, "T": "zz"})
    assert unknown.type == "zz"
    assert list(unknown.to_wire()) == ["T", "x"]


def test_message_alias_covers_every_class() -> None:
    members = set(m.Message.__args__)  # type: ignore[attr-defined]
    assert members == set(MESSAGE_CLASSES)


def test_models_import_no_trio_msgpack_or_sockets() -> None:
    source = pathlib.Path(m.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
            if node.module.startswith("trioalpaca."):
                assert node.module in ("trioalpaca._time", "trioalpaca._errors")
    assert not imported & {"trio", "msgpack", "socket", "ssl", "trio_websocket", "asyncio"}
