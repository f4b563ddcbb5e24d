"""Exception hierarchy for trioalpaca.

Every exception the library raises derives from :class:`TrioAlpacaError`. Each one carries a
classification the reconnect logic reads as plain attributes, never by matching message text and
without ``isinstance`` chains:

``retryable``
    Reconnecting (after a backoff delay) may succeed: transport loss, 406, 407, 500, a stale or
    mute socket, malformed frames from the server.
``fatal``
    Retrying cannot help; stop and tell the user (bad credentials, feed not in plan, programming
    errors). ``fatal`` and ``retryable`` are never both true.
``request_level`` (server errors only)
    The error answers one subscribe/unsubscribe request; the connection itself is fine
    (400, 405 and 413 in reply to a runtime subscription change). Neither fatal nor retryable.
``connection_limit``
    The delay before the next attempt must respect the connection-limit floor
    (:class:`~trioalpaca.backoff.Backoff` ``connection_limit_floor``); true only for 406.

Server error codes 400, 405 and 413 are request-level when they answer a subscription change
made at runtime, but **fatal** when they answer the subscription sent while connecting (the initial
subscribe or the resubscribe after a reconnect): sending the same request again on a new connection
would fail the same way. Pass ``during_connect=True`` to
:func:`~trioalpaca._errors.server_error` for that case.

No message ever contains an API key or secret.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlpacaServerError",
    "AlreadyAuthenticatedError",
    "AuthFailedError",
    "AuthTimeoutError",
    "BindError",
    "ConnectionClosedError",
    "ConnectionLimitError",
    "CredentialsError",
    "HandshakeRejectedError",
    "HeartbeatTimeoutError",
    "HostNotFoundError",
    "InsufficientScopeError",
    "InsufficientSubscriptionError",
    "InternalServerError",
    "InvalidSubscribeActionError",
    "InvalidSyntaxError",
    "LocalProtocolError",
    "MalformedMessageError",
    "MalformedStreamError",
    "MsgpackRequiredError",
    "NotAuthenticatedError",
    "ProtocolError",
    "ReconnectLimitError",
    "RemoteProtocolError",
    "SlowClientError",
    "StaleStreamError",
    "StarSubscriptionNotAllowedError",
    "SubscriptionTimeoutError",
    "SymbolLimitError",
    "TLSError",
    "TransportError",
    "TrioAlpacaError",
    "UsageError",
    "V2NotEnabledError",
    "error_key",
    "is_fatal",
    "is_request_level",
    "is_retryable",
    "server_error",
]


class TrioAlpacaError(Exception):
    """Root of every exception raised by trioalpaca.

    Attributes:
        retryable: reconnecting after a backoff delay may succeed.
        fatal: retrying cannot help; the stream should stop and surface this error.
        connection_limit: the next delay must honour the connection-limit floor (406 only).
    """

    retryable: bool = False
    fatal: bool = True
    connection_limit: bool = False
    permanent: bool = False
    """Whether the cause will not heal by itself, such as an unknown host name.

    The *first* connection of a stream then fails at once instead of retrying (see
    ``first_connect_timeout``); once a stream has been up, such errors are retried like any
    transport loss (unless also ``fatal``)."""


# --------------------------------------------------------------------------------------------
# Server error codes
# --------------------------------------------------------------------------------------------

#: Codes that stop the stream whenever they arrive.
_FATAL_CODES = frozenset({402, 408, 409, 410, 411, 412})
#: Codes answering one subscription request; fatal only when they answer the connect-time request.
_REQUEST_CODES = frozenset({400, 405, 413})
#: Every other code (401, 403, 404, 406, 407, 500 and unknown codes) is retryable.


def is_fatal(code: int, *, during_connect: bool = False) -> bool:
    """Return whether server error ``code`` means "stop, retrying cannot help".

    402, 408, 409, 410, 411 and 412 are always fatal. 400, 405 and 413 are fatal when they answer
    the subscription sent while connecting (``during_connect=True``) and request-level otherwise.
    """
    if code in _FATAL_CODES:
        return True
    return during_connect and code in _REQUEST_CODES


def is_request_level(code: int, *, during_connect: bool = False) -> bool:
    """Return whether ``code`` only fails the request it answers (the connection stays usable)."""
    return not during_connect and code in _REQUEST_CODES


def is_retryable(code: int) -> bool:
    """Return whether reconnecting after server error ``code`` may succeed.

    True for 401, 403, 404, 406, 407, 500 and for codes this library does not know (an unknown code
    is treated like a server hiccup: back off and try again, bounded by the reconnect limit).
    """
    return code not in _FATAL_CODES and code not in _REQUEST_CODES


def error_key(exc: BaseException) -> str:
    """The key an error is counted under in metrics: the server's code (``"406"``) for server
    errors, otherwise the exception's class name."""
    code = getattr(exc, "code", None)
    return str(code) if isinstance(code, int) and code else type(exc).__name__


