"""Connection pools: several Alpaca stream connections behind one placement / failover layer.

``open_pool`` opens ``pool_size`` market data connections (one
:class:`~trioalpaca.client.AlpacaWebSocketClient`
each, every one in its own cancel scope inside the pool's nursery) and hands out
:class:`PooledConnection` handles with :meth:`ConnectionPool.get_connection`. The pool decides
where each symbol is subscribed, watches every connection's health, moves the symbols of a dead
or persistently degraded connection to healthy ones, reconnects the dead slot in the background
with backoff, rebalances loads that drifted apart and rotates connections on request or on a
schedule.

All decisions are made synchronously by the pure functions in ``trioalpaca._pool_policy``
(httpcore's "policy first, I/O afterwards"); this module only carries them out. The pieces:

* the subscription book (``trioalpaca._book``): which handle wants which (channel, symbol);
* the handover table (``trioalpaca._handover``): the pure deliver / hold / drop machine that
  keeps a moving symbol gapless, in order and free of repeats;
* :class:`ConnectionPool`: ownership (symbol -> connection), subscriptions and routing;
* ``_Supervisor``: one task per slot that keeps it connected and fails its symbols over;
* ``_Upkeep``: health checks, rebalancing and rotation, moving symbols with the one
  ``migrate`` sequence.

Why the pool drives :class:`~trioalpaca.client.AlpacaWebSocketClient` directly instead of one
``StreamManager`` per connection: a manager owns the subscriptions and routing of *one* client,
while failover, rebalancing and rotation have to move a symbol's ownership *between* clients
atomically (subscribe on the target, then switch which connection's messages are delivered,
then drop the old one). Keeping one ownership table (symbol -> connection) and one reference
count per (symbol, channel) in the pool is simpler and makes "no duplicate deliveries, no
duplicate subscriptions" a property of a single table.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import attrs
import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from ._book import Pair, SubscriptionBook
from ._buffer import MessageBuffer
from ._credentials import resolve_credentials
from ._errors import (
    AlpacaServerError,
    ConnectionClosedError,
    CredentialsError,
    ReconnectLimitError,
    TransportError,
    TrioAlpacaError,
    UsageError,
    error_key,
    server_error,
)
from ._groups import expected_error, single_error
from ._handlers import ErrorAction, ErrorHandler, ErrorReport, call_maybe_async
from ._handover import Handover, HandoverTable, Verdict
from ._options import StreamOptions
from ._pool_policy import (
    Health,
    HealthSample,
    HealthThresholds,
    PoolCapacityError,
    PoolConfigError,
    RotationMode,
    SlotSpec,
    assess_health,
    check_capacity,
    default_rebalance_threshold,
    plan_failover,
    plan_placement,
    plan_rebalance,
    plan_rotation,
    plan_slots,
    should_fail_over,
)
from .backoff import Backoff
from .client import AlpacaWebSocketClient
from .endpoints import MIRRORED_CHANNELS, channel_to_python, channel_to_wire
from .metrics import RateMeter
from .models import Dropped, Message, Reconnected, ServerError

T = TypeVar("T")

logger = logging.getLogger("trioalpaca.pool")

__all__ = [
    "ConnectionPool",
    "Credentials",
    "HandleOverflow",
    "Health",
    "HealthThresholds",
    "PoolCapacityError",
    "PoolConfigError",
    "PooledConnection",
    "RotationMode",
    "SlotSpec",
    "open_pool",
]


HandleOverflow = Literal["block", "drop_oldest"]
"""The subset of :data:`trioalpaca.OverflowPolicy` a :class:`PooledConnection` accepts
when its buffer is full: ``"block"`` (back-pressure the pooled connection that delivers the
message) or ``"drop_oldest"`` (discard the oldest message, count it and report a ``Dropped``
marker)."""


@attrs.frozen(repr=False)
class Credentials:
    """One API key pair. The secret never appears in ``repr``."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key!r}, api_secret='***')"


# ----------------------------------------------------------------------------------------------
# Handles
# ----------------------------------------------------------------------------------------------


class PooledConnection(trio.abc.ReceiveChannel[Message]):
    """A handle on some symbols of a :class:`ConnectionPool`; iterate it to receive their data.

    Obtained from :meth:`ConnectionPool.get_connection`. It yields the typed market data
    messages of its symbols and channels, whichever pooled connection currently carries them,
    plus control markers:

    * :class:`~trioalpaca.models.Reconnected` once per recovery that affected the handle (a
      failover, a break-before-make rotation or a slot coming back), always *before* the first
      message that follows the gap; ``gap_start_ns`` / ``gap_end_ns`` bound the time in which
      data may be missing.
    * :class:`~trioalpaca.models.Dropped` when ``overflow="drop_oldest"`` discarded messages
      because the consumer fell behind.

    Iteration ends when the handle or the pool is closed. Use ``async with`` or :meth:`aclose`
    to release the symbols (they are unsubscribed once no handle needs them). A handle is a
    ``trio.abc.ReceiveChannel``: anything that takes one accepts it.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        symbols: tuple[str, ...],
        channels: frozenset[str],
        buffer_size: int,
        overflow: HandleOverflow,
    ) -> None:
        self._pool = pool
        #: The symbols this handle receives (upper-cased, de-duplicated, in request order).
        self.symbols: tuple[str, ...] = symbols
        #: Wire channel names this handle receives (e.g. ``"trades"``, ``"dailyBars"``).
        self.channels: frozenset[str] = channels
        # block: the delivering connection waits until there is room for one more message
        self._buffer = MessageBuffer(
            buffer_size, overflow, where="pool handle buffer", low_water=buffer_size - 1
        )
        self._closed = False
        #: Messages delivered to this handle's buffer (data and markers).
        self.received = 0
        #: ``Reconnected`` markers delivered to this handle.
        self.reconnects = 0

    # -- delivery side (called by the pool) -------------------------------------------------

    def pairs(self) -> frozenset[Pair]:
        """The ``(wire channel, symbol)`` pairs this handle receives."""
        return frozenset((ch, sym) for ch in self.channels for sym in self.symbols)

    def _wants(self, channel: str) -> bool:
        return channel in self.channels or (
            channel in MIRRORED_CHANNELS and "trades" in self.channels
        )

    async def _put(self, msg: Message) -> None:
        await self._buffer.send(msg)
        if not self._closed:
            self.received += 1

    def _put_marker(self, msg: Message) -> None:
        """Append a control marker, bypassing the capacity bound (markers are rare)."""
        if self._closed:
            return
        if isinstance(msg, Reconnected):
            self.reconnects += 1
        self._buffer.put_marker(msg)
        self.received += 1

    def _close(self) -> None:
        self._closed = True
        self._buffer.close()

    # -- consumer side ----------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Messages discarded by the ``drop_oldest`` policy."""
        return self._buffer.dropped_total

    @property
    def closed(self) -> bool:
        """Whether the handle (or its pool) has been closed."""
        return self._closed

    @property
    def connections(self) -> tuple[int, ...]:
        """Indexes of the pooled connections currently assigned this handle's symbols."""
        return self._pool._connections_of(self.symbols)

    async def receive(self) -> Message:
        """Wait for and return the next message.

        Raises:
            trio.EndOfChannel: the handle or its pool was closed and the buffer is drained.
        """
        item: Message = await self._buffer.get()
        return item

    async def aclose(self) -> None:
        """Release the handle: its symbols are unsubscribed once no other handle needs them."""
        if self._closed:
            return
        self._close()
        await self._pool._release(self)

    def __repr__(self) -> str:
        return (
            f"PooledConnection(symbols={list(self.symbols)!r}, channels={sorted(self.channels)!r},"
            f" connections={list(self.connections)!r}, closed={self._closed})"
        )


