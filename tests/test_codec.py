"""Wire codec: frames <-> messages, both encodings (trioalpaca._codec)."""

from __future__ import annotations

import json
import struct
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import _codec
from trioalpaca import models as m
from trioalpaca._codec import (
    Decoder,
    Encoder,
    decode_request,
    decode_trading,
    encode_request,
    encode_trading,
)
from trioalpaca._errors import (
    LocalProtocolError,
    MalformedMessageError,
    ProtocolError,
    RemoteProtocolError,
)
from trioalpaca._time import MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS, parse_rfc3339_ns
from trioalpaca.endpoints import StreamKind
from trioalpaca.testing import strategies as tst

KINDS = ["stocks", "crypto", "options", "news"]
ENCODINGS = ["msgpack", "json"]
TS = 1_614_009_104_208_123_456


def trade(ts: int = TS, **changes: Any) -> m.Trade:
    fields: dict[str, Any] = dict(
        symbol="AAPL",
        trade_id=96921,
        exchange="D",
        price=126.55,
        size=1,
        conditions=("@", "I"),
        timestamp_ns=ts,
        tape="C",
    )
    fields.update(changes)
    return m.Trade(**fields)


def trade_map(t: Any) -> dict[str, Any]:
    return {"T": "t", "S": "AAPL", "i": 96921, "x": "D", "p": 126.55, "s": 1, "c": ["@"], "t": t}


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_frame_roundtrip(kind: str, encoding: str, data: st.DataObject) -> None:
    messages = data.draw(tst.frames(kind, max_size=8))
    encoder, decoder = Encoder(kind, encoding), Decoder(kind, encoding)  # type: ignore[arg-type]
    frame = encoder.encode(messages)
    assert isinstance(frame, bytes if encoding == "msgpack" else str)
    assert decoder.decode(frame) == messages
    raw = decoder.decode_raw(frame)
    assert raw == [msg.to_wire() for msg in messages]
    assert encoder.encode_raw(raw) == frame


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_batch_equals_parts(kind: str, encoding: str, data: st.DataObject) -> None:
    first = data.draw(tst.frames(kind, max_size=5))
    second = data.draw(tst.frames(kind, max_size=5))
    encoder, decoder = Encoder(kind, encoding), Decoder(kind, encoding)  # type: ignore[arg-type]
    whole = decoder.decode(encoder.encode(first + second))
    parts = decoder.decode(encoder.encode(first)) + decoder.decode(encoder.encode(second))
    assert whole == parts == first + second
    singles = [x for msg in first for x in decoder.decode(encoder.encode([msg]))]
    assert singles == first


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=200, deadline=None)
@given(ts=tst.timestamps_ns())
def test_timestamps_whole_range(encoding: str, ts: int) -> None:
    encoder, decoder = Encoder("stocks", encoding), Decoder("stocks", encoding)  # type: ignore[arg-type]
    msg = trade(ts)
    assert decoder.decode(encoder.encode([msg])) == [msg]
    news = m.News(1, "h", "", "", ts, ts, "", "", (), "benzinga")
    enc_n, dec_n = Encoder("news", encoding), Decoder("news", encoding)  # type: ignore[arg-type]
    assert dec_n.decode(enc_n.encode([news])) == [news]


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=60, deadline=None)
@given(update=tst.trade_updates())
def test_trade_update_roundtrip(encoding: str, update: m.TradeUpdate) -> None:
    frame = Encoder("trading", encoding).encode([update])  # type: ignore[arg-type]
    assert Decoder("trading", encoding).decode(frame) == [update]  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=60, deadline=None)
@given(
    req=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.text(), st.lists(st.text(max_size=5), max_size=3)),
        max_size=5,
    )
)
def test_request_roundtrip(encoding: str, req: dict[str, Any]) -> None:
    frame = encode_request(req, encoding)  # type: ignore[arg-type]
    assert isinstance(frame, bytes if encoding == "msgpack" else str)
    assert decode_request(frame) == req


# ------------------------------------------------------------------- msgpack timestamp forms