class AlpacaServerError(TrioAlpacaError):
    """An error message (``{"T": "error", "code": ..., "msg": ...}``) sent by the Alpaca server.

    One subclass exists per known code; :func:`~trioalpaca._errors.server_error` picks it.
    Unknown codes use this class.

    Args:
        code: the numeric code from the server (defaults to the subclass's code).
        server_message: the server's ``msg`` text, kept verbatim for display only.
        during_connect: the error answers the auth or the subscription sent while connecting;
            request-level codes then become fatal.

    Attributes:
        code: numeric error code.
        server_message: the server's own text.
        hint: what the user should do about it.
        request_level: only the answered request failed; the connection is still usable.
        during_connect: whether the error arrived while connecting.
    """

    code: int = 0
    default_message: ClassVar[str] = "server error"
    hint: ClassVar[str] = "unexpected server error code; the client will reconnect with backoff"

    def __init__(
        self,
        code: int | None = None,
        server_message: str | None = None,
        *,
        during_connect: bool = False,
    ) -> None:
        if code is None:
            code = type(self).code
        if server_message is None:
            server_message = type(self).default_message
        self.code = code
        self.server_message = server_message
        self.during_connect = during_connect
        self.fatal = is_fatal(code, during_connect=during_connect)
        self.request_level = is_request_level(code, during_connect=during_connect)
        self.retryable = is_retryable(code)
        super().__init__(code, server_message)

    def __str__(self) -> str:
        return f"Alpaca error {self.code} ({self.server_message}): {self.hint}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, server_message={self.server_message!r})"


class InvalidSyntaxError(AlpacaServerError):
    """400 ``invalid syntax``: malformed request or a symbol in an invalid format."""

    code = 400
    default_message = "invalid syntax"
    hint = "the request was malformed or a symbol has an invalid format; check the symbols"


class NotAuthenticatedError(AlpacaServerError):
    """401 ``not authenticated``: a subscription request arrived before authentication."""

    code = 401
    default_message = "not authenticated"
    hint = "a request was sent before authentication finished; the client will reconnect"


class AuthFailedError(AlpacaServerError):
    """402 ``auth failed``: the server rejected the API key / secret."""

    code = 402
    default_message = "auth failed"
    hint = (
        "the server rejected the credentials; check APCA_API_KEY_ID / APCA_API_SECRET_KEY "
        "(and paper vs live keys)"
    )


class AlreadyAuthenticatedError(AlpacaServerError):
    """403 ``already authenticated``: a second auth message on one session."""

    code = 403
    default_message = "already authenticated"
    hint = "a second auth was sent on an authenticated session; the client will reconnect"


class AuthTimeoutError(AlpacaServerError):
    """404 ``auth timeout``: no successful auth within about 10 s of connecting."""

    code = 404
    default_message = "auth timeout"
    hint = "authentication was not completed within 10 seconds; the client will reconnect"


class SymbolLimitError(AlpacaServerError):
    """405 ``symbol limit exceeded``: the request would exceed the plan's symbol limit.

    The server leaves the subscriptions unchanged.
    """

    code = 405
    default_message = "symbol limit exceeded"
    hint = (
        "the request would exceed the symbol limit of your plan; subscriptions are unchanged. "
        "Subscribe to fewer symbols or upgrade the plan"
    )


class ConnectionLimitError(AlpacaServerError):
    """406 ``connection limit exceeded``: this key already holds its allowed connections.

    After a network drop the server can take about 90 s to reap the old socket, so the reconnect
    delay honours the connection-limit floor (``connection_limit`` is true).
    """

    code = 406
    connection_limit = True
    default_message = "connection limit exceeded"
    hint = (
        "another client holds the one connection this key may open on this feed (or the server "
        "has not yet reaped a dropped one, which takes about 90 s); close the other client or use "
        "a connection pool"
    )


class SlowClientError(AlpacaServerError):
    """407 ``slow client``: the client did not keep up and the server's buffer filled."""

    code = 407
    default_message = "slow client"
    hint = (
        "the client did not read fast enough and the server dropped it; make handlers faster, "
        "use a drop policy or subscribe to fewer symbols"
    )


class V2NotEnabledError(AlpacaServerError):
    """408 ``v2 not enabled`` (legacy code, absent from current documentation)."""

    code = 408
    default_message = "v2 not enabled"
    hint = "the account has no access to the v2 market data API; check the account settings"


class InsufficientSubscriptionError(AlpacaServerError):
    """409 ``insufficient subscription``: the feed is not part of the market data plan."""

    code = 409
    default_message = "insufficient subscription"
    hint = "your market data plan does not include this feed; use feed='iex' or upgrade the plan"


