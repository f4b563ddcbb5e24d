"""Real sample payloads (spec section 4 field tables and the documented examples) decode right.

JSON samples are decoded as they appear in the documentation; each is also converted to the
msgpack form Alpaca sends (ext -1 timestamps) and decoded again, which must give the same value.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from trioalpaca import models as m
from trioalpaca._codec import Decoder, decode_request
from trioalpaca._time import parse_rfc3339_ns

TS_KEYS = ("t", "created_at", "updated_at", "ft")


def as_msgpack(sample: dict[str, Any]) -> bytes:
    """The msgpack frame a server would send for a JSON sample (timestamps as ext -1)."""
    d = dict(sample)
    for key in TS_KEYS:
        if isinstance(d.get(key), str):
            d[key] = msgpack.Timestamp.from_unix_nano(parse_rfc3339_ns(d[key]))
    return msgpack.packb([d])


def decode_both(kind: str, sample: dict[str, Any]) -> Any:
    [from_json] = Decoder(kind, "json").decode(json.dumps([sample]))
    [from_msgpack] = Decoder(kind, "msgpack").decode(as_msgpack(sample))
    assert from_json == from_msgpack
    return from_json


def ns(text: str) -> int:
    return parse_rfc3339_ns(text)


# ----------------------------------------------------------------------------------- stocks


def test_stock_trade() -> None:
    sample = {
        "T": "t",
        "i": 96921,
        "S": "AAPL",
        "x": "D",
        "p": 126.55,
        "s": 1,
        "t": "2021-02-22T15:51:44.208Z",
        "c": ["@", "I"],
        "z": "C",
    }
    trade = decode_both("stocks", sample)
    assert trade == m.Trade(
        "AAPL", 96921, "D", 126.55, 1, ("@", "I"), 1_614_009_104_208_000_000, "C"
    )
    assert trade.channel == "trades"


def test_stock_quote() -> None:
    sample = {
        "T": "q",
        "S": "AMD",
        "bx": "U",
        "bp": 87.66,
        "bs": 1,
        "ax": "Q",
        "ap": 87.68,
        "as": 4,
        "t": "2021-02-22T15:51:45.335689322Z",
        "c": ["R"],
        "z": "C",
    }
    quote = decode_both("stocks", sample)
    assert quote == m.Quote(
        "AMD", "U", 87.66, 1, "Q", 87.68, 4, ("R",), ns("2021-02-22T15:51:45.335689322Z"), "C"
    )
    assert quote.timestamp_ns % 1_000_000_000 == 335_689_322  # nanoseconds kept


@pytest.mark.parametrize(("code", "cls"), [("b", m.Bar), ("d", m.DailyBar), ("u", m.UpdatedBar)])
def test_stock_bars(code: str, cls: type[m.Bar]) -> None:
    sample = {
        "T": code,
        "S": "SPY",
        "o": 388.985,
        "h": 389.13,
        "l": 388.975,
        "c": 389.12,
        "v": 49378,
        "n": 461,
        "vw": 389.062639,
        "t": "2021-02-22T19:15:00Z",
    }
    bar = decode_both("stocks", sample)
    assert type(bar) is cls
    assert bar == cls(
        "SPY", 388.985, 389.13, 388.975, 389.12, 49378, 461, 389.062639, 1_614_021_300_000_000_000
    )


def test_stock_bar_without_count_and_vwap() -> None:
    # the older documentation example has neither ``n`` nor ``vw``
    sample = {
        "T": "b",
        "S": "SPY",
        "o": 388.985,
        "h": 389.13,
        "l": 388.975,
        "c": 389.12,
        "v": 49378,
        "t": "2021-02-22T19:15:00Z",
    }
    bar = decode_both("stocks", sample)
    assert (bar.trade_count, bar.vwap) == (0, 0.0)


def test_trading_status() -> None:
    sample = {
        "T": "s",
        "S": "AAPL",
        "sc": "H",
        "sm": "Trading Halt",
        "rc": "T12",
        "rm": "Trading Halted; For information requested by NASDAQ",
        "t": "2021-02-22T16:00:05.123456789Z",
        "z": "C",
    }
    status = decode_both("stocks", sample)
    assert status == m.TradingStatus(
        "AAPL",
        "H",
        "Trading Halt",
        "T12",
        "Trading Halted; For information requested by NASDAQ",
        ns("2021-02-22T16:00:05.123456789Z"),
        "C",
    )


def test_luld() -> None:
    sample = {
        "T": "l",
        "S": "AAPL",
        "u": 135.52,
        "d": 122.62,
        "i": "B",
        "t": "2021-07-05T13:32:43.512912Z",
        "z": "C",
    }
    luld = decode_both("stocks", sample)
    assert luld == m.LULD("AAPL", 135.52, 122.62, "B", ns("2021-07-05T13:32:43.512912Z"), "C")


def test_trade_correction() -> None:
    sample = {
        "T": "c",
        "S": "EEM",
        "x": "M",
        "oi": 52983525033527,
        "op": 39.1582,
        "os": 440000,
        "oc": [" ", "7", "V"],
        "ci": 52983525034326,
        "cp": 39.1809,
        "cs": 440000,
        "cc": [" ", "7", "V"],
        "z": "B",
        "t": "2023-04-06T14:22:03.123Z",
    }
    fix = decode_both("stocks", sample)
    assert fix == m.TradeCorrection(
        "EEM",
        "M",
        52983525033527,
        39.1582,
        440000,
        (" ", "7", "V"),
        52983525034326,
        39.1809,
        440000,
        (" ", "7", "V"),
        ns("2023-04-06T14:22:03.123Z"),
        "B",
    )


def test_trade_cancel() -> None:
    sample = {
        "T": "x",
        "S": "SPY",
        "i": 52983525028174,
        "x": "Z",
        "p": 413.4,
        "s": 100,
        "a": "C",
        "z": "B",
        "t": "2023-04-06T14:30:00.1Z",
    }
    cancel = decode_both("stocks", sample)
    assert cancel == m.TradeCancel(
        "SPY", 52983525028174, "Z", 413.4, 100, "C", ns("2023-04-06T14:30:00.1Z"), "B"
    )


def test_imbalance() -> None:
    sample = {"T": "i", "S": "AAPL", "p": 172.5, "z": "C", "t": "2023-04-06T15:50:00Z"}
    assert decode_both("stocks", sample) == m.Imbalance(
        "AAPL", 172.5, ns("2023-04-06T15:50:00Z"), "C"
    )


# ----------------------------------------------------------------------------------- crypto


def test_crypto_trade() -> None:
    sample = {
        "T": "t",
        "S": "AVAX/USD",
        "p": 47.299,
        "s": 29.205707815,
        "t": "2024-03-12T10:27:48.858228144Z",
        "i": 3447222699101865076,
        "tks": "S",
    }
    trade = decode_both("crypto", sample)
    assert trade == m.CryptoTrade(
        "AVAX/USD",
        3447222699101865076,
        47.299,
        29.205707815,
        "S",
        ns("2024-03-12T10:27:48.858228144Z"),
    )
    assert type(trade.size) is float


def test_crypto_quote() -> None:
    sample = {
        "T": "q",
        "S": "BAT/USD",
        "bp": 0.35718,
        "bs": 13445.46,
        "ap": 0.3581,
        "as": 13561.902,
        "t": "2024-03-12T10:29:43.111588173Z",
    }
    assert decode_both("crypto", sample) == m.CryptoQuote(
        "BAT/USD", 0.35718, 13445.46, 0.3581, 13561.902, ns("2024-03-12T10:29:43.111588173Z")
    )


def test_crypto_bar_from_quote_midpoints() -> None:
    # bars include quote mid-prices, so volume and trade count may be 0
    sample = {
        "T": "b",
        "S": "BTC/USD",
        "o": 71856.1435,
        "h": 71856.1435,
        "l": 71856.1435,
        "c": 71856.1435,
        "v": 0,
        "t": "2024-03-12T10:20:00Z",
        "n": 0,
        "vw": 0,
    }
    bar = decode_both("crypto", sample)
    assert bar == m.CryptoBar(
        "BTC/USD",
        71856.1435,
        71856.1435,
        71856.1435,
        71856.1435,
        0.0,
        0,
        0.0,
        ns("2024-03-12T10:20:00Z"),
    )
    assert type(bar.volume) is float and type(bar.vwap) is float
    daily = decode_both("crypto", {**sample, "T": "d", "v": 1.25})
    assert type(daily) is m.CryptoDailyBar and daily.volume == 1.25
    assert type(decode_both("crypto", {**sample, "T": "u"})) is m.CryptoUpdatedBar


def test_crypto_orderbook() -> None:
    sample = {
        "T": "o",
        "S": "BTC/USD",
        "t": "2024-03-12T10:38:50.79613221Z",
        "b": [{"p": 71859.53, "s": 0.27994}, {"p": 71849.4, "s": 0.553986}],
        "a": [{"p": 71939.7, "s": 0.83953}],
        "r": True,
    }
    book = decode_both("crypto", sample)
    assert book == m.Orderbook(
        "BTC/USD",
        ns("2024-03-12T10:38:50.79613221Z"),
        (m.OrderbookLevel(71859.53, 0.27994), m.OrderbookLevel(71849.4, 0.553986)),
        (m.OrderbookLevel(71939.7, 0.83953),),
        True,
    )
    delta = decode_both("crypto", {**sample, "b": [{"p": 71859.53, "s": 0}], "a": [], "r": False})
    assert delta.bids == (m.OrderbookLevel(71859.53, 0.0),) and not delta.reset


def test_crypto_perp_pricing() -> None:
    sample = {
        "T": "p",
        "S": "BTC-PERP",
        "x": "ALP",
        "ip": 71850.5,
        "mp": 71860.25,
        "fr": 0.0001,
        "oi": 1234.5,
        "t": "2025-01-02T03:04:05.5Z",
        "ft": "2025-01-02T08:00:00Z",
    }
    pricing = decode_both("crypto", sample)
    assert pricing == m.CryptoPricing(
        "BTC-PERP",
        "ALP",
        71850.5,
        71860.25,
        0.0001,
        1234.5,
        ns("2025-01-02T03:04:05.5Z"),
        ns("2025-01-02T08:00:00Z"),
    )


# ---------------------------------------------------------------------------------- options


def test_option_trade_single_condition() -> None:
    sample = {
        "T": "t",
        "S": "AAPL240315C00172500",
        "t": "2024-03-11T13:35:35.13312256Z",
        "p": 2.84,
        "s": 1,
        "x": "N",
        "c": "S",
    }
    trade = decode_both("options", sample)
    assert trade == m.OptionTrade(
        "AAPL240315C00172500", 2.84, 1, "N", "S", ns("2024-03-11T13:35:35.13312256Z")
    )
    assert trade.timestamp_ns % 1_000_000_000 == 133_122_560


def test_option_quote() -> None:
    sample = {
        "T": "q",
        "S": "SPXW240327P04925000",
        "t": "2024-03-12T11:59:38.897261568Z",
        "bx": "C",
        "bp": 9.46,
        "bs": 53,
        "ax": "C",
        "ap": 9.66,
        "as": 38,
        "c": "A",
    }
    assert decode_both("options", sample) == m.OptionQuote(
        "SPXW240327P04925000",
        "C",
        9.46,
        53,
        "C",
        9.66,
        38,
        "A",
        ns("2024-03-12T11:59:38.897261568Z"),
    )


# ------------------------------------------------------------------------------------- news


def test_news() -> None:
    sample = {
        "T": "n",
        "id": 24918784,
        "headline": "Corsair Reports Purchase Of Majority Ownership In iDisplay",
        "summary": "Corsair Gaming, Inc. (NASDAQ:CRSR) today announced ...",
        "author": "Benzinga Newsdesk",
        "created_at": "2022-01-05T22:00:37Z",
        "updated_at": "2022-01-05T22:00:38Z",
        "url": "https://www.benzinga.com/m-a/22/01/24918784/corsair-reports",
        "content": '\u003cp\u003eCorsair Gaming, Inc. (NASDAQ:\u003ca class="ticker"\u003e',
        "symbols": ["CRSR"],
        "source": "benzinga",
    }
    item = decode_both("news", sample)
    assert item == m.News(
        24918784,
        sample["headline"],
        sample["summary"],
        "Benzinga Newsdesk",
        ns("2022-01-05T22:00:37Z"),
        ns("2022-01-05T22:00:38Z"),
        sample["content"],
        sample["url"],
        ("CRSR",),
        "benzinga",
    )
    assert item.content.startswith("<p>")
    assert item.updated_at_ns - item.created_at_ns == 1_000_000_000


# ---------------------------------------------------------------------------------- control


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('[{"T":"success","msg":"connected"}]', m.Connected()),
        ('[{"T":"success","msg":"authenticated"}]', m.Authenticated()),
        ('[{"T":"error","code":402,"msg":"auth failed"}]', m.ServerError(402, "auth failed")),
        (
            '[{"T":"error","code":406,"msg":"connection limit exceeded"}]',
            m.ServerError(406, "connection limit exceeded"),
        ),
        (
            '[{"T":"subscription","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["*"],'
            '"updatedBars":[],"dailyBars":[],"statuses":[],"lulds":[],'
            '"corrections":["AAPL"],"cancelErrors":["AAPL"]}]',
            m.SubscriptionChanged(
                {
                    "trades": ("AAPL",),
                    "quotes": ("AMD", "CLDR"),
                    "bars": ("*",),
                    "updatedBars": (),
                    "dailyBars": (),
                    "statuses": (),
                    "lulds": (),
                    "corrections": ("AAPL",),
                    "cancelErrors": ("AAPL",),
                }
            ),
        ),
    ],
)
def test_control_samples(frame: str, expected: Any) -> None:
    for kind in ("stocks", "crypto", "options", "news"):
        assert Decoder(kind, "json").decode(frame) == [expected]
        assert Decoder(kind, "msgpack").decode(msgpack.packb(json.loads(frame))) == [expected]


def test_client_requests() -> None:
    assert decode_request('{"action":"auth","key":"KEY","secret":"SECRET"}') == {
        "action": "auth",
        "key": "KEY",
        "secret": "SECRET",
    }
    sub = '{"action":"subscribe","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["*"]}'
    assert decode_request(sub)["quotes"] == ["AMD", "CLDR"]
    go_style = msgpack.packb({"action": "subscribe", "trades": ["AAPL"], "quotes": None})
    assert decode_request(go_style) == {"action": "subscribe", "trades": ["AAPL"], "quotes": None}


# ---------------------------------------------------------------------------------- trading


def test_trade_update_fill() -> None:
    frame = json.dumps(
        {
            "stream": "trade_updates",
            "data": {
                "event": "fill",
                "execution_id": "2f63ea93-423d-4169-b3f6-3fdafc10c418",
                "order": {
                    "id": "7b7653c4-7468-494a-aeb3-d5f255789473",
                    "client_order_id": "7b7653c4-7468-494a-aeb3-d5f255789473",
                    "symbol": "AAPL",
                    "qty": "1",
                    "filled_qty": "1",
                    "status": "filled",
                    "created_at": "2021-05-04T18:38:59.145683Z",
                },
                "position_qty": "1",
                "price": "179.08",
                "qty": "1",
                "timestamp": "2021-05-04T18:38:59.146452818Z",
            },
        }
    )
    for encoding in ("json", "msgpack"):  # paper sends JSON inside binary frames
        [update] = Decoder("trading", encoding).decode(frame.encode())  # type: ignore[arg-type]
        assert isinstance(update, m.TradeUpdate)
        assert update.event == "fill"
        assert update.symbol == "AAPL"
        assert update.price == Decimal("179.08")
        assert update.qty == update.position_qty == Decimal("1")
        assert update.execution_id == "2f63ea93-423d-4169-b3f6-3fdafc10c418"
        assert update.timestamp_ns == ns("2021-05-04T18:38:59.146452818Z")
        assert update.order["status"] == "filled"


def test_trade_update_new_order_without_fill_fields() -> None:
    frame = (
        '{"stream":"trade_updates","data":{"event":"new","order":{"id":"x","symbol":"TSLA"},'
        '"timestamp":"2021-05-04T18:38:59Z","at":"2021-05-04T18:38:59.1Z","event_id":"01HX"}}'
    )
    [update] = Decoder("trading", "json").decode(frame)
    assert isinstance(update, m.TradeUpdate)
    assert (update.price, update.qty, update.execution_id) == (None, None, None)
    assert update.event_id == "01HX"
    assert update.at_ns == ns("2021-05-04T18:38:59.1Z")


def test_trading_handshake_samples() -> None:
    decoder = Decoder("trading", "json")
    assert decoder.decode(
        b'{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}'
    ) == [m.Authenticated()]
    assert decoder.decode('{"stream":"listening","data":{"streams":["trade_updates"]}}') == [
        m.Listening(("trade_updates",))
    ]
    assert decoder.decode('{"stream":"listening","data":{"streams":[]}}') == [m.Listening(())]
