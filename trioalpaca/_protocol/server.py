"""Sans-IO server state machines: the emulator's half of the market data and trading protocols.

The emulator (``trioalpaca.testing``) owns sockets, clocks, connection limits and market
simulation; these classes own the per-session protocol: the welcome, the auth exchange, the
subscription state with full-state acknowledgements, every error reply, and the decision whether an
error closes the socket (returned as data, :attr:`DataServerProtocol.should_close`).

Choices where the specification leaves a gap (``[?]``):

* Acknowledgement key set: every channel of the endpoint in :attr:`Endpoint.ack_channels
  <trioalpaca.endpoints.Endpoint.ack_channels>` order, unused ones as empty lists. Stocks:
  ``trades, quotes, bars, updatedBars, dailyBars, statuses, lulds, corrections, cancelErrors,
  imbalances`` (``imbalances`` included); crypto ``trades, quotes, orderbooks, bars, updatedBars,
  dailyBars`` (+ ``pricing`` on perps); options ``trades, quotes``; news ``news``.
* ``corrections`` / ``cancelErrors`` always equal ``trades`` on stock feeds and cannot be requested
  directly (a non-empty list for them is 410, like any channel the endpoint lacks).
* ``"*"`` is a set member matching everything (see :mod:`trioalpaca._protocol.common`).
* Validation order for one request: malformed (400: non-list value, non-string or badly formatted
  symbol), then unknown channel (410), then ``"*"`` on option quotes (413), then the symbol limit
  (405). Any error leaves the state unchanged. ``null`` / empty lists are no-ops.
* 412 (JSON on an options endpoint) is decided at connect: :meth:`DataServerProtocol.opening_frames`
  returns the welcome followed by the 412 error; every later request is answered with 412 again.
* Auth with a missing or non-string ``key``/``secret`` is 400; a rejected one is whatever code the
  ``check_auth`` callback returns (402, 406, 409, ...).
* Closing: after 404 and 407 always; after 402, 406, 409 and 412 by default (configurable with
  ``close_on``); never after 400, 401, 403, 405, 410 or 413.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._codec import Encoder, Encoding, Frame, decode_request, decode_trading, encode_trading
from .._errors import ProtocolError, UsageError
from ..endpoints import MIRRORED_CHANNELS, Endpoint, StreamKind, resolve_feed
from .common import SYMBOL_RE, State, apply_change

__all__ = [
    "ALWAYS_CLOSE",
    "DEFAULT_CLOSE_ON",
    "ERROR_MESSAGES",
    "NEVER_CLOSE",
    "AuthCheck",
    "DataServerProtocol",
    "TradingServerProtocol",
]

#: The server's text for every error code (as documented by Alpaca).
ERROR_MESSAGES: Mapping[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    408: "v2 not enabled",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    411: "insufficient scope",
    412: "option messages are only available in MsgPack format",
    413: "star subscription is not allowed for option quotes",
    500: "internal error",
}

#: Codes after which the socket is always closed.
ALWAYS_CLOSE = frozenset({404, 407})
#: Codes after which the socket always stays open.
NEVER_CLOSE = frozenset({400, 401, 403, 405, 410, 413})
#: Default set of closing codes (``ALWAYS_CLOSE`` plus the configurable 402, 406, 409, 412).
DEFAULT_CLOSE_ON = ALWAYS_CLOSE | {402, 406, 409, 412}

#: ``check_auth(key, secret) -> None`` (accept) or an error code (reject with that code).
AuthCheck = Callable[[str, str], "int | None"]


class _RequestError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class DataServerProtocol:
    """Server side of one market data session, without I/O.

    Args:
        endpoint: the endpoint (or feed name) this session was opened on.
        encoding: the negotiated encoding (``application/msgpack`` upgrade -> ``"msgpack"``).
        check_auth: called with the key and secret of an auth request; return ``None`` to accept
            or an error code (402 bad credentials, 406 connection limit, 409 feed not in plan...).
            ``None`` (the default) accepts everything.
        symbol_limit: maximum number of distinct symbols (``"*"`` counts as one) across
            ``limited_channels``; a subscribe exceeding it gets 405 and changes nothing.
        limited_channels: wire channels the limit counts (default: every channel).
        close_on: error codes after which :attr:`should_close` becomes true. 404 and 407 are
            always added; 400, 401, 403, 405, 410 and 413 are always removed.
    """

    def __init__(
        self,
        endpoint: Endpoint | str,
        encoding: Encoding,
        check_auth: AuthCheck | None = None,
        *,
        symbol_limit: int | None = None,
        limited_channels: Iterable[str] | None = None,
        close_on: Iterable[int] = DEFAULT_CLOSE_ON,
    ) -> None:
        ep = resolve_feed(endpoint)
        if ep.kind is StreamKind.TRADING:
            raise UsageError("use TradingServerProtocol for the trading stream")
        self.endpoint = ep
        self.encoding: Encoding = encoding
        self._encoder = Encoder(ep.kind, encoding)
        self._check_auth = check_auth
        self.symbol_limit = symbol_limit
        self._limited = frozenset(limited_channels) if limited_channels is not None else None
        self.close_on = (frozenset(close_on) | ALWAYS_CLOSE) - NEVER_CLOSE
        #: The session is unusable because of the encoding (412 on options with JSON).
        self.encoding_rejected = ep.msgpack_only and encoding != "msgpack"
        #: Whether the server accepted an auth on this session.
        self.authenticated = False
        #: The key of the accepted auth (``None`` before).
        self.key: str | None = None
        #: Once true, the emulator should close the socket after sending the replies it has.
        self.should_close = False
        #: Every error code this session sent, in order.
        self.errors_sent: list[int] = []
        self._state: State = {ch: {} for ch in ep.channels}
        self._sets: dict[str, frozenset[str]] = {}
        self._subscriptions: dict[str, tuple[str, ...]] = {}
        self._refresh()

    # ------------------------------------------------------------------ frames

    def _frame(self, d: dict[str, Any]) -> Frame:
        return self._encoder.encode_raw([d])

    def welcome(self) -> Frame:
        """The welcome frame ``[{"T": "success", "msg": "connected"}]``."""
        return self._frame({"T": "success", "msg": "connected"})

    def opening_frames(self) -> list[Frame]:
        """Frames to send after the upgrade: the welcome, then 412 if the encoding is wrong."""
        frames = [self.welcome()]
        if self.encoding_rejected:
            frames.append(self.error_frame(412))
        return frames

    def error_frame(self, code: int, msg: str | None = None) -> Frame:
        """An error frame for ``code`` (recorded in :attr:`errors_sent`; may set
        :attr:`should_close`). Also the way to inject 407, 500 or any other code."""
        self.errors_sent.append(code)
        if code in self.close_on:
            self.should_close = True
        text = msg if msg is not None else ERROR_MESSAGES.get(code, "error")
        return self._frame({"T": "error", "code": code, "msg": text})

    def auth_timeout(self) -> list[Frame]:
        """Call when the auth deadline (10 s) passes: 404 and close if not authenticated yet."""
        if self.authenticated:
            return []
        return [self.error_frame(404)]

    def closes_after(self, code: int) -> bool:
        """Whether this session closes the socket after sending error ``code``."""
        return code in self.close_on

    def ack_frame(self) -> Frame:
        """The ``subscription`` frame with the full current state."""
        return self._frame({"T": "subscription", **{k: list(v) for k, v in self._subs_items()}})

    # ------------------------------------------------------------------ state

    def _subs_items(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        return self._subscriptions.items()

    @property
    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """The full acknowledged state: every ack channel, mirrors included, empty when unused."""
        return dict(self._subscriptions)

    def is_subscribed(self, channel: str, symbol: str) -> bool:
        """Whether a message for ``symbol`` on wire channel ``channel`` should be sent now.

        O(1); ``"*"`` matches every symbol; ``corrections`` / ``cancelErrors`` follow ``trades``.
        """
        s = self._sets.get(channel)
        return s is not None and (symbol in s or "*" in s)

    def is_subscribed_any(self, channel: str, symbols: Iterable[str]) -> bool:
        """Whether any of ``symbols`` is subscribed on ``channel`` (news carries several)."""
        s = self._sets.get(channel)
        if not s:
            return False
        if "*" in s:
            return True
        return any(sym in s for sym in symbols)

    def _refresh(self) -> None:
        ep = self.endpoint
        trades = tuple(self._state.get("trades", {}))
        subs: dict[str, tuple[str, ...]] = {}
        for ch in ep.ack_channels:
            if ch in MIRRORED_CHANNELS and ep.mirrors_trades:
                subs[ch] = trades
            else:
                subs[ch] = tuple(self._state.get(ch, {}))
        self._subscriptions = subs
        self._sets = {ch: frozenset(syms) for ch, syms in subs.items() if syms}

    # ------------------------------------------------------------------ requests

    def receive(self, frame: Frame) -> list[Frame]:
        """Handle one client frame; return the reply frames in order (one per request).

        Never raises for client mistakes: malformed input gets error 400.
        """
        try:
            req = decode_request(frame)
        except ProtocolError:
            return [self.error_frame(400)]
        action = req.get("action")
        if self.encoding_rejected:
            return [self.error_frame(412)]
        if action == "auth":
            return [self._auth(req)]
        if action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                return [self.error_frame(401)]
            try:
                self._change(action, req)
            except _RequestError as exc:
                return [self.error_frame(exc.code)]
            return [self.ack_frame()]
        return [self.error_frame(400)]

    def _auth(self, req: Mapping[str, Any]) -> Frame:
        if self.authenticated:
            return self.error_frame(403)
        key, secret = req.get("key"), req.get("secret")
        if not isinstance(key, str) or not isinstance(secret, str):
            return self.error_frame(400)
        code = self._check_auth(key, secret) if self._check_auth is not None else None
        if code is not None:
            return self.error_frame(code)
        self.authenticated = True
        self.key = key
        return self._frame({"T": "success", "msg": "authenticated"})

    def _change(self, action: str, req: Mapping[str, Any]) -> None:
        ep = self.endpoint
        changes: dict[str, list[str]] = {}
        for ch, value in req.items():
            if ch == "action" or value is None:
                continue
            if not isinstance(value, list):
                raise _RequestError(400)
            for sym in value:
                if not isinstance(sym, str) or SYMBOL_RE.fullmatch(sym) is None:
                    raise _RequestError(400)
            if value:
                changes[ch] = value
        for ch in changes:
            if ch not in ep.channels:
                raise _RequestError(410)
        if (
            action == "subscribe"
            and ep.kind is StreamKind.OPTIONS
            and "*" in changes.get("quotes", ())
        ):
            raise _RequestError(413)
        new: State = {ch: dict(syms) for ch, syms in self._state.items()}
        apply_change(new, "subscribe" if action == "subscribe" else "unsubscribe", changes)
        if action == "subscribe" and self.symbol_limit is not None:
            distinct: set[str] = set()
            for ch, syms in new.items():
                if self._limited is None or ch in self._limited:
                    distinct.update(syms)
            if len(distinct) > self.symbol_limit:
                raise _RequestError(405)
        self._state = new
        self._refresh()


class TradingServerProtocol:
    """Server side of one trading (``trade_updates``) session, without I/O.

    Accepts both auth forms (``{"action": "authenticate", "data": {"key_id", "secret_key"}}`` and
    ``{"action": "auth", "key", "secret"}``), answers with an ``authorization`` message echoing the
    action, acknowledges ``listen`` with ``listening`` (the set replaces the previous one; only
    ``trade_updates`` is known, other names are dropped), and answers ``listen`` before auth with
    ``unauthorized`` / ``action: "listen"``. Malformed requests get the in-stream
    ``{"action": "error", "data": {"error_message": ...}}`` and close the session.

    Args:
        encoding: ``"json"`` (the default, like paper) or ``"msgpack"``.
        check_auth: ``check_auth(key, secret) -> None`` to accept, anything else to reject.
        close_on_unauthorized: close the socket after a rejected auth (default true).
    """

    KNOWN_STREAMS = frozenset({"trade_updates"})

    def __init__(
        self,
        encoding: Encoding = "json",
        check_auth: AuthCheck | None = None,
        *,
        close_on_unauthorized: bool = True,
    ) -> None:
        self.encoding: Encoding = encoding
        self._check_auth = check_auth
        self.close_on_unauthorized = close_on_unauthorized
        #: Whether an auth was accepted.
        self.authenticated = False
        #: The accepted key.
        self.key: str | None = None
        #: Once true, close the socket after sending the pending replies.
        self.should_close = False
        self._listening: tuple[str, ...] = ()

    @property
    def listening(self) -> tuple[str, ...]:
        """Streams currently listened to."""
        return self._listening

    def is_listening(self, stream: str = "trade_updates") -> bool:
        """Whether ``stream`` messages should be sent now."""
        return stream in self._listening

    def _frame(self, obj: dict[str, Any]) -> Frame:
        return encode_trading(obj, self.encoding)

    def error_frame(self, message: str) -> Frame:
        """The in-stream error ``{"action": "error", "data": {"error_message": ...}}``; closes."""
        self.should_close = True
        return self._frame({"action": "error", "data": {"error_message": message}})

    def trade_update_frame(self, data: Mapping[str, Any]) -> Frame:
        """Wrap a trade update ``data`` object as ``{"stream": "trade_updates", "data": ...}``."""
        return self._frame({"stream": "trade_updates", "data": dict(data)})

    def receive(self, frame: Frame) -> list[Frame]:
        """Handle one client frame; return the reply frames. Never raises for client mistakes."""
        try:
            req = decode_trading(frame, self.encoding)
        except ProtocolError:
            return [self.error_frame("invalid request: could not parse")]
        action = req.get("action")
        if action in ("authenticate", "auth"):
            return [self._auth(action, req)]
        if action == "listen":
            if not self.authenticated:
                return [self._authorization("unauthorized", "listen")]
            data = req.get("data")
            streams = data.get("streams") if isinstance(data, dict) else None
            if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
                return [self.error_frame("invalid listen request: data.streams must be a list")]
            self._listening = tuple(dict.fromkeys(s for s in streams if s in self.KNOWN_STREAMS))
            return [
                self._frame({"stream": "listening", "data": {"streams": list(self._listening)}})
            ]
        return [self.error_frame(f"unknown action {action!r:.40}")]

    def _authorization(self, status: str, action: str) -> Frame:
        return self._frame(
            {"stream": "authorization", "data": {"status": status, "action": action}}
        )

    def _auth(self, action: str, req: Mapping[str, Any]) -> Frame:
        if action == "authenticate":
            data = req.get("data")
            data = data if isinstance(data, dict) else {}
            key, secret = data.get("key_id"), data.get("secret_key")
        else:
            key, secret = req.get("key"), req.get("secret")
        ok = isinstance(key, str) and isinstance(secret, str)
        if ok and self._check_auth is not None:
            ok = self._check_auth(str(key), str(secret)) is None
        if not ok:
            if self.close_on_unauthorized:
                self.should_close = True
            return self._authorization("unauthorized", action)
        self.authenticated = True
        self.key = str(key)
        return self._authorization("authorized", action)
