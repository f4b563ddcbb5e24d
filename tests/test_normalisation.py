"""Normalisation rules shared by ``Model.from_wire`` and the stream decoder, and wire-key access.

Rules (documented in docs/guides/malformed.rst and the models module):

1. a single string where a list of strings is expected -> a 1-tuple;
2. an integral float where an integer is expected (sizes, volumes, counts, ids; |v| <= 2**53)
   -> int;
3. an int where a float is expected (prices) -> float;
4. RFC 3339 text for a timestamp, in JSON and in msgpack frames -> int nanoseconds;
5. null (None) at an optional key -> as if absent (the default).

Anything else that does not fit is refused: ``from_wire`` raises MalformedMessageError and the
decoder delivers a MalformedMessage with the same text in the element's place.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import MalformedMessageError
from trioalpaca import models as m
from trioalpaca._codec import Decoder
from trioalpaca._time import format_rfc3339_ns
from trioalpaca.testing import strategies as tst

TS = 1_700_000_000_123_456_789
TEXT = format_rfc3339_ns(TS)


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_each_rule_in_the_decoder_and_from_wire(encoding: str) -> None:
    cases: list[tuple[str, type[Any], dict[str, Any], str, Any]] = [
        ("stocks", m.Trade, {"S": "A", "i": 1, "x": "V", "p": 1.5, "s": 1, "t": TS, "c": "R"},
         "conditions", ("R",)),
        ("stocks", m.Trade, {"S": "A", "i": 1, "x": "V", "p": 1.5, "s": 42.0, "t": TS},
         "size", 42),
        ("stocks", m.UpdatedBar, {"S": "A", "o": 100, "h": 101, "l": 99, "c": 100, "v": 5,
                                   "t": TS}, "open", 100.0),
        ("stocks", m.Trade, {"S": "A", "i": 1, "x": "V", "p": 1.5, "s": 1, "t": TEXT, "r": TEXT},
         "receive_time_ns", TS),
        ("stocks", m.Trade, {"S": "A", "i": 1, "x": "V", "p": 1.5, "s": 1, "t": TS, "z": None},
         "tape", ""),
        ("crypto", m.CryptoTrade, {"S": "BTC/USD", "i": 1, "p": 1, "s": 2, "t": TS, "x": "CBSE"},
         "exchange", "CBSE"),
        ("crypto", m.Orderbook, {"S": "BTC/USD", "t": TS, "b": [{"p": 1, "s": 2}], "x": "CBSE"},
         "bids", (m.OrderbookLevel(1.0, 2.0),)),
        ("news", m.News, {"id": 7, "created_at": TS, "updated_at": TS,
                          "images": [{"size": "thumb", "url": "https://x/y.png"}]},
         "images", (m.NewsImage("thumb", "https://x/y.png"),)),
    ]  # fmt: skip
    for kind, cls, fields, attr, expected in cases:
        d = {"T": cls.wire_type, **fields}
        frame = msgpack.packb([d]) if encoding == "msgpack" else json.dumps([d])
        [decoded] = Decoder(kind, encoding).decode(frame)  # type: ignore[arg-type]
        assert decoded == cls.from_wire(d)
        value = getattr(decoded, attr)
        assert value == expected and type(value) is type(expected), (cls, attr, value)


def test_refusals() -> None:
    base = {"T": "t", "S": "A", "i": 1, "x": "V", "p": 1.5, "s": 1, "t": TS}
    for change, text in [
        ({"s": 1.5}, "'s' must be an integer, got 1.5"),
        ({"s": 2.0**60}, "'s' must be an integer"),  # beyond 2**53 a float is not exact
        ({"p": "1.5"}, "'p' must be a number"),
        ({"c": ["R", 1]}, "'c' must be a list of strings, got ['R', 1]"),
        ({"S": None}, "'S' must be a string, got None"),
    ]:
        with pytest.raises(
            MalformedMessageError, match=text.replace("[", r"\[").replace("(", r"\(")
        ):
            m.Trade.from_wire({**base, **change})
    with pytest.raises(MalformedMessageError, match="'c' must be a string"):
        m.OptionTrade.from_wire({"S": "X", "p": 1.0, "s": 1, "x": "A", "c": ["I"], "t": TS})
    assert isinstance(MalformedMessageError("x"), ValueError)


_ODD: dict[str, Any] = {
    "str": st.one_of(st.none(), st.integers(0, 9), st.just(["A"])),
    "int": st.one_of(st.floats(-1e6, 1e6).map(round).map(float), st.just(1.5), st.text(max_size=2),
                     st.just(True), st.just(2.0**60)),
    "float": st.one_of(st.integers(-(10**6), 10**6), st.just("1.0"), st.none(), st.just(10**400)),
    "ts": st.one_of(tst.timestamps_ns().map(format_rfc3339_ns), st.just("noon"), st.just(1.5),
                    st.just(2**70)),
    "strs": st.one_of(st.text(max_size=3), st.none(), st.just([1]), st.just(("A", "B"))),
    "bool": st.one_of(st.integers(0, 1), st.none()),
    "levels": st.one_of(st.just([{"p": 1, "s": 2}]), st.just([{"p": 1}]), st.just(5)),
    "images": st.one_of(st.just([{"url": "u"}]), st.just([{"size": 1}]), st.just("img")),
}  # fmt: skip


@pytest.mark.parametrize("kind", ["stocks", "crypto", "options", "news"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_from_wire_agrees_with_the_decoder(kind: str, data: st.DataObject) -> None:
    """For random wire dicts with odd shapes: from_wire(d) == the decoded model, or both refuse
    with the same text."""
    msg = data.draw(tst.market_data(kind))
    d = msg.to_wire()
    spec = m._SPECS[type(msg)]
    for _attr, key, field_kind, _default in data.draw(
        st.lists(st.sampled_from(spec), max_size=3, unique=True)
    ):
        if data.draw(st.booleans()) and key in d:
            del d[key]
        else:
            d[key] = data.draw(_ODD[field_kind])
    try:
        expected: Any = type(msg).from_wire(d)
    except MalformedMessageError as exc:
        expected = str(exc)
    for encoding in ("msgpack", "json"):
        try:
            frame = msgpack.packb([d]) if encoding == "msgpack" else json.dumps([d])
        except (OverflowError, ValueError, TypeError):
            continue  # not representable in this encoding (2**70, ...)
        [decoded] = Decoder(kind, encoding).decode(frame)  # type: ignore[arg-type]
        if isinstance(expected, str):
            assert isinstance(decoded, m.MalformedMessage)
            assert decoded.error == expected
        else:
            assert decoded == expected


# -------------------------------------------------------------------- wire-key access (#11)


def test_mapping_style_access_on_a_trade() -> None:
    trade = m.Trade("AAPL", 5, "V", 189.5, 100, ("@",), TS, "C")
    assert trade["S"] == "AAPL" and trade["p"] == 189.5 and trade["T"] == "t"
    assert trade["t"] == TS and trade["c"] == ("@",)
    assert trade.get("r") is None and trade.get("r", 0) == 0 and trade.get("nope") is None
    assert "S" in trade and "r" not in trade and "nope" not in trade and 5 not in trade
    with pytest.raises(KeyError):
        trade["r"]  # optional and not sent
    with pytest.raises(KeyError):
        trade["price"]  # attribute names are not wire keys
    assert trade.keys() == ("T", "S", "i", "x", "p", "s", "c", "t", "z")
    with pytest.raises(TypeError):
        iter(trade)
    crypto = m.CryptoTrade("BTC/USD", 1, 1.0, 0.5, "B", TS, exchange="CBSE")
    assert crypto.get("x") == "CBSE" and m.CryptoTrade("B", 1, 1.0, 1.0, "B", TS).get("x") is None


@settings(max_examples=300, deadline=None)
@given(tst.any_message())
def test_wire_keys_match_to_wire_and_round_trip(msg: Any) -> None:
    wire = msg.to_wire()
    if isinstance(msg, m.UnknownMessage):
        assert set(msg.keys()) == set(wire)  # the raw dict, as received
    else:
        assert set(msg.keys()) == {k for k, v in wire.items() if v is not None}
    for key in msg.keys():  # noqa: SIM118 - models are deliberately not iterable
        assert key in msg
        assert msg[key] is msg.get(key)
    assert type(msg).from_wire(dict(msg)) == msg
