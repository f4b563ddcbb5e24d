"""StreamManager: reference-counted, coalesced, rate-limited subscriptions with symbol routing.

Many parts of an application want market data for overlapping symbol sets. A
:class:`StreamManager` sits on one client (``AlpacaWebSocketClient``) and gives
each part its own :class:`Subscription` handle::

    async with trioalpaca.open_stream_manager(client) as manager:
        sub = await manager.subscribe(symbols=["AAPL", "MSFT"], data_types=["trades", "quotes"],
                                      handler=handle_tech)
        ...
        await sub.unsubscribe()          # or: await manager.unsubscribe(sub)

How it works
------------

* **Routing.** The manager reads the client's stream (or is fed through
  :meth:`StreamManager.dispatch`) and calls only the handlers whose subscription covers the
  message: its channel is one of the subscription's data types and its symbol is one of the
  subscription's symbols, or the subscription has ``"*"``. Trade ``corrections`` and
  ``cancelErrors`` follow ``trades`` (Alpaca sends them for the trade subscriptions). News is
  routed by any of its symbols. Subscriptions with the data type ``"control"`` also get the
  control events (``Reconnected``, ``Dropped``, ...). Handlers of one message run one after the
  other in subscription order, messages in stream order.
* **Reference counting.** The wire subscription is the union of all active subscriptions: each
  ``(channel, symbol)`` pair is subscribed on the wire while at least one subscription covers it
  and unsubscribed when the last one goes. Subscriptions that existed on the client before the
  manager started (its constructor's ``trades=[...]`` etc.) are left alone: the manager never
  sends requests for them.
* **Coalescing.** Changes are not sent one by one: the first change opens a window of
  ``coalesce_window`` seconds; everything that changes in it goes out together as the difference
  between the wanted union and what the server confirmed: first one ``unsubscribe``, then one
  ``subscribe`` (removals first, so symbol limits see the freed room). A change undone within
  the window sends nothing.
* **Request size.** Each request is split so that its JSON encoding stays within
  ``max_request_bytes`` (default 16 KiB, an upper bound for the msgpack encoding too). Alpaca
  documents no frame limit for requests; alpaca-py cuts its subscribe message into 32 KiB pieces
  and the usual client ``max_size`` is 1 MiB, so 16 KiB stays well inside both.
* **Rate limit.** Every request takes a token from a :class:`TokenBucket` (default 2 requests/s,
  bursts of 5); when none is left the flush waits, so bursts of changes never trip the server.
* **Reconnects.** The client resubscribes to what the server last confirmed (plus pending
  changes) after every reconnect, so the manager's union survives reconnects untouched;
  changes made while the client reconnects are sent once it is ready again.
* **Errors.** :meth:`StreamManager.subscribe` raises the server's error (e.g.
  :class:`~trioalpaca.SymbolLimitError`) when the request carrying its new pairs was rejected;
  the subscription is then not created. A failed ``unsubscribe`` request is logged and retried
  with the next flush. Handler exceptions go to the error handler
  (:meth:`StreamManager.set_error_handler`) or are logged with their traceback; routing
  continues.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import trio

from trioalpaca._book import SubscriptionBook, group_pairs, pairs_of_channels
from trioalpaca._errors import UsageError
from trioalpaca._groups import single_error
from trioalpaca._handlers import ErrorHandler, ErrorReport, call_maybe_async, handler_name
from trioalpaca.endpoints import MIRRORED_CHANNELS, channel_to_wire, check_symbol
from trioalpaca.pipeline import _channel_of

__all__ = [
    "HandlerFailure",
    "StreamManager",
    "Subscribable",
    "Subscription",
    "SubscriptionHandler",
    "TokenBucket",
    "open_stream_manager",
    "split_request",
]

logger = logging.getLogger("trioalpaca.manager")

SubscriptionHandler = Callable[[Any], Any]
"""Signature of a subscription handler, called with one message; ``async`` (awaited) or plain."""

#: Channels delivered to the subscribers of another channel (the server's trade mirrors).
_ROUTE_AS: Mapping[str, str] = dict.fromkeys(MIRRORED_CHANNELS, "trades")
_ROUTE_CACHE_MAX = 100_000
_EPSILON = 1e-9
#: Most seconds ``async with subscription`` waits for its unsubscribe when leaving.
_EXIT_TIMEOUT = 10.0


class Subscribable(Protocol):
    """What the manager needs from a client: awaitable subscribe/unsubscribe with channel
    keywords (either spelling) that return after the server's acknowledgement."""

    async def subscribe(self, **channels: Iterable[str]) -> None:
        """Add symbols to channels; return after the server confirmed."""

    async def unsubscribe(self, **channels: Iterable[str]) -> None:
        """Remove symbols from channels; return after the server confirmed."""


