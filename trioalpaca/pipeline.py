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
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, get_args

import trio

from trioalpaca._errors import TrioAlpacaError, UsageError
from trioalpaca._groups import single_error
from trioalpaca._handlers import ErrorHandler, ErrorReport, handler_name
from trioalpaca._pipeline_router import Lane, Router
from trioalpaca._pipeline_router import _channel_of as _channel_of  # manager.py imports it here
from trioalpaca._pipeline_stats import ChannelStats, PipelineStats
from trioalpaca.backoff import Backoff
from trioalpaca.endpoints import channel_to_wire

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


def _normalize_kind(kind: str) -> str:
    if kind in _SPECIAL_KINDS:
        return kind
    return channel_to_wire(kind)


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
        default_policy, policies = _parse_overflow(overflow)
        self._intake_send, self._intake_recv = trio.open_memory_channel[Any](buffer_size)
        self._processors: dict[str, Processor] = {}
        self._error_handler: ErrorHandler | None = None
        #: every counter (trioalpaca._pipeline_stats)
        self._stats = PipelineStats(rate_window)
        #: lanes, lane selection, overflow policies (trioalpaca._pipeline_router)
        self._router = Router(
            worker_count=worker_count,
            buffer_size=buffer_size,
            default_policy=default_policy,
            policies=policies,
            processors=self._processors,
            stats=self._stats,
        )
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ configuration

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
        self._router.forget()
        if key not in _SPECIAL_KINDS:
            self._stats.for_channel(key)  # list it in get_metrics() right away

    def unregister_processor(self, kind: str) -> None:
        """Remove the processor for ``kind`` (``KeyError`` if none is registered)."""
        del self._processors[_normalize_kind(kind)]
        self._router.forget()

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
                for lane in self._router.lanes:
                    nursery.start_soon(self._worker, lane, self.batch_timeout)
                nursery.start_soon(self._worker, self._router.control, 0.0)
                nursery.start_soon(self._router.run, self._intake_recv)
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
        route_all = self._router.route_all
        if callable(receive_batch):
            # Fast path for AlpacaWebSocketClient: take everything buffered at once.
            while True:
                try:
                    msgs = await receive_batch()
                except trio.EndOfChannel:
                    return
                await route_all(msgs)
        async for msg in stream:
            await route_all((msg,))

    def worker_for(self, symbol: str) -> int:
        """Return the index of the worker that owns ``symbol`` (stable across runs)."""
        return self._router.worker_for(symbol)

    # ------------------------------------------------------------------ workers

    async def _worker(self, lane: Lane, wait_s: float) -> None:
        size = self.batch_size
        while True:
            try:
                batch = await lane.get_full_batch(size, wait_s)
            except trio.EndOfChannel:
                return
            lane.batches += 1
            await self._dispatch(lane, batch)

    async def _dispatch(self, lane: Lane, batch: list[Any]) -> None:
        groups: dict[str, list[Any]] = {}
        chans = self._router.class_channel
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
        stats_for = self._stats.for_channel
        for ch, group in groups.items():
            st = stats_for(ch)
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

    async def _call(self, kind: str, st: ChannelStats, proc: Processor, group: list[Any]) -> None:
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
            self._stats.handler_errors += 1
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
        self._router.settle_all()
        return self._stats.snapshot(self._router.lanes, self._router.control, t)


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
