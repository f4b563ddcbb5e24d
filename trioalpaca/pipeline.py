"""MessageHandler: a bounded, symbol-affine, batching processing pipeline.

Shape of the pipeline::

    producers ──► intake ──► router ──┬─► lane 0 ──► worker 0 ──► processors (batched)
    (consume(),   (memory    (type +   ├─► lane 1 ──► worker 1 ──► ...
     send(),       channel)   symbol)  ├─► ...
     intake_channel())                 └─► control lane ──► control worker ──► "control" processor

* **Router.** Each message is classified by its channel (``type(msg).channel`` for typed
  messages, the ``T`` code for raw dicts) and routed to a worker lane chosen from its symbol:
  ``worker = crc32(symbol.encode()) % worker_count``. The hash is stable (the same symbol lands on
  the same worker in every run), so one worker owns each symbol. :meth:`MessageHandler.consume`
  routes inline (the stream itself is the intake, one hop less); :meth:`MessageHandler.send` and
  :meth:`MessageHandler.intake_channel` go through the intake memory channel and the router task.
* **Lanes** are bounded FIFO queues (``buffer_size`` messages each) with a named overflow
  policy per channel, see :data:`OverflowPolicy`: each is the library's one bounded buffer
  (``trioalpaca._buffer.MessageBuffer``, the client's too), so the policies are one
  implementation. They behave like memory channels (bounded, closable, ``EndOfChannel`` once
  closed and drained) but the router appends a whole received frame without per-message task
  bookkeeping, a worker is woken once per batch rather than per message, and ``drop_oldest``
  is O(1) (a memory channel cannot drop its head). This keeps the pipeline's cost per message
  well below the client's decoding cost (see the ``bench`` session).
* **Workers** take up to ``batch_size`` messages from their lane: the first message is awaited,
  then, if fewer than ``batch_size`` are queued, they wait up to ``batch_timeout`` seconds for a
  full batch before taking what is there. The batch is split by channel (order kept within each
  channel) and each part is handed to that channel's processor as a ``list``.
* **Control events** (``Reconnected``, ``Dropped``, ``SubscriptionChanged``, ``ServerError``, ...;
  channel ``"control"``) never share a lane with market data: they go, unbatched-by-time and never
  dropped, to a dedicated control worker that calls the ``"control"`` processor, or the ``"*"``
  processor when there is no ``"control"`` one. With neither registered, ``Reconnected``,
  ``Dropped`` and ``ServerError`` are logged as warnings (and every control event is counted), so
  a gap is never invisible. In every case they are counted in :meth:`MessageHandler.get_metrics`
  (``reconnects``, ``upstream_dropped``).

Ordering guarantee
------------------

For one symbol and one channel, processors see messages in the order the handler received them,
one batch at a time, never concurrently: the symbol's messages all go through one lane and one
worker, and a worker finishes a batch (including retries) before starting the next. Across
channels of the same symbol the order holds between batches; inside one batch each channel's
part is processed in order of the channel's first appearance in the batch. Different symbols on
different workers are processed concurrently. Drops (by the overflow policy) remove messages but
never reorder the rest. Messages without a symbol (e.g. trade updates use the order's symbol,
news their first symbol) follow the same rule with that key; keyless messages go to worker 0.

Errors
------

An exception from a processor is reported to the error handler
(:meth:`MessageHandler.set_error_handler`) as a :class:`ProcessingFailure`, or logged at ERROR
level with its traceback when no error handler is set. Then the :data:`ErrorPolicy` applies:
``"skip"`` drops the batch (counted as ``failed``), ``"retry"`` calls the processor again with
the same batch up to ``max_retries`` times with ``retry_backoff`` delays and then skips,
``"stop"`` ends the handler with :class:`ProcessorError`.
The worker keeps running in the first two cases. Cancellation is never caught.
"""

from __future__ import annotations

import inspect
import logging
import math
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Hashable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, get_args

import trio

from trioalpaca._buffer import MessageBuffer
from trioalpaca._errors import TrioAlpacaError, UsageError
from trioalpaca._groups import single_error
from trioalpaca._handlers import _T_TO_CHANNEL as _ALL_T_TO_CHANNEL
from trioalpaca._handlers import ErrorHandler, ErrorReport, handler_name
from trioalpaca.backoff import Backoff
from trioalpaca.endpoints import channel_to_wire
from trioalpaca.metrics import LatencyHistogram, RateMeter
from trioalpaca.models import (
    Dropped,
    Listening,
    Reconnected,
    ServerError,
    TradeUpdate,
)