def _frame_with_raw_timestamp(ext: bytes) -> bytes:
    """A one-trade frame whose ``t`` is the given raw ext -1 bytes (everything hand-built)."""
    body = msgpack.packb(trade_map(0))
    assert body[:1] == b"\x88"  # fixmap of 8 entries; ``t`` is the last one
    assert body.endswith(b"\xa1t\x00")
    return b"\x91" + body[:-1] + ext


def test_decode_timestamp_32bit() -> None:
    frame = _frame_with_raw_timestamp(b"\xd6\xff" + struct.pack(">I", 1_614_009_104))
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert msg.timestamp_ns == 1_614_009_104_000_000_000  # type: ignore[union-attr]
    assert Decoder("stocks", "msgpack").decode_raw(frame)[0]["t"] == 1_614_009_104_000_000_000


def test_decode_timestamp_64bit() -> None:
    packed = (208_123_456 << 34) | 1_614_009_104
    frame = _frame_with_raw_timestamp(b"\xd7\xff" + struct.pack(">Q", packed))
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert msg.timestamp_ns == TS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(1_614_009_104, 208_123_456), (-1, 999_999_999), (-62_135_596_800, 0), (2**34 + 7, 5)],
)
def test_decode_timestamp_96bit(seconds: int, nanos: int) -> None:
    frame = _frame_with_raw_timestamp(b"\xc7\x0c\xff" + struct.pack(">Iq", nanos, seconds))
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert msg.timestamp_ns == seconds * 1_000_000_000 + nanos  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(2**40, 5), (-62_135_596_801, 999_999_999), (253_402_300_800, 0)]
)
def test_decode_rejects_timestamps_outside_years_1_to_9999(seconds: int, nanos: int) -> None:
    frame = _frame_with_raw_timestamp(b"\xc7\x0c\xff" + struct.pack(">Iq", nanos, seconds))
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert isinstance(msg, m.MalformedMessage)
    assert "outside the years 0001-9999" in msg.error


@pytest.mark.parametrize(
    ("ts", "prefix"),
    [
        (1_614_009_104_000_000_000, b"\xd6\xff"),  # whole seconds, fits uint32
        (TS, b"\xd7\xff"),  # nanoseconds, seconds < 2**34
        (0, b"\xd6\xff"),
        (-1, b"\xc7\x0c\xff"),  # pre-epoch needs the 96-bit form
        (2**34 * 1_000_000_000, b"\xc7\x0c\xff"),  # beyond 2514
        (MIN_TIMESTAMP_NS, b"\xc7\x0c\xff"),
        (MAX_TIMESTAMP_NS, b"\xc7\x0c\xff"),
    ],
)
def test_encode_uses_smallest_timestamp_form(ts: int, prefix: bytes) -> None:
    frame = Encoder("stocks", "msgpack").encode([trade(ts)])
    assert isinstance(frame, bytes)
    assert b"\xa1t" + prefix in frame
    assert Decoder("stocks", "msgpack").decode(frame) == [trade(ts)]


# ---------------------------------------------------------------------- wire shape details


@settings(max_examples=40, deadline=None)
@given(messages=tst.frames("stocks"))
def test_t_is_first_in_every_map(messages: list[Any]) -> None:
    binary = Encoder("stocks", "msgpack").encode(messages)
    text = Encoder("stocks", "json").encode(messages)
    for decoded in (
        msgpack.unpackb(binary, object_pairs_hook=list, timestamp=2),
        json.loads(text, object_pairs_hook=list),
    ):
        for pairs in decoded:
            assert pairs[0][0] == "T"


def test_numbers_keep_their_wire_types() -> None:
    msg = trade(price=126, size=1)  # an int price still goes out as float64
    for frame in (
        Encoder("stocks", "msgpack").encode([msg]),
        Encoder("stocks", "json").encode([msg]),
    ):
        d = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
        assert type(d[0]["p"]) is float
        assert type(d[0]["s"]) is int
        assert type(d[0]["i"]) is int
    binary = Encoder("stocks", "msgpack").encode([msg])
    assert b"\xa1p\xcb" in binary  # float64 marker
    crypto = m.CryptoTrade("BTC/USD", 1, 60000.0, 1, "B", TS)
    d = msgpack.unpackb(Encoder("crypto", "msgpack").encode([crypto]))
    assert type(d[0]["s"]) is float


