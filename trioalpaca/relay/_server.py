"""The relay: an Alpaca-protocol server for many local clients over one upstream per key and
endpoint.

Structure (one trio nursery, :func:`serve_relay`):

* the websocket listener (:func:`trioalpaca._serve.serve_stream_websocket`, shared with the
  emulator) accepts downstream sessions on every endpoint path;
* each downstream session runs the server half of the sans-IO protocol
  (:class:`~trioalpaca._protocol.server.DataServerProtocol` /
  :class:`~trioalpaca._protocol.server.TradingServerProtocol`) for its own welcome, local auth,
  subscription state and acknowledgements, plus a sender task draining its own queue, bounded
  in bytes;
* each upstream is one :class:`~trioalpaca.client.AlpacaWebSocketClient` (raw mode) per (account,
  endpoint), opened when a downstream session first needs it and closed ``linger`` seconds after
  the last one left. Its reader task routes every batch to the sessions whose own set matches
  (:class:`~trioalpaca.relay._routing.Routes`, built on the shared subscription book) and only
  ever *queues*: a slow session is cut (407) or loses data (``slow_client="drop"``), it never
  delays the reader or another session. A sync task keeps upstream's subscription equal to the
  union of the sessions' sets, coalescing changes, and releases each session's acknowledgement
  once upstream covers what that session asked for.
"""

from __future__ import annotations

import functools
import itertools
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import attrs
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from .._book import Pair, group_pairs
from .._codec import Frame, encode_request
from .._errors import AlpacaServerError, SubscriptionTimeoutError, TrioAlpacaError, UsageError
from .._groups import single_error
from .._protocol.server import DataServerProtocol, TradingServerProtocol
from .._serve import query_params
from .._server_conn import Outgoing, ServerConnection, resolve_request, start_listener
from ..client import AlpacaWebSocketClient
from ..endpoints import Endpoint, StreamKind, resolve_feed, stream_url
from ..metrics import LatencyHistogram
from ._auth import (
    DEFAULT_ACCOUNT,
    Account,
    LocalKey,
    check_secret,
    is_loopback,
    normalize_accounts,
    normalize_local_keys,
)
from ._routing import MARKER_TYPES, Routes, covered, pairs_of_state

__all__ = [
    "DEFAULT_SEND_BUFFER_LIMIT",
    "Relay",
    "RelayClientStats",
    "RelayUpstream",
    "UpstreamHook",
    "UpstreamTap",
    "serve_relay",
]

logger = logging.getLogger("trioalpaca.relay")

#: Bytes queued for one downstream session before the slow-client policy applies.
DEFAULT_SEND_BUFFER_LIMIT = 4 * 1024 * 1024
_MAX_FRAME_MESSAGES = 1000
_MERGE_BYTES = 1024 * 1024
_AUTH_TIMEOUT = 10.0
#: How long a fatal upstream refusal (402, 409, ...) is remembered and answered locally, so that
#: SDKs that reconnect without backoff (alpaca-py) do not hammer upstream.
_FAILURE_MEMORY = 30.0
#: How long an upstream with waiting clients may stay disconnected before /healthz says so.
_DOWN_GRACE = 30.0
#: Query parameter / header that asks for in-band gap markers.
MARKER_PARAM = "markers"
MARKER_HEADER = b"x-trioalpaca-markers"
_TRUE = {"1", "true", "yes", "on"}

#: ``"disconnect"`` (407 and close) or ``"drop"`` (discard that client's data).
SlowClientPolicy = Literal["disconnect", "drop"]


@attrs.define(eq=False)
class RelayClientStats:
    """Live counters of one downstream session (also in :meth:`Relay.get_metrics`).

    ``messages`` counts data messages sent (market data, trade updates), ``frames`` and ``bytes``
    every frame sent; ``queue_bytes`` / ``queue_frames`` are what waits in the session's send
    queue now, ``max_queue_bytes`` the most it ever held. ``dropped`` counts data messages not
    sent because the queue was full (``slow_client="drop"``); ``slow_client`` is true once the
    session was cut with 407.
    """

    id: int
    feed: str
    path: str
    encoding: str
    markers: bool
    local_key: str | None = None
    account: str | None = None
    authenticated: bool = False
    messages: int = 0
    frames: int = 0
    bytes: int = 0
    queue_bytes: int = 0
    queue_frames: int = 0
    max_queue_bytes: int = 0
    dropped: int = 0
    markers_sent: int = 0
    slow_client: bool = False
    errors_sent: list[int] = attrs.Factory(list)
    subscriptions: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    listening: tuple[str, ...] = ()
    open: bool = True
    close_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A plain-dict snapshot."""
        d = attrs.asdict(self)
        d["subscriptions"] = {k: list(v) for k, v in self.subscriptions.items() if v}
        d["listening"] = list(self.listening)
        return d


@attrs.frozen
class RelayUpstream:
    """An upstream client the relay opened: what an upstream hook is called with
    (:meth:`Relay.add_upstream_hook`)."""

    account: str
    """The relay's name of the account (``"default"`` for a single one)."""
    key_id: str
    """The account's API key id (its trading stream is this key's)."""
    endpoint: Endpoint
    """The endpoint (feed) the client streams."""
    client: AlpacaWebSocketClient
    """The raw-mode client (``raw_data=True``); hooks may add
    :attr:`~trioalpaca.client.AlpacaWebSocketClient.observers`, they must not read from it."""