__all__ = [
    "ErrorHandler",
    "ErrorPolicy",
    "MessageHandler",
    "OverflowPolicy",
    "ProcessingFailure",
    "Processor",
    "ProcessorError",
    "open_message_handler",
]

logger = logging.getLogger("trioalpaca.pipeline")

OverflowPolicy = Literal["block", "drop_oldest", "drop_newest", "conflate"]
"""The subset of :data:`trioalpaca.OverflowPolicy` the pipeline accepts: what a full lane does
with a new message.

* ``"block"`` -- wait for room (backpressure reaches the producer; with
  :meth:`MessageHandler.consume` the client's own buffer then absorbs it under the client's
  overflow policy).
* ``"drop_oldest"`` -- discard the oldest queued message of the lane to make room.
* ``"drop_newest"`` -- discard the new message.
* ``"conflate"`` -- per channel only, for latest-value channels (quotes, bars, statuses, LULDs,
  imbalances, pricing): keep at most one queued message per symbol and replace its content with
  the newest one, so a worker that falls behind processes the latest quote instead of a backlog.
  The replaced message counts as dropped and conflated. When the lane is full anyway, the
  default (``"*"``) policy applies.
"""

ErrorPolicy = Literal["skip", "retry", "stop"]
"""What to do after a processor raised (skip the batch, retry it, or stop the handler)."""

Processor = Callable[[list[Any]], Any]
"""Signature of a processor, called with a ``list`` of messages of one channel; may be ``async``
(awaited) or a plain function."""

_OVERFLOW_POLICIES = frozenset(get_args(OverflowPolicy))
_ERROR_POLICIES = frozenset(get_args(ErrorPolicy))
#: Channels whose messages are "latest value per symbol" and may be conflated.
CONFLATABLE_CHANNELS = frozenset(
    {"quotes", "bars", "dailyBars", "updatedBars", "statuses", "lulds", "imbalances", "pricing"}
)
_SPECIAL_KINDS = frozenset({"*", "control"})
#: Raw-dict ``T`` codes to channels (a plain dict, looked up per message). Trading-stream messages
#: carry ``stream`` instead of ``T``, so their wire types are left out.
_T_TO_CHANNEL: dict[str, str] = {
    t: ch
    for t, ch in _ALL_T_TO_CHANNEL.items()
    if t not in (TradeUpdate.wire_type, Listening.wire_type)
}
_SYMBOL_CACHE_MAX = 200_000


class ProcessorError(TrioAlpacaError):
    """A processor failed under the ``"stop"`` error policy; the handler stopped.

    The processor's exception is the ``__cause__``; the ``failure`` attribute has the details.
    """

    def __init__(self, failure: ProcessingFailure) -> None:
        self.failure = failure
        super().__init__(
            f"processor for {failure.kind!r} raised {type(failure.error).__name__} on a batch of "
            f"{len(failure.batch)} message(s) (error_policy='stop'; use 'skip' or 'retry' to "
            "keep the handler running)"
        )


ProcessingFailure = ErrorReport
"""What the pipeline's error handler receives: an :class:`~trioalpaca.ErrorReport` with
``component="pipeline"``, ``kind`` (the channel whose processor raised), ``batch``, ``attempt``
and ``action`` (``"retry"``, ``"skip"`` or ``"stop"``). The old name of the shared class."""


class _TypeStats:
    __slots__ = (
        "batches",
        "conflated",
        "count",
        "dropped",
        "errors",
        "failed",
        "latency",
        "processed",
        "rate",
        "received",
        "unhandled",
    )

    def __init__(self, window_s: float) -> None:
        self.received = 0
        self.count = 0
        self.processed = 0
        self.batches = 0
        self.dropped = 0
        self.conflated = 0
        self.unhandled = 0
        self.errors = 0
        self.failed = 0
        self.rate = RateMeter(window_s)
        self.latency = LatencyHistogram()


class _Lane(MessageBuffer):
    """The bounded queue feeding one worker: a :class:`~trioalpaca._buffer.MessageBuffer` whose
    own policy is the handler's default (``"*"``) policy and whose discards are counted per
    channel (``keep_discards``: the handler settles its ``discards`` / ``replaced`` lists after
    each routed batch) instead of a ``Dropped`` marker.

    The router offers each message under its channel's policy (``conflate`` with the key
    ``(channel, symbol)``), or appends it directly while there is room (the hot path), and wakes
    the worker once per routed batch (:meth:`notify`); the worker takes batches with
    :meth:`get_full_batch`. Blocked producers wait for room (``low_water`` one below the bound).
    """

    __slots__ = ("batches", "index")

    def __init__(
        self,
        index: int,
        capacity: int,
        policy: OverflowPolicy,
    ) -> None:
        super().__init__(capacity, policy, where="lane", low_water=capacity - 1, keep_discards=True)
        self.index = index
        self.batches = 0

    @property
    def capacity(self) -> int:
        """Most queued messages."""
        return self.maxsize


