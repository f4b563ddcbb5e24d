"""Sans-IO client state machine for the trading ``trade_updates`` stream.

The trading stream has no welcome: the auth request is queued as soon as the protocol is created.
Messages are single objects ``{"stream": ..., "data": {...}}`` (JSON, possibly in binary frames, or
msgpack on request):

* ``authorization`` with ``status`` ``authorized`` -> :class:`~trioalpaca.models.Authenticated`,
  state ``READY`` and queued ``listen`` requests are sent; ``unauthorized`` answering the auth ->
  fatal :class:`~trioalpaca.AuthFailedError`; ``unauthorized`` answering a ``listen`` -> retryable
  :class:`~trioalpaca.NotAuthenticatedError`;
* ``listening`` -> :class:`~trioalpaca.models.Listening`; completes the oldest ``listen`` request;
* ``trade_updates`` -> :class:`~trioalpaca.models.TradeUpdate`;
* the in-stream error ``{"action": "error", "data": {"error_message": ...}}`` ->
  :class:`~trioalpaca.RemoteProtocolError` (retryable), state ``CLOSED``;
* a legacy one-byte ``0x01`` heartbeat frame is ignored; other streams become
  :class:`~trioalpaca.models.UnknownMessage`.

In raw mode a trade update is returned as its ``data`` dict (what ``TradeUpdate.from_wire``
accepts) and every other message as the whole decoded object.

Once authorized, a trade update that cannot be decoded becomes a
:class:`~trioalpaca.models.MalformedMessage` (raw mode: its ``to_wire()`` dict) and a frame that
does not decode at all one with ``frame=True``; the connection stays up until
``max_undecodable_frames`` frames in a row did not decode
(:class:`~trioalpaca.MalformedStreamError`), as on the data streams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .. import models
from .._codec import Encoding, Frame, decode_trading, encode_trading
from .._errors import (
    AlpacaServerError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TrioAlpacaError,
    UsageError,
    server_error,
)
from .client import ClientState
from .common import ChannelSpec, too_many_undecodable

__all__ = ["TradingClientProtocol"]

_HEARTBEATS = (b"\x01", "\x01")


class TradingClientProtocol:
    """Client side of a trading stream session, without I/O.

    Args:
        key: API key id.
        secret: API secret.
        encoding: ``"json"`` (default) or ``"msgpack"``.
        auth_form: ``"authenticate"`` (``{"action": "authenticate", "data": {"key_id",
            "secret_key"}}``, what the SDKs send; default) or ``"auth"`` (``{"action": "auth",
            "key", "secret"}``, the newest documentation's form).
        raw: return dicts instead of models.
    """

    def __init__(
        self,
        key: str,
        secret: str,
        encoding: Encoding = "json",
        auth_form: Literal["authenticate", "auth"] = "authenticate",
        raw: bool = False,
        on_malformed: Callable[[models.MalformedMessage], object] | None = None,
        max_undecodable_frames: int = 10,
    ) -> None:
        if auth_form not in ("authenticate", "auth"):
            raise UsageError(f"auth_form must be 'authenticate' or 'auth', got {auth_form!r}")
        if encoding not in ("msgpack", "json"):
            raise UsageError(f"encoding must be 'msgpack' or 'json', got {encoding!r}")
        self.encoding: Encoding = encoding
        self.auth_form = auth_form
        self.raw = raw
        self._state = ClientState.AUTHENTICATING
        self._outgoing: list[Frame] = []
        self._next_id = 1
        self._unsent: deque[tuple[int, tuple[str, ...]]] = deque()
        self._inflight: deque[tuple[int, tuple[str, ...]]] = deque()
        self._completed: list[tuple[int, AlpacaServerError | None]] = []
        self._listening: tuple[str, ...] = ()
        self._on_malformed = on_malformed
        self._max_undecodable = max(1, max_undecodable_frames)
        self.undecodable_in_a_row = 0
        self.error: TrioAlpacaError | None = None
        self.fatal_error: TrioAlpacaError | None = None
        #: always False: the trading stream's control messages are filtered by the caller
        self.last_control = False
        if auth_form == "authenticate":
            auth: dict[str, Any] = {
                "action": "authenticate",
                "data": {"key_id": key, "secret_key": secret},
            }
        else:
            auth = {"action": "auth", "key": key, "secret": secret}
        self._outgoing.append(encode_trading(auth, encoding))

    @property
    def state(self) -> ClientState:
        """``AUTHENTICATING``, ``READY`` or ``CLOSED``."""
        return self._state

    @property
    def authenticated(self) -> bool:
        """Whether the server replied ``authorized``."""
        return self._state is ClientState.READY

    @property
    def ready(self) -> bool:
        """Whether ``trade_updates`` flows (the server confirmed listening to it)."""
        return "trade_updates" in self._listening

    @property
    def acknowledged(self) -> dict[str, tuple[str, ...]]:
        """The trading stream has no market data subscriptions: always empty."""
        return {}

    def subscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Refused: the trading stream has no market data channels (use :meth:`listen`)."""
        raise UsageError("the trading stream has no market data channels")

    def unsubscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Refused: the trading stream has no market data channels (use :meth:`listen`)."""
        raise UsageError("the trading stream has no market data channels")

    @property
    def listening(self) -> tuple[str, ...]:
        """Streams the server last confirmed with ``listening``."""
        return self._listening

    @property
    def desired(self) -> tuple[str, ...]:
        """Confirmed streams, replaced by the newest pending ``listen`` (for reconnects)."""
        pending = [*self._inflight, *self._unsent]
        return pending[-1][1] if pending else self._listening

    def data_to_send(self) -> list[Frame]:
        """Drain the frames to send (the auth request first)."""
        out, self._outgoing = self._outgoing, []
        return out

    def completed(self) -> list[tuple[int, AlpacaServerError | None]]:
        """Drain answered ``listen`` requests: ``(request id, None)``."""
        done, self._completed = self._completed, []
        return done

    def listen(self, streams: Iterable[str] = ("trade_updates",)) -> int:
        """Request the set of streams (it replaces the previous set; ``()`` stops); returns an id.

        Queued until the auth succeeds.

        Raises:
            LocalProtocolError: the protocol is closed.
        """
        if self._state is ClientState.CLOSED:
            raise LocalProtocolError("cannot listen on a closed trading stream; reconnect")
        if isinstance(streams, str):
            streams = (streams,)
        wanted = tuple(dict.fromkeys(streams))
        rid = self._next_id
        self._next_id += 1
        if self._state is ClientState.READY:
            self._send_listen(rid, wanted)
        else:
            self._unsent.append((rid, wanted))
        return rid

    def _send_listen(self, rid: int, streams: tuple[str, ...]) -> None:
        req = {"action": "listen", "data": {"streams": list(streams)}}
        self._outgoing.append(encode_trading(req, self.encoding))
        self._inflight.append((rid, streams))

    def receive(self, frame: Frame) -> list[Any]:
        """Feed one frame; return the resulting events (see the module documentation).

        Raises:
            ProtocolError: malformed frame or message; the protocol is closed.
        """
        if frame in _HEARTBEATS:
            return []
        try:
            obj = decode_trading(frame, self.encoding)
        except ProtocolError as exc:
            if self._state is not ClientState.READY:
                self._fail(exc)
                raise
            self.undecodable_in_a_row += 1
            err = too_many_undecodable(self.undecodable_in_a_row, self._max_undecodable, exc)
            if err is not None:
                self._fail(err)
                raise err from exc
            return [self._malformed(frame, str(exc), frame=True)]
        self.undecodable_in_a_row = 0
        stream = obj.get("stream")
        data: Any = obj.get("data")
        if stream == "trade_updates":
            if not isinstance(data, dict):
                what = f"trade update without a data object: {obj!r:.200}"
                if self._state is ClientState.READY:
                    return [self._malformed(obj, what)]
                self._violation(what)
            if self.raw:
                return [data]
            try:
                return [models.TradeUpdate.from_wire(data)]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                what = f"invalid trade update ({exc!r:.100}): {obj!r:.200}"
                if self._state is ClientState.READY:
                    return [self._malformed(obj, what)]
                self._violation(what)
        if obj.get("action") == "error":
            text = data.get("error_message") if isinstance(data, dict) else None
            self._fail(RemoteProtocolError(f"trading stream error from the server: {text!r:.200}"))
            return [obj] if self.raw else [models.UnknownMessage(dict(obj))]
        if not isinstance(data, dict):
            self._violation(f"message without a data object: {obj!r:.200}")
        if stream == "authorization":
            return self._authorization(obj, data)
        if stream == "listening":
            listening = models.Listening.from_wire(data)
            self._listening = listening.streams
            if self._inflight:
                rid, _ = self._inflight.popleft()
                self._completed.append((rid, None))
            return [obj] if self.raw else [listening]
        return [obj] if self.raw else [models.UnknownMessage(dict(obj))]

    def _authorization(self, obj: dict[str, Any], data: dict[str, Any]) -> list[Any]:
        status = data.get("status")
        action = data.get("action")
        if status == "authorized":
            if self._state is ClientState.AUTHENTICATING:
                self._state = ClientState.READY
                while self._unsent:
                    self._send_listen(*self._unsent.popleft())
            return [obj] if self.raw else [models.Authenticated()]
        if action == "listen":
            self._fail(server_error(401, "unauthorized (listen before authorization)"))
        else:
            self._fail(server_error(402, "unauthorized", during_connect=True))
        return [obj] if self.raw else []

    def _malformed(self, raw: Any, error: str, frame: bool = False) -> Any:
        msg = models.MalformedMessage(raw, error, frame)
        if self._on_malformed is not None:
            self._on_malformed(msg)
        return msg.to_wire() if self.raw else msg

    def _violation(self, what: str) -> Any:
        exc = RemoteProtocolError(f"protocol violation on the trading stream: {what}")
        self._fail(exc)
        raise exc

    def _fail(self, exc: TrioAlpacaError) -> None:
        if self.error is None:
            self.error = exc
            if exc.fatal:
                self.fatal_error = exc
        self._state = ClientState.CLOSED

    def connection_closed(self, error: TrioAlpacaError | None = None) -> None:
        """The socket is gone; record ``error`` unless one is already recorded."""
        if error is not None:
            self._fail(error)
        self._state = ClientState.CLOSED

    def __repr__(self) -> str:
        return f"TradingClientProtocol(state={self._state.value}, listening={self._listening!r})"