def test_encode_raw_writes_floats_where_the_wire_wants_them() -> None:
    raw = {"T": "t", "S": "A", "i": 1, "x": "V", "p": 126, "s": 1, "c": [], "t": TS, "z": "C"}
    for encoding in ENCODINGS:
        frame = Encoder("stocks", encoding).encode_raw([raw])  # type: ignore[arg-type]
        d = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
        assert type(d[0]["p"]) is float and type(d[0]["s"]) is int
    assert raw["p"] == 126 and type(raw["p"]) is int  # the caller's dict is untouched
    bar = {"T": "b", "S": "A", "o": 1, "h": 2, "l": 1, "c": 2, "v": 10, "t": TS}
    [out] = msgpack.unpackb(Encoder("stocks", "msgpack").encode_raw([bar]), timestamp=2)
    assert out == bar  # same values, missing optional keys not invented
    assert [type(out[k]) for k in "ohlcv"] == [float, float, float, float, int]
    with pytest.raises(LocalProtocolError, match="'p' must be a number"):
        Encoder("stocks", "msgpack").encode_raw([{**raw, "p": "cheap"}])


def test_json_timestamps_are_rfc3339() -> None:
    text = Encoder("stocks", "json").encode(
        [trade(1_614_009_104_208_000_000), trade(1_614_021_300_000_000_000)]
    )
    assert isinstance(text, str)
    assert '"t":"2021-02-22T15:51:44.208Z"' in text
    assert '"t":"2021-02-22T19:15:00Z"' in text


def test_encode_raw_does_not_mutate_and_moves_t_first() -> None:
    raw = {"S": "AAPL", "T": "t", "i": 1, "x": "V", "p": 1.0, "s": 1, "c": [], "t": 5, "z": "C"}
    snapshot = dict(raw)
    for encoding in ENCODINGS:
        frame = Encoder("stocks", encoding).encode_raw([raw])  # type: ignore[arg-type]
        assert raw == snapshot
        [pairs] = (
            msgpack.unpackb(frame, object_pairs_hook=list, timestamp=2)
            if isinstance(frame, bytes)
            else json.loads(frame, object_pairs_hook=list)
        )
        assert pairs[0] == ("T", "t") or pairs[0] == ["T", "t"]
        assert Decoder("stocks", encoding).decode_raw(frame) == [raw]  # type: ignore[arg-type]


# --------------------------------------------------------------------- decoding specifics


def test_control_messages() -> None:
    decoder = Decoder("stocks", "json")
    assert decoder.decode('[{"T":"success","msg":"connected"}]') == [m.Connected()]
    assert decoder.decode('[{"T":"success","msg":"authenticated"}]') == [m.Authenticated()]
    assert decoder.decode('[{"T":"error","code":402,"msg":"auth failed"}]') == [
        m.ServerError(402, "auth failed")
    ]
    [sub] = decoder.decode('[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":null}]')
    assert sub == m.SubscriptionChanged({"trades": ("AAPL",), "quotes": (), "bars": ()})
    [other] = decoder.decode('[{"T":"success","msg":"something new"}]')
    assert other == m.UnknownMessage({"T": "success", "msg": "something new"})