#: A message that found its lane full under ``block``: the lane, its policy, its conflation key.
_Blocked = tuple[_Lane, OverflowPolicy, Hashable | None]


def _channel_of(msg: Any) -> str:
    if type(msg) is dict:
        t = msg.get("T")
        if t is not None:
            return _T_TO_CHANNEL.get(t, "unknown")
        stream = msg.get("stream")
        return stream if isinstance(stream, str) else "unknown"
    ch = getattr(type(msg), "channel", None)
    return ch if isinstance(ch, str) else "unknown"


def _key_of(msg: Any) -> str:
    if type(msg) is dict:
        s = msg.get("S")
        if isinstance(s, str):
            return s
        syms = msg.get("symbols")
        if isinstance(syms, list) and syms and isinstance(syms[0], str):
            return syms[0]
        data = msg.get("data")
        if isinstance(data, dict):
            order = data.get("order")
            if isinstance(order, dict) and isinstance(order.get("symbol"), str):
                return str(order["symbol"])
        return ""
    s = getattr(msg, "symbol", None)
    if isinstance(s, str):
        return s
    syms = getattr(msg, "symbols", None)
    if isinstance(syms, tuple) and syms and isinstance(syms[0], str):
        return syms[0]
    order = getattr(msg, "order", None)
    if isinstance(order, dict) and isinstance(order.get("symbol"), str):
        return str(order["symbol"])
    return ""


def _normalize_kind(kind: str) -> str:
    if kind in _SPECIAL_KINDS:
        return kind
    return channel_to_wire(kind)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


