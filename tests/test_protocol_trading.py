"""Trading stream client protocol wired back to back with the trading server protocol."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from trioalpaca import _errors as E
from trioalpaca import models
from trioalpaca._codec import decode_trading, encode_trading
from trioalpaca._protocol import ClientState, TradingClientProtocol, TradingServerProtocol

ENCODINGS = ["json", "msgpack"]
KEY, SECRET = "PKTRADEKEY", "trade-secret"

ORDER = {
    "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
    "client_order_id": "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
    "symbol": "AAPL",
    "status": "filled",
}
FILL = {
    "event": "fill",
    "order": ORDER,
    "timestamp": "2024-01-02T15:04:05.123456789Z",
    "price": "187.12",
    "qty": "10",
    "position_qty": "10",
    "execution_id": "exec-1",
}


def pump(client: TradingClientProtocol, server: TradingServerProtocol) -> list[Any]:
    events: list[Any] = []
    while True:
        out = client.data_to_send()
        if not out:
            return events
        for frame in out:
            for reply in server.receive(frame):
                events += client.receive(reply)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("auth_form", ["authenticate", "auth"])
def test_handshake_and_listen(encoding: Any, auth_form: Any) -> None:
    seen: list[tuple[str, str]] = []

    def check(key: str, secret: str) -> int | None:
        seen.append((key, secret))
        return None

    server = TradingServerProtocol(encoding, check)
    client = TradingClientProtocol(KEY, SECRET, encoding, auth_form)
    assert client.state is ClientState.AUTHENTICATING
    rid = client.listen()  # queued until authorized
    (auth,) = client.data_to_send()
    sent = decode_trading(auth, encoding)
    if auth_form == "authenticate":
        assert sent == {"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}
    else:
        assert sent == {"action": "auth", "key": KEY, "secret": SECRET}
    (reply,) = server.receive(auth)
    assert decode_trading(reply, encoding) == {
        "stream": "authorization",
        "data": {"status": "authorized", "action": auth_form},
    }
    assert client.receive(reply) == [models.Authenticated()]
    assert client.state is ClientState.READY and client.authenticated
    assert seen == [(KEY, SECRET)]
    events = pump(client, server)
    assert events == [models.Listening(("trade_updates",))]
    assert client.completed() == [(rid, None)]
    assert client.listening == ("trade_updates",) == server.listening
    assert server.is_listening()


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("raw", [False, True])
def test_trade_updates(encoding: Any, raw: bool) -> None:
    server = TradingServerProtocol(encoding)
    client = TradingClientProtocol(KEY, SECRET, encoding, raw=raw)
    client.listen(["trade_updates"])
    pump(client, server)
    (update,) = client.receive(server.trade_update_frame(FILL))
    if raw:
        assert update == FILL
    else:
        assert isinstance(update, models.TradeUpdate)
        assert update.event == "fill"
        assert update.price == Decimal("187.12") and update.qty == Decimal("10")
        assert update.symbol == "AAPL" and update.execution_id == "exec-1"
        assert update.timestamp_ns % 1_000_000_000 == 123_456_789


def test_json_in_binary_frames_like_paper() -> None:
    client = TradingClientProtocol(KEY, SECRET)
    frame = encode_trading(
        {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}},
        "json",
    )
    assert isinstance(frame, str)
    assert client.receive(frame.encode()) == [models.Authenticated()]
    (update,) = client.receive(encode_trading({"stream": "trade_updates", "data": FILL}, "json"))
    assert isinstance(update, models.TradeUpdate)


def test_unauthorized_is_fatal() -> None:
    server = TradingServerProtocol("json", lambda k, s: 402)
    client = TradingClientProtocol(KEY, "wrong")
    client.listen()
    events = pump(client, server)
    assert events == []
    assert client.state is ClientState.CLOSED
    assert isinstance(client.fatal_error, E.AuthFailedError)
    assert client.fatal_error.during_connect
    assert server.should_close and not server.authenticated
    with pytest.raises(E.LocalProtocolError):
        client.listen()


def test_unauthorized_keeps_socket_open_when_configured() -> None:
    server = TradingServerProtocol("json", lambda k, s: 402, close_on_unauthorized=False)
    (reply,) = server.receive(encode_trading({"action": "auth", "key": "k", "secret": "s"}, "json"))
    assert decode_trading(reply, "json")["data"]["status"] == "unauthorized"
    assert not server.should_close


def test_missing_credentials_unauthorized() -> None:
    server = TradingServerProtocol()
    (reply,) = server.receive(encode_trading({"action": "authenticate", "data": {}}, "json"))
    assert decode_trading(reply, "json")["data"] == {
        "status": "unauthorized",
        "action": "authenticate",
    }


def test_listen_before_auth() -> None:
    server = TradingServerProtocol()
    req = encode_trading({"action": "listen", "data": {"streams": ["trade_updates"]}}, "json")
    (reply,) = server.receive(req)
    assert decode_trading(reply, "json") == {
        "stream": "authorization",
        "data": {"status": "unauthorized", "action": "listen"},
    }
    assert not server.should_close and server.listening == ()
    # the client treats that answer as a retryable "not authenticated"
    client = TradingClientProtocol(KEY, SECRET)
    client.receive(reply)
    assert isinstance(client.error, E.NotAuthenticatedError)
    assert client.error.retryable and client.fatal_error is None


def test_listen_replaces_and_stops() -> None:
    server = TradingServerProtocol()
    client = TradingClientProtocol(KEY, SECRET)
    client.listen(["trade_updates", "account_updates", "trade_updates"])
    pump(client, server)
    assert server.listening == ("trade_updates",)  # unknown streams dropped, duplicates removed
    r = client.listen([])
    assert client.desired == ()
    pump(client, server)
    assert client.completed()[-1] == (r, None)
    assert server.listening == () and client.listening == ()
    assert not server.is_listening()


def test_desired_follows_newest_listen() -> None:
    client = TradingClientProtocol(KEY, SECRET)
    assert client.desired == ()
    client.listen("trade_updates")
    assert client.desired == ("trade_updates",)


def test_in_stream_error() -> None:
    server = TradingServerProtocol()
    (frame,) = server.receive(encode_trading({"action": "dance"}, "json"))
    assert server.should_close
    obj = decode_trading(frame, "json")
    assert obj["action"] == "error" and "dance" in obj["data"]["error_message"]
    client = TradingClientProtocol(KEY, SECRET)
    (event,) = client.receive(frame)
    assert isinstance(event, models.UnknownMessage)
    assert isinstance(client.error, E.RemoteProtocolError) and client.error.retryable
    assert client.state is ClientState.CLOSED


@pytest.mark.parametrize(
    "bad",
    [b"\xc1", "not json", '{"action": "listen", "data": {"streams": "trade_updates"}}'],
)
def test_server_malformed_requests(bad: Any) -> None:
    server = TradingServerProtocol()
    server.authenticated = True
    (frame,) = server.receive(bad)
    assert decode_trading(frame, "json")["action"] == "error"
    assert server.should_close


def test_heartbeat_byte_ignored() -> None:
    client = TradingClientProtocol(KEY, SECRET)
    assert client.receive(b"\x01") == []
    assert client.state is ClientState.AUTHENTICATING


def test_unknown_stream_and_violations() -> None:
    client = TradingClientProtocol(KEY, SECRET)
    (event,) = client.receive('{"stream": "account_updates", "data": {"x": 1}}')
    assert isinstance(event, models.UnknownMessage)
    with pytest.raises(E.RemoteProtocolError):
        client.receive('{"stream": "trade_updates", "data": {"event": "fill"}}')
    assert client.state is ClientState.CLOSED
    with pytest.raises(E.ProtocolError):
        TradingClientProtocol(KEY, SECRET).receive("[1, 2")
    with pytest.raises(E.RemoteProtocolError):
        TradingClientProtocol(KEY, SECRET).receive('{"stream": "listening", "data": 5}')


def test_usage_errors() -> None:
    with pytest.raises(E.UsageError):
        TradingClientProtocol(KEY, SECRET, auth_form="login")  # type: ignore[arg-type]
    with pytest.raises(E.UsageError):
        TradingClientProtocol(KEY, SECRET, encoding="xml")  # type: ignore[arg-type]
    client = TradingClientProtocol(KEY, SECRET)
    client.connection_closed(E.ConnectionClosedError(1000))
    assert isinstance(client.error, E.ConnectionClosedError)
    assert SECRET not in repr(client)