class InvalidSubscribeActionError(AlpacaServerError):
    """410 ``invalid subscribe action for this feed``: the stream does not offer that channel."""

    code = 410
    default_message = "invalid subscribe action for this feed"
    hint = (
        "this stream does not offer one of the requested channels (e.g. bars on options, "
        "trades on news); see trioalpaca.endpoints for each feed's channels"
    )


class InsufficientScopeError(AlpacaServerError):
    """411 ``insufficient scope``: the OAuth/broker token lacks the needed scope."""

    code = 411
    default_message = "insufficient scope"
    hint = "the access token lacks the scope for this stream; request a token with that scope"


class MsgpackRequiredError(AlpacaServerError):
    """412: option messages are only available in MsgPack format."""

    code = 412
    default_message = "option messages are only available in MsgPack format"
    hint = "option streams need encoding='msgpack'"


class StarSubscriptionNotAllowedError(AlpacaServerError):
    """413: ``"*"`` is not allowed for option quotes."""

    code = 413
    default_message = "star subscription is not allowed for option quotes"
    hint = "subscribe to option quotes by contract symbol; '*' is only allowed for option trades"


class InternalServerError(AlpacaServerError):
    """500 ``internal error``: a server-side failure."""

    code = 500
    default_message = "internal error"
    hint = "Alpaca reported an internal error; the client will reconnect with backoff"


_BY_CODE: dict[int, type[AlpacaServerError]] = {
    cls.code: cls
    for cls in (
        InvalidSyntaxError,
        NotAuthenticatedError,
        AuthFailedError,
        AlreadyAuthenticatedError,
        AuthTimeoutError,
        SymbolLimitError,
        ConnectionLimitError,
        SlowClientError,
        V2NotEnabledError,
        InsufficientSubscriptionError,
        InvalidSubscribeActionError,
        InsufficientScopeError,
        MsgpackRequiredError,
        StarSubscriptionNotAllowedError,
        InternalServerError,
    )
}


def server_error(
    code: int, msg: str | None = None, *, during_connect: bool = False
) -> AlpacaServerError:
    """Build the :class:`~trioalpaca.AlpacaServerError` subclass for ``code`` (the base class
    if unknown).

    Args:
        code: the server's numeric code.
        msg: the server's text; the code's usual text when omitted.
        during_connect: the error answers the auth or connect-time subscription (makes
            request-level codes fatal, see :func:`~trioalpaca._errors.is_fatal`).
    """
    cls = _BY_CODE.get(code, AlpacaServerError)
    return cls(code, msg, during_connect=during_connect)


# --------------------------------------------------------------------------------------------
# Protocol errors
# --------------------------------------------------------------------------------------------


class ProtocolError(TrioAlpacaError):
    """Bytes or messages that break the wire protocol.

    Raised by the codec for malformed frames; retryable, since a fresh connection usually fixes a
    garbled stream.
    """

    retryable = True
    fatal = False


class RemoteProtocolError(ProtocolError):
    """The server broke the protocol (unexpected message for the current state, garbage)."""


class MalformedMessageError(RemoteProtocolError, ValueError):
    """A message (one element of a frame, or a wire dict given to ``from_wire``) that cannot be
    decoded or normalised: a required key missing, a value of the wrong type.

    ``Model.from_wire`` raises it; the stream decoder turns the same error into a
    :class:`~trioalpaca.models.MalformedMessage` event in the message's place (with this error's
    text) and goes on with the rest of the frame. Also a :class:`ValueError`.
    """


class MalformedStreamError(RemoteProtocolError):
    """Too many frames in a row did not decode at all: the stream counts as broken.

    The client reconnects (retryable), and the backoff is *not* reset by data that arrived on the
    broken connection, so a server that keeps sending garbage never causes a fast reconnect loop.
    See :ref:`malformed-data`.
    """


class LocalProtocolError(ProtocolError):
    """This side tried something the protocol forbids in its current state (a bug or misuse)."""

    retryable = False
    fatal = True


# --------------------------------------------------------------------------------------------
# Transport and liveness errors
# --------------------------------------------------------------------------------------------


class TransportError(TrioAlpacaError):
    """The network connection failed (refused, reset, TLS error, ...). Retryable."""

    retryable = True
    fatal = False


class ConnectionClosedError(TransportError):
    """The websocket closed unexpectedly.

    Attributes:
        close_code: the websocket close code, if one was received.
        reason: the close reason text, if any.
    """

    def __init__(self, close_code: int | None = None, reason: str | None = None) -> None:
        self.close_code = close_code
        self.reason = reason
        text = "the websocket connection was closed"
        if close_code is not None:
            text += f" (code {close_code}"
            text += f", reason {reason!r})" if reason else ")"
        super().__init__(text + "; the client will reconnect")