# ---------------------------------------------------------------------------- pure helpers


class TokenBucket:
    """A pure token bucket: ``rate`` tokens per second, holding at most ``capacity``.

    No clock is read: every method takes ``now`` (seconds on one monotonic clock, e.g.
    :func:`trio.current_time`). The bucket starts full. Over any interval of length ``d``, at most
    ``capacity + rate * d`` tokens are granted.

    Args:
        rate: refill rate in tokens per second (> 0).
        capacity: bucket size, the largest burst (>= 1).
        now: time of creation.
    """

    __slots__ = ("_last", "_tokens", "capacity", "rate")

    rate: float
    """Tokens added per second."""
    capacity: float
    """Most tokens held (the burst size)."""

    def __init__(self, rate: float, capacity: float, *, now: float = 0.0) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise UsageError(f"rate must be a positive finite number, got {rate!r}")
        if not (capacity >= 1 and math.isfinite(capacity)):
            raise UsageError(f"capacity must be a finite number >= 1, got {capacity!r}")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = self.capacity
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def available(self, now: float) -> float:
        """Return the tokens available at ``now``."""
        self._refill(now)
        return self._tokens

    def try_acquire(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if available at ``now``; return whether they were taken."""
        if n > self.capacity:
            raise UsageError(f"cannot take {n} tokens from a bucket of capacity {self.capacity}")
        self._refill(now)
        # A tolerance keeps float rounding from turning "just refilled" into a busy loop.
        if self._tokens >= n - _EPSILON:
            self._tokens = max(0.0, self._tokens - n)
            return True
        return False

    def delay(self, now: float, n: float = 1.0) -> float:
        """Return seconds from ``now`` until ``n`` tokens are available (0.0 if they are)."""
        self._refill(now)
        missing = n - self._tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate


def _json_len(s: str) -> int:
    return len(json.dumps(s))


def split_request(
    action: str, channels: Mapping[str, Iterable[str]], max_bytes: int
) -> list[dict[str, list[str]]]:
    """Split a subscription change into requests whose JSON encoding fits in ``max_bytes``.

    Returns a list of ``{channel: [symbols]}`` maps; the request sent for each is
    ``{"action": action, **map}``, whose ``json.dumps`` length is at most ``max_bytes``. Every
    ``(channel, symbol)`` pair of the input appears in exactly one map; channels and symbols keep
    their input order (duplicates removed). Requests are filled greedily (several channels may
    share one).

    Raises:
        UsageError: when one symbol alone does not fit in ``max_bytes``.
    """
    base = len(json.dumps({"action": action}))  # '{"action": "subscribe"}'
    out: list[dict[str, list[str]]] = []
    cur: dict[str, list[str]] = {}
    size = base
    for ch, symbols in channels.items():
        # ', "<ch>": []'
        ch_cost = len(json.dumps(ch)) + 6
        for sym in dict.fromkeys(symbols):
            sym_cost = _json_len(sym) + (2 if cur.get(ch) else 0)  # '"SYM"' or ', "SYM"'
            extra = sym_cost + (0 if ch in cur else ch_cost)
            if size + extra > max_bytes:
                if cur:
                    out.append(cur)
                cur = {}
                size = base
                extra = _json_len(sym) + ch_cost
                if size + extra > max_bytes:
                    raise UsageError(
                        f"max_request_bytes={max_bytes} is too small for symbol {sym!r}"
                    )
            cur.setdefault(ch, []).append(sym)
            size += extra
    if cur:
        out.append(cur)
    return out


# ---------------------------------------------------------------------------- handles


HandlerFailure = ErrorReport
"""What the manager's error handler receives: an :class:`~trioalpaca.ErrorReport` with
``component="manager"``, ``subscription`` (whose handler raised), ``message`` and ``exception``.
The old name of the shared class."""


@attrs.define(eq=False)
class _Change:
    sub: Subscription | None
    keys: frozenset[tuple[str, str]]
    done: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None


class Subscription:
    """Handle for one :meth:`StreamManager.subscribe` call.

    Also an async context manager that unsubscribes on exit::

        async with await manager.subscribe(symbols=["AAPL"], data_types=["trades"], handler=h):
            ...
    """

    def __init__(
        self,
        manager: StreamManager,
        sub_id: int,
        symbols: frozenset[str],
        data_types: frozenset[str],
        handler: SubscriptionHandler,
    ) -> None:
        self._manager = manager
        self.id = sub_id
        """Unique, increasing id (handlers of one message run in id order)."""
        self.symbols = symbols
        """Symbols covered (``"*"`` for all)."""
        self.data_types = data_types
        """Channels covered, wire names (``"dailyBars"``), possibly ``"control"``."""
        self.handler = handler
        """The function called with each covered message."""
        self.active = False
        """True from registration until unsubscribed (or failed)."""
        self.delivered = 0
        """Messages handed to the handler."""
        self.errors = 0
        """Handler calls that raised."""

    def pairs(self) -> frozenset[tuple[str, str]]:
        """Return the ``(channel, symbol)`` pairs this subscription needs on the wire."""
        return frozenset(
            (ch, sym) for ch in self.data_types if ch != "control" for sym in self.symbols
        )

    async def unsubscribe(self) -> None:
        """Stop delivery to this handler now; return once the wire change (if any) went out."""
        await self._manager.unsubscribe(self)

    async def update(
        self, *, symbols: Iterable[str] | None = None, data_types: Iterable[str] | None = None
    ) -> None:
        """Replace this subscription's symbols and/or data types; return after the wire change.

        Routing switches immediately. Raises like :meth:`StreamManager.subscribe`; on error the
        previous sets are restored.
        """
        await self._manager._update(self, symbols, data_types)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.active:
            # Shielded so a cancelled block still releases its pairs, but bounded.
            with trio.CancelScope(shield=True), trio.move_on_after(_EXIT_TIMEOUT):
                await self.unsubscribe()

    def __repr__(self) -> str:
        syms = ",".join(sorted(self.symbols))
        types = ",".join(sorted(self.data_types))
        return f"<Subscription #{self.id} {types}:{syms}{'' if self.active else ' inactive'}>"


# ---------------------------------------------------------------------------- manager


class StreamManager:
    """Subscription manager and symbol router on top of one client (see module docs).

    Use :func:`open_stream_manager`; or construct it and run it with
    ``await nursery.start(manager.serve)``.

    Args:
        client: the stream client (anything with ``subscribe(**channels)`` /
            ``unsubscribe(**channels)``; its ``subscriptions`` at start are left alone).
        consume: read the client's stream and route it (default). With ``False`` feed messages
            yourself with :meth:`dispatch` / :meth:`dispatch_batch` (e.g. from a
            :class:`~trioalpaca.pipeline.MessageHandler` processor).
        coalesce_window: seconds changes are collected before a flush (>= 0).
        max_request_bytes: largest JSON size of one subscription request.
        requests_per_second: token bucket refill rate for subscription requests.
        burst: token bucket capacity (requests that may go out back to back).
        default_handler: called with messages no subscription covers (else they are counted as
            ``unrouted`` and discarded).
    """

    def __init__(
        self,
        client: Any,
        *,
        consume: bool = True,
        coalesce_window: float = 0.05,
        max_request_bytes: int = 16_384,
        requests_per_second: float = 2.0,
        burst: int = 5,
        default_handler: SubscriptionHandler | None = None,
    ) -> None:
        if not (coalesce_window >= 0 and math.isfinite(coalesce_window)):
            raise UsageError(f"coalesce_window must be finite and >= 0, got {coalesce_window!r}")
        if max_request_bytes < 64:
            raise UsageError(f"max_request_bytes must be >= 64, got {max_request_bytes!r}")
        self.client = client
        """The client whose subscriptions are managed."""
        self.consume = consume
        """Whether :meth:`serve` reads and routes the client's stream."""
        self.coalesce_window = float(coalesce_window)
        """Seconds changes are collected before a flush."""
        self.max_request_bytes = max_request_bytes
        """Largest JSON size of one subscription request."""
        self.bucket = TokenBucket(requests_per_second, burst)
        """The rate limiter for subscription requests (inspect or tune it)."""
        self.default_handler = default_handler
        """Handler for messages that no subscription covers."""
        self._ids = itertools.count(1)
        #: subscriptions (owners, in id order) and the pairs each covers
        self._book: SubscriptionBook[Subscription] = SubscriptionBook()
        self._route_cache: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        #: message class -> routing channel, for typed single-symbol market data
        self._fast: dict[type, str] = {}
        self._wire: set[tuple[str, str]] = set()
        self._external: frozenset[tuple[str, str]] = frozenset()
        self._waiters: list[_Change] = []
        self._dirty = trio.Event()
        self._first_change_at = 0.0
        self._inflight = False
        self._error_handler: ErrorHandler | None = None
        self._started = False
        self._running = False
        # metrics
        self._requests: dict[str, int] = {"subscribe": 0, "unsubscribe": 0}
        self._requests_failed = 0
        self._flushes = 0
        self._changes = 0
        self._rate_wait = 0.0
        self._routed = 0
        self._unrouted = 0
        self._handler_errors = 0

    # ------------------------------------------------------------------ lifecycle

    async def serve(
        self, *, task_status: trio.TaskStatus[StreamManager] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the flusher (and the stream reader when ``consume``) until cancelled.

        For ``await nursery.start(manager.serve)``; reports the manager itself as started value.
        """
        if self._started:
            raise UsageError("a StreamManager can only be run once")
        self._started = True
        subs = getattr(self.client, "subscriptions", None) or {}
        self._external = frozenset(
            (channel_to_wire(ch), sym) for ch, syms in dict(subs).items() for sym in syms
        )
        self.bucket = TokenBucket(self.bucket.rate, self.bucket.capacity, now=trio.current_time())
        self._running = True
        try:
            with single_error():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flusher)
                    if self.consume:
                        nursery.start_soon(self._reader)
                    task_status.started(self)
        finally:
            self._running = False
            # Nobody will flush any more: release waiters instead of leaving them hanging.
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if w.sub is not None and w.error is None:
                    w.error = UsageError("the StreamManager stopped before the change was sent")
                w.done.set()

    async def run(
        self, *, task_status: trio.TaskStatus[StreamManager] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The original name of :meth:`serve` (``await nursery.start(manager.run)``); kept as
        an alias, same behaviour."""
        await self.serve(task_status=task_status)

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Set the function (plain or ``async``) called with an :class:`~trioalpaca.ErrorReport`
        (``component="manager"``) when a subscription handler raises. ``None``: log at ERROR
        level with the traceback. Exceptions from the error handler itself are logged and
        counted, never raised."""
        self._error_handler = handler

    # ------------------------------------------------------------------ subscriptions

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The active subscriptions, in id order."""
        return tuple(self._book)

    def refcount(self, channel: str, symbol: str) -> int:
        """Return how many active subscriptions cover ``(channel, symbol)`` (``"*"`` literal)."""
        return self._book.refcount((channel_to_wire(channel), symbol))

    @property
    def wanted(self) -> dict[str, frozenset[str]]:
        """The union the manager wants on the wire, as ``{wire channel: symbols}``."""
        return {ch: frozenset(s) for ch, s in self._book.by_channel().items()}

    @property
    def confirmed(self) -> dict[str, frozenset[str]]:
        """What the manager's requests got confirmed so far, as ``{wire channel: symbols}``."""
        out: dict[str, set[str]] = {}
        for ch, sym in self._wire:
            out.setdefault(ch, set()).add(sym)
        return {ch: frozenset(s) for ch, s in out.items()}

    @staticmethod
    def _normalise_types(data_types: Iterable[str] | str) -> frozenset[str]:
        if isinstance(data_types, str):
            data_types = (data_types,)
        out = frozenset(t if t == "control" else channel_to_wire(t) for t in data_types)
        if not out:
            raise UsageError("data_types must name at least one channel")
        return out

    @staticmethod
    def _normalise_symbols(symbols: Iterable[str] | str) -> frozenset[str]:
        if isinstance(symbols, str):
            symbols = (symbols,)
        # The client's rule (upper case; empty, spaces and commas refused), so routing keys
        # match the symbols the server confirms and sends.
        return frozenset(check_symbol(s) for s in symbols)

    async def subscribe(
        self,
        *,
        symbols: Iterable[str] | str,
        data_types: Iterable[str] | str,
        handler: SubscriptionHandler,
    ) -> Subscription:
        """Subscribe ``handler`` to ``data_types`` (channel names, either spelling, or
        ``"control"``) of ``symbols`` (``"*"`` for all).

        Routing to ``handler`` starts at once; this returns when the wire subscription for every
        pair is confirmed (at once when it already is).

        Raises:
            AlpacaServerError: the server rejected the request (the subscription is not created).
            SubscriptionTimeoutError: the client got no confirmation in time (not created).
            UsageError: bad arguments; not running.
        """
        if not self._running:
            raise UsageError("the StreamManager is not running (use open_stream_manager)")
        sub = Subscription(
            self,
            next(self._ids),
            self._normalise_symbols(symbols),
            self._normalise_types(data_types),
            handler,
        )
        if not sub.symbols and sub.data_types != {"control"}:
            raise UsageError("symbols must not be empty")
        self._add(sub)
        keys = sub.pairs()
        if self._covered(keys):
            return sub
        change = _Change(sub, keys)
        try:
            await self._submit(change)
        except BaseException:
            if sub.active:
                self._remove(sub)
                self._submit_nowait(_Change(None, frozenset()))
            raise
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Remove ``subscription``: no delivery after this call starts; returns once the wire
        unsubscribe of pairs nobody covers any more went out. Idempotent."""
        if subscription._manager is not self:
            raise UsageError("that subscription belongs to another StreamManager")
        if not subscription.active:
            return
        self._remove(subscription)
        if not self._running:
            return  # stopped: nothing will be sent any more
        if not (self._inflight or self._waiters) and not any(
            k in self._wire and not self._book.wanted(k) for k in subscription.pairs()
        ):
            return  # every pair is still covered by another subscription: nothing to send
        await self._submit(_Change(None, frozenset()))

    async def _update(
        self,
        sub: Subscription,
        symbols: Iterable[str] | None,
        data_types: Iterable[str] | None,
    ) -> None:
        if not sub.active:
            raise UsageError("cannot update an inactive subscription")
        old = (sub.symbols, sub.data_types)
        new_syms = self._normalise_symbols(symbols) if symbols is not None else sub.symbols
        new_types = self._normalise_types(data_types) if data_types is not None else sub.data_types
        sub.symbols, sub.data_types = new_syms, new_types
        self._book.replace(sub, sub.pairs())
        self._route_cache.clear()
        change = _Change(sub, sub.pairs())
        try:
            await self._submit(change)
        except BaseException:
            if sub.active:
                self._remove(sub)
            sub.symbols, sub.data_types = old
            self._add(sub)
            self._submit_nowait(_Change(None, frozenset()))
            raise

    def _covered(self, keys: frozenset[tuple[str, str]]) -> bool:
        if self._inflight or self._waiters:
            return False
        return all(k in self._wire or k in self._external for k in keys)

    def _add(self, sub: Subscription) -> None:
        self._book.add(sub, sub.pairs())
        sub.active = True
        self._route_cache.clear()

    def _remove(self, sub: Subscription) -> None:
        self._book.remove_owner(sub)
        sub.active = False
        self._route_cache.clear()

    def _submit_nowait(self, change: _Change) -> None:
        self._changes += 1
        if not self._waiters and not self._dirty.is_set():
            self._first_change_at = trio.current_time()
        self._waiters.append(change)
        self._dirty.set()

    async def _submit(self, change: _Change) -> None:
        self._submit_nowait(change)
        await change.done.wait()
        if change.error is not None:
            raise change.error

    # ------------------------------------------------------------------ flushing

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            await trio.sleep_until(self._first_change_at + self.coalesce_window)
            self._dirty = trio.Event()
            waiters, self._waiters = self._waiters, []
            self._inflight = True
            try:
                await self._reconcile(waiters)
            except BaseException:
                for w in waiters:
                    if w.sub is not None and w.error is None:
                        w.error = UsageError("the StreamManager stopped while sending the change")
                raise
            finally:
                self._inflight = False
                for w in waiters:
                    w.done.set()

    async def _reconcile(self, waiters: list[_Change]) -> None:
        self._flushes += 1
        await self._send_removals()
        to_add = self._wanted() - self._wire
        if to_add:
            for chunk in split_request("subscribe", group_pairs(to_add), self.max_request_bytes):
                try:
                    await self._request("subscribe", chunk)
                except Exception as exc:
                    failed = pairs_of_channels(chunk)
                    logger.warning("subscribe request for %d pair(s) failed: %r", len(failed), exc)
                    for w in waiters:
                        if w.sub is not None and w.error is None and w.keys & failed:
                            w.error = exc
                    continue
                self._wire.update(pairs_of_channels(chunk))
        # Subscriptions whose request failed are not created: undo their registration.
        undo = [w.sub for w in waiters if w.error is not None and w.sub is not None]
        for sub in undo:
            if sub.active:
                self._remove(sub)
        if undo:
            # A failed subscription may have been the only holder of pairs that were already on
            # the wire (another subscription was dropped in the same window): release them.
            await self._send_removals()

    def _wanted(self) -> set[tuple[str, str]]:
        return set(self._book.union() - self._external)

    async def _send_removals(self) -> None:
        to_remove = self._wire - self._wanted()
        if not to_remove:
            return
        for chunk in split_request("unsubscribe", group_pairs(to_remove), self.max_request_bytes):
            try:
                await self._request("unsubscribe", chunk)
            except Exception as exc:
                logger.warning("unsubscribe request failed (retried with the next change): %r", exc)
                continue
            self._wire.difference_update(pairs_of_channels(chunk))

    async def _request(self, action: str, chunk: dict[str, list[str]]) -> None:
        now = trio.current_time()
        while not self.bucket.try_acquire(now):
            wait = self.bucket.delay(now)
            self._rate_wait += wait
            await trio.sleep(wait)
            now = trio.current_time()
        self._requests[action] += 1
        method = self.client.subscribe if action == "subscribe" else self.client.unsubscribe
        try:
            await method(**chunk)
        except Exception:
            self._requests_failed += 1
            raise

    # ------------------------------------------------------------------ routing

    async def _reader(self) -> None:
        client = self.client
        receive_batch = getattr(client, "receive_batch", None)
        if callable(receive_batch):
            while True:
                try:
                    batch = await receive_batch()
                except trio.EndOfChannel:
                    return
                await self.dispatch_batch(batch)
        async for msg in client:
            await self.dispatch(msg)

    def _targets(self, channel: str, symbol: str) -> tuple[Subscription, ...]:
        key = (channel, symbol)
        subs = self._route_cache.get(key)
        if subs is None:
            found = {s.id: s for s in self._book.owners(key)}
            found.update((s.id, s) for s in self._book.owners((channel, "*")))
            subs = tuple(found[i] for i in sorted(found))
            if len(self._route_cache) >= _ROUTE_CACHE_MAX:
                self._route_cache.clear()
            self._route_cache[key] = subs
        return subs

    def targets(self, message: Any) -> tuple[Subscription, ...]:
        """Return the subscriptions a message would be delivered to, in call order."""
        channel = _channel_of(message)
        if channel == "control":
            return tuple(s for s in self._book if "control" in s.data_types)
        channel = _ROUTE_AS.get(channel, channel)
        if type(message) is dict:
            syms = message.get("symbols")
            single = message.get("S")
        else:
            syms = getattr(message, "symbols", None)
            single = getattr(message, "symbol", None)
        if isinstance(single, str):
            cls = type(message)
            if cls is not dict and syms is None:
                self._fast[cls] = channel  # next time: dispatch_batch's one-lookup path
            return self._targets(channel, single)
        if syms:
            found: dict[int, Subscription] = {}
            for s in syms:
                for sub in self._targets(channel, s):
                    found[sub.id] = sub
            if not found:
                for sub in self._targets(channel, "*"):
                    found[sub.id] = sub
            return tuple(found[i] for i in sorted(found))
        return self._targets(channel, "*")

    async def dispatch(self, message: Any) -> None:
        """Deliver one message to every subscription that covers it."""
        await self.dispatch_batch((message,))

    async def dispatch_batch(self, messages: Iterable[Any]) -> None:
        """Deliver several messages in order (usable as a MessageHandler processor)."""
        fast = self._fast
        cache = self._route_cache
        for msg in messages:
            ch = fast.get(type(msg))
            if ch is not None:
                # Typed single-symbol market data: one cache lookup.
                subs = cache.get((ch, msg.symbol))
                if subs is None:
                    subs = self._targets(ch, msg.symbol)
            else:
                subs = self.targets(msg)
            if not subs:
                self._unrouted += 1
                if self.default_handler is not None:
                    await self._call(None, self.default_handler, msg)
                continue
            self._routed += 1
            for sub in subs:
                if sub.active:
                    sub.delivered += 1
                    try:
                        result = sub.handler(msg)
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        self._handler_errors += 1
                        sub.errors += 1
                        await self._report(sub, msg, exc)

    async def _call(self, sub: Subscription | None, fn: SubscriptionHandler, msg: Any) -> None:
        try:
            result = fn(msg)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._handler_errors += 1
            if sub is not None:
                sub.errors += 1
            await self._report(sub, msg, exc)

    async def _report(self, sub: Subscription | None, msg: Any, exc: Exception) -> None:
        handler = self._error_handler
        if handler is None or sub is None:
            logger.error(
                "handler of %r raised on %r",
                sub if sub is not None else "default",
                msg,
                exc_info=exc,
            )
            return
        report = ErrorReport(
            exception=exc,
            component="manager",
            handler=handler_name(sub.handler),
            message=msg,
            batch=(msg,),
            kind=_channel_of(msg),
            subscription=sub,
        )
        try:
            await call_maybe_async(handler, report)
        except Exception:
            logger.exception("the manager's error handler raised while handling %r", exc)

    # ------------------------------------------------------------------ metrics

    def get_metrics(self) -> dict[str, Any]:
        """Return counters as plain dicts.

        ``subscriptions`` (active handles), ``wanted_pairs`` / ``confirmed_pairs`` (wire union
        sizes), ``requests`` (``{"subscribe": n, "unsubscribe": n}`` sent), ``requests_failed``,
        ``changes`` (subscribe/unsubscribe/update calls that needed a flush), ``flushes`` (how many
        coalesced rounds they became), ``rate_limited_s`` (total time spent waiting for tokens),
        ``routed`` / ``unrouted`` messages, ``handler_errors``.
        """
        return {
            "subscriptions": len(self._book),
            "wanted_pairs": len(self._book.union() - self._external),
            "confirmed_pairs": len(self._wire),
            "requests": dict(self._requests),
            "requests_failed": self._requests_failed,
            "changes": self._changes,
            "flushes": self._flushes,
            "rate_limited_s": self._rate_wait,
            "routed": self._routed,
            "unrouted": self._unrouted,
            "handler_errors": self._handler_errors,
        }


@asynccontextmanager
async def open_stream_manager(
    client: Any,
    *,
    consume: bool = True,
    coalesce_window: float = 0.05,
    max_request_bytes: int = 16_384,
    requests_per_second: float = 2.0,
    burst: int = 5,
    default_handler: SubscriptionHandler | None = None,
) -> AsyncIterator[StreamManager]:
    """Run a :class:`StreamManager` on ``client`` for the duration of an ``async with`` block.

    Arguments are those of :class:`StreamManager`. Leaving the block stops routing and
    flushing; it does not unsubscribe (the client usually closes next). Errors leave the block
    as themselves, not wrapped in an exception group.
    """
    manager = StreamManager(
        client,
        consume=consume,
        coalesce_window=coalesce_window,
        max_request_bytes=max_request_bytes,
        requests_per_second=requests_per_second,
        burst=burst,
        default_handler=default_handler,
    )
    with single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.serve)
            yield manager
            nursery.cancel_scope.cancel()