def test_t_codes_depend_on_kind() -> None:
    frame = Encoder("crypto", "msgpack").encode([m.CryptoTrade("BTC/USD", 1, 1.0, 0.5, "B", TS)])
    [crypto] = Decoder(StreamKind.CRYPTO, "msgpack").decode(frame)
    assert type(crypto) is m.CryptoTrade
    book = m.Orderbook("BTC/USD", TS, (), (), True)
    [unknown] = Decoder("stocks", "msgpack").decode(Encoder("crypto", "msgpack").encode([book]))
    assert isinstance(unknown, m.UnknownMessage)
    assert unknown.type == "o"
    assert unknown.raw["t"] == TS
    opt = m.OptionTrade("AAPL240119C00190000", 1.5, 2, "C", "a", TS)
    assert Decoder(StreamKind.OPTIONS, "msgpack").decode(
        Encoder(StreamKind.OPTIONS, "msgpack").encode([opt])
    ) == [opt]


def test_unknown_types_keep_lists() -> None:
    frame = msgpack.packb([{"T": "zz", "a": [1, [2]], "b": {"c": [3]}}])
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert msg == m.UnknownMessage({"T": "zz", "a": [1, [2]], "b": {"c": [3]}})


def test_generated_unknown_messages_avoid_every_type_the_decoder_reserves() -> None:
    # the relay's in-band markers ('reconnected', 'dropped') decode as markers, not as
    # UnknownMessage: a generated UnknownMessage with such a T cannot round-trip
    for kind in tst.DATA_TYPES:
        reserved = set(_codec._TABLES[(kind, "msgpack")])
        assert reserved <= tst._KNOWN_T, kind


def test_slow_path_normalises_what_real_servers_send() -> None:
    decoder = Decoder("stocks", "json")
    # Go's encoder writes round prices as integers; optional keys may be missing
    [msg] = decoder.decode(
        '[{"T":"t","S":"A","i":1,"x":"V","p":150,"s":1,"t":"2021-02-22T19:15:00Z"}]'
    )
    assert msg == m.Trade("A", 1, "V", 150.0, 1, (), 1_614_021_300_000_000_000, "")
    assert type(msg.price) is float  # type: ignore[union-attr]
    # a msgpack stream carrying RFC 3339 text timestamps (vmihailenco decodes those too)
    frame = msgpack.packb([trade_map("2021-02-22T15:51:44.208123456Z")])
    [msg] = Decoder("stocks", "msgpack").decode(frame)
    assert msg.timestamp_ns == TS  # type: ignore[union-attr]
    # a text frame on a msgpack stream is parsed as JSON
    [msg] = Decoder("stocks", "msgpack").decode('[{"T":"success","msg":"connected"}]')
    assert msg == m.Connected()
    assert Decoder("stocks", "json").decode(b'[{"T":"success","msg":"connected"}]') == [
        m.Connected()
    ]


def test_fast_path_does_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_slow_path(cls: type[Any], d: Any) -> Any:
        raise AssertionError(f"slow path used for {cls.__name__}")

    monkeypatch.setattr(_codec, "_slow_build", no_slow_path)
    messages = [
        trade(),
        m.Quote("A", "V", 1.0, 1, "Q", 2.0, 2, ("R",), TS, "C"),
        m.DailyBar("A", 1.0, 2.0, 0.5, 1.5, 10, 2, 1.2, TS),
    ]
    for enc in ENCODINGS:
        # re-generate the decoders so that they see the patched fallback
        types = _codec._DATA_TYPES["stocks"]
        table = {t: _codec._make_fast(cls, enc) for t, cls in types.items()}
        table.update(_codec._CONTROL)
        key = ("stocks", enc)
        monkeypatch.setitem(_codec._TABLES, key, table)
        monkeypatch.setitem(
            _codec._FRAME_DECODERS, key, _codec._make_frame_decoder(types, table, enc)
        )
        encoder, decoder = Encoder("stocks", enc), Decoder("stocks", enc)  # type: ignore[arg-type]
        assert decoder.decode(encoder.encode(messages)) == messages
        for msg in messages:
            assert decoder.decode(encoder.encode([msg])) == [msg]
        # an int price needs the generic path: the patched fallback proves this test can fail
        int_price = {**trade().to_wire(), "p": 126}
        frame = (
            msgpack.packb([int_price])
            if enc == "msgpack"
            else json.dumps([{**int_price, "t": "2021-02-22T15:51:44.208123456Z"}])
        )
        [bad] = decoder.decode(frame)
        assert isinstance(bad, m.MalformedMessage)
        assert "slow path used for Trade" in bad.error