class UpstreamTap(Protocol):
    """What an upstream hook returns to see an upstream client's data.

    Both methods are called synchronously in the relay's tasks (``batch`` in the upstream's
    reader, before the batch is routed), so they must be cheap and must neither block nor
    raise: queue and return.
    """

    def batch(self, messages: list[dict[str, Any]], rx_ns: int) -> None:
        """One batch the upstream client delivered (canonical wire dicts, in order, markers
        such as ``{"T": "reconnected", ...}`` included), received at ``rx_ns``
        (``time.time_ns()``). The list must not be modified."""
        ...

    def closed(self) -> None:
        """The upstream client is gone (the relay closed it after ``linger``, or it failed)."""
        ...


#: An upstream hook: called with every upstream client the relay opens (before it connects);
#: returns an :class:`UpstreamTap` to receive its batches, or ``None``.
UpstreamHook = Callable[[RelayUpstream], "UpstreamTap | None"]


def upstream_address(
    ep: Endpoint, upstream_url: str | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The address keywords of an upstream client: ``base_url=upstream_url`` when given, else
    the explicit URL of Alpaca's own host, so that ``DATA_PROXY_WS`` (which may point at this
    very relay, for its clients' sake) is never followed upstream."""
    if "url" in options or "base_url" in options:
        return {}
    if upstream_url is not None:
        return {"base_url": upstream_url}
    return {
        "url": stream_url(
            ep, sandbox=bool(options.get("sandbox", False)), paper=bool(options.get("paper", True))
        )
    }


def _msgpack_array_body(frame: bytes) -> bytes:
    b = frame[0]
    if 0x90 <= b <= 0x9F:
        return frame[1:]
    if b == 0xDC:
        return frame[3:]
    if b == 0xDD:
        return frame[5:]
    raise ValueError("not a msgpack array")


def merge_frames(frames: list[Frame], counts: list[int]) -> Frame:
    """Join encoded data frames (arrays of ``counts[i]`` messages) into one frame, without
    decoding: msgpack array headers are rewritten, JSON arrays spliced."""
    if isinstance(frames[0], str):
        return "[" + ",".join(f[1:-1] for f in frames if isinstance(f, str) and len(f) > 2) + "]"
    n = sum(counts)
    if n <= 15:
        head = bytes([0x90 | n])
    elif n <= 0xFFFF:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(_msgpack_array_body(f) for f in frames if isinstance(f, bytes))


class _Downstream(ServerConnection[RelayClientStats]):
    """One downstream websocket session."""

    log = logger
    label = "relay client"

    def __init__(
        self,
        relay: Relay,
        cid: int,
        ws: WebSocketConnection,
        ep: Endpoint,
        headers: Mapping[bytes, bytes],
        markers: bool,
    ) -> None:
        super().__init__(ws, ep, headers)
        self.relay = relay
        self.markers = markers
        self.stats = RelayClientStats(cid, ep.feed, ep.path, self.encoding, markers)
        self.upstream: _Upstream | None = None
        self._dropped_pending = 0

    def __repr__(self) -> str:
        return f"<relay client {self.stats.id} {self.endpoint.feed}>"

    # ------------------------------------------------------------------ queueing
    def _push(self, item: Outgoing) -> None:
        super()._push(item)
        if self.queued_bytes > self.stats.max_queue_bytes:
            self.stats.max_queue_bytes = self.queued_bytes

    def _closed_for_sending(self) -> None:
        self.relay._detach(self)

    def send_frame(self, frame: Frame, messages: int, t_in: float | None) -> None:
        """Queue a data frame; over the byte limit the slow-client policy applies."""
        if self.closing:
            return
        if self.queued_bytes + len(frame) > self.relay.send_buffer_limit:
            if self.relay.slow_client == "drop":
                self.stats.dropped += messages
                self._dropped_pending += messages
                return
            self.cut_slow()
            return
        if self._dropped_pending:
            n, self._dropped_pending = self._dropped_pending, 0
            self.send_marker({"T": "dropped", "count": n, "reason": "relay: slow client"})
        self._push(Outgoing(frame, messages, True, t_in))

    def send_marker(self, marker: Mapping[str, Any]) -> None:
        """Queue an in-band marker if this session asked for markers."""
        if not self.markers or self.encoder is None or self.closing:
            return
        self.stats.markers_sent += 1
        self.send_control(self.encoder.encode_raw([marker]))

    def _on_slow(self) -> None:
        self.stats.slow_client = True
        self.relay._slow_clients += 1

    def send_error(self, code: int) -> None:
        """Queue Alpaca error ``code`` in this session's own protocol."""
        if self.tproto is not None:
            self.send_control(self.tproto.error_frame(f"upstream error {code}"))
            self.stats.errors_sent.append(code)
        else:
            super().send_error(code)

    async def _send(self, item: Outgoing) -> None:
        ws = self.ws
        stats = self.stats
        assert item.frame is not None
        frame = item.frame
        messages = item.messages
        stamps = [item.t_in] if item.t_in is not None else []
        queue = self.queue
        # data frames are arrays (mergeable); trading frames are not
        if stamps and queue and self.encoder is not None and queue[0].t_in is not None:
            # several data frames waiting: send them as one frame (behind, catch up)
            parts = [frame]
            counts = [messages]
            size = len(frame)
            while queue and queue[0].t_in is not None and messages < _MAX_FRAME_MESSAGES:
                nxt = queue[0]
                assert nxt.frame is not None and nxt.t_in is not None
                if type(nxt.frame) is not type(frame) or size + len(nxt.frame) > _MERGE_BYTES:
                    break
                queue.popleft()
                self.queued_bytes -= len(nxt.frame)
                parts.append(nxt.frame)
                counts.append(nxt.messages)
                messages += nxt.messages
                size += len(nxt.frame)
                stamps.append(nxt.t_in)
            if len(parts) > 1:
                frame = merge_frames(parts, counts)
        await ws.send_message(frame)
        stats.frames += 1
        stats.bytes += len(frame)
        if stamps:
            stats.messages += messages
            now = trio.current_time()
            latency = self.relay._latency
            for t_in in stamps:
                latency.record(now - t_in)


class _Upstream:
    """One upstream client per (account, endpoint) and the sessions attached to it."""

    def __init__(self, relay: Relay, account_name: str, account: Account, ep: Endpoint) -> None:
        self.relay = relay
        self.account_name = account_name
        self._account = account
        self.endpoint = ep
        self.trading = ep.kind is StreamKind.TRADING
        self.routes: Routes[_Downstream] = Routes(ep)
        self.stream: AlpacaWebSocketClient | None = None
        #: the current client from its creation on (``stream`` is set once it is connected)
        self.client: AlpacaWebSocketClient | None = None
        #: (hook, tap) of the upstream hooks that asked for this client's batches
        self.taps: list[tuple[UpstreamHook, UpstreamTap]] = []
        self.scope = trio.CancelScope()
        self.closed = False
        self.error: BaseException | None = None
        self._sync_wake = trio.Event()
        self._members_changed = trio.Event()
        self._inflight: frozenset[Pair] = frozenset()
        #: counters
        self.messages_in = 0
        self.batches_in = 0
        self.subscribe_requests = 0
        self.unsubscribe_requests = 0
        self.sessions = 0
        self.opened_at = trio.current_time()
        #: last time the upstream was seen connected (or opened)
        self.down_since = self.opened_at
        #: crypto order books as upstream sent them: symbol -> (bids, asks, last t)
        self.books: dict[str, tuple[dict[Any, Any], dict[Any, Any], Any]] | None = (
            {} if "orderbooks" in ep.channels else None
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.account_name, self.endpoint.feed)

    def connected(self) -> bool:
        """Whether the upstream client is connected now (updates :attr:`down_since`)."""
        stream = self.stream
        ok = stream is not None and stream.state == "connected"
        if ok:
            self.down_since = trio.current_time()
        return ok

    def acked(self) -> Mapping[str, tuple[str, ...]]:
        return self.stream.subscriptions if self.stream is not None else {}

    def attach(self, member: _Downstream) -> None:
        self.routes.attach(member)
        member.upstream = self
        self.sessions += 1
        self._members_changed.set()

    def detach(self, member: _Downstream) -> None:
        removed = self.routes.detach(member)
        member.upstream = None
        self._members_changed.set()
        if removed:
            self.wake()

    def wake(self) -> None:
        self._sync_wake.set()

    # ------------------------------------------------------------------ lifetime
    async def run(self) -> None:
        relay = self.relay
        try:
            with self.scope:
                while True:
                    try:
                        await self._session()
                        return
                    except AlpacaServerError as exc:
                        if self._inflight and not self.trading:
                            # upstream refused a change with a connection-level code (409 on a
                            # channel the plan lacks, ...): only the sessions that asked for it
                            # hear about it; the others get a fresh upstream connection
                            self._fail_requesters(self._inflight, exc.code)
                            self._inflight = frozenset()
                            if len(self.routes):
                                continue
                        raise
        except TrioAlpacaError as exc:
            self.error = exc
            code = exc.code if isinstance(exc, AlpacaServerError) else 500
            logger.warning(
                "relay upstream %s/%s failed: %s", self.account_name, self.endpoint.feed, exc
            )
            relay._remember_failure(self.key, code)
            for member in self.routes.members:
                member.send_error(code)
                member.close_after_flush(1011)
        finally:
            self.closed = True
            relay._forget_upstream(self)
            for member in self.routes.members:
                if not member.closing:
                    member.close_after_flush(1011)

    async def _session(self) -> None:
        relay = self.relay
        opts = dict(relay.upstream_options)
        if self.trading:
            opts["stream_type"] = "trading"
        else:
            opts["feed"] = self.endpoint.feed
        opts.update(upstream_address(self.endpoint, relay.upstream_url, opts))
        opts.setdefault("overflow", "drop_oldest")
        # clients wait on this upstream (and /healthz reports it): keep trying to connect rather
        # than fail everybody after 30 s (causes that cannot heal still end it at once)
        opts.setdefault("first_connect_timeout", None)
        stream = AlpacaWebSocketClient(
            self._account.key_id, self._account.secret, raw_data=True, **opts
        )
        self.client = stream
        for hook in list(relay.upstream_hooks):
            self.add_tap(hook)
        try:
            with single_error():
                async with stream, trio.open_nursery() as nursery:
                    await self._serve_session(stream, nursery)
        finally:
            self.client = None
            taps, self.taps = self.taps, []
            for _, tap in taps:
                tap.closed()

    def add_tap(self, hook: UpstreamHook) -> None:
        """Call ``hook`` with the current client; keep the tap it returns."""
        client = self.client
        if client is None:
            return
        info = RelayUpstream(self.account_name, self._account.key_id, self.endpoint, client)
        try:
            tap = hook(info)
        except Exception:
            logger.exception("relay: upstream hook %r failed", hook)
            return
        if tap is not None:
            self.taps.append((hook, tap))

    async def _serve_session(self, stream: AlpacaWebSocketClient, nursery: trio.Nursery) -> None:
        self.stream = stream
        if not self.trading:
            nursery.start_soon(self._sync_loop, stream)
            self.wake()
        nursery.start_soon(self._linger_loop)
        try:
            await self._read_loop(stream)
        finally:
            self.stream = None

    async def _linger_loop(self) -> None:
        while True:
            if len(self.routes) == 0:
                deadline = trio.current_time() + self.relay.linger
                while len(self.routes) == 0 and trio.current_time() < deadline:
                    self._members_changed = trio.Event()
                    with trio.move_on_at(deadline):
                        await self._members_changed.wait()
                if len(self.routes) == 0:
                    # nobody came back: close (a new session opens a new upstream)
                    self.closed = True
                    self.relay._forget_upstream(self)
                    self.scope.cancel()
                    return
            self._members_changed = trio.Event()
            await self._members_changed.wait()

    # ------------------------------------------------------------------ subscriptions
    async def _sync_loop(self, stream: AlpacaWebSocketClient) -> None:
        routes = self.routes
        while True:
            await self._sync_wake.wait()
            self._sync_wake = trio.Event()
            while True:
                self._release(stream.subscriptions)
                sub, unsub = routes.plan(stream.subscriptions)
                if not sub and not unsub:
                    break
                try:
                    if sub:
                        self.subscribe_requests += 1
                        self._inflight = frozenset((c, s) for c, ss in sub.items() for s in ss)
                        await stream.subscribe(**sub)
                        self._inflight = frozenset()
                    if unsub:
                        self.unsubscribe_requests += 1
                        await stream.unsubscribe(**unsub)
                except SubscriptionTimeoutError:
                    continue  # upstream is reconnecting: compute the plan again
                except AlpacaServerError as exc:
                    if not exc.request_level:
                        # the upstream connection failed with it: the client ends the block with
                        # this error, and run() decides who hears about it
                        return
                    if self._inflight:
                        self._fail_requesters(self._inflight, exc.code)
                        self._inflight = frozenset()
                        continue
                    logger.warning("relay upstream %s: unsubscribe refused: %s", self.key, exc)
                    break

    def _release(self, acked: Mapping[str, Iterable[str]]) -> None:
        for member, frame in self.routes.release(acked):
            member.send_control(frame)

    def _fail_requesters(self, pairs: Iterable[Pair], code: int) -> None:
        for member, entry in self.routes.fail(pairs):
            proto = member.proto
            if proto is None:
                continue
            member.send_error(code)
            # take what the refused request added out of the session's own set again
            undo = encode_request({"action": "unsubscribe", **group_pairs(entry.need)}, "json")
            proto.receive(undo)
            member.stats.subscriptions = proto.subscriptions
            self.routes.set_state(member, proto.subscriptions)
        self.wake()

    # ------------------------------------------------------------------ data
    async def _read_loop(self, stream: AlpacaWebSocketClient) -> None:
        trading = self.trading
        while True:
            batch = await stream.receive_batch(_MAX_FRAME_MESSAGES)
            t_in = trio.current_time()
            if self.taps:
                rx_ns = time.time_ns()
                for _, tap in self.taps:
                    tap.batch(batch, rx_ns)
            self.down_since = t_in  # data flows: connected
            self.batches_in += 1
            self.messages_in += len(batch)
            if trading:
                self._route_trading(batch, t_in)
                continue
            start = 0
            for i, m in enumerate(batch):
                if m.get("T") in MARKER_TYPES:
                    if i > start:
                        self._route(batch[start:i], t_in)
                    self._marker(m)
                    start = i + 1
            if start == 0:
                self._route(batch, t_in)
            elif start < len(batch):
                self._route(batch[start:], t_in)

    def _track_books(self, msgs: list[dict[str, Any]]) -> None:
        books = self.books
        assert books is not None
        for m in msgs:
            if m.get("T") != "o":
                continue
            sym = m.get("S")
            if type(sym) is not str:
                continue
            book = books.get(sym)
            if m.get("r") or book is None:
                book = books[sym] = ({}, {}, None)
            bids, asks, _ = book
            for side, levels in ((bids, m.get("b")), (asks, m.get("a"))):
                for level in levels if isinstance(levels, list) else ():
                    if isinstance(level, dict) and "p" in level:
                        if level.get("s"):
                            side[level["p"]] = level["s"]
                        else:
                            side.pop(level["p"], None)
            books[sym] = (bids, asks, m.get("t"))

    def send_book_snapshots(self, member: _Downstream, symbols: Iterable[str]) -> None:
        """Queue an ``r: true`` snapshot of each known book in ``symbols`` (``"*"``: all)."""
        books = self.books
        enc = member.encoder
        if books is None or enc is None:
            return
        wanted = list(books) if "*" in symbols else [s for s in symbols if s in books]
        snaps = []
        for sym in wanted:
            bids, asks, t = books[sym]
            snap: dict[str, Any] = {"T": "o", "S": sym}
            if t is not None:
                snap["t"] = t
            snap["b"] = [{"p": p, "s": q} for p, q in sorted(bids.items(), reverse=True)]
            snap["a"] = [{"p": p, "s": q} for p, q in sorted(asks.items())]
            snap["r"] = True
            snaps.append(snap)
        if snaps:
            member.send_frame(enc.encode_raw(snaps), len(snaps), trio.current_time())

    def _route(self, msgs: list[dict[str, Any]], t_in: float) -> None:
        if self.books is not None:
            self._track_books(msgs)
        n = len(msgs)
        whole: dict[str, Frame] = {}
        for member, mine in self.routes.route(msgs).items():
            enc = member.encoder
            if enc is None or member.closing:
                continue
            if len(mine) == n:
                frame = whole.get(member.encoding)
                if frame is None:
                    frame = whole[member.encoding] = enc.encode_raw(mine)
            else:
                frame = enc.encode_raw(mine)
            member.send_frame(frame, len(mine), t_in)

    def _marker(self, marker: Mapping[str, Any]) -> None:
        self.relay._markers_seen += 1
        out = {**marker, "source": "relay"}
        for member in self.routes.members:
            member.send_marker(out)

    def _route_trading(self, batch: list[dict[str, Any]], t_in: float) -> None:
        for data in batch:
            if data.get("T") in MARKER_TYPES or data.get("T") == "malformed":
                continue  # the trading stream has no in-band marker form
            frames: dict[str, Frame] = {}
            for member in self.routes.members:
                tp = member.tproto
                if tp is None or member.closing or not tp.is_listening("trade_updates"):
                    continue
                frame = frames.get(member.encoding)
                if frame is None:
                    frame = frames[member.encoding] = tp.trade_update_frame(data)
                member.send_frame(frame, 1, t_in)

    def metrics(self) -> dict[str, Any]:
        stream = self.stream
        base = stream.get_metrics() if stream is not None else {"state": "connecting"}
        return {
            "account": self.account_name,
            "feed": self.endpoint.feed,
            "state": base.get("state"),
            "clients": len(self.routes),
            "sessions_total": self.sessions,
            "messages_in": self.messages_in,
            "batches_in": self.batches_in,
            "subscribe_requests": self.subscribe_requests,
            "unsubscribe_requests": self.unsubscribe_requests,
            "pending_acks": self.routes.pending_count(),
            "pairs": len(self.routes.desired()),
            "reconnects": base.get("reconnects", 0),
            "dropped": base.get("dropped", 0),
            "errors": base.get("errors", {}),
            "heartbeat_rtt_ms": base.get("heartbeat_rtt_ms"),
            "subscriptions": base.get("subscriptions", {}),
        }


class Relay:
    """Handle of a running relay (from :func:`serve_relay`).

    Attributes:
        host: the bound interface.
        port: the bound port (the real one when 0 was asked for).
        errors: unexpected exceptions raised in session handlers (tests assert it stays empty).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        accounts: Mapping[str, Account],
        local_keys: Mapping[str, LocalKey],
        accept_any_key: bool,
        upstream_url: str | None,
        upstream_options: Mapping[str, Any],
        linger: float,
        send_buffer_limit: int,
        slow_client: SlowClientPolicy,
        socket_send_buffer: int | None,
        tls: bool,
    ) -> None:
        self.host = host
        self.port = port
        self._accounts = dict(accounts)
        self._local_keys = dict(local_keys)
        self.accept_any_key = accept_any_key
        self.upstream_url = upstream_url
        self.upstream_options = dict(upstream_options)
        self.linger = linger
        self.send_buffer_limit = send_buffer_limit
        self.slow_client: SlowClientPolicy = slow_client
        self.socket_send_buffer = socket_send_buffer
        self.tls = tls
        self.errors: list[BaseException] = []
        self.upstream_hooks: list[UpstreamHook] = []
        """Called with a :class:`RelayUpstream` for every upstream client the relay creates,
        before it connects (the Redis publisher uses it: ``open_redis_publisher(url, relay)``);
        use :meth:`add_upstream_hook` to include the clients already open."""
        self._ids = itertools.count(1)
        self._clients: dict[int, _Downstream] = {}
        self._closed: deque[RelayClientStats] = deque(maxlen=1000)
        self._upstreams: dict[tuple[str, str], _Upstream] = {}
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}
        self._nursery: trio.Nursery | None = None
        self._latency = LatencyHistogram()
        self._sessions_total = 0
        self._auth_failures = 0
        self._slow_clients = 0
        self._markers_seen = 0
        self._upstreams_opened = 0
        self._started = trio.current_time()

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """Base URL, ``ws://HOST:PORT`` (``wss://`` with TLS); append an endpoint path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}"

    def url_for(self, feed: str | Endpoint, *, markers: bool = False) -> str:
        """Full URL of a feed's endpoint on the relay; ``markers=True`` asks for gap markers."""
        url = self.url + resolve_feed(feed).path
        return url + f"?{MARKER_PARAM}=1" if markers else url

    # ------------------------------------------------------------------ introspection
    @property
    def clients(self) -> list[RelayClientStats]:
        """Stats of the open downstream sessions, oldest first."""
        return [c.stats for c in self._clients.values()]

    @property
    def closed_clients(self) -> list[RelayClientStats]:
        """Stats of the last 1000 closed sessions, oldest first."""
        return list(self._closed)

    def add_upstream_hook(self, hook: UpstreamHook) -> None:
        """Add ``hook`` to ``upstream_hooks`` and call it for every upstream client open now.

        A hook returns an :class:`UpstreamTap` (its ``batch`` gets every batch that client
        delivers, its ``closed`` is called when the client is gone) or ``None``.
        """
        self.upstream_hooks.append(hook)
        for up in list(self._upstreams.values()):
            if not up.closed:
                up.add_tap(hook)

    def remove_upstream_hook(self, hook: UpstreamHook) -> None:
        """Remove ``hook``; its taps get nothing more (and no ``closed`` call)."""
        if hook in self.upstream_hooks:
            self.upstream_hooks.remove(hook)
        for up in self._upstreams.values():
            up.taps = [(h, t) for h, t in up.taps if h is not hook]

    def upstream_feeds(self) -> list[tuple[str, str]]:
        """``(account, feed)`` of every open upstream."""
        return list(self._upstreams)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Health for ``/healthz``: unhealthy while an upstream refusal is remembered, or while an
        upstream that clients wait on has not been connected for more than 30 s."""
        now = trio.current_time()
        failed = [f"{a}/{f}" for (a, f), (_, until) in self._failures.items() if until > now]
        down = [
            f"{a}/{f}"
            for (a, f), up in self._upstreams.items()
            if len(up.routes) and not up.connected() and now - up.down_since > _DOWN_GRACE
        ]
        return not failed and not down, {
            "clients": len(self._clients),
            "upstreams": len(self._upstreams),
            "failed": failed,
            "disconnected": down,
        }

    def get_metrics(self) -> dict[str, Any]:
        """A snapshot (a plain dict).

        Keys: ``clients`` (per open session: :class:`RelayClientStats` fields), ``upstreams``
        (per ``"account/feed"``: state, attached clients, messages in, subscribe/unsubscribe
        requests sent, waiting acks, reconnects, upstream drops...), and totals:
        ``clients_connected``, ``sessions_total``, ``auth_failures``, ``slow_clients`` (407s),
        ``messages_out``, ``bytes_out``, ``dropped``, ``markers``, ``upstreams_opened``, and the
        relay's own latency (upstream batch received -> written to the downstream socket):
        ``p50_latency_ms``, ``p99_latency_ms``.
        """
        clients = {c.stats.id: self._client_snapshot(c) for c in self._clients.values()}
        lat = self._latency
        closed = list(self._closed)
        return {
            "clients": clients,
            "upstreams": {f"{a}/{f}": u.metrics() for (a, f), u in self._upstreams.items()},
            "clients_connected": len(clients),
            "sessions_total": self._sessions_total,
            "auth_failures": self._auth_failures,
            "slow_clients": self._slow_clients,
            "messages_out": sum(c["messages"] for c in clients.values())
            + sum(s.messages for s in closed),
            "bytes_out": sum(c["bytes"] for c in clients.values()) + sum(s.bytes for s in closed),
            "dropped": sum(c["dropped"] for c in clients.values()) + sum(s.dropped for s in closed),
            "markers": self._markers_seen,
            "upstreams_opened": self._upstreams_opened,
            "p50_latency_ms": lat.percentile(50) * 1e3 if lat.count else None,
            "p99_latency_ms": lat.percentile(99) * 1e3 if lat.count else None,
            "uptime_s": trio.current_time() - self._started,
        }

    def _client_snapshot(self, c: _Downstream) -> dict[str, Any]:
        c.stats.queue_bytes = c.queued_bytes
        c.stats.queue_frames = len(c.queue)
        return c.stats.as_dict()

    def status_line(self) -> str:
        """One human-readable line: clients, upstreams, messages out, drops, 407s."""
        m = self.get_metrics()
        ups = ", ".join(f"{k} {v['state']} {v['clients']}c" for k, v in m["upstreams"].items())
        return (
            f"relay {self.url}: {m['clients_connected']} clients, {len(m['upstreams'])} upstreams"
            f"{' (' + ups + ')' if ups else ''}, {m['messages_out']} msgs out, "
            f"{m['dropped']} dropped, {m['slow_clients']} slow (407), "
            f"{m['auth_failures']} auth failures"
        )

    # ------------------------------------------------------------------ auth
    def _account_for(self, key: str, secret: str) -> str | None:
        lk = self._local_keys.get(key)
        if lk is not None and check_secret(lk.secret, secret):
            return lk.account
        if self.accept_any_key and key and secret:
            return DEFAULT_ACCOUNT
        return None

    def _check_auth(self, conn: _Downstream, key: str, secret: str) -> int | None:
        account = self._account_for(key, secret)
        if account is None:
            self._auth_failures += 1
            return 402
        failure = self._failures.get((account, conn.endpoint.feed))
        if failure is not None:
            code, until = failure
            if until > trio.current_time():
                return code
            del self._failures[(account, conn.endpoint.feed)]
        conn.stats.local_key = key
        conn.stats.account = account
        return None

    def _remember_failure(self, key: tuple[str, str], code: int) -> None:
        self._failures[key] = (code, trio.current_time() + _FAILURE_MEMORY)

    # ------------------------------------------------------------------ upstreams
    def _attach(self, conn: _Downstream) -> None:
        account = conn.stats.account
        assert account is not None
        key = (account, conn.endpoint.feed)
        up = self._upstreams.get(key)
        if up is None or up.closed:
            up = _Upstream(self, account, self._accounts[account], conn.endpoint)
            self._upstreams[key] = up
            self._upstreams_opened += 1
            assert self._nursery is not None
            self._nursery.start_soon(up.run)
        up.attach(conn)

    def _detach(self, conn: _Downstream) -> None:
        up = conn.upstream
        if up is not None:
            up.detach(conn)

    def _forget_upstream(self, up: _Upstream) -> None:
        if self._upstreams.get(up.key) is up:
            del self._upstreams[up.key]

    # ------------------------------------------------------------------ sessions
    async def _handle_inner(self, request: WebSocketRequest) -> None:
        resolved = await resolve_request(request)
        if resolved is None:
            return
        ep, headers = resolved
        params = query_params(request.path)
        markers = (
            params.get(MARKER_PARAM, "").lower() in _TRUE
            or headers.get(MARKER_HEADER, b"").decode("latin-1").lower() in _TRUE
        )
        ws = await request.accept()
        if self.socket_send_buffer is not None:
            sock = getattr(getattr(ws, "_stream", None), "socket", None)
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        conn = _Downstream(self, next(self._ids), ws, ep, headers, markers)
        self._clients[conn.stats.id] = conn
        self._sessions_total += 1
        try:
            serve = self._serve_trading if ep.kind is StreamKind.TRADING else self._serve_data
            await conn.serve(functools.partial(serve, conn))
        finally:
            conn.finished()
            conn.stats.queue_bytes = conn.queued_bytes
            conn.stats.queue_frames = len(conn.queue)
            self._detach(conn)
            del self._clients[conn.stats.id]
            self._closed.append(conn.stats)
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                stream = getattr(ws, "_stream", None)
                if stream is not None:
                    await stream.aclose()

    async def _serve_data(self, conn: _Downstream) -> None:
        proto = DataServerProtocol(
            conn.endpoint,
            conn.encoding,
            functools.partial(self._check_auth, conn),
        )
        await conn.open_data(proto, _AUTH_TIMEOUT, functools.partial(self._on_data_frame, conn))
        ws = conn.ws
        while not conn.closing:
            self._on_data_frame(conn, await ws.get_message())
        await trio.sleep_forever()

    def _on_data_frame(self, conn: _Downstream, frame: Frame) -> None:
        proto = conn.proto
        assert proto is not None
        was_authenticated = proto.authenticated
        before = proto.subscriptions
        errors = len(proto.errors_sent)
        replies = proto.receive(frame)
        stats = conn.stats
        stats.errors_sent = list(proto.errors_sent)
        if proto.should_close:
            for reply in replies:
                conn.send_control(reply)
            conn.close_after_flush(1008)
            return
        if not was_authenticated:
            for reply in replies:
                conn.send_control(reply)
            if proto.authenticated:
                stats.authenticated = True
                self._attach(conn)
            return
        up = conn.upstream
        if up is None or len(proto.errors_sent) != errors or len(replies) != 1:
            for reply in replies:
                conn.send_control(reply)
            return
        # a subscribe/unsubscribe this session's own protocol accepted: its ack carries its set
        after = proto.subscriptions
        stats.subscriptions = after
        delta = up.routes.set_state(conn, after)
        acked = pairs_of_state(up.acked())
        added = pairs_of_state(after) - pairs_of_state(before)
        need = [p for p in added if not covered([p], acked)]
        if need or up.routes.has_pending(conn):
            up.routes.hold_ack(conn, replies[0], need)
            up.wake()
        else:
            conn.send_control(replies[0])
            if delta:
                up.wake()
            # order books upstream already carries: upstream sends no new snapshot, so this
            # session gets one built from the relay's copy of the book
            books = {sym for ch, sym in added if ch == "orderbooks"}
            if books and up.books is not None:
                up.send_book_snapshots(conn, books)

    async def _serve_trading(self, conn: _Downstream) -> None:
        proto = TradingServerProtocol(conn.encoding, functools.partial(self._check_auth, conn))
        conn.tproto = proto
        ws = conn.ws
        while not conn.closing:
            frame = await ws.get_message()
            was_authenticated = proto.authenticated
            for reply in proto.receive(frame):
                conn.send_control(reply)
            conn.stats.listening = proto.listening
            if proto.should_close:
                conn.close_after_flush(1008)
                break
            if not was_authenticated and proto.authenticated:
                conn.stats.authenticated = True
                self._attach(conn)
        await trio.sleep_forever()

    async def _run(
        self,
        ssl_context: ssl.SSLContext | None,
        task_status: trio.TaskStatus[Relay],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.port = await start_listener(nursery, self, ssl_context, log=logger, what="relay")
            logger.info("relay listening on %s", self.url)
            task_status.started(self)


async def serve_relay(
    upstream: Account | tuple[str, str] | Mapping[str, Account | tuple[str, str]],
    *,
    local_keys: Mapping[str, str | LocalKey] | None = None,
    accept_any_key: bool = False,
    host: str = "127.0.0.1",
    port: int = 8765,
    ssl_context: ssl.SSLContext | None = None,
    allow_insecure_bind: bool = False,
    upstream_url: str | None = None,
    upstream_options: Mapping[str, Any] | None = None,
    linger: float = 5.0,
    send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
    slow_client: SlowClientPolicy = "disconnect",
    socket_send_buffer: int | None = None,
    task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve Alpaca's stream protocol to local clients over shared upstream connections, until
    cancelled.

    Use with ``relay = await nursery.start(serve_relay, ...)``; reports the :class:`Relay` handle
    once the port is bound. Every Alpaca stream path is served (``/v2/{feed}``,
    ``/v1beta3/crypto/{loc}``, ``/v1beta1/crypto-perps/global``, ``/v1beta1/{opra,indicative}``,
    ``/v1beta1/news`` and ``/stream`` for ``trade_updates``), so unmodified SDKs connect with
    their URL override (alpaca-py ``url_override``, ``DATA_PROXY_WS``).

    Args:
        upstream: the upstream Alpaca credentials: one ``(key_id, secret)`` / :class:`Account`
            (the account ``"default"``), or ``{account_name: (key_id, secret)}``. Each account
            gets its own upstream connection per endpoint (one client per key and endpoint).
        local_keys: ``{local_key: local_secret}`` or ``{local_key: LocalKey(secret, account)}``;
            downstream clients authenticate with these (a wrong one gets 402, as on Alpaca).
        accept_any_key: accept any non-empty key/secret (mapped to the ``"default"`` account).
            Only allowed on a loopback bind.
        host, port: where to listen (127.0.0.1:8765 by default; ``port=0`` picks a free one).
        ssl_context: serve ``wss://`` with this server context.
        allow_insecure_bind: allow a non-loopback bind without TLS (refused otherwise).
        upstream_url: scheme + host of the upstream (default: Alpaca's production hosts), e.g.
            an emulator's ``emu.url``.
        upstream_options: extra keyword arguments for each upstream
            :class:`~trioalpaca.client.AlpacaWebSocketClient` (``backoff``, ``heartbeat_interval``,
            ``buffer_size``, ``paper``, ``sandbox``...). Upstream data is never blocked: its
            buffer overflows with ``drop_oldest`` (visible as a ``dropped`` marker) unless set,
            and the first connection is retried without a deadline (``first_connect_timeout``
            ``None``) while clients wait, unless set.
        linger: seconds an upstream connection stays open after its last client left.
        send_buffer_limit: bytes queued per downstream session before the slow-client policy.
        slow_client: ``"disconnect"`` (default: 407 ``slow client`` and close, like Alpaca) or
            ``"drop"`` (discard data for that session and count it; sessions that asked for
            markers get a ``dropped`` marker when data flows again).
        socket_send_buffer: ``SO_SNDBUF`` of downstream sockets (``None``: the OS default). A
            small kernel buffer keeps a lagging client's backlog in the relay's own queue, where
            the byte limit and the policy see it, and keeps pongs from waiting behind megabytes
            of data already handed to the kernel.

    Raises:
        UsageError: a non-loopback bind without TLS (unless ``allow_insecure_bind``),
            ``accept_any_key`` off loopback or with several accounts, no local keys while
            ``accept_any_key`` is off, a local key naming an unknown account, or bad limits.
        CredentialsError: an account without key id or secret.
    """
    accounts = normalize_accounts(upstream)
    keys = normalize_local_keys(local_keys, accounts)
    loopback = is_loopback(host)
    if not loopback and ssl_context is None and not allow_insecure_bind:
        raise UsageError(
            f"refusing to serve the relay on non-loopback {host!r} without TLS: pass "
            "ssl_context= (--tls-cert/--tls-key) or allow_insecure_bind=True (--insecure-bind)"
        )
    if accept_any_key:
        if not loopback:
            raise UsageError("accept_any_key is only allowed on a loopback bind")
        if DEFAULT_ACCOUNT not in accounts or len(accounts) != 1:
            raise UsageError("accept_any_key needs exactly one upstream account")
    elif not keys:
        raise UsageError(
            "the relay needs local keys (local_keys= / --keys-file / --local-key), or "
            "accept_any_key=True on loopback"
        )
    if send_buffer_limit < 1024:
        raise UsageError("send_buffer_limit must be at least 1024 bytes")
    if linger < 0:
        raise UsageError("linger must be >= 0")
    if slow_client not in ("disconnect", "drop"):
        raise UsageError(f"slow_client must be 'disconnect' or 'drop', not {slow_client!r}")
    relay = Relay(
        host=host,
        port=port,
        accounts=accounts,
        local_keys=keys,
        accept_any_key=accept_any_key,
        upstream_url=upstream_url,
        upstream_options=upstream_options or {},
        linger=linger,
        send_buffer_limit=send_buffer_limit,
        slow_client=slow_client,
        socket_send_buffer=socket_send_buffer,
        tls=ssl_context is not None,
    )
    await relay._run(ssl_context, task_status)
