"""Sans-IO client state machine for the market data streams (stocks, crypto, options, news).

Frames in, events out; outgoing frames are drained with :meth:`DataClientProtocol.data_to_send`.
No I/O, no clocks, no logging. The connection layer owns the socket and the timeouts.

States::

    CONNECTING --welcome--> AUTHENTICATING --authenticated--> SUBSCRIBING --ack--> READY
                                                         \\-- (nothing to subscribe) --> READY
    any state --error / close--> CLOSED

Subscription bookkeeping: every subscribe/unsubscribe is a *request* with an id. Requests are
answered by the server strictly in order, each by one ``subscription`` message (the full new state:
it becomes :attr:`~DataClientProtocol.acknowledged`) or one ``error`` message. Finished requests
are drained with :meth:`~DataClientProtocol.completed`. :attr:`~DataClientProtocol.desired` is the
acknowledged state with every still-pending change applied; it is what to resubscribe after a
reconnect.

Error handling (see :mod:`trioalpaca._errors`): an error answering a runtime request with a
request-level code (400, 405, 413) fails only that request. Any other error ends the connection:
the state becomes ``CLOSED`` and :attr:`~DataClientProtocol.error` holds the exception (also
:attr:`~DataClientProtocol.fatal_error` when retrying cannot help). Errors answering the auth or
the connect-time subscription are classified with ``during_connect=True``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .. import models
from .._codec import Decoder, Encoding, Frame, encode_request
from .._errors import (
    AlpacaServerError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TrioAlpacaError,
    UsageError,
    server_error,
)
from ..endpoints import CHANNELS, FEEDS, Endpoint, StreamKind, resolve_feed
from .common import (
    Action,
    ChannelSpec,
    State,
    apply_change,
    build_request,
    normalize_channels,
    too_many_undecodable,
)

__all__ = [
    "MAX_UNDECODABLE_FRAMES",
    "ClientState",
    "DataClientProtocol",
    "SubscriptionRequest",
    "endpoint_for",
]

#: Frames in a row that may fail to decode before the stream counts as broken (see
#: :class:`~trioalpaca._errors.MalformedStreamError`).
MAX_UNDECODABLE_FRAMES = 10

_CONTROL_TYPES = frozenset(
    {models.Connected, models.Authenticated, models.SubscriptionChanged, models.ServerError}
)
_CONTROL_T = frozenset({"success", "error", "subscription"})
#: Codes that answer a subscription request (they complete it, with the error).
_REQUEST_ANSWER_CODES = frozenset({400, 405, 410, 413})


class ClientState(enum.Enum):
    """Life cycle of one connection."""

    CONNECTING = "connecting"
    """Socket open, waiting for the server's welcome."""
    AUTHENTICATING = "authenticating"
    """Auth sent (queued), waiting for the reply."""
    SUBSCRIBING = "subscribing"
    """Authenticated; the connect-time subscription is waiting for its acknowledgement."""
    READY = "ready"
    """Streaming; runtime subscription changes allowed."""
    CLOSED = "closed"
    """Finished (error, server close or local close). Make a new protocol to reconnect."""


@attrs.frozen
class SubscriptionRequest:
    """One subscribe/unsubscribe request, as queued or sent.

    Attributes:
        id: request id (unique per protocol object, increasing).
        action: ``"subscribe"`` or ``"unsubscribe"``.
        channels: normalised wire channel -> symbols (non-empty channels only).
        during_connect: the connect-time (initial / resubscribe) request.
    """

    id: int
    action: Action
    channels: dict[str, tuple[str, ...]]
    during_connect: bool = False


def endpoint_for(kind: StreamKind | Endpoint | str) -> Endpoint:
    """Resolve a stream kind, feed name or endpoint to an :class:`~trioalpaca.endpoints.Endpoint`.

    A bare :class:`~trioalpaca.endpoints.StreamKind` gets a generic endpoint of that kind (crypto
    then also allows ``pricing``).
    """
    if isinstance(kind, Endpoint):
        return kind
    if isinstance(kind, StreamKind):
        generic = {
            StreamKind.STOCKS: FEEDS["sip"],
            StreamKind.CRYPTO: FEEDS["crypto-perps/global"],
            StreamKind.OPTIONS: FEEDS["opra"],
            StreamKind.NEWS: FEEDS["news"],
            StreamKind.TRADING: FEEDS["trading"],
        }
        ep = generic[kind]
        if kind is StreamKind.CRYPTO:
            ep = attrs.evolve(ep, feed="crypto", channels=CHANNELS[kind] | {"pricing"})
        return ep
    try:
        return endpoint_for(StreamKind(kind))
    except ValueError:
        return resolve_feed(kind)