def test_decoder_accepts_memoryview_and_bytearray() -> None:
    frame = Encoder("stocks", "msgpack").encode([trade()])
    assert isinstance(frame, bytes)
    decoder = Decoder("stocks", "msgpack")
    assert decoder.decode(bytearray(frame)) == [trade()]  # type: ignore[arg-type]
    assert decoder.decode(memoryview(frame)) == [trade()]  # type: ignore[arg-type]


def test_invalid_kind_or_encoding() -> None:
    with pytest.raises(ValueError, match="stream kind"):
        Decoder("forex", "json")
    with pytest.raises(ValueError, match="encoding"):
        Encoder("stocks", "xml")  # type: ignore[arg-type]
    assert Decoder(StreamKind.NEWS, "json").kind == "news"
    assert Encoder("stocks", "json").encoding == "json"


# ------------------------------------------------------------------------ malformed input


GOOD = msgpack.packb([trade_map(msgpack.Timestamp.from_unix_nano(TS))])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "malformed msgpack"),
        (GOOD[:-3], "malformed msgpack"),  # truncated
        (GOOD + b"\x00", "malformed msgpack"),  # trailing bytes
        (b"\xc1", "malformed msgpack"),  # never-used byte
        (b"\xdd\xff\xff\xff\xff", "malformed msgpack"),  # 4 G elements announced
        (b"\xdf\xff\xff\xff\xff", "malformed msgpack"),  # 4 G map entries announced
        (b"\xdb\xff\xff\xff\xff", "malformed msgpack"),  # 4 GB string announced
        (b"\x91" * 100_000, "malformed msgpack"),  # nested far too deep
        (b"\x91\xa2\xc3\x28", "malformed msgpack"),  # invalid UTF-8
        (b"\x91\x81\x91\x01\x01", "malformed msgpack"),  # non-string map key
        (b"\x81\xa1T\xa1t", "expected an array"),
        (b"\x01", "expected an array"),
        ("[", "malformed JSON"),
        ("{}", "expected an array"),
        ("[" * 100_000 + "]" * 100_000, "malformed JSON"),
        (b'[{"T":"\xff"}]', "malformed"),
        (None, "must be bytes or str"),
        (12, "must be bytes or str"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: Any, message: str) -> None:
    decoder = Decoder("stocks", "msgpack")
    with pytest.raises(RemoteProtocolError, match=message):
        decoder.decode(frame)
    with pytest.raises(RemoteProtocolError, match=message):
        decoder.decode_raw(frame)


@pytest.mark.parametrize(
    ("element", "message"),
    [
        (1, "not a map"),
        ({}, "no 'T'"),
        ({"T": 1}, "non-string 'T'"),
        ({"T": "t", "S": "A"}, "required key 'i'"),
        ({**trade_map(TS), "p": "cheap"}, "'p' must be a number"),
        ({**trade_map(TS), "p": None}, "'p' must be a number, got None"),
        ({**trade_map(TS), "s": 1.5}, "'s' must be an integer"),
        ({**trade_map(TS), "S": 7}, "'S' must be a string"),
        ({**trade_map(TS), "c": [1]}, "'c' must be a list of strings"),
        ({**trade_map(TS), "c": 5}, "'c' must be a list of strings"),
        ({**trade_map(TS), "t": 1.5}, "'t' must be a timestamp"),
        ({**trade_map(TS), "t": "noon"}, "not a valid timestamp"),
        ({**trade_map(TS), "s": True}, "'s' must be an integer"),
        ({**trade_map(TS), "r": "later"}, "'r' is not a valid timestamp"),
        ({"T": "error", "code": "x", "msg": "m"}, "'code' must be an integer"),
        ({"T": "subscription", "trades": [1]}, "list of symbols"),
    ],
)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_malformed_element_is_replaced_and_neighbours_survive(
    element: Any, message: str, encoding: str
) -> None:
    good = trade_map(TS)
    if encoding == "json":
        good = {**good, "t": "2021-02-22T15:51:44.208123456Z"}
        if isinstance(element, dict) and isinstance(element.get("t"), int):
            element = {**element, "t": good["t"]}
    items = [good, element, good]
    frame = msgpack.packb(items) if encoding == "msgpack" else json.dumps(items)
    seen: list[m.MalformedMessage] = []
    decoder = Decoder("stocks", encoding, on_malformed=seen.append)  # type: ignore[arg-type]
    first, bad, last = decoder.decode(frame)
    assert first == last == m.Trade.from_wire(good)
    assert isinstance(bad, m.MalformedMessage)
    assert message in bad.error
    assert bad.raw == element and not bad.frame
    assert seen == [bad]
    if isinstance(element, dict) and element.get("T") == "t":
        # from_wire refuses with the very same text
        with pytest.raises(MalformedMessageError) as info:
            m.Trade.from_wire(element)
        assert str(info.value) == bad.error


