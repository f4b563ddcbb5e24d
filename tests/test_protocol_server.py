"""Server half of the market data protocol (what the emulator runs), tested on its own."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import UsageError
from trioalpaca._codec import Decoder, encode_request
from trioalpaca._protocol import DataServerProtocol
from trioalpaca._protocol.server import ALWAYS_CLOSE, DEFAULT_CLOSE_ON, NEVER_CLOSE
from trioalpaca.endpoints import FEEDS, StreamKind

ENCODINGS = ["msgpack", "json"]


def decode(server: DataServerProtocol, frame: Any) -> dict[str, Any]:
    (msg,) = Decoder(server.endpoint.kind, server.encoding).decode_raw(frame)
    return msg


def send(server: DataServerProtocol, req: dict[str, Any], encoding: Any = None) -> dict[str, Any]:
    (reply,) = server.receive(encode_request(req, encoding or server.encoding))
    return decode(server, reply)


def authed(feed: str = "sip", encoding: Any = "msgpack", **kw: Any) -> DataServerProtocol:
    server = DataServerProtocol(feed, encoding, **kw)
    assert send(server, {"action": "auth", "key": "k", "secret": "s"}) == {
        "T": "success",
        "msg": "authenticated",
    }
    return server


def code_of(reply: dict[str, Any]) -> int | None:
    return reply.get("code") if reply.get("T") == "error" else None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_welcome(encoding: Any) -> None:
    server = DataServerProtocol("iex", encoding)
    (frame,) = server.opening_frames()
    assert frame == server.welcome()
    assert isinstance(frame, bytes if encoding == "msgpack" else str)
    assert decode(server, frame) == {"T": "success", "msg": "connected"}


@pytest.mark.parametrize(
    ("feed", "keys"),
    [
        (
            "sip",
            [
                "trades",
                "quotes",
                "bars",
                "updatedBars",
                "dailyBars",
                "statuses",
                "lulds",
                "corrections",
                "cancelErrors",
                "imbalances",
            ],
        ),
        ("test", list(FEEDS["sip"].ack_channels)),
        ("crypto/us", ["trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars"]),
        (
            "crypto-perps/global",
            ["trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars", "pricing"],
        ),
        ("opra", ["trades", "quotes"]),
        ("news", ["news"]),
    ],
)
def test_ack_echoes_full_state_with_empty_lists(feed: str, keys: list[str]) -> None:
    server = authed(feed)
    reply = send(server, {"action": "subscribe"})
    assert reply["T"] == "subscription"
    assert list(reply)[1:] == keys
    assert all(v == [] for k, v in reply.items() if k != "T")


def test_corrections_and_cancel_errors_mirror_trades() -> None:
    server = authed("sip")
    reply = send(server, {"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["X"]})
    assert reply["corrections"] == reply["cancelErrors"] == ["AAPL", "MSFT"]
    assert server.is_subscribed("corrections", "AAPL")
    assert server.is_subscribed("cancelErrors", "MSFT")
    assert not server.is_subscribed("corrections", "X")
    reply = send(server, {"action": "unsubscribe", "trades": ["AAPL"]})
    assert reply["corrections"] == ["MSFT"]
    # no mirrors on crypto
    crypto = authed("crypto/us")
    reply = send(crypto, {"action": "subscribe", "trades": ["BTC/USD"]})
    assert "corrections" not in reply


def test_401_before_auth_keeps_socket_open() -> None:
    server = DataServerProtocol("sip", "msgpack")
    reply = send(server, {"action": "subscribe", "trades": ["AAPL"]})
    assert reply == {"T": "error", "code": 401, "msg": "not authenticated"}
    assert not server.should_close
    assert server.subscriptions["trades"] == ()


def test_403_repeat_auth() -> None:
    server = authed()
    assert code_of(send(server, {"action": "auth", "key": "k", "secret": "s"})) == 403
    assert not server.should_close and server.authenticated


@pytest.mark.parametrize(
    "req",
    [
        {"action": "auth", "key": 1, "secret": "s"},
        {"action": "auth", "key": "k"},
        {"action": "dance"},
        {"trades": ["AAPL"]},
    ],
)
def test_400_bad_requests(req: dict[str, Any]) -> None:
    server = DataServerProtocol("sip", "json")
    assert code_of(send(server, req)) == 400
    assert not server.should_close


@pytest.mark.parametrize(
    "frame", [b"\xc1\xc1", "{not json", "[1, 2]", b"\x93\x01\x02\x03", "", b'{"action": 5']
)
def test_400_malformed_frames(frame: Any) -> None:
    server = authed()
    (reply,) = server.receive(frame)
    assert code_of(decode(server, reply)) == 400
    assert not server.should_close


@pytest.mark.parametrize(
    "value",
    [
        "AAPL",  # not a list
        ["AAPL", 5],  # not a string
        ["bad symbol"],  # invalid format
        [""],
        ["A" * 41],
        ["AAPL;DROP"],
    ],
)
def test_400_invalid_symbols_leave_state_unchanged(value: Any) -> None:
    server = authed("iex")
    send(server, {"action": "subscribe", "quotes": ["MSFT"]})
    before = server.subscriptions
    assert code_of(send(server, {"action": "subscribe", "trades": value})) == 400
    assert server.subscriptions == before


@pytest.mark.parametrize(
    "symbol", ["AAPL", "BRK.B", "BTC/USD", "BTC-PERP", "AAPL240119C00100000", "*", "FAKEPACA"]
)
def test_valid_symbol_formats(symbol: str) -> None:
    server = authed("iex")
    assert send(server, {"action": "subscribe", "trades": [symbol]})["trades"] == [symbol]


@pytest.mark.parametrize(
    ("feed", "channel"),
    [
        ("news", "trades"),
        ("opra", "bars"),
        ("sip", "orderbooks"),
        ("sip", "news"),
        ("crypto/us", "pricing"),
        ("crypto/us", "statuses"),
        ("sip", "corrections"),
        ("sip", "madeUp"),
    ],
)
def test_410_channel_not_on_endpoint(feed: str, channel: str) -> None:
    server = authed(feed)
    before = server.subscriptions
    assert code_of(send(server, {"action": "subscribe", channel: ["AAPL"]})) == 410
    assert server.subscriptions == before
    assert not server.should_close
    # nil / empty lists for channels the endpoint lacks are no-ops
    reply = send(server, {"action": "subscribe", channel: None})
    assert reply["T"] == "subscription"
    reply = send(server, {"action": "unsubscribe", channel: []})
    assert reply["T"] == "subscription"


def test_go_style_request_with_every_key() -> None:
    """The Go SDK sends every channel key; unused ones as nil or empty lists."""
    server = authed("sip")
    keys = [
        "trades",
        "quotes",
        "bars",
        "updatedBars",
        "dailyBars",
        "statuses",
        "imbalances",
        "lulds",
        "orderbooks",
        "news",
        "pricing",
    ]
    req: dict[str, Any] = {"action": "subscribe", **dict.fromkeys(keys)}
    req["trades"] = ["AAPL"]
    req["news"] = []
    reply = send(server, req)
    assert reply["T"] == "subscription" and reply["trades"] == ["AAPL"]


def test_412_json_on_options() -> None:
    server = DataServerProtocol("indicative", "json")
    welcome, err = server.opening_frames()
    assert decode(server, welcome)["msg"] == "connected"
    reply = decode(server, err)
    assert reply["code"] == 412 and "MsgPack" in reply["msg"]
    assert server.should_close and server.encoding_rejected
    # kept open by configuration: every request is answered with 412 again
    open_server = DataServerProtocol("opra", "json", close_on=())
    open_server.opening_frames()
    assert not open_server.should_close
    assert code_of(send(open_server, {"action": "auth", "key": "k", "secret": "s"})) == 412
    assert not open_server.authenticated
    # msgpack is fine
    assert DataServerProtocol("opra", "msgpack").opening_frames() == [
        DataServerProtocol("opra", "msgpack").welcome()
    ]


def test_413_star_on_option_quotes_only() -> None:
    server = authed("opra")
    assert code_of(send(server, {"action": "subscribe", "quotes": ["*"]})) == 413
    assert server.subscriptions == {"trades": (), "quotes": ()}
    assert send(server, {"action": "subscribe", "trades": ["*"]})["trades"] == ["*"]
    assert send(server, {"action": "subscribe", "quotes": ["AAPL240119C00100000"]})["quotes"]
    assert send(server, {"action": "unsubscribe", "quotes": ["*"]})["T"] == "subscription"
    # stocks accept '*' on quotes
    assert send(authed("sip"), {"action": "subscribe", "quotes": ["*"]})["quotes"] == ["*"]
    assert not server.should_close


def test_405_symbol_limit_leaves_state_unchanged() -> None:
    server = authed("iex", symbol_limit=2)
    send(server, {"action": "subscribe", "trades": ["A"], "quotes": ["A", "B"]})
    before = server.subscriptions
    reply = send(server, {"action": "subscribe", "bars": ["C"]})
    assert reply == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
    assert server.subscriptions == before and not server.should_close
    # unsubscribing is never limited, and frees room
    send(server, {"action": "unsubscribe", "quotes": ["B"]})
    assert send(server, {"action": "subscribe", "bars": ["C"]})["bars"] == ["C"]


def test_405_limited_channels_only() -> None:
    server = authed("opra", symbol_limit=1, limited_channels=["quotes"])
    assert send(server, {"action": "subscribe", "trades": ["X1", "X2", "X3"]})["T"] == (
        "subscription"
    )
    assert send(server, {"action": "subscribe", "quotes": ["Q1"]})["quotes"] == ["Q1"]
    assert code_of(send(server, {"action": "subscribe", "quotes": ["Q2"]})) == 405


@pytest.mark.parametrize("code", [402, 406, 409, 411])
def test_auth_callback_codes(code: int) -> None:
    server = DataServerProtocol("sip", "msgpack", lambda k, s: code)
    reply = send(server, {"action": "auth", "key": "k", "secret": "s"})
    assert code_of(reply) == code
    assert not server.authenticated and server.key is None
    assert server.should_close is (code in DEFAULT_CLOSE_ON)
    assert server.errors_sent == [code]


def test_auth_retry_after_rejection_kept_open() -> None:
    answers = iter([406, None])
    server = DataServerProtocol("sip", "msgpack", lambda k, s: next(answers), close_on=())
    assert code_of(send(server, {"action": "auth", "key": "k", "secret": "s"})) == 406
    assert not server.should_close
    assert send(server, {"action": "auth", "key": "k", "secret": "s"})["msg"] == "authenticated"
    assert server.key == "k"


def test_close_policy() -> None:
    server = DataServerProtocol("sip", "msgpack")
    for code in (400, 401, 403, 405, 410, 413, 500):
        assert not server.closes_after(code)
    for code in (402, 404, 406, 407, 409, 412):
        assert server.closes_after(code)
    custom = DataServerProtocol("sip", "msgpack", close_on={400, 500})
    assert custom.closes_after(500)  # configurable code added
    assert not custom.closes_after(400)  # never-close codes stay open
    assert custom.closes_after(404) and custom.closes_after(407)  # always-close codes
    assert not custom.closes_after(402)
    assert ALWAYS_CLOSE <= DEFAULT_CLOSE_ON and not (NEVER_CLOSE & DEFAULT_CLOSE_ON)


def test_injected_errors() -> None:
    server = authed()
    frame = server.error_frame(407)
    assert decode(server, frame) == {"T": "error", "code": 407, "msg": "slow client"}
    assert server.should_close
    other = authed()
    assert decode(other, other.error_frame(500, "boom")) == {
        "T": "error",
        "code": 500,
        "msg": "boom",
    }
    assert not other.should_close
    assert other.errors_sent == [500]


def test_json_requests_accepted_on_msgpack_session() -> None:
    server = DataServerProtocol("sip", "msgpack")
    (reply,) = server.receive('{"action": "auth", "key": "k", "secret": "s"}')
    assert isinstance(reply, bytes) and decode(server, reply)["msg"] == "authenticated"
    (reply,) = server.receive(b'{"action": "subscribe", "trades": ["AAPL"]}')
    assert decode(server, reply)["trades"] == ["AAPL"]
    (reply,) = server.receive(encode_request({"action": "subscribe", "bars": ["X"]}, "msgpack"))
    assert decode(server, reply)["bars"] == ["X"]


def test_wildcard_semantics() -> None:
    server = authed("sip")
    send(server, {"action": "subscribe", "trades": ["*", "AAPL"]})
    assert server.is_subscribed("trades", "ANYTHING")
    # unsubscribing one symbol while '*' is subscribed removes only the explicit entry
    reply = send(server, {"action": "unsubscribe", "trades": ["AAPL"]})
    assert reply["trades"] == ["*"]
    assert server.is_subscribed("trades", "AAPL")
    send(server, {"action": "subscribe", "trades": ["MSFT"]})
    # unsubscribing '*' keeps explicitly listed symbols
    reply = send(server, {"action": "unsubscribe", "trades": ["*"]})
    assert reply["trades"] == ["MSFT"]
    assert server.is_subscribed("trades", "MSFT") and not server.is_subscribed("trades", "AAPL")


def test_is_subscribed_any_for_news() -> None:
    server = authed("news")
    assert not server.is_subscribed_any("news", ["AAPL"])
    send(server, {"action": "subscribe", "news": ["AAPL"]})
    assert server.is_subscribed_any("news", ["TSLA", "AAPL"])
    assert not server.is_subscribed_any("news", ["TSLA"])
    assert not server.is_subscribed_any("trades", ["AAPL"])
    send(server, {"action": "subscribe", "news": ["*"]})
    assert server.is_subscribed_any("news", [])


def test_unknown_channel_is_not_subscribed() -> None:
    server = authed("sip")
    assert not server.is_subscribed("madeUp", "AAPL")


def test_trading_endpoint_rejected() -> None:
    with pytest.raises(UsageError):
        DataServerProtocol("trading", "json")
    assert DataServerProtocol(FEEDS["news"], "json").endpoint.kind is StreamKind.NEWS


# ------------------------------------------------------------- property: errors keep state

requests = st.lists(
    st.fixed_dictionaries(
        {
            "action": st.sampled_from(["subscribe", "unsubscribe", "subscribe"]),
            "trades": st.none() | st.lists(st.sampled_from(["A", "B", "C", "*", "bad sym"])),
            "quotes": st.none() | st.lists(st.sampled_from(["A", "D", "E"])),
            "orderbooks": st.none() | st.lists(st.sampled_from(["A"]), max_size=1),
        }
    ),
    max_size=15,
)


@settings(max_examples=40, deadline=None)
@given(requests, st.integers(min_value=1, max_value=5))
def test_state_follows_model_and_errors_change_nothing(
    reqs: list[dict[str, Any]], limit: int
) -> None:
    server = authed("iex", symbol_limit=limit)
    model: dict[str, list[str]] = {"trades": [], "quotes": []}
    for req in reqs:
        before = server.subscriptions
        reply = send(server, req)
        code = code_of(reply)
        chans = {k: v for k, v in req.items() if k != "action" and v}
        if any("bad sym" in v for v in chans.values()):
            assert code == 400
        elif "orderbooks" in chans:
            assert code == 410
        else:
            new = {k: list(v) for k, v in model.items()}
            for ch, syms in chans.items():
                for s in syms:
                    if req["action"] == "subscribe" and s not in new[ch]:
                        new[ch].append(s)
                    elif req["action"] == "unsubscribe" and s in new[ch]:
                        new[ch].remove(s)
            if (
                req["action"] == "subscribe"
                and len(set(new["trades"]) | set(new["quotes"])) > limit
            ):
                assert code == 405
            else:
                assert code is None
                model = new
        if code is not None:
            assert server.subscriptions == before
        assert server.subscriptions["trades"] == tuple(model["trades"])
        assert server.subscriptions["quotes"] == tuple(model["quotes"])
        assert server.subscriptions["corrections"] == tuple(model["trades"])
        assert not server.should_close