# ----------------------------------------------------------------------------------------------
# Pooled connection slots
# ----------------------------------------------------------------------------------------------


class _Conn:
    """One client session of a slot (a slot opens a new one after every loss or rotation)."""

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.scope = trio.CancelScope()
        self.client: AlpacaWebSocketClient | None = None
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.retired = False
        self.reason = ""


class _Slot:
    def __init__(self, spec: SlotSpec, backoff: Backoff, url: str | None) -> None:
        self.spec = spec
        self.url = url
        self.state = "connecting"  # connecting | ready | backoff | failed | closed
        self.conn: _Conn | None = None
        self.symbols: set[str] = set()
        self.health = Health.DEAD
        self.degraded_since: float | None = None
        self.schedule = backoff.schedule()
        self.reconnect_times: collections.deque[float] = collections.deque()
        self.error_times: collections.deque[float] = collections.deque()
        self.reconnects = 0
        self.failovers = 0
        self.ready_at = 0.0
        self.last_message_at: float | None = None
        self.down_since_ns = time.time_ns()
        self.messages = RateMeter(10.0)
        self.last_error: BaseException | None = None
        self.error_counts: collections.Counter[str] = collections.Counter()
        self.gens = 0
        self.attempted = False
        self.was_ready = False

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def _channel_kwargs(channels: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Wire channel -> symbols, as python keyword arguments for ``subscribe``."""
    return {channel_to_python(ch): sorted(syms) for ch, syms in channels.items() if syms}


# ----------------------------------------------------------------------------------------------
# The pool
# ----------------------------------------------------------------------------------------------


class ConnectionPool:
    """A pool of Alpaca market data connections. Create it with :func:`open_pool`.

    Each pooled connection runs in its own cancel scope inside the pool's nursery. Symbols are
    placed, failed over, rebalanced and rotated according to the documented rules of
    :func:`open_pool`; handles returned by :meth:`get_connection` keep working throughout.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        credentials: Sequence[Credentials],
        urls: Sequence[str | None],
        specs: Sequence[SlotSpec],
        max_subscriptions_per_connection: int,
        max_connections_per_key: int,
        feed: str,
        channels: frozenset[str],
        health: HealthThresholds,
        health_check_interval: float,
        rebalance_threshold: int,
        rotation_interval: float | None,
        backoff: Backoff,
        handle_buffer_size: int,
        handle_overflow: HandleOverflow,
        options: StreamOptions,
    ) -> None:
        self._nursery = nursery
        self._credentials = tuple(credentials)
        self._urls = tuple(urls)
        self._specs = tuple(specs)
        self._limit = max_subscriptions_per_connection
        self._per_key = max_connections_per_key
        self._feed = feed
        self._default_channels = channels
        self._thresholds = health
        self._interval = health_check_interval
        self._rebalance_threshold = rebalance_threshold
        self._rotation_interval = rotation_interval
        self._backoff = backoff
        self._handle_buffer_size = handle_buffer_size
        self._handle_overflow: HandleOverflow = handle_overflow
        self._options = options
        self._slots = [_Slot(spec, backoff, self._urls[spec.endpoint]) for spec in specs]
        self._lock = trio.Lock()
        self._changed = trio.Event()
        #: handles and the (wire channel, symbol) pairs each wants, reference counted
        self._book: SubscriptionBook[PooledConnection] = SubscriptionBook()
        #: symbol -> slot index the symbol is assigned to
        self._place: dict[str, int] = {}
        #: symbol -> slot index whose messages are delivered for it (absent during a gap)
        self._live: dict[str, int] = {}
        #: symbols moving between sessions right now (delivered from both, de-duplicated)
        self._handover = HandoverTable()
        #: symbol -> set once its handover's flush is over (new-session messages wait for it)
        self._flushing: dict[str, trio.Event] = {}
        self._error_handler: ErrorHandler | None = None
        self._error_handler_errors = 0
        self._closed = False
        self._failed = False
        self._messages = RateMeter(10.0)
        self._failovers = 0
        self._rotations = 0
        self._rebalance_moves = 0
        self._gaps = 0
        self._gap_seconds = 0.0
        self._last_gap: Reconnected | None = None
        self._sessions = _Supervisor(self)
        self._upkeep = _Upkeep(self)
        self.client_hooks: list[Callable[[int, AlpacaWebSocketClient], None]] = []
        """Called with ``(connection index, client)`` for every client the pool creates, before
        it connects (the recording tap: :func:`trioalpaca.record.open_recorder` uses it)."""

    # -- public API ------------------------------------------------------------------------

    def clients(self) -> list[tuple[int, AlpacaWebSocketClient]]:
        """The current client of every connection that has one, as ``(index, client)``."""
        return [
            (i, slot.conn.client)
            for i, slot in enumerate(self._slots)
            if slot.conn is not None and slot.conn.client is not None
        ]

    @property
    def pool_size(self) -> int:
        """Number of pooled connections."""
        return len(self._slots)

    @property
    def max_subscriptions_per_connection(self) -> int:
        """Most symbols one pooled connection carries."""
        return self._limit

    async def get_connection(
        self,
        symbols: Iterable[str],
        *,
        channels: Iterable[str] | None = None,
        buffer_size: int | None = None,
        overflow: HandleOverflow | None = None,
    ) -> PooledConnection:
        """Subscribe ``symbols`` and return a handle that receives their messages.

        Symbols another handle already placed are reused (same connection, reference counted);
        new symbols go to the least-loaded healthy connection with room under
        ``max_subscriptions_per_connection`` (all to one connection when it has room, otherwise
        spread); degraded connections are used only when the healthy ones lack room. Returns
        once the server acknowledged every new subscription. Waits (under the caller's cancel
        scopes) while no ready connection has room but the pool as a whole could hold the
        symbols, e.g. while connections are still connecting.

        Args:
            symbols: ticker symbols (case-insensitive).
            channels: channels for this handle (python or wire spelling), default the pool's
                ``channels``.
            buffer_size: this handle's buffer bound, default the pool's ``handle_buffer_size``.
            overflow: ``"block"`` (back-pressure the connection) or ``"drop_oldest"`` (discard,
                count and report a :class:`~trioalpaca.models.Dropped` marker).

        Raises:
            PoolCapacityError: the pool can never hold that many distinct symbols.
            AlpacaServerError: the server refused the subscription on a live connection (for
                example 405 symbol limit or 400 invalid symbol); nothing stays subscribed.
            UsageError: no symbols, an unknown channel, or the pool is closed.
        """
        syms = tuple(dict.fromkeys(s.strip().upper() for s in symbols))
        if not syms or any(not s for s in syms):
            raise UsageError("get_connection needs at least one non-empty symbol")
        chans = (
            self._default_channels
            if channels is None
            else frozenset(channel_to_wire(c) for c in channels)
        )
        if not chans:
            raise UsageError("get_connection needs at least one channel")
        size = self._handle_buffer_size if buffer_size is None else buffer_size
        if size < 1:
            raise UsageError(f"buffer_size must be at least 1, got {size}")
        handle = PooledConnection(
            self, syms, chans, size, self._handle_overflow if overflow is None else overflow
        )
        attached = done = False
        try:
            while True:
                self._check_open()
                changed = self._changed
                async with self._lock:
                    new = [s for s in syms if not self._book.has_symbol(s)]
                    check_capacity(
                        self._book.symbol_count() + len(new), len(self._slots), self._limit
                    )
                    plan = None
                    # Healthy connections first; degraded ones only if the healthy lack room.
                    for candidates in (self._eligible(), self._eligible(degraded=True)):
                        try:
                            plan = plan_placement(new, self._loads(), candidates, self._limit)
                            break
                        except PoolCapacityError:
                            continue
                    if plan is not None:
                        attached = True
                        await self._attach(handle, plan)
                        done = True
                        return handle
                await changed.wait()
        finally:
            if attached and not done:
                # Cancelled (or failed) while waiting for the acknowledgements: undo.
                handle._close()
                await self._release(handle)

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Set the function (plain or ``async``) called with an :class:`~trioalpaca.ErrorReport`
        (``component="pool"``, ``connection`` = the pooled connection's index) for every error a
        pooled connection records: a refused subscription or a server error message
        (``action="continue"``), or a lost or failed session (``action="reconnect"``; the pool
        fails its symbols over and reconnects it in the background). It runs in a task of the
        pool's own; its exceptions are logged and counted (``error_handler_errors``), never
        raised. ``None`` (the default): errors are only counted in :meth:`get_metrics`.
        """
        self._error_handler = handler

    def get_metrics(self) -> dict[str, Any]:
        """Return a snapshot of the pool's state and counters (the same dict as
        :meth:`get_pool_metrics`, named like every other component's)."""
        return self.get_pool_metrics()

    def get_pool_metrics(self) -> dict[str, Any]:
        """Return a snapshot of the pool's state and counters.

        Keys: ``pool_size``, ``healthy_connections``, ``degraded_connections``,
        ``dead_connections``, ``handles``, ``symbols`` (distinct symbols held),
        ``unplaced_symbols`` (assigned to a connection that is not ready: in a gap),
        ``failovers``, ``rotations``, ``rebalance_moves``, ``reconnects``, ``messages_total``,
        ``messages_per_second`` (10 s window), ``gaps`` (``Reconnected`` recoveries),
        ``gap_seconds_total``, ``last_gap`` (``{"gap_start_ns", "gap_end_ns"}`` or ``None``),
        ``error_handler_errors`` (exceptions raised by the error handler) and
        ``connections``: one dict per pooled connection with ``index``, ``state``, ``health``,
        ``load``, ``credential`` (index), ``endpoint`` (index), ``latency_ms`` (last heartbeat
        round trip, ``None`` if unknown), ``reconnects``, ``failovers``, ``messages_total``,
        ``messages_per_second``, ``connected_for`` (seconds), ``last_error`` (repr) and
        ``errors`` (count per server code or error class).
        """
        now = trio.current_time()
        conns: list[dict[str, Any]] = []
        for slot in self._slots:
            rtt = self._rtt(slot)
            conns.append(
                {
                    "index": slot.spec.index,
                    "state": slot.state,
                    "health": slot.health.value,
                    "load": len(slot.symbols),
                    "credential": slot.spec.credential,
                    "endpoint": slot.spec.endpoint,
                    "latency_ms": None if rtt is None else rtt * 1000.0,
                    "reconnects": slot.reconnects,
                    "failovers": slot.failovers,
                    "messages_total": slot.messages.total,
                    "messages_per_second": slot.messages.rate(now),
                    "connected_for": (now - slot.ready_at) if slot.ready else 0.0,
                    "last_error": None if slot.last_error is None else repr(slot.last_error),
                    "errors": dict(slot.error_counts),
                }
            )
        health = [s.health for s in self._slots]
        last = self._last_gap
        return {
            "pool_size": len(self._slots),
            "healthy_connections": health.count(Health.HEALTHY),
            "degraded_connections": health.count(Health.DEGRADED),
            "dead_connections": health.count(Health.DEAD),
            "handles": len(self._book),
            "symbols": self._book.symbol_count(),
            "unplaced_symbols": self._book.symbol_count() - len(self._live),
            "failovers": self._failovers,
            "rotations": self._rotations,
            "rebalance_moves": self._rebalance_moves,
            "reconnects": sum(s.reconnects for s in self._slots),
            "messages_total": self._messages.total,
            "messages_per_second": self._messages.rate(now),
            "gaps": self._gaps,
            "gap_seconds_total": self._gap_seconds,
            "last_gap": None
            if last is None
            else {"gap_start_ns": last.gap_start_ns, "gap_end_ns": last.gap_end_ns},
            "error_handler_errors": self._error_handler_errors,
            "connections": conns,
        }

    async def rotate(self, index: int | None = None) -> RotationMode:
        """Replace one pooled connection with a fresh session (planned rotation).

        ``index`` defaults to the ready connection that has been up longest. The mode is chosen
        by the rules of :class:`RotationMode`: make-before-break when the key allows another
        session, otherwise migrate the symbols to other healthy connections (gapless) when they
        have room, otherwise break-before-make (affected handles see one ``Reconnected``).
        Returns the mode used.

        Raises:
            UsageError: ``index`` is out of range or that connection is not ready.
        """
        self._check_open()
        async with self._lock:
            if index is None:
                ready = [s for s in self._slots if s.ready]
                if not ready:
                    raise UsageError("no pooled connection is ready to rotate")
                slot = min(ready, key=lambda s: (s.ready_at, s.spec.index))
            else:
                if not 0 <= index < len(self._slots):
                    raise UsageError(f"connection index {index} out of range")
                slot = self._slots[index]
                if not slot.ready:
                    raise UsageError(f"connection {index} is not ready (state {slot.state})")
            return await self._upkeep.rotate_locked(slot)

    # -- internals: bookkeeping --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the connection pool is closed")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _loads(self) -> dict[int, int]:
        return {s.spec.index: len(s.symbols) for s in self._slots}

    def _eligible(self, exclude: int | None = None, *, degraded: bool = False) -> list[int]:
        ok = (Health.HEALTHY, Health.DEGRADED) if degraded else (Health.HEALTHY,)
        return [
            s.spec.index
            for s in self._slots
            if s.ready and s.health in ok and s.spec.index != exclude
        ]

    def _connections_of(self, symbols: Iterable[str]) -> tuple[int, ...]:
        return tuple(sorted({self._place[s] for s in symbols if s in self._place}))

    def _rtt(self, slot: _Slot) -> float | None:
        conn = slot.conn
        if conn is None or conn.client is None or not slot.ready:
            return None
        return conn.client.heartbeat_rtt

    def _channels_for(self, symbols: Iterable[str]) -> dict[str, set[str]]:
        """wire channel -> symbols, from what the handles want."""
        return self._book.by_channel(symbols)

    async def _subscribe(
        self,
        slot: _Slot,
        channels: Mapping[str, Iterable[str]],
        errors: list[TrioAlpacaError] | None = None,
    ) -> bool:
        """Subscribe on ``slot``'s current session; False if it failed (errors are appended to
        ``errors``) or the session ended meanwhile."""
        return await self._change(slot, "subscribe", channels, errors=errors) is not None

    async def _unsubscribe(self, slot: _Slot, channels: Mapping[str, Iterable[str]]) -> None:
        await self._change(slot, "unsubscribe", channels)

    async def _change(
        self,
        slot: _Slot,
        action: Literal["subscribe", "unsubscribe"],
        channels: Mapping[str, Iterable[str]],
        session: _Conn | None = None,
        errors: list[TrioAlpacaError] | None = None,
    ) -> int | None:
        """Run one subscription change on the slot's (or the given) session, raced against the
        session's end; return the client's stream position of the acknowledgement (``0``: there
        was nothing to change), or ``None`` if it failed (errors are recorded and appended to
        ``errors``) or the session ended meanwhile.

        A session that dies while a change is pending would otherwise keep the caller (and the
        pool's lock) waiting for the client's ``subscription_timeout``.
        """
        kwargs = _channel_kwargs(channels)
        if not kwargs:
            return 0
        if session is None:
            conn = slot.conn
            if not slot.ready:
                return None
        else:
            conn = session
        client = None if conn is None else conn.client
        if conn is None or client is None or conn.done.is_set():
            return None
        method = client.subscribe if action == "subscribe" else client.unsubscribe
        try:
            position: int | None = await _unless_ended(conn, lambda: method(**kwargs))
        except TrioAlpacaError as exc:
            self._record_error(slot, exc)
            if errors is not None:
                errors.append(exc)
            return None
        return position

    def _record_error(
        self, slot: _Slot, exc: BaseException, action: ErrorAction = "continue"
    ) -> None:
        slot.last_error = exc
        slot.error_times.append(trio.current_time())
        slot.error_counts[error_key(exc)] += 1
        handler = self._error_handler
        if handler is not None and not self._closed:
            report = ErrorReport(
                exception=exc, component="pool", connection=slot.spec.index, action=action
            )
            self._nursery.start_soon(self._call_error_handler, handler, report)

    async def _call_error_handler(self, handler: ErrorHandler, report: ErrorReport) -> None:
        try:
            await call_maybe_async(handler, report)
        except Exception:
            self._error_handler_errors += 1
            logger.exception("the pool's error handler raised while handling %r", report.exception)

    def _emit_reconnected(self, symbols: Iterable[str], gap_start_ns: int, attempts: int) -> None:
        """One ``Reconnected`` per handle affected by ``symbols`` (call before making them live)."""
        affected: dict[int, PooledConnection] = {}
        for sym in symbols:
            for h in self._book.owners_of_symbol(sym):
                affected[id(h)] = h
        if not affected:
            return
        end = time.time_ns()
        marker = Reconnected(
            gap_start_ns=min(gap_start_ns, end), gap_end_ns=end, attempts=max(1, attempts)
        )
        for h in affected.values():
            h._put_marker(marker)
        self._gaps += 1
        self._gap_seconds += (marker.gap_end_ns - marker.gap_start_ns) / 1e9
        self._last_gap = marker

    async def _subscribe_many(
        self,
        plan: Mapping[int, Iterable[str]],
        errors: list[TrioAlpacaError] | None = None,
    ) -> dict[int, bool]:
        """Subscribe (wanted channels of) symbols on several slots concurrently."""
        results: dict[int, bool] = {}

        async def one(index: int, syms: list[str]) -> None:
            results[index] = await self._subscribe(
                self._slots[index], self._channels_for(syms), errors
            )

        async with trio.open_nursery() as nursery:
            for index, syms in plan.items():
                nursery.start_soon(one, index, list(syms))
        return results

    async def _attach(self, handle: PooledConnection, plan: Mapping[int, list[str]]) -> None:
        """Register ``handle`` and carry out a placement plan (lock held)."""
        new_syms = {s for syms in plan.values() for s in syms}
        # Existing live symbols start flowing to the handle right away.
        added = self._book.add(handle, handle.pairs())
        extra: dict[int, dict[str, set[str]]] = {}
        for ch, sym in added:
            if sym not in new_syms:  # a placed symbol gains a channel: subscribe it there
                extra.setdefault(self._place[sym], {}).setdefault(ch, set()).add(sym)
        for index, syms in plan.items():
            for sym in syms:
                self._place[sym] = index
                self._slots[index].symbols.add(sym)
        errors: list[TrioAlpacaError] = []
        if extra:
            async with trio.open_nursery() as nursery:
                for index, chans in extra.items():
                    nursery.start_soon(self._subscribe, self._slots[index], chans, errors)
        results = await self._subscribe_many(plan, errors)
        refused = False
        for index, ok in results.items():
            if ok:
                for sym in plan[index]:
                    if self._place.get(sym) == index:
                        self._live[sym] = index
                continue
            conn = self._slots[index].conn
            if conn is not None and not conn.done.is_set():
                refused = True
            # Otherwise the session is ending: its failover moves these symbols and tells the
            # handle with a Reconnected marker.
        self._notify()
        # The server said no (e.g. 405 symbol limit, 400 invalid symbol) on a live session:
        # tell the caller (get_connection undoes the handle). Transport errors mean the session
        # is ending; failover takes care of those symbols.
        refusals = [e for e in errors if isinstance(e, AlpacaServerError)]
        if refused and refusals:
            raise refusals[0]

    async def _release(self, handle: PooledConnection) -> None:
        if handle not in self._book:
            return
        with trio.CancelScope(shield=True):
            async with self._lock:
                drop: dict[int, dict[str, set[str]]] = {}
                for ch, sym in self._book.remove_owner(handle):
                    index = self._place.get(sym)
                    if index is not None:
                        drop.setdefault(index, {}).setdefault(ch, set()).add(sym)
                for sym in handle.symbols:
                    if self._book.has_symbol(sym):
                        continue
                    self._live.pop(sym, None)
                    index = self._place.pop(sym, None)
                    if index is not None:
                        self._slots[index].symbols.discard(sym)
                if not self._closed:
                    with trio.move_on_after(self._client_timeout()):
                        async with trio.open_nursery() as nursery:
                            for index, chans in drop.items():
                                nursery.start_soon(self._unsubscribe, self._slots[index], chans)
                self._notify()

    def _client_timeout(self) -> float:
        return self._options.subscription_timeout

    # -- internals: message routing (hot path) ----------------------------------------------

    async def _route(self, slot: _Slot, conn: _Conn, msg: Any) -> None:
        current = slot.conn is conn
        if current:
            slot.last_message_at = trio.current_time()
        sym = getattr(msg, "symbol", None)
        if sym is None:
            if current:
                self._control(slot, msg)
            return
        if self._handover:
            verdict = self._handover.route(sym, conn, msg, trio.current_time())
            if verdict is Verdict.DELIVER:
                await self._deliver(slot, sym, msg)
                return
            if verdict is Verdict.HOLD:
                flushed = self._flushing.get(sym)
                if flushed is not None:
                    # The flush delivers it: wait, so that a slow consumer back-pressures this
                    # session as it would without a handover.
                    await flushed.wait()
                return
            if verdict is Verdict.DROP:
                return
        if current and self._live.get(sym) == slot.spec.index:
            await self._deliver(slot, sym, msg)

    async def _deliver(self, slot: _Slot, sym: str, msg: Any) -> None:
        now = trio.current_time()
        slot.messages.add(1, now)
        self._messages.add(1, now)
        channel = msg.channel
        for h in self._book.owners_of_symbol(sym):
            if h._wants(channel):
                await h._put(msg)

    def _control(self, slot: _Slot, msg: Any) -> None:
        if isinstance(msg, ServerError):
            self._record_error(slot, server_error(msg.code, msg.message))
        elif isinstance(msg, Dropped):
            # The session's own buffer overflowed: every handle on this slot may have lost data.
            seen: set[int] = set()
            for s in list(slot.symbols):
                for h in self._book.owners_of_symbol(s):
                    if id(h) not in seen:
                        seen.add(id(h))
                        h._put_marker(msg)
        elif isinstance(msg, Reconnected):
            # Sessions run with reconnects disabled, so this only happens if a client option
            # re-enabled them; the gap is still real: pass it on.
            self._emit_reconnected(slot.symbols, msg.gap_start_ns, msg.attempts)

    # -- internals: sessions ----------------------------------------------------------------

    def _make_client(self, slot: _Slot) -> AlpacaWebSocketClient:
        cred = self._credentials[slot.spec.credential]
        kwargs: dict[str, Any] = self._options.client_kwargs()
        kwargs.update(_channel_kwargs(self._channels_for(slot.symbols)))
        if slot.url is not None:
            kwargs["url"] = slot.url
        client = AlpacaWebSocketClient(
            cred.api_key,
            cred.api_secret,
            feed=self._feed,
            max_reconnect_attempts=0,
            **kwargs,
        )
        for hook in self.client_hooks:
            hook(self._slots.index(slot), client)
        return client

    # -- internals: ownership and lifecycle ---------------------------------------------------

    def _transfer(self, sym: str, source: int, target: int) -> None:
        """Make ``target`` the owner of ``sym`` (and its deliverer if it is flowing)."""
        self._slots[source].symbols.discard(sym)
        self._slots[target].symbols.add(sym)
        self._place[sym] = target
        if sym in self._live:
            self._live[sym] = target

    async def _wait_first_ready(self) -> None:
        """Wait until every slot made its first attempt and at least one is ready.

        Waiting for every first attempt keeps the initial placement deterministic (handles do
        not all land on whichever connection happened to be quickest).
        """
        while not (any(s.ready for s in self._slots) and all(s.attempted for s in self._slots)):
            changed = self._changed
            await changed.wait()

    def _shutdown(self) -> None:
        self._closed = True
        for h in list(self._book):
            h._close()
        for slot in self._slots:
            slot.state = "closed"
            slot.health = Health.DEAD


class _Supervisor:
    """Keeps every slot of a :class:`ConnectionPool` connected: runs each session in its own
    cancel scope, fails its symbols over when it is lost, backs off and reconnects."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    async def run_session(
        self,
        slot: _Slot,
        conn: _Conn,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One client session in its own cancel scope; reports started once subscribed.

        Errors before ``started`` propagate to the caller of ``nursery.start`` (the supervisor);
        afterwards they are recorded on ``conn`` for the supervisor, never raised into the
        pool's nursery.
        """
        started = False
        try:
            with conn.scope:
                client = self.pool._make_client(slot)
                async with client:
                    conn.client = client
                    task_status.started()
                    started = True
                    async for msg in client:
                        await self.pool._route(slot, conn, msg)
                    conn.error = ConnectionClosedError(reason="the stream ended")
            if conn.scope.cancelled_caught and conn.error is None:
                conn.error = ConnectionClosedError(reason=conn.reason or "cancelled by the pool")
        except TrioAlpacaError as exc:
            if not started:
                raise _root_cause(exc) from exc
            conn.error = _root_cause(exc)
        except BaseExceptionGroup as group:
            first = expected_error(group, TrioAlpacaError)
            if first is None:
                raise
            if not started:
                raise _root_cause(first) from group
            conn.error = _root_cause(first)
        finally:
            conn.done.set()

    async def supervise(self, slot: _Slot) -> None:
        """Keep ``slot`` connected: connect, watch, fail over, back off, repeat."""
        while True:
            slot.gens += 1
            conn = _Conn(slot.gens)
            slot.state = "connecting"
            try:
                await self.pool._nursery.start(self.run_session, slot, conn)
            except TrioAlpacaError as exc:
                self.pool._record_error(slot, exc, "stop" if exc.fatal else "reconnect")
                slot.attempted = True
                # The client's first-connect rule, per slot: a cause that cannot heal (unknown
                # host, TLS, HTTP 401/403/404) fails a slot that has never been up.
                if exc.fatal or (exc.permanent and not slot.was_ready):
                    logger.error(  # noqa: TRY400 - the error is kept and reported
                        "pool connection %d stopped: %s", slot.spec.index, exc
                    )
                    await self.slot_failed(slot, exc)
                    return
                slot.state = "backoff"
                self.pool._notify()
                slot.reconnects += 1
                delay = slot.schedule.next_delay(connection_limit=exc.connection_limit)
                logger.warning(
                    "pool connection %d %s (%s: %s); next attempt in %.2f s",
                    slot.spec.index,
                    "lost" if slot.was_ready else "could not connect",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await trio.sleep(delay)
                continue
            slot.attempted = True
            slot.was_ready = True
            await self.on_ready(slot, conn)
            # Wait for the slot's current session to end (rotation may swap sessions).
            while True:
                current = slot.conn
                assert current is not None
                await current.done.wait()
                if slot.conn is current:
                    break
            ended = slot.conn
            assert ended is not None
            await self.on_lost(slot, ended)
            if ended.retired:
                continue  # planned: reconnect at once (406 still backs off with the floor)
            err = ended.error
            if isinstance(err, TrioAlpacaError) and err.fatal:
                await self.slot_failed(slot, err)
                return
            slot.state = "backoff"
            limit = isinstance(err, TrioAlpacaError) and err.connection_limit
            await trio.sleep(slot.schedule.next_delay(connection_limit=limit))

    async def slot_failed(self, slot: _Slot, exc: TrioAlpacaError) -> None:
        slot.state = "failed"
        slot.health = Health.DEAD
        if all(s.state == "failed" for s in self.pool._slots):
            # Nothing left to serve the handles: end the pool's block with the (first) error.
            if not self.pool._failed:
                self.pool._failed = True
                raise exc
            return
        async with self.pool._lock:
            await self.place_stranded()
            self.pool._notify()

    async def on_ready(self, slot: _Slot, conn: _Conn) -> None:
        async with self.pool._lock:
            now = trio.current_time()
            slot.conn = conn
            slot.state = "ready"
            slot.health = Health.HEALTHY
            slot.degraded_since = None
            slot.ready_at = now
            slot.last_message_at = None
            # Reconcile: the session subscribed to a snapshot of slot.symbols at connect time.
            want = self.pool._channels_for(slot.symbols)
            have = _client_subscriptions(conn.client)
            extra = {
                ch: set(syms) - want.get(ch, set())
                for ch, syms in have.items()
                if ch not in MIRRORED_CHANNELS
            }
            missing = {ch: syms - set(have.get(ch, ())) for ch, syms in want.items()}
            await self.pool._unsubscribe(slot, extra)
            await self.pool._subscribe(slot, missing)
            if slot.ready and slot.conn is conn:
                waiting = [s for s in slot.symbols if s not in self.pool._live]
                self.pool._emit_reconnected(waiting, slot.down_since_ns, slot.gens)
                for sym in waiting:
                    self.pool._live[sym] = slot.spec.index
                slot.schedule.reset()
                await self.place_stranded()
            self.pool._notify()

    async def on_lost(self, slot: _Slot, conn: _Conn) -> None:
        """A session ended: fail its symbols over unless that was planned (rotation)."""
        async with self.pool._lock:
            slot.state = "backoff"
            slot.health = Health.DEAD
            slot.degraded_since = None
            if conn.error is not None and not conn.retired:
                self.pool._record_error(slot, conn.error, "reconnect")
            if conn.retired:
                self.pool._notify()
                return
            slot.reconnects += 1
            slot.failovers += 1
            self.pool._failovers += 1
            slot.reconnect_times.append(trio.current_time())  # unplanned: counts for health
            gap_start = slot.down_since_ns = _gap_start(slot)
            for sym in slot.symbols:
                if self.pool._live.get(sym) == slot.spec.index:
                    del self.pool._live[sym]
            await self.move_off(slot, gap_start)
            self.pool._notify()

    async def move_off(self, slot: _Slot, gap_start_ns: int) -> None:
        """Move ``slot``'s symbols to healthy connections with room (lock held)."""
        if not slot.symbols:
            return
        loads = self.pool._loads()
        loads.pop(slot.spec.index, None)
        moves, _left = plan_failover(
            slot.symbols, loads, self.pool._eligible(exclude=slot.spec.index), self.pool._limit
        )
        if not moves:
            return
        for index, syms in moves.items():
            for sym in syms:
                self.pool._transfer(sym, slot.spec.index, index)
        results = await self.pool._subscribe_many(moves)
        now_live = [
            sym
            for index, ok in results.items()
            if ok
            for sym in moves[index]
            if self.pool._place.get(sym) == index
        ]
        self.pool._emit_reconnected(now_live, gap_start_ns, 1)
        for sym in now_live:
            self.pool._live[sym] = self.pool._place[sym]

    async def place_stranded(self) -> None:
        """Move symbols stuck on connections that are not ready onto ready ones (lock held)."""
        for slot in self.pool._slots:
            if not slot.ready and slot.symbols:
                await self.move_off(slot, slot.down_since_ns)


class _Upkeep:
    """The periodic work of a :class:`ConnectionPool`: health checks, rebalancing and
    rotation, all moving symbols with the one :meth:`migrate` sequence (make before break,
    in order, through the pool's handover table)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def sample(self, slot: _Slot, now: float) -> HealthSample:
        th = self.pool._thresholds
        while slot.error_times and slot.error_times[0] < now - th.error_window:
            slot.error_times.popleft()
        while slot.reconnect_times and slot.reconnect_times[0] < now - th.reconnect_window:
            slot.reconnect_times.popleft()
        conn = slot.conn
        connected = slot.ready and conn is not None and not conn.done.is_set()
        last = slot.last_message_at if slot.last_message_at is not None else slot.ready_at
        return HealthSample(
            connected=connected,
            rtt=self.pool._rtt(slot),
            silence=now - last,
            errors=len(slot.error_times),
            reconnects=len(slot.reconnect_times),
        )

    def check_health(self) -> None:
        now = trio.current_time()
        for slot in self.pool._slots:
            if not slot.ready:
                continue
            verdict = assess_health(self.sample(slot, now), self.pool._thresholds)
            if verdict is Health.DEGRADED and slot.degraded_since is None:
                slot.degraded_since = now
            elif verdict is not Health.DEGRADED:
                slot.degraded_since = None
            if verdict is not slot.health:
                slot.health = verdict
                self.pool._notify()
            others = self.pool._eligible(exclude=slot.spec.index)
            room = sum(max(0, self.pool._limit - len(self.pool._slots[i].symbols)) for i in others)
            if should_fail_over(
                verdict,
                slot.degraded_since,
                now,
                self.pool._thresholds,
                # Failing over a degraded connection only helps if it carries symbols and
                # healthy connections can take all of them.
                others_have_room=bool(others and slot.symbols) and room >= len(slot.symbols),
            ):
                conn = slot.conn
                if conn is not None:
                    conn.reason = f"failed over: connection {verdict.value}"
                    conn.scope.cancel()

    async def rebalance(self) -> None:
        async with self.pool._lock:
            eligible = self.pool._eligible()
            # Only symbols that are flowing move; a symbol in a gap stays with the failover.
            assignment = {
                i: {s for s in self.pool._slots[i].symbols if self.pool._live.get(s) == i}
                for i in eligible
            }
            moves = plan_rebalance(
                assignment, eligible, self.pool._limit, self.pool._rebalance_threshold
            )
            if not moves:
                return
            moved = await self.migrate({m.symbol: (m.source, m.target) for m in moves})
            self.pool._rebalance_moves += len(moved)
            self.pool._notify()

    async def migrate(self, moves: Mapping[str, tuple[int, int]]) -> dict[str, int]:
        """Move flowing symbols between ready connections, make before break and in order
        (``{symbol: (source, target)}``, lock held); return ``{symbol: target}`` of the moved.

        The one move sequence of rebalancing and of migrating rotations: the source keeps
        delivering while the target subscribes (the handover holds the target's messages);
        ownership switches; the source is unsubscribed and drained (a ``Reconnected`` if that
        may have lost data); the target's held messages are flushed.
        """
        by_target: dict[int, list[str]] = {}
        for sym, (_, target) in moves.items():
            by_target.setdefault(target, []).append(sym)
        self.pool._handover.begin(
            {
                sym: (self.pool._slots[s].conn, self.pool._slots[t].conn)
                for sym, (s, t) in moves.items()
            }
        )
        try:
            results = await self.pool._subscribe_many(by_target)
            moved: dict[str, int] = {}
            drop: dict[int, list[str]] = {}
            for sym, (source, target) in moves.items():
                if not results.get(target) or not self.pool._slots[target].ready:
                    continue
                if self.pool._place.get(sym) != source:
                    continue
                self.pool._transfer(sym, source, target)
                moved[sym] = target
                drop.setdefault(source, []).append(sym)

            async def release(source: _Slot, syms: list[str]) -> None:
                gap_start = _gap_start(source)
                if await self.release_from(source, source.conn, self.pool._channels_for(syms)):
                    self.pool._emit_reconnected(syms, gap_start, 1)  # the move may have lost data

            async with trio.open_nursery() as nursery:
                for index, syms in drop.items():
                    nursery.start_soon(release, self.pool._slots[index], syms)
            self.finish_handover(moved)
            return moved
        finally:
            self.pool._handover.abandon(moves)

    async def release_from(
        self, slot: _Slot, conn: _Conn | None, channels: Mapping[str, Iterable[str]]
    ) -> bool:
        """Unsubscribe ``channels`` on session ``conn`` and wait until everything it received
        before the acknowledgement has been routed (so a handover loses nothing in flight).

        Returns True if it did not get there (the session died, or a consumer is stuck):
        messages it had not delivered may be lost.
        """
        if conn is None or conn.client is None:
            return True
        position = await self.pool._change(slot, "unsubscribe", channels, session=conn)
        if position is None:
            return conn.done.is_set() and not conn.retired
        client = conn.client
        with trio.move_on_after(self.pool._client_timeout()):
            # Everything received before the acknowledgement has been routed once the session's
            # consumer loop came back for the next message.
            await _unless_ended(conn, lambda: client.wait_delivered(position))
        # Died before routing everything, or a consumer is stuck: data may be lost.
        return client.statistics().delivered_position < position

    def finish_handover(self, moved: Mapping[str, int]) -> None:
        """End the handovers of ``moved`` (symbol -> slot now delivering it): what the new
        session delivered meanwhile is flushed in order, without what the old one already did,
        by a task of its own (a slow consumer must not hold up the pool's lock)."""
        for sym, index in moved.items():
            handover = self.pool._handover.start_flush(sym)
            if handover is not None:
                self.pool._flushing[sym] = flushed = trio.Event()
                self.pool._nursery.start_soon(self.flush_handover, sym, index, handover, flushed)

    async def flush_handover(
        self, sym: str, index: int, handover: Handover, flushed: trio.Event
    ) -> None:
        target = self.pool._slots[index]
        try:
            while True:  # the new session keeps appending while we deliver
                more, msg = self.pool._handover.next_held(handover)
                if not more:
                    break
                if self.pool._live.get(sym) == index:
                    await self.pool._deliver(target, sym, msg)
        finally:
            self.pool._handover.end_flush(sym, handover, trio.current_time())
            if self.pool._flushing.get(sym) is flushed:
                del self.pool._flushing[sym]
            flushed.set()

    async def rotate_locked(self, slot: _Slot, *, allow_extra_session: bool = True) -> RotationMode:
        connected = {s.spec.index for s in self.pool._slots if s.ready}
        assignment = {s.spec.index: s.symbols for s in self.pool._slots}
        plan = plan_rotation(
            slot.spec.index,
            self.pool._specs,
            connected,
            self.pool._per_key if allow_extra_session else 1,
            assignment,
            self.pool._eligible(),
            self.pool._limit,
        )
        old = slot.conn
        assert old is not None
        if plan.mode is RotationMode.MAKE_BEFORE_BREAK:
            slot.gens += 1
            new = _Conn(slot.gens)
            moving = [s for s in slot.symbols if self.pool._live.get(s) == slot.spec.index]
            self.pool._handover.begin(dict.fromkeys(moving, (old, new)))
            try:
                try:
                    await self.pool._nursery.start(self.pool._sessions.run_session, slot, new)
                except TrioAlpacaError as exc:
                    # The server refused the extra session after all (e.g. 406): fall back to
                    # the single-session modes.
                    self.pool._record_error(slot, exc)
                    self.pool._handover.abandon(moving)
                    return await self.rotate_locked(slot, allow_extra_session=False)
                self.pool._rotations += 1
                slot.ready_at = trio.current_time()
                # The new session subscribed a snapshot of slot.symbols; top up later changes.
                have = _client_subscriptions(new.client)
                want = self.pool._channels_for(slot.symbols)
                slot.conn = new  # the new session owns the slot from here on
                await self.pool._subscribe(
                    slot, {ch: syms - set(have.get(ch, ())) for ch, syms in want.items()}
                )
                gap_start = _gap_start(slot)
                if await self.release_from(slot, old, self.pool._channels_for(moving)):
                    self.pool._emit_reconnected(
                        moving, gap_start, 1
                    )  # the switch may have lost data
                old.retired = True
                old.reason = "rotated (make before break)"
                old.scope.cancel()
                self.finish_handover(dict.fromkeys(moving, slot.spec.index))
            finally:
                self.pool._handover.abandon(moving)
        elif plan.mode is RotationMode.MIGRATE:
            self.pool._rotations += 1
            # Symbols in a gap stay: the new session resubscribes them (with a Reconnected).
            targets = {
                sym: index
                for index, syms in plan.moves.items()
                for sym in syms
                if self.pool._live.get(sym) == slot.spec.index
            }
            await self.migrate({sym: (slot.spec.index, i) for sym, i in targets.items()})
            # Anything that could not move stays and is resubscribed by the new session.
            slot.down_since_ns = time.time_ns()
            for sym in slot.symbols:
                self.pool._live.pop(sym, None)
            old.retired = True
            old.reason = "rotated (migrate)"
            old.scope.cancel()
        else:
            self.pool._rotations += 1
            slot.down_since_ns = time.time_ns()
            for sym in slot.symbols:
                self.pool._live.pop(sym, None)
            old.retired = True
            old.reason = "rotated (break before make)"
            old.scope.cancel()
        self.pool._notify()
        return plan.mode

    async def monitor(self) -> None:
        """Health checks, scheduled rotation and rebalancing, every ``health_check_interval``."""
        while True:
            await trio.sleep(self.pool._interval)
            self.check_health()
            if self.pool._rotation_interval is not None:
                now = trio.current_time()
                due = [
                    s
                    for s in self.pool._slots
                    if s.ready and now - s.ready_at >= self.pool._rotation_interval
                ]
                if due:
                    async with self.pool._lock:
                        slot = min(due, key=lambda s: s.ready_at)
                        if slot.ready:
                            await self.rotate_locked(slot)
            await self.rebalance()


def _gap_start(slot: _Slot) -> int:
    """Wall-clock ns since which ``slot``'s data may be missing if its session is lost now:
    when it last delivered anything (or now)."""
    now_ns = time.time_ns()
    if slot.last_message_at is None:
        return now_ns
    silent = max(0.0, trio.current_time() - slot.last_message_at)
    return now_ns - int(silent * 1e9)


def _root_cause(exc: TrioAlpacaError) -> TrioAlpacaError:
    """Unwrap a client's "gave up reconnecting" error to the error that ended the session."""
    if isinstance(exc, ReconnectLimitError) and isinstance(exc.last_error, TrioAlpacaError):
        return exc.last_error
    return exc


def _client_subscriptions(client: AlpacaWebSocketClient | None) -> dict[str, tuple[str, ...]]:
    if client is None:
        return {}
    return dict(client.subscriptions)


async def _unless_ended(conn: _Conn, fn: Callable[[], Awaitable[T]]) -> T | None:
    """``await fn()`` unless session ``conn`` ends first (then ``None``); errors of ``fn``
    propagate as themselves."""
    result: list[T] = []
    error: list[BaseException] = []

    async def call(cancel: trio.CancelScope) -> None:
        try:
            result.append(await fn())
        except Exception as exc:
            error.append(exc)
        cancel.cancel()

    async def watch(cancel: trio.CancelScope) -> None:
        await conn.done.wait()
        cancel.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, nursery.cancel_scope)
        nursery.start_soon(watch, nursery.cancel_scope)
    if error:
        raise error[0]
    return result[0] if result else None


# ----------------------------------------------------------------------------------------------
# open_pool
# ----------------------------------------------------------------------------------------------


def _resolve_credentials(
    api_key: str | None,
    api_secret: str | None,
    credentials: Sequence[Credentials | tuple[str, str]] | None,
) -> list[Credentials]:
    creds: list[Credentials] = []
    if api_key is not None or api_secret is not None:
        if not api_key or not api_secret:
            raise CredentialsError("pass both api_key and api_secret (or neither)")
        creds.append(Credentials(api_key, api_secret))
    for c in credentials or ():
        creds.append(c if isinstance(c, Credentials) else Credentials(c[0], c[1]))
    if not creds:
        key, secret = resolve_credentials(
            None, None, how="pass api_key=/api_secret= or credentials=[...]"
        )
        creds.append(Credentials(key, secret))
    keys = [c.api_key for c in creds]
    if len(set(keys)) != len(keys):
        raise PoolConfigError(
            "the same API key appears twice in the pool's credentials; the connection limit is "
            "per key, so list each key once and use max_connections_per_key instead"
        )
    return creds


async def _first_ready(pool: ConnectionPool, limit: float | None) -> None:
    """The first-connect policy of :func:`open_pool`: wait for the first ready connection at
    most ``limit`` seconds, then raise the last connection error (``None``: wait forever)."""
    with trio.move_on_after(math.inf if limit is None else limit) as scope:
        await pool._wait_first_ready()
    if not scope.cancelled_caught:
        return
    errors = [s.last_error for s in pool._slots if isinstance(s.last_error, TrioAlpacaError)]
    policy = f"no pool connection became ready within first_connect_timeout={limit:g} s"
    if any(s.ready for s in pool._slots):
        return  # ready, but another slot is still on its first attempt: go with what works
    if not errors:
        raise TransportError(f"{policy}; the first attempts were still in progress")
    err = errors[-1]
    if hasattr(err, "add_note"):  # Python 3.11+
        err.add_note(policy)
    logger.error("%s; last error: %s", policy, err)
    raise err


@asynccontextmanager
async def open_pool(
    api_key: str | None = None,
    api_secret: str | None = None,
    *,
    credentials: Sequence[Credentials | tuple[str, str]] | None = None,
    pool_size: int | None = None,
    max_subscriptions_per_connection: int = 200,
    max_connections_per_key: int = 1,
    feed: str = "iex",
    url: str | Sequence[str] | None = None,
    channels: Iterable[str] = ("trades", "quotes"),
    health: HealthThresholds | None = None,
    health_check_interval: float = 1.0,
    rebalance_threshold: int | None = None,
    rotation_interval: float | None = None,
    backoff: Backoff | None = None,
    handle_buffer_size: int = 10_000,
    handle_overflow: HandleOverflow = "block",
    first_connect_timeout: float | None = 30.0,
    options: StreamOptions | None = None,
    **client_options: Any,
) -> AsyncIterator[ConnectionPool]:
    """Open a pool of market data connections; leaving the block closes all of them.

    .. warning::

       Alpaca allows **one connection per API key per endpoint** on most plans; another
       session is refused with error 406 (and, after a network drop, the old session may keep
       counting for about 90 s). A pool of ``N`` connections therefore needs ``N`` keys (or
       endpoints, or a plan with more sessions per key, declared with
       ``max_connections_per_key``). A ``pool_size`` the credentials cannot support raises
       :class:`PoolConfigError` here, before anything connects.

    Args:
        api_key: API key id (or use ``credentials``); without either, the environment's
            ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``, then ``ALPACA_API_KEY`` /
            ``ALPACA_API_SECRET`` (the client's lookup).
        api_secret: API secret.
        credentials: further key pairs, as :class:`Credentials` or ``(key, secret)`` tuples.
        pool_size: number of connections; default: as many as the credentials, endpoints and
            ``max_connections_per_key`` allow.
        max_subscriptions_per_connection: most symbols on one connection (each symbol counts
            once, whatever its channels).
        max_connections_per_key: sessions your plan allows per key and endpoint (default 1).
        feed: the market data feed of every connection (``"iex"``, the default as for the
            client, ``"sip"``, ``"crypto/us"``, ...).
        url: one full stream URL, or several (each is a separate endpoint for the connection
            limit); default: the feed's URL.
        channels: default channels of handles (python or wire names); default trades and
            quotes. Each handle may choose its own with ``get_connection(channels=...)``.
        health: thresholds for healthy / degraded / dead (see :class:`HealthThresholds`).
        health_check_interval: seconds between health checks (also rotation / rebalance checks).
        rebalance_threshold: rebalance when healthy connections' loads differ by more than this
            many symbols; default 10 % of ``max_subscriptions_per_connection`` (at least 2).
        rotation_interval: rotate each connection after it has been up this many seconds
            (e.g. ``86400`` for daily); default never (call :meth:`ConnectionPool.rotate`).
        backoff: reconnect delays of dead slots (406 honours its floor); default
            :class:`~trioalpaca.backoff.Backoff`.
        handle_buffer_size: default per-handle buffer bound (messages).
        handle_overflow: default per-handle overflow policy, ``"block"`` or ``"drop_oldest"``.
        first_connect_timeout: the client's first-connect policy, for the pool: entering waits
            at most this many seconds for the first ready connection, then raises the last
            connection error (``None``: wait forever). A slot whose cause cannot heal (unknown
            host, TLS failure, HTTP 401/403/404) fails at its first attempt; every failed attempt
            is logged (``trioalpaca.pool``). Slots that have been up reconnect as before.
        options: the settings of every :class:`~trioalpaca.client.AlpacaWebSocketClient` the
            pool opens, as one frozen :class:`~trioalpaca.StreamOptions`.
        client_options: the same settings as keywords, when ``options`` is not given
            (``heartbeat_interval``, ``heartbeat_timeout``, ``staleness_timeout``,
            ``buffer_size``, ``overflow``, ``subscription_timeout``, ``encoding``,
            ``ssl_context`` (TLS settings for ``wss://``; a certificate that does not verify
            fails the slot with :class:`~trioalpaca.TLSError`, never retried), ...); an
            unknown name is refused with :class:`~trioalpaca.UsageError` before connecting.
            ``max_reconnect_attempts`` is managed by the pool and cannot be passed.

    Yields:
        The :class:`ConnectionPool`, once every connection made its first attempt and at least
        one is ready.

    Raises:
        PoolConfigError: impossible configuration (checked before connecting).
        CredentialsError: no credentials given or found in the environment.
        AlpacaServerError: every connection failed with a fatal error (e.g. 402 auth failed).
    """
    if "max_reconnect_attempts" in client_options:
        raise UsageError(
            "max_reconnect_attempts is managed by the pool (dead slots reconnect in the "
            "background with `backoff`)"
        )
    if client_options.pop("stream_type", "data") != "data":
        raise UsageError("pools carry market data streams only (stream_type='data')")
    if client_options.pop("raw_data", False):
        raise UsageError("pools deliver typed messages; raw_data=True is not supported")
    if options is not None and client_options:
        raise UsageError("pass the client settings either as options= or as keywords, not both")
    stream_options = options if options is not None else StreamOptions.from_kwargs(**client_options)
    creds = _resolve_credentials(api_key, api_secret, credentials)
    urls: list[str | None] = [url] if isinstance(url, str) or url is None else list(url)
    if not urls:
        raise PoolConfigError("url= must name at least one endpoint")
    if len(set(urls)) != len(urls):
        raise PoolConfigError(
            "the same URL appears twice in url=; the connection limit is per endpoint, so list "
            "each endpoint once"
        )
    if max_subscriptions_per_connection < 1:
        raise PoolConfigError("max_subscriptions_per_connection must be at least 1")
    if max_connections_per_key < 1:
        raise PoolConfigError("max_connections_per_key must be at least 1")
    if first_connect_timeout is not None and not first_connect_timeout > 0:
        raise PoolConfigError("first_connect_timeout must be positive or None")
    if health_check_interval <= 0:
        raise PoolConfigError("health_check_interval must be positive")
    size = pool_size if pool_size is not None else len(creds) * len(urls) * max_connections_per_key
    specs = plan_slots(size, len(creds), len(urls), max_connections_per_key)
    chans = frozenset(channel_to_wire(c) for c in channels)
    if not chans:
        raise PoolConfigError("channels must name at least one channel")
    threshold = (
        rebalance_threshold
        if rebalance_threshold is not None
        else default_rebalance_threshold(max_subscriptions_per_connection)
    )
    if threshold < 1:
        raise PoolConfigError("rebalance_threshold must be at least 1")

    with single_error():
        async with trio.open_nursery() as nursery:
            pool = ConnectionPool(
                nursery,
                credentials=creds,
                urls=urls,
                specs=specs,
                max_subscriptions_per_connection=max_subscriptions_per_connection,
                max_connections_per_key=max_connections_per_key,
                feed=feed,
                channels=chans,
                health=health if health is not None else HealthThresholds(),
                health_check_interval=health_check_interval,
                rebalance_threshold=threshold,
                rotation_interval=rotation_interval,
                backoff=backoff if backoff is not None else Backoff(),
                handle_buffer_size=handle_buffer_size,
                handle_overflow=handle_overflow,
                options=stream_options,
            )
            try:
                for slot in pool._slots:
                    nursery.start_soon(pool._sessions.supervise, slot)
                await _first_ready(pool, first_connect_timeout)
                nursery.start_soon(pool._upkeep.monitor)
                yield pool
            finally:
                pool._shutdown()
                nursery.cancel_scope.cancel()