@pytest.mark.parametrize(
    ("element", "raw_ok"),
    [(1, False), ({}, False), ({"T": 1}, False), ({"T": "t", "t": "noon"}, False),
     ({"T": "t", "t": 1.5}, False), ({"T": "t", "p": "cheap"}, True)],
)  # fmt: skip
def test_raw_mode_replaces_bad_shapes_only(element: Any, raw_ok: bool) -> None:
    good = trade_map(TS)
    frame = msgpack.packb([good, element, good])
    seen: list[m.MalformedMessage] = []
    first, middle, last = Decoder("stocks", "msgpack", on_malformed=seen.append).decode_raw(frame)
    assert first == last == good
    if raw_ok:  # field values are not checked in raw mode, only the shape and the timestamps
        assert middle == element and not seen
    else:
        assert middle["T"] == "malformed" and middle["raw"] == element
        assert [s.to_wire() for s in seen] == [middle]


def test_raw_mode_json_converts_timestamps() -> None:
    decoder = Decoder("news", "json")
    [d] = decoder.decode_raw(
        '[{"T":"n","id":1,"created_at":"2022-01-05T22:00:37Z","updated_at":"2022-01-05T22:00:38Z"}]'
    )
    assert d["created_at"] == parse_rfc3339_ns("2022-01-05T22:00:37Z")
    assert d["updated_at"] == d["created_at"] + 1_000_000_000
    [bad] = decoder.decode_raw('[{"T":"n","id":1,"created_at":"soon"}]')
    assert bad["T"] == "malformed" and "not a valid timestamp" in bad["error"]


def test_raw_mode_msgpack_converts_text_timestamps() -> None:
    """Raw mode hands out int nanoseconds in every case, text timestamps in msgpack too."""
    text = "2021-02-22T15:51:44.208123456Z"
    frame = msgpack.packb([{**trade_map(text), "r": text}, {"T": "q", "t": TS}])
    [d, q] = Decoder("stocks", "msgpack").decode_raw(frame)
    assert d["t"] == d["r"] == TS and q["t"] == TS
    frame = msgpack.packb([{"T": "p", "S": "BTC-PERP", "t": text, "ft": text}])
    [p] = Decoder("crypto", "msgpack").decode_raw(frame)
    assert p["t"] == p["ft"] == TS


def test_protocol_error_is_retryable_remote_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Decoder("stocks", "json").decode("not json")
    assert isinstance(info.value, ProtocolError)
    assert info.value.retryable


# ---------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("ts", [MIN_TIMESTAMP_NS - 1, MAX_TIMESTAMP_NS + 1])
def test_encode_rejects_out_of_range_timestamps(encoding: str, ts: int) -> None:
    with pytest.raises(LocalProtocolError, match="0001-9999"):
        Encoder("stocks", encoding).encode([trade(ts)])  # type: ignore[arg-type]