class MessageHandler:
    """A processing pipeline: intake → router → bounded per-worker lanes → batching workers.

    Use :func:`open_message_handler` (``async with``), or construct it and start it in your own
    nursery with ``await nursery.start(handler.serve)``. See the module documentation for the
    ordering guarantee, overflow and error policies.

    Args:
        buffer_size: capacity of each worker lane, of the control lane and of the intake channel,
            in messages (>= 1).
        batch_size: most messages per processor call (>= 1).
        batch_timeout: seconds a worker waits, after the first message of a batch, for more
            messages before processing a partial batch (>= 0; 0 = take what is queued now).
        worker_count: number of worker tasks (>= 1).
        overflow: one :data:`OverflowPolicy` for every channel, or a mapping from channel name
            (either spelling, ``"daily_bars"`` or ``"dailyBars"``) to policy, with ``"*"`` for the
            default (``"block"`` if absent). ``"conflate"`` only per latest-value channel.
        error_policy: :data:`ErrorPolicy` applied when a processor raises.
        max_retries: retries per batch under ``error_policy="retry"``.
        retry_backoff: delay schedule between retries (a fresh schedule per batch).
        rate_window: seconds of the sliding window behind the ``rate`` metrics.
    """

    def __init__(
        self,
        *,
        buffer_size: int = 10_000,
        batch_size: int = 100,
        batch_timeout: float = 0.01,
        worker_count: int = 4,
        overflow: OverflowPolicy | Mapping[str, OverflowPolicy] = "block",
        error_policy: ErrorPolicy = "skip",
        max_retries: int = 3,
        retry_backoff: Backoff | None = None,
        rate_window: float = 10.0,
    ) -> None:
        if buffer_size < 1:
            raise UsageError(f"buffer_size must be >= 1, got {buffer_size!r}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size!r}")
        if not (batch_timeout >= 0 and math.isfinite(batch_timeout)):
            raise UsageError(f"batch_timeout must be a finite number >= 0, got {batch_timeout!r}")
        if worker_count < 1:
            raise UsageError(f"worker_count must be >= 1, got {worker_count!r}")
        if error_policy not in _ERROR_POLICIES:
            raise UsageError(
                f"error_policy must be one of {sorted(_ERROR_POLICIES)}, got {error_policy!r}"
            )
        if max_retries < 0:
            raise UsageError(f"max_retries must be >= 0, got {max_retries!r}")
        self.buffer_size = buffer_size
        """Capacity of each lane and of the intake channel."""
        self.batch_size = batch_size
        """Most messages per processor call."""
        self.batch_timeout = float(batch_timeout)
        """Seconds to wait for a fuller batch after its first message."""
        self.worker_count = worker_count
        """Number of data workers (the control worker comes on top)."""
        self.error_policy: ErrorPolicy = error_policy
        """Policy applied when a processor raises."""
        self.max_retries = max_retries
        """Retries per batch under the ``"retry"`` policy."""
        self.retry_backoff = (
            retry_backoff
            if retry_backoff is not None
            else Backoff(initial=0.1, multiplier=2.0, cap=5.0, jitter="none")
        )
        """Delay schedule between retries."""
        self._default_policy, self._policies = self._parse_overflow(overflow)
        self._conflated = frozenset(ch for ch, pol in self._policies.items() if pol == "conflate")
        self._rate_window = rate_window
        policy = self._default_policy
        self._lanes = [_Lane(i, buffer_size, policy) for i in range(worker_count)]
        self._control = _Lane(-1, buffer_size, "block")
        self._intake_send, self._intake_recv = trio.open_memory_channel[Any](buffer_size)
        self._processors: dict[str, Processor] = {}
        self._error_handler: ErrorHandler | None = None
        self._stats: dict[str, _TypeStats] = {}
        #: symbol -> its worker's lane (cache of crc32(symbol) % worker_count)
        self._lane_of: dict[str, _Lane] = {}
        #: hot-path cache: message class -> (stats, overflow policy, channel)
        self._fast: dict[type, tuple[_TypeStats, OverflowPolicy, str]] = {}
        #: the same for raw dicts, keyed by their ``T`` code
        self._fast_raw: dict[str, tuple[_TypeStats, OverflowPolicy, str]] = {}
        self._class_channel: dict[type, str] = {}
        self._reconnects = 0
        self._upstream_dropped = 0
        self._handler_errors = 0
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ configuration

    @staticmethod
    def _parse_overflow(
        overflow: OverflowPolicy | Mapping[str, OverflowPolicy],
    ) -> tuple[OverflowPolicy, dict[str, OverflowPolicy]]:
        if isinstance(overflow, str):
            if overflow == "conflate":
                raise UsageError(
                    "overflow='conflate' must be set per channel, e.g. "
                    "overflow={'quotes': 'conflate', '*': 'drop_oldest'}"
                )
            if overflow not in _OVERFLOW_POLICIES:
                raise UsageError(
                    f"overflow must be one of {sorted(_OVERFLOW_POLICIES)}, got {overflow!r}"
                )
            return overflow, {}
        default: OverflowPolicy = "block"
        per: dict[str, OverflowPolicy] = {}
        for name, policy in overflow.items():
            if policy not in _OVERFLOW_POLICIES:
                raise UsageError(
                    f"overflow policy for {name!r} must be one of {sorted(_OVERFLOW_POLICIES)}, "
                    f"got {policy!r}"
                )
            if name == "*":
                if policy == "conflate":
                    raise UsageError("the default ('*') overflow policy cannot be 'conflate'")
                default = policy
                continue
            if name == "control":
                raise UsageError("control events are never dropped; no overflow policy for them")
            ch = channel_to_wire(name)
            if policy == "conflate" and ch not in CONFLATABLE_CHANNELS:
                raise UsageError(
                    f"cannot conflate {ch!r}: only latest-value channels can be conflated "
                    f"({', '.join(sorted(CONFLATABLE_CHANNELS))})"
                )
            per[ch] = policy
        return default, per

    def register_processor(self, kind: str, processor: Processor) -> None:
        """Register ``processor`` for messages of channel ``kind``.

        ``kind`` is a channel name in either spelling (``"trades"``, ``"daily_bars"``,
        ``"dailyBars"``, ``"trade_updates"``, ...), ``"control"`` for control events, or ``"*"``
        for every message without a more specific processor (control events included when no
        ``"control"`` processor exists). Registering a second processor for the same kind raises
        :class:`~trioalpaca.UsageError` (unregister first); registries never replace silently.
        Messages of a kind with no processor are counted as ``unhandled`` and discarded.
        Registration may happen while messages flow.
        """
        key = _normalize_kind(kind)
        if key in self._processors:
            raise UsageError(
                f"a processor for {key!r} is already registered; call unregister_processor first"
            )
        self._processors[key] = processor
        self._fast.clear()
        self._fast_raw.clear()
        if key not in _SPECIAL_KINDS:
            self._stats_for(key)  # list it in get_metrics() right away

    def unregister_processor(self, kind: str) -> None:
        """Remove the processor for ``kind`` (``KeyError`` if none is registered)."""
        del self._processors[_normalize_kind(kind)]
        self._fast.clear()
        self._fast_raw.clear()

    def set_error_handler(self, handler: ErrorHandler | None) -> None:
        """Set the function called with an :class:`~trioalpaca.ErrorReport` (``component=
        "pipeline"``) when a processor raises.

        It may be ``async``. Exceptions raised by the error handler itself are logged with their
        traceback and counted (``error_handler_errors``); they never stop the worker. ``None``
        restores the default (log at ERROR level with the traceback).
        """
        self._error_handler = handler

    # ------------------------------------------------------------------ lifecycle

    async def serve(
        self, *, task_status: trio.TaskStatus[MessageHandler] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the router and worker tasks until :meth:`close` has drained them, or cancelled.

        For ``await nursery.start(handler.serve)``; reports the handler itself as started value.
        Raises :class:`ProcessorError` under ``error_policy="stop"``.
        """
        if self._started:
            raise UsageError("a MessageHandler can only be run once")
        self._started = True
        with single_error():
            async with trio.open_nursery() as nursery:
                for lane in self._lanes:
                    nursery.start_soon(self._worker, lane, self.batch_timeout)
                nursery.start_soon(self._worker, self._control, 0.0)
                nursery.start_soon(self._router)
                task_status.started(self)

    async def run(
        self, *, task_status: trio.TaskStatus[MessageHandler] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The original name of :meth:`serve` (``await nursery.start(handler.run)``); kept as
        an alias, same behaviour."""
        await self.serve(task_status=task_status)

    def close(self) -> None:
        """Stop accepting messages; workers finish everything already queued, then :meth:`serve`
        returns. Idempotent. Clones from :meth:`intake_channel` must be closed too."""
        if self._closed:
            return
        self._closed = True
        self._intake_send.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # ------------------------------------------------------------------ intake

    def intake_channel(self) -> trio.MemorySendChannel[Any]:
        """Return a new clone of the intake memory channel's send side (close it when done).

        Messages sent there are routed by the handler's router task. Use it when several
        producers feed one handler; :meth:`consume` routes inline instead.
        """
        if self._closed:
            raise trio.ClosedResourceError("the MessageHandler is closed")
        return self._intake_send.clone()

    async def send(self, message: Any) -> None:
        """Put one message into the intake channel (waits while the intake is full)."""
        await self._intake_send.send(message)

    async def consume(self, stream: AsyncIterable[Any]) -> None:
        """Route every message of ``stream`` (e.g. an ``open_stream`` client)
        into the lanes until the stream ends.

        Routing happens in the calling task, one hop shorter than :meth:`send`. Streams with a
        ``receive_batch()`` method (the client) are drained a buffered batch at a time. Under the
        ``"block"`` overflow policy this waits while the target lane is full, which holds the
        stream back (the client's own buffer and overflow policy take over).
        """
        if self._closed:
            raise trio.ClosedResourceError("the MessageHandler is closed")
        receive_batch = getattr(stream, "receive_batch", None)
        if callable(receive_batch):
            # Fast path for AlpacaWebSocketClient: take everything buffered at once.
            while True:
                try:
                    msgs = await receive_batch()
                except trio.EndOfChannel:
                    return
                await self._route_all(msgs)
        async for msg in stream:
            await self._route_all((msg,))

    async def _route_all(self, msgs: Iterable[Any]) -> None:
        if self._lanes[0].closed:
            raise trio.ClosedResourceError("the MessageHandler is closed")
        # The hot path: this loop runs once per message. Typed market data (by class) and raw
        # market data dicts (by T code) with a processor and a non-conflating policy take the
        # fast branch; everything else goes through _put_slow (which fills the fast tables).
        fast = self._fast
        fast_raw = self._fast_raw
        lane_of = self._lane_of
        for msg in msgs:
            f = fast.get(type(msg))
            if f is not None:
                key = msg.symbol
            elif type(msg) is dict and (f := fast_raw.get(msg.get("T", ""))) is not None:
                key = msg.get("S")
                if type(key) is not str:
                    key = ""
            else:
                blocked = self._put_slow(msg)
                if blocked is not None:
                    self._notify_all()
                    await self._put_blocking(blocked, msg)
                continue
            lane = lane_of.get(key) or self._lane_for(key)
            f[0].received += 1
            q = lane.q
            if len(q) < lane.maxsize:
                # offer() while there is room, inlined (lanes keep no delivery positions: the
                # count of appended items is left alone here, nobody waits on a lane position)
                q.append(msg)
                continue
            if f[1] == "drop_newest":  # offer()'s cheapest outcome, inlined as well
                lane.dropped_total += 1
                f[0].dropped += 1
            elif not lane.offer(msg, f[1]):
                self._notify_all()
                await self._put_blocking((lane, f[1], None), msg)
        self._notify_all()

    def _notify_all(self) -> None:
        for lane in self._lanes:
            if lane.discards or lane.replaced:
                self._settle(lane)
            if lane.q:
                lane.notify()
        if self._control.q:
            self._control.notify()

    async def _router(self) -> None:
        try:
            async with self._intake_recv:
                while True:
                    try:
                        first = await self._intake_recv.receive()
                    except trio.EndOfChannel:
                        break
                    msgs = [first]
                    # take what else is queued without waiting, then route it all at once
                    while len(msgs) < 1000:
                        try:
                            msgs.append(self._intake_recv.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._route_all(msgs)
        finally:
            for lane in self._lanes:
                lane.close()
            self._control.close()

    def _stats_for(self, channel: str) -> _TypeStats:
        st = self._stats.get(channel)
        if st is None:
            st = self._stats[channel] = _TypeStats(self._rate_window)
        return st

    def _lane_for(self, key: str) -> _Lane:
        lane = self._lane_of.get(key)
        if lane is None:
            if len(self._lane_of) >= _SYMBOL_CACHE_MAX:
                self._lane_of.clear()
            lane = self._lane_of[key] = self._lanes[self.worker_for(key)]
        return lane

    def worker_for(self, symbol: str) -> int:
        """Return the index of the worker that owns ``symbol`` (stable across runs)."""
        return zlib.crc32(symbol.encode()) % self.worker_count

    def _put_slow(self, msg: Any) -> _Blocked | None:
        channel = _channel_of(msg)
        procs = self._processors
        st = self._stats_for(channel)
        cls = type(msg)
        if channel == "control":
            if cls is dict:
                t = msg.get("T")
                if t == "reconnected":
                    self._reconnects += 1
                elif t == "dropped":
                    self._upstream_dropped += int(msg.get("count", 0))
                notable = t in ("reconnected", "dropped", "error")
            else:
                if cls is Reconnected:
                    self._reconnects += 1
                elif cls is Dropped:
                    self._upstream_dropped += msg.count
                notable = cls in (Reconnected, Dropped, ServerError)
            if "control" not in procs and "*" not in procs:
                st.unhandled += 1
                if notable:
                    logger.warning(
                        "unhandled control event (register a 'control' processor): %r", msg
                    )
                return None
            st.received += 1
            lane = self._control
            if lane.offer(msg):
                return None
            return (lane, "block", None)  # control events are never dropped: wait for room
        if channel not in procs and "*" not in procs:
            st.unhandled += 1
            return None
        key = _key_of(msg)
        lane = self._lane_for(key)
        st.received += 1
        policy = self._policies.get(channel, self._default_policy)
        if (
            cls is not dict
            and policy != "conflate"
            and isinstance(getattr(msg, "symbol", None), str)
        ):
            # Remember this class for the hot path (cleared when processors change).
            self._fast[cls] = (st, policy, channel)
        elif (
            cls is dict
            and policy != "conflate"
            and type(msg.get("T")) is str
            and type(msg.get("S")) is str
        ):
            self._fast_raw[msg["T"]] = (st, policy, channel)
        pkey = (channel, key) if policy == "conflate" else None
        if lane.offer(msg, policy, pkey):
            return None
        return (lane, policy, pkey)  # full under block: the caller waits for room

    def _channel(self, msg: Any) -> str:
        cls = type(msg)
        if cls is dict:
            return _channel_of(msg)
        ch = self._class_channel.get(cls)
        if ch is None:
            ch = self._class_channel[cls] = _channel_of(msg)
        return ch

    def _settle(self, lane: _Lane) -> None:
        """Count what ``lane``'s policies discarded since the last call, per channel."""
        fast = self._fast
        discards = lane.discards
        assert discards is not None
        for msg in discards:
            f = fast.get(type(msg))
            st = f[0] if f is not None else self._stats_for(self._channel(msg))
            st.dropped += 1
        discards.clear()
        chans = self._class_channel
        stats = self._stats
        for msg in lane.replaced:
            ch = chans.get(type(msg))
            cst = stats.get(ch) if ch is not None else None
            if cst is None:
                cst = self._stats_for(self._channel(msg))
            cst.dropped += 1
            cst.conflated += 1
        lane.replaced.clear()

    async def _put_blocking(self, blocked: _Blocked, msg: Any) -> None:
        lane, policy, pkey = blocked
        offered = False
        try:
            while not lane.closed:
                if lane.offer(msg, policy, pkey):
                    offered = True
                    break
                await lane.wait_for_space()
        finally:
            if not offered:  # closed or cancelled while waiting
                self._stats_for(_channel_of(msg)).dropped += 1
        if not offered:
            raise trio.ClosedResourceError("the MessageHandler is closed")
        if lane.replaced:
            self._settle(lane)
        lane.notify()

    # ------------------------------------------------------------------ workers

    async def _worker(self, lane: _Lane, wait_s: float) -> None:
        size = self.batch_size
        while True:
            try:
                batch = await lane.get_full_batch(size, wait_s)
            except trio.EndOfChannel:
                return
            lane.batches += 1
            await self._dispatch(lane, batch)

    async def _dispatch(self, lane: _Lane, batch: list[Any]) -> None:
        groups: dict[str, list[Any]] = {}
        chans = self._class_channel
        # Group by class (one dict operation per message), then name the channels. (The lane
        # already gave conflated messages their latest content.)
        by_cls: dict[type, list[Any]] = {}
        for msg in batch:
            try:
                by_cls[type(msg)].append(msg)
            except KeyError:
                by_cls[type(msg)] = [msg]
        if dict not in by_cls:
            for cls, group in by_cls.items():
                ch = chans.get(cls)
                if ch is None:
                    ch = chans[cls] = _channel_of(group[0])
                if ch in groups:  # two classes on one channel: keep arrival order
                    groups = {}
                    break
                groups[ch] = group
        if not groups:
            for msg in batch:
                cls = type(msg)
                ch = chans.get(cls)
                if ch is None:
                    ch = _channel_of(msg)
                    if cls is not dict:
                        chans[cls] = ch
                grp = groups.get(ch)
                if grp is None:
                    groups[ch] = [msg]
                else:
                    grp.append(msg)
        now = trio.current_time()
        for ch, group in groups.items():
            st = self._stats_for(ch)
            n = len(group)
            st.count += n
            st.rate.add(n, now)
            proc = self._processors.get(ch)
            if proc is None:
                proc = self._processors.get("*")
            if proc is None:
                st.unhandled += n
                continue
            await self._call(ch, st, proc, group)

    async def _call(self, kind: str, st: _TypeStats, proc: Processor, group: list[Any]) -> None:
        attempt = 0
        schedule = None
        while True:
            attempt += 1
            t0 = trio.current_time()
            try:
                result = proc(group)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                st.errors += 1
                action: Literal["retry", "skip", "stop"]
                if self.error_policy == "stop":
                    action = "stop"
                elif self.error_policy == "retry" and attempt <= self.max_retries:
                    action = "retry"
                else:
                    action = "skip"
                failure = ErrorReport(
                    exception=exc,
                    component="pipeline",
                    handler=handler_name(proc),
                    message=group[0] if group else None,
                    batch=tuple(group),
                    kind=kind,
                    attempt=attempt,
                    action=action,
                )
                await self._report(failure)
                if action == "stop":
                    st.failed += len(group)
                    raise ProcessorError(failure) from exc
                if action == "skip":
                    st.failed += len(group)
                    return
                if schedule is None:
                    schedule = self.retry_backoff.schedule()
                await trio.sleep(schedule.next_delay())
            else:
                st.latency.record(trio.current_time() - t0)
                st.processed += len(group)
                st.batches += 1
                return

    async def _report(self, failure: ProcessingFailure) -> None:
        handler = self._error_handler
        if handler is None:
            logger.error(
                "processor for %r failed (attempt %d, next: %s) on %d message(s)",
                failure.kind,
                failure.attempt,
                failure.action,
                len(failure.batch),
                exc_info=failure.error,
            )
            return
        try:
            await _maybe_await(handler(failure))
        except Exception:
            self._handler_errors += 1
            logger.exception("the pipeline error handler raised while handling %r", failure.error)

    # ------------------------------------------------------------------ metrics

    def get_metrics(self, now: float | None = None) -> dict[str, Any]:
        """Return a snapshot of the pipeline's counters as plain dicts.

        ``now`` defaults to :func:`trio.current_time` (so call it inside ``trio.run``).

        Layout::

            {
              "by_type": {<channel>: {
                  "received", "count", "rate", "processed", "batches", "dropped", "conflated",
                  "unhandled", "errors", "failed", "queue_depth",
                  "latency_p50", "latency_p99", "latency_mean", "latency_max"}},
              "total": {same keys, summed; latency over all channels},
              "workers": [{"queue_depth", "capacity", "batches"}, ...],
              "control": {"queue_depth", "batches"},
              "reconnects", "upstream_dropped", "error_handler_errors",
            }

        ``received``: messages routed to a lane; ``count``: messages handed to processors (``rate``
        is its sliding-window rate, msgs/s); ``processed``: messages in batches that succeeded;
        ``dropped``: removed by an overflow policy (``conflated`` included); ``unhandled``: no
        processor registered; ``errors``: processor calls that raised; ``failed``: messages in
        batches given up; latencies are processor call durations per batch, in seconds.
        ``queue_depth`` per channel is ``received - count - dropped`` (in a lane, or waiting for
        room under ``"block"``); the lanes' own depths are under ``workers`` and ``control``.
        """
        t = trio.current_time() if now is None else now
        for lane in self._lanes:
            if lane.discards or lane.replaced:
                self._settle(lane)
        by_type = {ch: self._stats_dict([st], t) for ch, st in self._stats.items()}
        return {
            "by_type": by_type,
            "total": self._stats_dict(list(self._stats.values()), t),
            "workers": [
                {
                    "queue_depth": len(lane.q),
                    "capacity": lane.capacity,
                    "batches": lane.batches,
                }
                for lane in self._lanes
            ],
            "control": {
                "queue_depth": len(self._control.q),
                "batches": self._control.batches,
            },
            "reconnects": self._reconnects,
            "upstream_dropped": self._upstream_dropped,
            "error_handler_errors": self._handler_errors,
        }

    @staticmethod
    def _stats_dict(stats: list[_TypeStats], now: float) -> dict[str, Any]:
        hist = (
            stats[0].latency
            if len(stats) == 1
            else LatencyHistogram.merged(s.latency for s in stats)
        )
        return {
            "received": sum(s.received for s in stats),
            "count": sum(s.count for s in stats),
            "rate": sum(s.rate.rate(now) for s in stats),
            "processed": sum(s.processed for s in stats),
            "batches": sum(s.batches for s in stats),
            "dropped": sum(s.dropped for s in stats),
            "conflated": sum(s.conflated for s in stats),
            "unhandled": sum(s.unhandled for s in stats),
            "errors": sum(s.errors for s in stats),
            "failed": sum(s.failed for s in stats),
            "queue_depth": sum(s.received - s.count - s.dropped for s in stats),
            "latency_p50": hist.percentile(50),
            "latency_p99": hist.percentile(99),
            "latency_mean": hist.mean,
            "latency_max": hist.max if hist.count else 0.0,
        }


@asynccontextmanager
async def open_message_handler(
    *,
    buffer_size: int = 10_000,
    batch_size: int = 100,
    batch_timeout: float = 0.01,
    worker_count: int = 4,
    overflow: OverflowPolicy | Mapping[str, OverflowPolicy] = "block",
    error_policy: ErrorPolicy = "skip",
    max_retries: int = 3,
    retry_backoff: Backoff | None = None,
    rate_window: float = 10.0,
) -> AsyncIterator[MessageHandler]:
    """Run a :class:`MessageHandler` for the duration of an ``async with`` block.

    On normal exit of the block the handler is closed and the block waits until every queued
    message has been processed (wrap in :func:`trio.move_on_after` to bound that). If the
    block raises, the workers are cancelled. A :class:`ProcessorError` (``error_policy="stop"``)
    or an exception from the block leaves as itself, not wrapped in an exception group.

    Arguments are those of :class:`MessageHandler`::

        async with open_message_handler(buffer_size=10_000, batch_size=100, worker_count=4) as h:
            h.register_processor("trades", process_trades)
            async with open_stream(trades=["*"]) as stream:
                await h.consume(stream)
    """
    handler = MessageHandler(
        buffer_size=buffer_size,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        worker_count=worker_count,
        overflow=overflow,
        error_policy=error_policy,
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        rate_window=rate_window,
    )
    with single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(handler.serve)
            try:
                yield handler
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            handler.close()