class HandshakeRejectedError(TransportError):
    """The server answered the websocket upgrade with an HTTP error status.

    429 (rate limited) and 5xx are retryable; any other status (404 unknown path, 401/403 refused)
    is fatal.

    Attributes:
        status_code: the HTTP status of the rejected upgrade.
    """

    def __init__(self, status_code: int, url: str | None = None) -> None:
        self.status_code = status_code
        self.url = url
        self.retryable = status_code == 429 or status_code >= 500
        self.fatal = not self.retryable
        where = f" for {url}" if url else ""
        if status_code == 429:
            hint = "the server is rate limiting connection attempts; backing off"
        elif status_code == 404:
            hint = "the path does not exist; check the feed name or the url override"
        elif status_code >= 500:
            hint = "server-side failure; backing off"
        else:
            hint = "the server refused the upgrade; check the URL and credentials headers"
        super().__init__(f"websocket upgrade rejected with HTTP {status_code}{where}: {hint}")


class TLSError(TransportError):
    """The TLS handshake failed: the certificate did not verify, or the server does not speak TLS.

    Fatal (never retried): a wrong certificate or a plain ``ws://`` server does not heal.

    Attributes:
        reason: the SSL library's reason text (e.g. ``"certificate verify failed: self-signed
            certificate"`` or ``"wrong version number"``).
        url: the URL being connected to.
    """

    retryable = False
    fatal = True
    permanent = True

    def __init__(self, reason: str, url: str | None = None, hint: str | None = None) -> None:
        self.reason = reason
        self.url = url
        where = f" with {url}" if url else ""
        tail = f"; {hint}" if hint else ""
        super().__init__(f"TLS handshake{where} failed: {reason}{tail}")


class HostNotFoundError(TransportError):
    """The host name of the URL does not resolve (DNS NXDOMAIN / no address).

    Retryable once a stream has been up (DNS blips happen), but ``permanent``: the first
    connection fails at once instead of retrying a typo forever.

    Attributes:
        host: the host name that did not resolve.
    """

    permanent = True

    def __init__(self, host: str, detail: str = "") -> None:
        self.host = host
        tail = f" ({detail})" if detail else ""
        super().__init__(f"host name {host!r} does not resolve{tail}; check the URL")


class StaleStreamError(TrioAlpacaError):
    """The socket stayed open but no data arrived for longer than the staleness timeout.

    Attributes:
        silent_for: seconds without data.
        channel: the channel that went quiet (``None`` for the whole stream).
    """

    retryable = True
    fatal = False

    def __init__(self, silent_for: float, channel: str | None = None) -> None:
        self.silent_for = silent_for
        self.channel = channel
        what = f"channel {channel!r}" if channel else "the stream"
        super().__init__(
            f"no data on {what} for {silent_for:.1f} s while the socket looked open; reconnecting"
        )


class HeartbeatTimeoutError(TransportError):
    """A websocket ping got no pong within the heartbeat timeout.

    Attributes:
        timeout: the pong deadline in seconds.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"no pong within {timeout:g} s; the connection is dead, reconnecting")


class SubscriptionTimeoutError(TrioAlpacaError):
    """The server did not acknowledge a subscription change in time.

    Retryable: the client treats the connection as unhealthy and resubscribes on a new one.

    Attributes:
        timeout: the deadline in seconds.
    """

    retryable = True
    fatal = False

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            f"the server did not acknowledge the subscription change within {timeout:g} s"
        )


# --------------------------------------------------------------------------------------------
# Local errors
# --------------------------------------------------------------------------------------------


class CredentialsError(TrioAlpacaError):
    """No API credentials were given. Fatal."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "no API credentials: pass api_key= and api_secret= or set APCA_API_KEY_ID and "
            "APCA_API_SECRET_KEY in the environment"
        )


class ReconnectLimitError(TrioAlpacaError):
    """The reconnect attempts ran out. Fatal; the last underlying error is ``__cause__``.

    Attributes:
        attempts: how many consecutive attempts failed.
        last_error: the error of the last attempt, if any.
    """

    def __init__(self, attempts: int, last_error: BaseException | None = None) -> None:
        self.attempts = attempts
        self.last_error = last_error
        tail = f"; last error: {last_error}" if last_error is not None else ""
        super().__init__(
            f"gave up after {attempts} consecutive failed connection attempts "
            f"(raise max_reconnect_attempts or set it to None to retry forever){tail}"
        )


class UsageError(TrioAlpacaError, ValueError):
    """The library was called incorrectly (unknown feed or channel, bad argument). Fatal."""


class BindError(TrioAlpacaError, OSError):
    """A server (emulator, relay, hub) could not bind its listening socket: the port is in use,
    the address is not local, or binding needs privileges. Fatal.

    Also an :class:`OSError`, so code that caught the bind failure as such keeps working.
    """