def test_encode_rejects_unrepresentable_values() -> None:
    with pytest.raises(LocalProtocolError):
        Encoder("stocks", "json").encode([trade(price=float("nan"))])
    with pytest.raises(LocalProtocolError, match="'p' must be a number"):
        Encoder("stocks", "msgpack").encode([trade(price="cheap")])
    with pytest.raises(LocalProtocolError, match="'T'"):
        Encoder("stocks", "msgpack").encode_raw([{"S": "A"}])
    with pytest.raises(LocalProtocolError):
        Encoder("stocks", "msgpack").encode_raw([{"T": "t", "x": object()}])
    with pytest.raises(LocalProtocolError, match="exactly one"):
        Encoder("trading", "json").encode([])
    with pytest.raises(LocalProtocolError, match="no trading stream form"):
        Encoder("trading", "json").encode([trade()])
    with pytest.raises(LocalProtocolError):
        encode_request({"key": object()}, "json")


# ------------------------------------------------------------------------ trading / requests


def test_trading_stream_frames() -> None:
    decoder = Decoder("trading", "json")
    authorized = '{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}'
    assert decoder.decode(authorized) == [m.Authenticated()]
    assert decoder.decode(authorized.encode()) == [m.Authenticated()]  # JSON in a binary frame
    unauthorized = (
        '{"stream":"authorization","data":{"status":"unauthorized","action":"authenticate"}}'
    )
    assert decoder.decode(unauthorized) == [m.ServerError(402, "unauthorized")]
    listen_first = '{"stream":"authorization","data":{"status":"unauthorized","action":"listen"}}'
    [err] = decoder.decode(listen_first)
    assert isinstance(err, m.ServerError) and err.code == 401
    assert decoder.decode('{"stream":"listening","data":{"streams":["trade_updates"]}}') == [
        m.Listening(("trade_updates",))
    ]
    [other] = decoder.decode('{"action":"error","data":{"error_message":"bye"}}')
    assert other == m.UnknownMessage({"action": "error", "data": {"error_message": "bye"}})
    with pytest.raises(RemoteProtocolError, match="order"):
        decoder.decode('{"stream":"trade_updates","data":{"event":"fill","timestamp":"x"}}')
    with pytest.raises(RemoteProtocolError, match="malformed trade update"):
        decoder.decode(
            '{"stream":"trade_updates","data":{"event":"fill","order":{},"timestamp":"x"}}'
        )
    with pytest.raises(RemoteProtocolError, match="must be a map"):
        decoder.decode("[]")
    assert decoder.decode_raw(authorized) == [json.loads(authorized)]


def test_trading_codec_functions() -> None:
    obj = {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    text = encode_trading(obj, "json")
    assert isinstance(text, str)
    assert decode_trading(text, "json") == obj
    assert decode_trading(text.encode(), "msgpack") == obj  # JSON bytes on a msgpack socket
    binary = encode_trading(obj, "msgpack")
    assert isinstance(binary, bytes)
    assert decode_trading(binary, "msgpack") == obj
    decimals = encode_trading({"stream": "x", "data": {"price": Decimal("1.50")}}, "json")
    assert json.loads(decimals)["data"]["price"] == "1.50"
    with pytest.raises(RemoteProtocolError):
        decode_trading(b"\x01", "msgpack")  # the legacy heartbeat byte is not a message
    with pytest.raises(LocalProtocolError):
        encode_trading(["not", "a", "map"], "json")  # type: ignore[arg-type]


def test_decode_request_forms() -> None:
    auth = {"action": "auth", "key": "k", "secret": "s"}
    assert decode_request(json.dumps(auth)) == auth
    assert decode_request(json.dumps(auth).encode()) == auth
    assert decode_request(b"  \n" + json.dumps(auth).encode()) == auth
    assert decode_request(msgpack.packb(auth)) == auth
    assert decode_request(bytearray(msgpack.packb(auth))) == auth  # type: ignore[arg-type]
    for bad in ("[]", b"\x01", b"\xc1", "nope", b"{", '"auth"'):
        with pytest.raises(RemoteProtocolError):
            decode_request(bad)
