"""Market data client protocol wired back to back with the server protocol (no sockets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import _errors as E
from trioalpaca import models
from trioalpaca._codec import Encoder, decode_request, encode_request
from trioalpaca._protocol import (
    ClientState,
    DataClientProtocol,
    DataServerProtocol,
    endpoint_for,
)
from trioalpaca._protocol.server import ERROR_MESSAGES
from trioalpaca.endpoints import FEEDS, StreamKind

ENCODINGS = ["msgpack", "json"]
KEY, SECRET = "PKTESTKEY", "test-secret"


def pump(client: DataClientProtocol, server: DataServerProtocol) -> list[Any]:
    """Deliver everything the client wants to send; feed every reply back. Returns events."""
    events: list[Any] = []
    while True:
        out = client.data_to_send()
        if not out:
            return events
        for frame in out:
            for reply in server.receive(frame):
                events += client.receive(reply)


def connect(
    feed: str = "sip",
    encoding: Any = "msgpack",
    *,
    resubscribe: Mapping[str, Any] | None = None,
    raw: bool = False,
    client_kind: Any = None,
    **server_kw: Any,
) -> tuple[DataClientProtocol, DataServerProtocol, list[Any]]:
    server = DataServerProtocol(feed, encoding, **server_kw)
    client = DataClientProtocol(
        client_kind or feed, encoding, KEY, SECRET, raw=raw, resubscribe=resubscribe
    )
    events: list[Any] = []
    for frame in server.opening_frames():
        events += client.receive(frame)
    events += pump(client, server)
    return client, server, events


def trade(symbol: str, i: int = 1) -> dict[str, Any]:
    return models.Trade(symbol, i, "V", 10.5, 100, ("@",), 1_700_000_000_123_456_789, "C").to_wire()


# ----------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_handshake_without_subscriptions(encoding: Any) -> None:
    server = DataServerProtocol("iex", encoding)
    client = DataClientProtocol("iex", encoding, KEY, SECRET)
    assert client.state is ClientState.CONNECTING
    assert client.data_to_send() == []  # nothing before the welcome
    (welcome,) = server.opening_frames()
    assert isinstance(welcome, bytes if encoding == "msgpack" else str)
    assert client.receive(welcome) == [models.Connected()]
    assert client.last_control
    assert client.state is ClientState.AUTHENTICATING
    (auth,) = client.data_to_send()
    assert isinstance(auth, bytes if encoding == "msgpack" else str)
    (reply,) = server.receive(auth)
    assert server.authenticated and server.key == KEY
    assert client.receive(reply) == [models.Authenticated()]
    assert client.state is ClientState.READY
    assert client.authenticated
    assert client.acknowledged == {}
    assert client.data_to_send() == []
    assert client.error is None and not server.should_close


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_handshake_with_initial_subscription(encoding: Any) -> None:
    server = DataServerProtocol("sip", encoding)
    client = DataClientProtocol(
        "sip",
        encoding,
        KEY,
        SECRET,
        resubscribe={"trades": ["AAPL", "MSFT"], "daily_bars": "SPY", "quotes": []},
    )
    rid = client.initial_request_id
    assert rid is not None
    client.receive(server.welcome())
    (auth,) = client.data_to_send()
    client.receive(server.receive(auth)[0])
    assert client.state is ClientState.SUBSCRIBING
    (sub,) = client.data_to_send()
    assert decode_request(sub) == {
        "action": "subscribe",
        "trades": ["AAPL", "MSFT"],
        "dailyBars": ["SPY"],
    }
    (ack,) = server.receive(sub)
    (event,) = client.receive(ack)
    assert isinstance(event, models.SubscriptionChanged)
    assert client.state is ClientState.READY
    assert client.completed() == [(rid, None)]
    acked = client.acknowledged
    assert list(acked) == list(FEEDS["sip"].ack_channels)
    assert acked["trades"] == ("AAPL", "MSFT")
    assert acked["corrections"] == acked["cancelErrors"] == ("AAPL", "MSFT")
    assert acked["dailyBars"] == ("SPY",)
    assert acked["imbalances"] == () and acked["quotes"] == ()
    assert client.desired == {"trades": ("AAPL", "MSFT"), "dailyBars": ("SPY",)}


def test_raw_mode_handshake_returns_dicts() -> None:
    client, _server, events = connect("iex", "json", raw=True, resubscribe={"bars": ["*"]})
    assert events[0] == {"T": "success", "msg": "connected"}
    assert events[1] == {"T": "success", "msg": "authenticated"}
    assert events[2]["T"] == "subscription" and events[2]["bars"] == ["*"]
    assert client.state is ClientState.READY
    assert client.acknowledged["bars"] == ("*",)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("raw", [False, True])
def test_data_passes_through(encoding: Any, raw: bool) -> None:
    client, server, _ = connect("sip", encoding, raw=raw, resubscribe={"trades": ["AAPL"]})
    enc = Encoder(StreamKind.STOCKS, encoding)
    batch = [trade("AAPL", i) for i in range(5)]
    out = client.receive(enc.encode_raw(batch))
    assert not client.last_control
    if raw:
        assert out == batch
    else:
        assert [m.trade_id for m in out] == list(range(5))
        assert all(isinstance(m, models.Trade) for m in out)
    # a one-element data frame is data, not control
    (single,) = client.receive(enc.encode_raw([trade("AAPL", 9)]))
    assert not client.last_control
    assert (single["i"] if raw else single.trade_id) == 9
    assert client.state is ClientState.READY
    assert server.is_subscribed("trades", "AAPL") and not server.is_subscribed("trades", "TSLA")


# ------------------------------------------------------------------------- error paths


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(
    ("code", "cls", "fatal"),
    [
        (402, E.AuthFailedError, True),
        (406, E.ConnectionLimitError, False),
        (408, E.V2NotEnabledError, True),
        (409, E.InsufficientSubscriptionError, True),
        (411, E.InsufficientScopeError, True),
        (500, E.InternalServerError, False),
    ],
)
def test_auth_rejections(
    encoding: Any, code: int, cls: type[E.AlpacaServerError], fatal: bool
) -> None:
    seen: list[tuple[str, str]] = []

    def check(key: str, secret: str) -> int | None:
        seen.append((key, secret))
        return code

    client, server, events = connect("sip", encoding, check_auth=check)
    assert seen == [(KEY, SECRET)]
    assert events[-1] == models.ServerError(code, server_error_text(code))
    assert client.state is ClientState.CLOSED
    assert type(client.error) is cls
    assert client.error.during_connect
    assert (client.fatal_error is client.error) is fatal
    assert client.error.retryable is not fatal
    assert not server.authenticated
    assert server.errors_sent == [code]
    assert server.should_close is (code in (402, 406, 409))


def server_error_text(code: int) -> str:
    return ERROR_MESSAGES[code]


def test_connection_limit_asks_for_the_floor() -> None:
    client, _, _ = connect("iex", check_auth=lambda k, s: 406)
    assert client.error is not None and client.error.connection_limit
    assert client.fatal_error is None


def test_options_json_gets_412_at_connect() -> None:
    client, server, events = connect("opra", "json")
    assert events[0] == models.Connected()
    assert client.state is ClientState.CLOSED
    assert isinstance(client.fatal_error, E.MsgpackRequiredError)
    assert server.errors_sent[0] == 412 and server.should_close


def test_options_msgpack_works_and_star_quotes_is_request_level() -> None:
    client, server, _ = connect("opra", "msgpack", resubscribe={"trades": ["*"]})
    assert client.state is ClientState.READY
    assert client.completed() == [(client.initial_request_id, None)]
    rid = client.subscribe({"quotes": ["*"]})
    events = pump(client, server)
    assert events == [models.ServerError(413, server_error_text(413))]
    ((done_id, err),) = client.completed()
    assert done_id == rid and isinstance(err, E.StarSubscriptionNotAllowedError)
    assert err.request_level and not err.fatal
    assert client.state is ClientState.READY and client.error is None
    assert not server.should_close
    assert client.acknowledged == {"trades": ("*",), "quotes": ()}


def test_star_option_quotes_at_connect_is_fatal() -> None:
    client, _, _ = connect("indicative", resubscribe={"quotes": ["*"]})
    assert client.state is ClientState.CLOSED
    assert isinstance(client.fatal_error, E.StarSubscriptionNotAllowedError)
    assert client.fatal_error.during_connect
    ((_, err),) = client.completed()
    assert err is client.fatal_error


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_symbol_limit_is_request_level_and_keeps_state(encoding: Any) -> None:
    client, server, _ = connect("iex", encoding, resubscribe={"trades": ["A", "B"]}, symbol_limit=3)
    before = client.acknowledged
    client.completed()
    rid = client.subscribe({"quotes": ["C", "D"]})
    pump(client, server)
    ((done, err),) = client.completed()
    assert done == rid and isinstance(err, E.SymbolLimitError) and err.request_level
    assert client.acknowledged == before == server.subscriptions
    assert client.state is ClientState.READY
    # within the limit still works
    rid2 = client.subscribe({"quotes": ["A", "C"]})
    pump(client, server)
    assert client.completed() == [(rid2, None)]
    assert client.acknowledged["quotes"] == ("A", "C")


def test_symbol_limit_at_connect_is_fatal() -> None:
    client, _, _ = connect("iex", resubscribe={"trades": ["A", "B", "C"]}, symbol_limit=2)
    assert isinstance(client.fatal_error, E.SymbolLimitError)


def test_invalid_symbol_is_400_request_level() -> None:
    client, server, _ = connect("sip")
    rid = client.subscribe({"trades": ["not a symbol!"]})
    pump(client, server)
    ((done, err),) = client.completed()
    assert done == rid and isinstance(err, E.InvalidSyntaxError)
    assert client.state is ClientState.READY
    client2, _, _ = connect("sip", resubscribe={"trades": ["bad symbol"]})
    assert isinstance(client2.fatal_error, E.InvalidSyntaxError)


def test_410_answers_the_request_and_is_fatal() -> None:
    # A generic crypto client allows 'pricing'; the crypto/us server does not offer it.
    client, server, _ = connect("crypto/us", client_kind=StreamKind.CRYPTO)
    assert client.state is ClientState.READY
    rid = client.subscribe({"pricing": ["BTC-PERP"]})
    pump(client, server)
    ((done, err),) = client.completed()
    assert done == rid and isinstance(err, E.InvalidSubscribeActionError)
    assert client.fatal_error is err and client.state is ClientState.CLOSED
    assert not server.should_close  # the server keeps the socket open after 410


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (401, E.NotAuthenticatedError),
        (403, E.AlreadyAuthenticatedError),
        (407, E.SlowClientError),
        (500, E.InternalServerError),
        (499, E.AlpacaServerError),
    ],
)
def test_runtime_connection_errors_close_retryably(
    code: int, cls: type[E.AlpacaServerError]
) -> None:
    client, server, _ = connect("sip", resubscribe={"trades": ["AAPL"]})
    client.completed()
    client.subscribe({"quotes": ["AAPL"]})
    client.data_to_send()  # sent, but the server answers with an error instead
    events = client.receive(server.error_frame(code))
    assert events == [models.ServerError(code, server_error_text(code) if code != 499 else "error")]
    assert client.state is ClientState.CLOSED
    assert type(client.error) is cls and client.error.retryable and client.fatal_error is None
    assert client.completed() == []  # the request stays pending ...
    assert client.desired == {"trades": ("AAPL",), "quotes": ("AAPL",)}  # ... and is resubscribed
    assert server.should_close is (code == 407)


def test_auth_timeout_404() -> None:
    server = DataServerProtocol("sip", "msgpack")
    client = DataClientProtocol("sip", "msgpack", KEY, SECRET)
    client.receive(server.welcome())
    client.data_to_send()  # auth never reaches the server
    (frame,) = server.auth_timeout()
    assert server.should_close
    client.receive(frame)
    assert isinstance(client.error, E.AuthTimeoutError) and client.error.retryable
    # once authenticated there is no timeout
    _, server2, _ = connect("sip")
    assert server2.auth_timeout() == []


# ------------------------------------------------------------- bookkeeping and ordering


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_requests_answered_in_order(encoding: Any) -> None:
    client, server, _ = connect("iex", encoding, symbol_limit=3)
    ids = [
        client.subscribe({"trades": ["A"]}),
        client.subscribe({"trades": ["B", "C", "D"]}),  # would exceed the limit
        client.unsubscribe({"trades": ["A"]}),
        client.subscribe({"bars": ["*"]}),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 4
    frames = client.data_to_send()  # all four are in flight before any answer
    assert len(frames) == 4
    assert [r.id for r in client.pending] == ids
    replies = [r for f in frames for r in server.receive(f)]
    assert len(replies) == 4
    for reply in replies:
        client.receive(reply)
    done = client.completed()
    assert [d[0] for d in done] == ids
    assert [type(d[1]) for d in done] == [type(None), E.SymbolLimitError, type(None), type(None)]
    assert client.pending == []
    assert client.acknowledged["trades"] == () and client.acknowledged["bars"] == ("*",)


def test_requests_before_auth_are_queued_after_initial() -> None:
    server = DataServerProtocol("sip", "json")
    client = DataClientProtocol("sip", "json", KEY, SECRET, resubscribe={"trades": ["A"]})
    r = client.subscribe({"quotes": ["B"]})
    u = client.unsubscribe({"trades": ["A"]})
    assert client.data_to_send() == []
    assert client.desired == {"quotes": ("B",)}
    client.receive(server.welcome())
    pump(client, server)
    assert client.completed() == [(client.initial_request_id, None), (r, None), (u, None)]
    assert client.state is ClientState.READY
    assert client.desired == {"quotes": ("B",)}


def test_empty_request_completes_without_frames() -> None:
    client, _server, _ = connect("sip")
    rid = client.subscribe({"trades": [], "quotes": None})
    assert client.data_to_send() == []
    assert client.completed() == [(rid, None)]


def test_desired_includes_pending_changes() -> None:
    client, server, _ = connect("sip", resubscribe={"trades": ["A", "B"], "bars": ["A"]})
    client.subscribe({"quotes": ["Q"]})
    client.unsubscribe({"trades": ["A"], "bars": ["A"]})
    assert client.acknowledged["trades"] == ("A", "B")
    assert client.desired == {"trades": ("B",), "quotes": ("Q",)}
    # connection dies before the answers: reconnect with desired reaches the same state
    client.connection_closed(E.ConnectionClosedError(1006))
    assert isinstance(client.error, E.ConnectionClosedError)
    new, new_server, _ = connect("sip", resubscribe=client.desired)
    assert new.state is ClientState.READY
    assert new.desired == {"trades": ("B",), "quotes": ("Q",)}
    assert new_server.subscriptions["cancelErrors"] == ("B",)
    del server


def test_unsolicited_ack_refreshes_state() -> None:
    client, server, _ = connect("sip")
    # a change made by someone else (the emulator's control API) is acknowledged unprompted
    server.receive(encode_request({"action": "subscribe", "trades": ["Z"]}, "msgpack"))
    client.receive(server.ack_frame())
    assert client.acknowledged["trades"] == ("Z",)
    assert client.completed() == []
    assert client.state is ClientState.READY


# -------------------------------------------------------------------------- violations


def test_data_before_welcome_is_a_remote_protocol_error() -> None:
    client = DataClientProtocol("sip", "msgpack", KEY, SECRET)
    frame = Encoder(StreamKind.STOCKS, "msgpack").encode_raw([trade("A"), trade("B")])
    with pytest.raises(E.RemoteProtocolError):
        client.receive(frame)
    assert client.state is ClientState.CLOSED
    assert isinstance(client.error, E.RemoteProtocolError) and client.error.retryable


def test_second_welcome_is_a_violation() -> None:
    client, server, _ = connect("sip")
    with pytest.raises(E.RemoteProtocolError):
        client.receive(server.welcome())
    assert client.state is ClientState.CLOSED


def test_authenticated_before_welcome_is_a_violation() -> None:
    client = DataClientProtocol("sip", "json", KEY, SECRET)
    with pytest.raises(E.RemoteProtocolError):
        client.receive('[{"T":"success","msg":"authenticated"}]')


def test_malformed_frame_closes_during_the_handshake() -> None:
    client = DataClientProtocol("sip", "msgpack", KEY, SECRET)
    with pytest.raises(E.ProtocolError):
        client.receive(b"\xc1\xc1\xc1")
    assert client.state is ClientState.CLOSED and client.error is not None
    # after closing, further frames are not interpreted
    assert client.receive(b"\x90") == []


def test_raw_error_without_code_is_a_violation() -> None:
    client = DataClientProtocol("sip", "json", KEY, SECRET, raw=True)
    client.receive('[{"T":"success","msg":"connected"}]')
    with pytest.raises(E.RemoteProtocolError):
        client.receive('[{"T":"error","msg":"no code"}]')


def test_raw_mode_errors_classified() -> None:
    client, _, _ = connect("sip", "json", raw=True, check_auth=lambda k, s: 402)
    assert isinstance(client.fatal_error, E.AuthFailedError)


# ------------------------------------------------------------------------------- usage


def test_usage_errors() -> None:
    client, _, _ = connect("sip")
    with pytest.raises(E.UsageError, match="orderbooks"):
        client.subscribe({"orderbooks": ["BTC/USD"]})
    with pytest.raises(E.UsageError, match="trades"):
        client.subscribe({"corrections": ["AAPL"]})
    with pytest.raises(E.UsageError):
        client.subscribe({"candles": ["AAPL"]})
    with pytest.raises(E.UsageError):
        client.subscribe({"trades": [1]})  # type: ignore[list-item]
    with pytest.raises(E.UsageError):
        DataClientProtocol("trading", "json", KEY, SECRET)
    with pytest.raises(E.UsageError):
        DataClientProtocol("sip", "xml", KEY, SECRET)  # type: ignore[arg-type]
    client.connection_closed()
    with pytest.raises(E.LocalProtocolError):
        client.subscribe({"trades": ["AAPL"]})


def test_channel_spellings_and_bare_strings() -> None:
    client, server, _ = connect("sip")
    client.subscribe({"daily_bars": "SPY", "updatedBars": ["SPY", "SPY", "QQQ"]})
    pump(client, server)
    assert client.acknowledged["dailyBars"] == ("SPY",)
    assert client.acknowledged["updatedBars"] == ("SPY", "QQQ")


def test_credentials_not_in_repr() -> None:
    client, _, _ = connect("sip")
    assert SECRET not in repr(client)


# ------------------------------------------------------------------ property: ack model

SYMS = st.sampled_from(["AAPL", "MSFT", "SPY", "*", "BRK.B"])
STOCK_CHANNELS = st.sampled_from(["trades", "quotes", "bars", "daily_bars", "statuses"])
changes = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe"]),
        st.dictionaries(STOCK_CHANNELS, st.lists(SYMS, max_size=3), max_size=3),
    ),
    max_size=12,
)
WIRE = {"daily_bars": "dailyBars"}


@settings(max_examples=40, deadline=None)
@given(changes, st.sampled_from(ENCODINGS), st.booleans())
def test_acknowledged_matches_model(
    seq: list[tuple[str, dict[str, list[str]]]], encoding: Any, batch: bool
) -> None:
    client, server, _ = connect("sip", encoding, resubscribe={"lulds": ["X"]})
    model: dict[str, list[str]] = {"lulds": ["X"]}
    for action, chans in seq:
        if action == "subscribe":
            client.subscribe(chans)
        else:
            client.unsubscribe(chans)
        for name, syms in chans.items():
            cur = model.setdefault(WIRE.get(name, name), [])
            for s in syms:
                if action == "subscribe" and s not in cur:
                    cur.append(s)
                elif action == "unsubscribe" and s in cur:
                    cur.remove(s)
        if not batch:
            pump(client, server)
            assert client.pending == []
    expect_desired = {ch: tuple(v) for ch, v in model.items() if v}
    assert client.desired == expect_desired  # before (batch) or after the answers
    pump(client, server)
    assert client.pending == []
    assert all(err is None for _, err in client.completed())
    acked = client.acknowledged
    assert acked == server.subscriptions
    for ch in FEEDS["sip"].ack_channels:
        expected = tuple(model.get(ch, ()))
        if ch in ("corrections", "cancelErrors"):
            expected = tuple(model.get("trades", ()))
        assert acked[ch] == expected
    assert client.desired == expect_desired
    for ch, syms in expect_desired.items():
        for s in ("AAPL", "TSLA"):
            assert server.is_subscribed(ch, s) is (s in syms or "*" in syms)


# ------------------------------------------------------------------------------ hot path


def test_multi_element_frames_are_never_inspected_when_ready() -> None:
    """Control messages always come alone; a batch is handed over untouched (no bookkeeping)."""
    client, _server, _ = connect("sip", "json", raw=True)
    frame = Encoder(StreamKind.STOCKS, "json").encode_raw(
        [trade("A"), {"T": "subscription", "trades": ["ZZZ"]}]
    )
    out = client.receive(frame)
    assert len(out) == 2 and out[1]["T"] == "subscription"
    assert not client.last_control
    assert client.acknowledged == {}  # the embedded control message was not interpreted


def test_data_while_subscribing_passes_through() -> None:
    server = DataServerProtocol("sip", "msgpack")
    client = DataClientProtocol("sip", "msgpack", KEY, SECRET, resubscribe={"trades": ["A"]})
    client.receive(server.welcome())
    (auth,) = client.data_to_send()
    client.receive(server.receive(auth)[0])
    assert client.state is ClientState.SUBSCRIBING
    enc = Encoder(StreamKind.STOCKS, "msgpack")
    assert len(client.receive(enc.encode_raw([trade("A"), trade("A", 2)]))) == 2
    assert client.state is ClientState.SUBSCRIBING


def test_empty_frame() -> None:
    client, _server, _ = connect("sip", "json")
    assert client.receive("[]") == []
    assert client.state is ClientState.READY


@pytest.mark.parametrize(
    ("kind", "feed"),
    [
        (StreamKind.STOCKS, "sip"),
        ("stocks", "sip"),
        (StreamKind.OPTIONS, "opra"),
        ("news", "news"),
        ("crypto/eu-1", "crypto/eu-1"),
        (FEEDS["boats"], "boats"),
    ],
)
def test_endpoint_for(kind: Any, feed: str) -> None:
    assert endpoint_for(kind).feed == feed
    crypto = endpoint_for(StreamKind.CRYPTO)
    assert crypto.kind is StreamKind.CRYPTO and "pricing" in crypto.channels
    with pytest.raises(E.UsageError):
        endpoint_for("nope")