class DataClientProtocol:
    """Client side of a market data websocket session, without I/O.

    Args:
        kind: stream kind, feed name (``"sip"``, ``"crypto/us"``...) or endpoint; decides the
            decoder and which channels may be subscribed.
        encoding: ``"msgpack"`` or ``"json"`` (must match what the upgrade negotiated).
        key: API key id (or ``"access_token"`` / ``"oauth"`` for token auth).
        secret: API secret (or the token).
        raw: hand out canonical wire dicts (``Decoder.decode_raw``) instead of models.
        resubscribe: channels to subscribe right after authentication (the initial subscription,
            or :attr:`desired` of the previous connection after a reconnect). Either channel
            spelling; empty channels are ignored.
        on_malformed: called with every :class:`~trioalpaca.models.MalformedMessage` (bad
            elements, undecodable frames) as it is made, to count and log them.
        max_undecodable_frames: after this many frames in a row that do not decode at all, the
            stream counts as broken (:class:`~trioalpaca._errors.MalformedStreamError`).

    Raises:
        UsageError: unknown feed or channel, or a trading endpoint (use
            :class:`~trioalpaca._protocol.trading.TradingClientProtocol`).
    """

    def __init__(
        self,
        kind: StreamKind | Endpoint | str,
        encoding: Encoding,
        key: str,
        secret: str,
        raw: bool = False,
        resubscribe: Mapping[str, ChannelSpec] | None = None,
        on_malformed: Callable[[models.MalformedMessage], object] | None = None,
        max_undecodable_frames: int = MAX_UNDECODABLE_FRAMES,
    ) -> None:
        endpoint = endpoint_for(kind)
        if endpoint.kind is StreamKind.TRADING:
            raise UsageError("the trading stream uses TradingClientProtocol")
        if encoding not in ("msgpack", "json"):
            raise UsageError(f"encoding must be 'msgpack' or 'json', got {encoding!r}")
        self.endpoint = endpoint
        self.encoding: Encoding = encoding
        self.raw = raw
        self._key = key
        self._secret = secret
        decoder = Decoder(endpoint.kind, encoding, on_malformed=on_malformed)
        self._decode = decoder.decode_raw if raw else decoder.decode
        self._on_malformed = on_malformed
        self._max_undecodable = max(1, max_undecodable_frames)
        self.undecodable_in_a_row = 0
        self._state = ClientState.CONNECTING
        self._ready = False
        self._authenticated = False
        self._outgoing: list[Frame] = []
        self._next_id = 1
        # Requests not yet sent (waiting for auth) and sent ones waiting for an answer, in order.
        self._unsent: deque[SubscriptionRequest] = deque()
        self._inflight: deque[SubscriptionRequest] = deque()
        self._completed: list[tuple[int, AlpacaServerError | None]] = []
        self._acknowledged: dict[str, tuple[str, ...]] = {}
        self.error: TrioAlpacaError | None = None
        self.fatal_error: TrioAlpacaError | None = None
        self.last_control = False
        self.initial_request_id: int | None = None
        initial = normalize_channels(endpoint, resubscribe or {})
        if initial:
            req = self._new_request("subscribe", initial, during_connect=True)
            self.initial_request_id = req.id
            self._unsent.append(req)

    # ------------------------------------------------------------------ public state

    @property
    def state(self) -> ClientState:
        """Current :class:`ClientState`."""
        return self._state

    @property
    def authenticated(self) -> bool:
        """Whether the server accepted the credentials on this connection."""
        return self._authenticated

    @property
    def ready(self) -> bool:
        """Whether the connection is authenticated and its subscriptions confirmed (``READY``)."""
        return self._state is ClientState.READY

    @property
    def acknowledged(self) -> dict[str, tuple[str, ...]]:
        """The last full subscription state confirmed by the server (wire channel names).

        Includes the server-maintained ``corrections``/``cancelErrors`` and empty channels exactly
        as echoed. Empty before the first acknowledgement.
        """
        return dict(self._acknowledged)

    @property
    def desired(self) -> dict[str, tuple[str, ...]]:
        """Acknowledged state plus every pending change: what to resubscribe after a reconnect.

        Only subscribable channels with at least one symbol (never ``corrections`` /
        ``cancelErrors``), so it can be passed as ``resubscribe`` to a new protocol.
        """
        state: State = {
            ch: dict.fromkeys(syms)
            for ch, syms in self._acknowledged.items()
            if ch in self.endpoint.channels
        }
        for req in self._inflight:
            apply_change(state, req.action, req.channels)
        for req in self._unsent:
            apply_change(state, req.action, req.channels)
        return {ch: tuple(syms) for ch, syms in state.items() if syms}

    @property
    def pending(self) -> list[SubscriptionRequest]:
        """Requests not answered yet (sent first, then not yet sent), oldest first."""
        return [*self._inflight, *self._unsent]

    def completed(self) -> list[tuple[int, AlpacaServerError | None]]:
        """Drain the requests answered since the last call: ``(request id, error or None)``."""
        done, self._completed = self._completed, []
        return done

    def data_to_send(self) -> list[Frame]:
        """Drain the frames to send, in order (msgpack -> ``bytes``, json -> ``str``)."""
        out, self._outgoing = self._outgoing, []
        return out

    # ------------------------------------------------------------------ requests

    def subscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Request to add symbols; returns the request id.

        Before authentication completes the request is queued and sent after the auth (and after
        the connect-time subscription). A request with no symbols at all completes at once
        (success) without sending anything.

        Raises:
            UsageError: unknown channel / channel not on this feed.
            LocalProtocolError: the protocol is closed.
        """
        return self._request("subscribe", channels)

    def unsubscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Request to remove symbols; returns the request id (see :meth:`subscribe`)."""
        return self._request("unsubscribe", channels)

    def _new_request(
        self, action: Action, channels: dict[str, tuple[str, ...]], *, during_connect: bool = False
    ) -> SubscriptionRequest:
        req = SubscriptionRequest(self._next_id, action, channels, during_connect)
        self._next_id += 1
        return req

    def _request(self, action: Action, channels: Mapping[str, ChannelSpec]) -> int:
        if self._state is ClientState.CLOSED:
            raise LocalProtocolError(
                f"cannot {action} on a closed connection; reconnect with resubscribe=desired"
            )
        req = self._new_request(action, normalize_channels(self.endpoint, channels))
        if not req.channels:
            self._completed.append((req.id, None))
        elif self._authenticated:
            self._send_request(req)
        else:
            self._unsent.append(req)
        return req.id

    def _send_request(self, req: SubscriptionRequest) -> None:
        self._outgoing.append(
            encode_request(build_request(req.action, req.channels), self.encoding)
        )
        self._inflight.append(req)

    # ------------------------------------------------------------------ incoming

    def receive(self, frame: Frame) -> list[Any]:
        """Feed one frame from the server; return its messages (models, or dicts in raw mode).

        Data frames come back exactly as the codec decoded them. Control frames (always a
        one-element array) update the state machine; their control event (``Connected``,
        ``Authenticated``, ``SubscriptionChanged``, ``ServerError``, or the raw dict) is returned
        too and :attr:`last_control` is set.

        An element the codec cannot decode comes back as a
        :class:`~trioalpaca.models.MalformedMessage` in its place. Once authenticated, a frame
        that does not decode at all comes back as one ``MalformedMessage`` (``frame=True``), up
        to ``max_undecodable_frames`` in a row.

        Raises:
            ProtocolError: a frame that does not decode before authentication, the
                ``max_undecodable_frames``-th undecodable frame in a row
                (:class:`~trioalpaca.MalformedStreamError`), or a message that is invalid in the
                current state (:class:`~trioalpaca.RemoteProtocolError`); the protocol is closed.
        """
        try:
            msgs = self._decode(frame)
        except ProtocolError as exc:
            return self._undecodable(frame, exc)
        self.undecodable_in_a_row = 0
        if self._ready and len(msgs) != 1:
            self.last_control = False
            return msgs
        return self._slow_path(msgs)

    def _undecodable(self, frame: Frame, exc: ProtocolError) -> list[Any]:
        if not self._authenticated or self._state is ClientState.CLOSED:
            self._fail(exc)  # the handshake itself is garbled: nothing to skip to
            raise exc
        self.undecodable_in_a_row += 1
        err = too_many_undecodable(self.undecodable_in_a_row, self._max_undecodable, exc)
        if err is not None:
            self._fail(err)
            raise err
        self.last_control = False
        msg = models.MalformedMessage(frame, str(exc), frame=True)
        if self._on_malformed is not None:
            self._on_malformed(msg)
        return [msg.to_wire() if self.raw else msg]

    def _slow_path(self, msgs: list[Any]) -> list[Any]:
        self.last_control = False
        if self._state is ClientState.CLOSED:
            return msgs
        if len(msgs) == 1:
            msg = msgs[0]
            if self.raw:
                if msg.get("T") in _CONTROL_T:
                    self.last_control = True
                    self._control_raw(msg)
                    return msgs
            elif type(msg) in _CONTROL_TYPES:
                self.last_control = True
                self._control(msg)
                return msgs
        if msgs and self._state in (ClientState.CONNECTING, ClientState.AUTHENTICATING):
            exc = RemoteProtocolError(
                f"server sent market data while {self._state.value}; expected a control message"
            )
            self._fail(exc)
            raise exc
        return msgs

    def _control_raw(self, d: Mapping[str, Any]) -> None:
        t = d.get("T")
        if t == "success":
            msg = d.get("msg")
            if msg == "connected":
                self._control(models.Connected())
            elif msg == "authenticated":
                self._control(models.Authenticated())
            else:
                self._control(models.UnknownMessage(dict(d)))
        elif t == "error":
            code = d.get("code")
            text = d.get("msg", "")
            if not isinstance(code, int):
                exc = RemoteProtocolError(f"error message without an integer code: {d!r:.200}")
                self._fail(exc)
                raise exc
            self._control(models.ServerError(code, str(text)))
        else:
            self._control(models.SubscriptionChanged.from_wire(d))

    def _control(self, msg: Any) -> None:
        state = self._state
        if isinstance(msg, models.SubscriptionChanged):
            self._on_ack(msg)
        elif isinstance(msg, models.ServerError):
            self._on_error(msg.code, msg.message)
        elif isinstance(msg, models.Connected):
            if state is not ClientState.CONNECTING:
                self._violation("a second welcome ('connected') message")
            self._state = ClientState.AUTHENTICATING
            self._outgoing.append(
                encode_request(
                    {"action": "auth", "key": self._key, "secret": self._secret}, self.encoding
                )
            )
        elif isinstance(msg, models.Authenticated):
            if state is not ClientState.AUTHENTICATING:
                self._violation(f"'authenticated' while {state.value}")
            self._authenticated = True
            while self._unsent:
                self._send_request(self._unsent.popleft())
            self._update_ready()
        else:  # unknown success message
            self._violation(f"unexpected control message {msg!r:.200}")

    def _violation(self, what: str) -> None:
        exc = RemoteProtocolError(f"protocol violation: {what}")
        self._fail(exc)
        raise exc

    def _update_ready(self) -> None:
        if self._state is ClientState.CLOSED:
            return
        if any(r.during_connect for r in self._inflight):
            self._state = ClientState.SUBSCRIBING
            self._ready = False
        else:
            self._state = ClientState.READY
            self._ready = True

    def _on_ack(self, msg: models.SubscriptionChanged) -> None:
        if not self._authenticated:
            self._violation("subscription acknowledgement before authentication")
        self._acknowledged = dict(msg.subscriptions)
        if self._inflight:
            req = self._inflight.popleft()
            self._completed.append((req.id, None))
            if req.during_connect:
                self._update_ready()
        # An unsolicited acknowledgement (nothing pending) just refreshes the confirmed state.

    def _on_error(self, code: int, text: str) -> None:
        if not self._authenticated:
            # answers the auth: the connection attempt failed
            self._fail(server_error(code, text, during_connect=True))
            return
        req = self._inflight[0] if self._inflight else None
        if req is None:
            err = server_error(code, text)
            if not err.request_level:
                self._fail(err)
            # A stray request-level error (no request waiting) changes nothing; the event is
            # still returned to the caller.
            return
        err = server_error(code, text, during_connect=req.during_connect)
        if code in _REQUEST_ANSWER_CODES:
            self._inflight.popleft()
            self._completed.append((req.id, err))
            if err.fatal:
                self._fail(err)
            elif req.during_connect:
                self._update_ready()
            return
        self._fail(err)

    # ------------------------------------------------------------------ closing

    def _fail(self, exc: TrioAlpacaError) -> None:
        if self.error is None:
            self.error = exc
            if exc.fatal:
                self.fatal_error = exc
        self._state = ClientState.CLOSED
        self._ready = False

    def connection_closed(self, error: TrioAlpacaError | None = None) -> None:
        """Tell the protocol the socket is gone (or is being closed locally).

        ``error`` (e.g. a transport error) is recorded unless an error was already recorded.
        Pending requests stay pending: they are part of :attr:`desired`.
        """
        if error is not None:
            self._fail(error)
        self._state = ClientState.CLOSED
        self._ready = False

    def __repr__(self) -> str:
        return (
            f"DataClientProtocol(feed={self.endpoint.feed!r}, state={self._state.value}, "
            f"pending={len(self._inflight) + len(self._unsent)})"
        )
