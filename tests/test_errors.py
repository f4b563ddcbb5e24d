"""Tests for the exception hierarchy and the fatal / retryable / request-level classification."""

from __future__ import annotations

import pickle

import pytest

import trioalpaca
from trioalpaca import _errors as E

KNOWN = {
    400: E.InvalidSyntaxError,
    401: E.NotAuthenticatedError,
    402: E.AuthFailedError,
    403: E.AlreadyAuthenticatedError,
    404: E.AuthTimeoutError,
    405: E.SymbolLimitError,
    406: E.ConnectionLimitError,
    407: E.SlowClientError,
    408: E.V2NotEnabledError,
    409: E.InsufficientSubscriptionError,
    410: E.InvalidSubscribeActionError,
    411: E.InsufficientScopeError,
    412: E.MsgpackRequiredError,
    413: E.StarSubscriptionNotAllowedError,
    500: E.InternalServerError,
}


@pytest.mark.parametrize(("code", "cls"), sorted(KNOWN.items()))
def test_server_error_picks_subclass(code: int, cls: type[E.AlpacaServerError]) -> None:
    err = E.server_error(code, "whatever the server said")
    assert type(err) is cls
    assert isinstance(err, E.AlpacaServerError)
    assert isinstance(err, trioalpaca.TrioAlpacaError)
    assert err.code == code
    assert err.server_message == "whatever the server said"
    assert str(code) in str(err)
    assert "whatever the server said" in str(err)
    # a subclass built directly carries its own code and the usual text
    direct = cls()
    assert direct.code == code
    assert direct.server_message == cls.default_message


def test_unknown_code_uses_base_and_is_retryable() -> None:
    err = E.server_error(499, "new thing")
    assert type(err) is E.AlpacaServerError
    assert err.code == 499
    assert err.retryable and not err.fatal and not err.request_level


@pytest.mark.parametrize("code", [402, 408, 409, 410, 411, 412])
@pytest.mark.parametrize("during_connect", [False, True])
def test_always_fatal(code: int, during_connect: bool) -> None:
    err = E.server_error(code, during_connect=during_connect)
    assert err.fatal and not err.retryable and not err.request_level
    assert E.is_fatal(code, during_connect=during_connect)


@pytest.mark.parametrize("code", [400, 405, 413])
def test_request_level_codes_depend_on_context(code: int) -> None:
    runtime = E.server_error(code)
    assert runtime.request_level and not runtime.fatal and not runtime.retryable
    at_connect = E.server_error(code, during_connect=True)
    assert at_connect.fatal and not at_connect.request_level and not at_connect.retryable
    assert not E.is_fatal(code) and E.is_fatal(code, during_connect=True)
    assert E.is_request_level(code) and not E.is_request_level(code, during_connect=True)


@pytest.mark.parametrize("code", [401, 403, 404, 406, 407, 500, 999])
def test_retryable_codes(code: int) -> None:
    for during_connect in (False, True):
        err = E.server_error(code, during_connect=during_connect)
        assert err.retryable and not err.fatal and not err.request_level
    assert E.is_retryable(code)


def test_only_406_asks_for_the_floor() -> None:
    for code in (*KNOWN, 999):
        assert E.server_error(code).connection_limit is (code == 406)


def test_classification_never_reads_message_text() -> None:
    # the same code with a misleading message classifies the same way
    assert E.server_error(402, "slow client").fatal
    assert E.server_error(407, "auth failed").retryable
    assert type(E.server_error(406, "insufficient subscription")) is E.ConnectionLimitError


def test_messages_say_what_to_do() -> None:
    assert "APCA_API_KEY_ID / APCA_API_SECRET_KEY" in str(E.server_error(402, "auth failed"))
    text = str(E.server_error(406, "connection limit exceeded"))
    assert "another client holds the one connection this key may open on this feed" in text
    assert "iex" in str(E.server_error(409, "insufficient subscription"))
    assert "msgpack" in str(E.server_error(412))
    assert "APCA_API_KEY_ID" in str(E.CredentialsError())


def test_fatal_and_retryable_never_both() -> None:
    samples: list[E.TrioAlpacaError] = [E.server_error(c) for c in (*KNOWN, 999)]
    samples += [E.server_error(c, during_connect=True) for c in KNOWN]
    samples += [
        E.ProtocolError("x"),
        E.RemoteProtocolError("x"),
        E.LocalProtocolError("x"),
        E.TransportError("x"),
        E.ConnectionClosedError(1006),
        E.HandshakeRejectedError(404),
        E.HandshakeRejectedError(429),
        E.StaleStreamError(12.0),
        E.HeartbeatTimeoutError(5.0),
        E.SubscriptionTimeoutError(10.0),
        E.CredentialsError(),
        E.ReconnectLimitError(3),
        E.UsageError("x"),
    ]
    for err in samples:
        assert not (err.fatal and err.retryable), err


def test_protocol_errors_local_vs_remote() -> None:
    assert issubclass(E.LocalProtocolError, E.ProtocolError)
    assert issubclass(E.RemoteProtocolError, E.ProtocolError)
    assert E.RemoteProtocolError("garbage").retryable
    assert E.ProtocolError("garbage").retryable
    local = E.LocalProtocolError("misuse")
    assert local.fatal and not local.retryable


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (503, True), (404, False), (401, False)]
)
def test_handshake_rejected(status: int, retryable: bool) -> None:
    err = E.HandshakeRejectedError(status, "ws://127.0.0.1:1/v2/x")
    assert isinstance(err, E.TransportError)
    assert err.status_code == status
    assert err.retryable is retryable
    assert err.fatal is not retryable
    assert str(status) in str(err)


def test_transport_and_liveness_errors_are_retryable() -> None:
    closed = E.ConnectionClosedError(1011, "bye")
    assert closed.close_code == 1011 and closed.reason == "bye" and "1011" in str(closed)
    assert E.ConnectionClosedError().retryable
    assert E.HeartbeatTimeoutError(5.0).retryable
    assert isinstance(E.HeartbeatTimeoutError(5.0), E.TransportError)
    stale = E.StaleStreamError(31.5, "trades")
    assert stale.retryable and stale.channel == "trades" and "trades" in str(stale)
    assert E.SubscriptionTimeoutError(10.0).retryable


def test_local_errors_are_fatal() -> None:
    cause = E.server_error(406)
    limit = E.ReconnectLimitError(7, cause)
    assert limit.fatal and limit.attempts == 7 and limit.last_error is cause and "7" in str(limit)
    assert E.CredentialsError().fatal
    usage = E.UsageError("bad feed")
    assert usage.fatal and isinstance(usage, ValueError)


def test_server_error_pickles() -> None:
    err = E.server_error(406, "connection limit exceeded")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is E.ConnectionLimitError
    assert clone.code == 406 and clone.server_message == "connection limit exceeded"


def test_exported_from_package() -> None:
    for name in E.__all__:
        if name[0].isupper():
            assert getattr(trioalpaca, name) is getattr(E, name)
