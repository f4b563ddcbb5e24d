"""The Redis Streams publisher: :func:`open_redis_publisher` / :class:`RedisPublisher`.

The publisher sits between a stream source (an :class:`~trioalpaca.client.AlpacaWebSocketClient`, a
pooled connection, anything that yields messages) and Redis::

    async with open_stream(feed="iex", trades=["*"], raw_data=True) as stream, \\
            open_redis_publisher("redis://127.0.0.1:6379", stream) as publisher:
        await trio.sleep_forever()

Data path: a *pump* task takes everything the source has buffered (``receive_batch``), groups
it by stream key and appends one entry per key to a bounded queue, synchronously
(:meth:`RedisPublisher.publish` never waits, so Redis can never stall the source's reader). A
*writer* task drains the queue: every queued entry goes to Redis in one round trip (a Lua script
that checks the publisher's epoch and XADDs the entries, trimming with ``MAXLEN ~`` or
``MINID ~``); after a round trip of at least ``_COALESCE_AFTER`` messages it waits up to
``_COALESCE_WAIT`` seconds for ``_COALESCE_TO`` queued messages first (fewer, larger round
trips under a fast feed; a slow one never waits). When the queue is full the new batch is
discarded and counted; a ``Dropped`` marker goes into the affected stream before its next
entry. When Redis fails the writer keeps the entries, backs off
(:class:`~trioalpaca.backoff.Backoff`) and retries; the queue meanwhile fills and overflows into
``Dropped`` markers.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, overload

import msgpack
import trio

from trioalpaca._errors import TrioAlpacaError, UsageError
from trioalpaca._groups import exception_leaves, single_error
from trioalpaca.backoff import Backoff
from trioalpaca.fanout._layout import (
    KIND_DATA,
    KIND_DROPPED,
    KIND_GAP,
    KIND_STATUS,
    STREAM_CODE_BY_T,
    StreamLayout,
)
from trioalpaca.fanout._redis import (
    EPOCH_SCRIPT,
    STATUS_SCRIPT,
    WRITE_SCRIPT,
    FencedError,
    RedisUnavailableError,
    is_redis_failure,
    open_redis_client,
)
from trioalpaca.metrics import LatencyHistogram, RateMeter
from trioalpaca.models import Dropped, Reconnected

if TYPE_CHECKING:
    from trioalpaca.relay import Relay

__all__ = ["RedisPublisher", "RelayPublisher", "open_redis_publisher"]

logger = logging.getLogger("trioalpaca.fanout")

# dict.__getitem__ refuses anything that is not a dict (a typed model answers ["T"] too)
_dict_get = dict.__getitem__
#: one-character T code -> a bytes.translate table that maps it to 1 and every other byte to 0
#: (a selection mask for itertools.compress)
_MASKS: dict[str, bytes] = {
    c: bytes(int(i == ord(c)) for i in range(256)) for c in STREAM_CODE_BY_T if len(c) == 1
}

_packb = msgpack.Packer(use_bin_type=True).pack
# exact types only (no subclass or tuple checks on the way): about 20 % cheaper per message, and
# the same bytes for what it accepts; anything else raises TypeError and goes to _packb
_packb_exact = msgpack.Packer(use_bin_type=True, strict_types=True).pack
# Redis' Lua cmsgpack knows no bin type: the write script's rows are packed with raw strings
_pack_rows = msgpack.Packer(use_bin_type=False).pack
_MARKER_TYPES = ("reconnected", "dropped")
#: a write of at least this many messages makes the writer wait (at most _COALESCE_WAIT
#: seconds) for _COALESCE_TO queued messages (at most half the queue) before the next one
_COALESCE_AFTER = 500
_COALESCE_TO = 2000
_COALESCE_WAIT = 0.002


def _pack_data(msgs: list[Any]) -> bytes:
    """msgpack of a list of wire dicts (the ``d`` field of a data entry)."""
    data: bytes
    try:
        data = _packb_exact(msgs)
    except TypeError:  # a tuple, a subclass (typed models' wire dicts), or not packable at all
        data = _packb(msgs)
    return data


class _Entry:
    __slots__ = ("count", "data", "key", "kind", "rx", "seq")

    def __init__(self, key: str, kind: bytes, data: bytes, rx: int, seq: int, count: int) -> None:
        self.key = key
        self.kind = kind
        self.data = data
        self.rx = rx
        self.seq = seq
        self.count = count  # data messages in the entry (0 for markers)


class RedisPublisher:
    """Writes message batches into Redis Streams (see the module documentation).

    Create it with :func:`open_redis_publisher`; the writer runs inside that block.

    Attributes:
        layout: where the streams live (:class:`~trioalpaca.fanout.StreamLayout`).
        epoch: this publisher's epoch (written into every entry as ``e``).
    """

    def __init__(
        self,
        redis: Any,
        layout: StreamLayout,
        epoch: int,
        *,
        keys: Iterable[str] = (),
        maxlen: int | None = 100_000,
        retention: float | None = None,
        queue_size: int = 100_000,
        max_entries_per_call: int = 500,
        backoff: Backoff | None = None,
        max_redis_outage: float | None = None,
    ) -> None:
        _check_options(maxlen, retention, queue_size, max_entries_per_call)
        self._redis = redis
        self.layout = layout
        self.epoch = epoch
        self._script = redis.register_script(WRITE_SCRIPT)
        if maxlen is not None:
            self._trim = ("MAXLEN", str(maxlen))
        elif retention is not None:
            self._trim = ("MINID", str(round(retention * 1000)))
        else:
            self._trim = ("", "0")
        self._queue_size = queue_size
        self._per_call = max_entries_per_call
        self._backoff = backoff if backoff is not None else Backoff(initial=0.05, cap=2.0)
        self._max_outage = max_redis_outage
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queued = 0  # data messages queued (the bounded quantity)
        self._lost: dict[str, int] = {}  # per key: messages discarded, marker not yet queued
        self._status_key = layout.status_key
        self._known: dict[str, None] = dict.fromkeys(k for k in keys if k != self._status_key)
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._fill: trio.Event | None = None  # set by publish() once _fill_at are queued
        self._fill_at = 0
        self._seq = 0
        self._trading = layout.trading
        self._per_symbol = layout.per_symbol
        self._key_cache: dict[Any, str] = {}
        # the per-channel layout routes by T code alone; per symbol (and trading) goes through
        # _key_for
        self._route: dict[str, str] = (
            {}
            if layout.per_symbol or layout.trading
            else {t: layout.key(code) for t, code in STREAM_CODE_BY_T.items()}
        )
        self.state = "running"
        """``running``, ``redis-down`` (retrying), ``fenced`` or ``closed``."""
        # metrics
        self._published_messages = 0
        self._published_entries = 0
        self._dropped = 0
        self._unroutable = 0
        self._redis_errors = 0
        self._rate = RateMeter(10.0)
        self._first_publish: float | None = None
        self._write_latency = LatencyHistogram()
        self._last_write_ns: int | None = None
        self._last_error: str | None = None

    # ------------------------------------------------------------------ routing (sync)

    def _key_for(self, msg: dict[str, Any]) -> str | None:
        if self._trading:
            return self.layout.key("trade_updates")
        t = msg.get("T")
        if self._per_symbol:
            sym = msg.get("S")
            cache_key: Any = (t, sym)
        else:
            sym = None
            cache_key = t
        key = self._key_cache.get(cache_key)
        if key is None:
            code = STREAM_CODE_BY_T.get(t) if type(t) is str else None
            if code is None or (self._per_symbol and type(sym) is not str):
                return None
            key = self._key_cache[cache_key] = self.layout.key(code, sym)
        return key

    def publish(self, items: Iterable[Any], rx_ns: int | None = None) -> None:
        """Queue one batch of messages (typed models or canonical wire dicts); never waits.

        ``Reconnected`` / ``Dropped`` markers in the batch (models or their raw dicts) go into
        every known stream, in order. Messages whose type has no stream are counted as
        ``unroutable`` and skipped.

        Raises:
            FencedError: a newer publisher took over (also raised by the writer).
        """
        if self.state == "fenced":
            raise FencedError(self.epoch, None)
        rx = time.time_ns() if rx_ns is None else rx_ns
        route = self._route  # T code -> stream key (per-channel layout: the whole routing)
        if route and type(items) is list:
            groups = self._group_raw(items, route)
            if groups is not None:
                if groups:
                    self._enqueue_groups(groups, rx)
                return
        groups = {}
        for item in items:
            d = item if type(item) is dict else item.to_wire()
            t = d.get("T")
            key = route.get(t) if type(t) is str else None
            if key is None:
                if t in _MARKER_TYPES:
                    if groups:
                        self._enqueue_groups(groups, rx)
                        groups = {}
                    self._marker(d, rx)
                    continue
                key = self._key_for(d)
                if key is None:
                    self._unroutable += 1
                    continue
            group = groups.get(key)
            if group is None:
                groups[key] = [d]
            else:
                group.append(d)
        if groups:
            self._enqueue_groups(groups, rx)

    def _group_raw(self, items: list[Any], route: Mapping[str, str]) -> dict[str, list[Any]] | None:
        """The usual batch (raw dicts of routable types only, no marker) grouped by stream in
        C-level passes, streams in order of first appearance as in the general loop of
        :meth:`publish`; ``None`` sends anything else to that loop.

        The passes: the ``T`` codes (``dict.__getitem__``: a KeyError or TypeError, for an item
        without ``T`` or one that is no dict, leaves), their set (every one a routable,
        hence one-character, code), and per stream one ``compress`` of the items with a mask
        made by translating the joined codes."""
        if not items or type(items[0]) is not dict:
            return None  # (a typed batch leaves at its first item, before any full pass)
        try:
            codes = list(map(_dict_get, items, repeat("T")))
            present = set(codes)
        except (KeyError, TypeError):
            return None
        if not present <= route.keys():
            return None  # a marker, an unknown or a non-string T
        if len(present) == 1:
            return {route[codes[0]]: items}
        text = "".join(codes)  # one letter per item: every routable code is one letter
        mask = text.encode("ascii")
        groups = {
            route[c]: list(compress(items, mask.translate(_MASKS[c])))
            for c in sorted(present, key=text.index)
        }
        if len(groups) != len(present):
            return None  # two types share a stream: the general loop keeps their interleaving
        return groups

    def mark_gap(self, marker: Reconnected, rx_ns: int | None = None) -> None:
        """Write a gap marker into every known stream."""
        self._marker(marker.to_wire(), time.time_ns() if rx_ns is None else rx_ns)

    def mark_dropped(self, marker: Dropped, rx_ns: int | None = None) -> None:
        """Write a ``Dropped`` marker into every known stream."""
        self._marker(marker.to_wire(), time.time_ns() if rx_ns is None else rx_ns)

    def status(self, event: str, rx_ns: int | None = None, **fields: Any) -> None:
        """Queue a status entry (kind ``status``) into the layout's status stream; never waits.

        ``d`` is ``[{"T": "status", "event": event, "epoch": epoch, "at": ns, **fields}]``;
        consumers yield it as :class:`~trioalpaca.fanout.PublisherStatus` when asked
        (``status_events=True``). The publisher itself writes ``started`` and ``stopped``, and
        the upstream's ``connected`` / ``authenticated`` / ``subscribed`` / ``disconnected``
        when its source is a client (see :doc:`/guides/fanout-layout`). Fields must be msgpack
        types.
        """
        if self.state == "fenced":
            return
        rx = time.time_ns() if rx_ns is None else rx_ns
        self._seq += 2
        d = {"T": "status", "event": event, "epoch": self.epoch, "at": rx, **fields}
        self._queue.append(_Entry(self._status_key, KIND_STATUS, _packb([d]), rx, self._seq, 0))
        self._wake.set()

    def _marker(self, d: dict[str, Any], rx: int) -> None:
        kind = KIND_GAP if d.get("T") == "reconnected" else KIND_DROPPED
        if kind is KIND_DROPPED:
            self._dropped += int(d.get("count", 0))
        self._seq += 2
        data = _packb([d])
        queue = self._queue
        for key in self._known:
            queue.append(_Entry(key, kind, data, rx, self._seq, 0))
        self._wake.set()

    def _enqueue_groups(self, groups: dict[str, list[Any]], rx: int) -> None:
        # sequence numbers go up by two: an overflow marker queued with this batch takes the odd
        # number just below it, so every entry of a stream has its own, increasing (e, s)
        self._seq += 2
        seq = self._seq
        queue = self._queue
        known = self._known
        lost = self._lost
        for key, msgs in groups.items():
            n = len(msgs)
            if key not in known:
                known[key] = None
            if self._queued + n > self._queue_size:
                lost[key] = lost.get(key, 0) + n
                self._dropped += n
                continue
            if lost:
                count = lost.pop(key, 0)
                if count:
                    self._queue_dropped_marker(key, count, rx, seq - 1)
            queue.append(_Entry(key, KIND_DATA, _pack_data(msgs), rx, seq, n))
            self._queued += n
        self._wake.set()
        fill = self._fill
        if fill is not None and self._queued >= self._fill_at:
            fill.set()

    def _queue_dropped_marker(self, key: str, count: int, rx: int, seq: int) -> None:
        marker = Dropped(count, f"publisher queue full ({key})")
        self._queue.append(_Entry(key, KIND_DROPPED, _packb([marker.to_wire()]), rx, seq, 0))

    # ------------------------------------------------------------------ writer

    async def _run_writer(self) -> None:
        schedule = self._backoff.schedule()
        down_since: float | None = None
        queue = self._queue
        while True:
            if not queue:
                if self._lost:
                    # nothing else to carry them: write the pending Dropped markers on their own
                    self._seq += 2
                    wall = time.time_ns()
                    for key, count in list(self._lost.items()):
                        self._queue_dropped_marker(key, count, wall, self._seq)
                    self._lost.clear()
                    continue
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            if self._idle.is_set():
                self._idle = trio.Event()
            batch = [queue.popleft() for _ in range(min(len(queue), self._per_call * 4))]
            try:
                await self._write(batch)
            except FencedError:
                self.state = "fenced"
                raise
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                queue.extendleft(reversed(batch))
                self._redis_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                clock = trio.current_time()
                if down_since is None:
                    down_since = clock
                    logger.warning("redis write failed (%s); retrying", self._last_error)
                self.state = "redis-down"
                if self._max_outage is not None and clock - down_since > self._max_outage:
                    raise RedisUnavailableError(
                        f"Redis unreachable for more than {self._max_outage:g} s "
                        f"({self._last_error})"
                    ) from exc
                await trio.sleep(schedule.next_delay())
                continue
            if down_since is not None:
                logger.info("redis writes resumed")
            down_since = None
            schedule.reset()
            self.state = "running"
            written = sum(e.count for e in batch)
            self._queued -= written
            self._published_messages += written
            self._published_entries += len(batch)
            now = trio.current_time()
            if self._first_publish is None:
                self._first_publish = now
            self._rate.add(written, now)
            if written >= _COALESCE_AFTER:
                await self._coalesce()

    async def _coalesce(self) -> None:
        """After a large write (a fast feed): wait a moment for the queue to fill, so that the
        next round trip carries more (each costs the same fixed time in coredis, some 1M
        instructions); a slow feed never waits."""
        target = min(_COALESCE_TO, self._queue_size // 2)
        if self._queued >= target:
            return
        self._fill_at = target
        self._fill = fill = trio.Event()
        with trio.move_on_after(_COALESCE_WAIT):
            await fill.wait()
        self._fill = None

    async def _write(self, batch: list[_Entry]) -> None:
        layout = self.layout
        head = [str(self.epoch), self._trim[0], self._trim[1]]
        calls: list[tuple[list[str], list[Any]]] = []
        for start in range(0, len(batch), self._per_call):
            chunk = batch[start : start + self._per_call]
            keys = [layout.epoch_key, layout.registry_key, layout.numbers_key]
            index: dict[str, int] = {}
            rows: list[Any] = []
            for e in chunk:
                i = index.get(e.key)
                if i is None:
                    keys.append(e.key)
                    i = index[e.key] = len(keys)
                rows.append((i, e.kind, e.data, str(e.rx), e.seq))
            calls.append((keys, [*head, _pack_rows(rows)]))
        t0 = time.perf_counter()
        if len(calls) == 1:
            results = [await self._script(keys=calls[0][0], args=calls[0][1])]
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                pending = [self._script(keys=k, args=a, client=pipe) for k, a in calls]
            results = [await p for p in pending]
        self._write_latency.record(time.perf_counter() - t0)
        self._last_write_ns = time.time_ns()
        for result in results:
            if int(result[0]) != 1:
                raw = result[1]
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                current = int(text) if text.isdigit() else None
                raise FencedError(self.epoch, current)

    async def _last_word(self, exc: BaseException) -> None:
        """After the block ended abnormally: write ``stopped`` straight into the status stream
        (``reason`` ``fenced``, or ``error`` with ``error``, the exception's class), whatever
        the stored epoch, within a second and shielded; never raises. A block cancelled from
        outside writes nothing (the coredis client's own tasks are cancelled with it)."""
        leaves = exception_leaves(exc)
        if any(isinstance(e, FencedError) for e in leaves):
            fields: dict[str, Any] = {"reason": "fenced"}
        elif all(isinstance(e, trio.Cancelled) for e in leaves):
            return
        else:
            first = next(e for e in leaves if not isinstance(e, trio.Cancelled))
            fields = {"reason": "error", "error": type(first).__name__}
        self._seq += 2
        rx = time.time_ns()
        d = {"T": "status", "event": "stopped", "epoch": self.epoch, "at": rx, **fields}
        layout = self.layout
        with trio.CancelScope(deadline=trio.current_time() + 1.0, shield=True):
            try:
                await self._redis.eval(
                    STATUS_SCRIPT,
                    keys=[layout.registry_key, layout.numbers_key, layout.status_key],
                    args=[str(self.epoch), _packb([d]), str(rx), str(self._seq)],
                )
            except Exception as err:
                logger.debug("could not write the stopped status entry: %r", err)

    async def flush(self, seconds: float | None = None) -> bool:
        """Wait until everything queued so far is written; ``False`` if ``seconds`` ran out."""
        with trio.move_on_after(math.inf if seconds is None else seconds):
            while self._queue or self._lost or not self._idle.is_set():
                await self._idle.wait()
                await trio.lowlevel.checkpoint()
            return True
        return False

    # ------------------------------------------------------------------ status

    @property
    def published_messages(self) -> int:
        """Messages Redis confirmed written so far (cheap; see :meth:`statistics`)."""
        return self._published_messages

    def statistics(self) -> dict[str, Any]:
        """A snapshot: ``state``, ``epoch``, ``published_messages``, ``published_entries``,
        ``messages_per_second`` (10 s window), ``queue_depth`` (messages), ``queue_entries``,
        ``dropped`` (messages lost to overflow, plus upstream ``Dropped`` counts),
        ``unroutable``, ``redis_errors``, ``last_error``, ``write_p50_ms`` / ``write_p99_ms``
        (one round trip), ``last_write_age_s`` and ``streams`` (known stream keys)."""
        now = trio.current_time()
        lat = self._write_latency
        rate = 0.0
        if self._first_publish is not None:
            span = min(10.0, max(now - self._first_publish, 0.5))
            rate = self._rate.count(now) / span
        return {
            "state": self.state,
            "epoch": self.epoch,
            "published_messages": self._published_messages,
            "published_entries": self._published_entries,
            "messages_per_second": rate,
            "queue_depth": self._queued,
            "queue_entries": len(self._queue),
            "dropped": self._dropped,
            "unroutable": self._unroutable,
            "redis_errors": self._redis_errors,
            "last_error": self._last_error,
            "write_p50_ms": lat.percentile(50) * 1e3 if lat.count else None,
            "write_p99_ms": lat.percentile(99) * 1e3 if lat.count else None,
            "last_write_age_s": None
            if self._last_write_ns is None
            else (time.time_ns() - self._last_write_ns) / 1e9,
            "streams": list(self._known),
        }

    # ------------------------------------------------------------------ source pump

    async def pump(self, source: Any) -> None:
        """Publish everything ``source`` yields until it ends (runs in the caller's task).

        ``source`` is a client (anything with ``receive_batch()``) or any async iterable of
        messages (a pooled connection). Raw dicts (``raw_data=True``) are cheapest.
        """
        receive_batch = getattr(source, "receive_batch", None)
        if receive_batch is not None:
            while True:
                try:
                    items = await receive_batch()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                self.publish(items)
        else:
            async for item in source:
                self.publish((item,))


async def acquire_epoch(redis: Any, layout: StreamLayout) -> int:
    """Make a new epoch (above the stored one, at least Redis' clock in ms): it fences every
    older publisher off."""
    result = await redis.eval(EPOCH_SCRIPT, keys=[layout.epoch_key], args=[])
    return int(result)


async def last_rx_ns(redis: Any, keys: Iterable[str]) -> int | None:
    """The newest ``rx`` found at the tail of ``keys`` (``None`` when they are all empty)."""
    best: int | None = None
    for key in keys:
        entries = await redis.xrevrange(key, count=1)
        for entry in entries:
            rx = entry.field_values.get(b"rx")
            if rx is not None and rx.isdigit():
                value = int(rx)
                best = value if best is None else max(best, value)
    return best


def _source_keys(layout: StreamLayout, source: Any, channels: Any) -> list[str]:
    if channels is None:
        channels = getattr(source, "subscriptions", None)
    if not channels:
        return []
    if layout.trading:
        return [layout.key("trade_updates")]
    out = []
    for key in layout.channel_keys({k: v for k, v in channels.items() if v}):
        out.append(key)
    return out


class _StatusTap:
    """A client observer (:class:`~trioalpaca.client.StreamObserver`) that turns the client's
    session events into status entries of a publisher."""

    __slots__ = ("fields", "target")

    def __init__(self, target: Any, fields: Mapping[str, Any]) -> None:
        self.target = target  # anything with status(event, **fields)
        self.fields = dict(fields)

    def frame_in(self, frame: Any, rx_ns: int) -> None:
        pass

    def frame_out(self, frame: Any, tx_ns: int) -> None:
        pass

    def event(self, name: str, data: dict[str, Any]) -> None:
        fields = self.fields
        if name == "connect":
            self.target.status("connected", session=data.get("session"), **fields)
        elif name == "authenticated":
            self.target.status("authenticated", **fields)
        elif name == "subscribed":
            subs = data.get("subscriptions") or {}
            self.target.status(
                "subscribed",
                subscriptions={str(k): list(v) for k, v in subs.items() if v},
                **fields,
            )
        elif name == "disconnect":
            self.target.status(
                "disconnected",
                reason=str(data.get("reason", "")),
                error=data.get("error"),
                code=data.get("code"),
                fatal=bool(data.get("fatal", False)),
                **fields,
            )


def _is_relay(source: Any) -> bool:
    from trioalpaca.relay import Relay

    return isinstance(source, Relay)


def _check_options(
    maxlen: int | None = 100_000,
    retention: float | None = None,
    queue_size: int = 100_000,
    max_entries_per_call: int = 500,
) -> None:
    if maxlen is not None and retention is not None:
        raise UsageError("give maxlen or retention (a MINID time window), not both")
    if maxlen is not None and maxlen < 1:
        raise UsageError("maxlen must be at least 1 (or None)")
    if retention is not None and not (retention > 0 and math.isfinite(retention)):
        raise UsageError("retention must be a positive number of seconds")
    if queue_size < 1:
        raise UsageError("queue_size must be at least 1")
    if max_entries_per_call < 1:
        raise UsageError("max_entries_per_call must be at least 1")


@overload
def open_redis_publisher(
    redis_url: str | None,
    source: Relay,
    **options: Any,
) -> AbstractAsyncContextManager[RelayPublisher]: ...


@overload
def open_redis_publisher(
    redis_url: str | None = None,
    source: Any = None,
    *,
    redis: Any = None,
    feed: str | None = None,
    account: str | None = None,
    channels: Mapping[str, Iterable[str]] | None = None,
    per_symbol: bool = False,
    prefix: str = "ta",
    cluster: bool = False,
    maxlen: int | None = 100_000,
    retention: float | None = None,
    queue_size: int = 100_000,
    max_entries_per_call: int = 500,
    epoch: int | None = None,
    gap_since_last: bool = True,
    backoff: Backoff | None = None,
    max_redis_outage: float | None = None,
    status_fields: Mapping[str, Any] | None = None,
) -> AbstractAsyncContextManager[RedisPublisher]: ...


def open_redis_publisher(
    redis_url: str | None = None, source: Any = None, **options: Any
) -> AbstractAsyncContextManager[Any]:
    """Publish a stream into Redis Streams for the duration of the block.

    Args:
        redis_url: ``redis://host:port[/db]`` (or pass an open coredis client as ``redis``).
        source: what to publish: an :class:`~trioalpaca.client.AlpacaWebSocketClient` (its feed and
            subscriptions are read from it; ``raw_data=True`` is cheapest), a pooled
            connection, any async iterable of messages, or a
            :class:`~trioalpaca.relay.Relay` (then every upstream client the relay opens is
            published into its own layout and a :class:`RelayPublisher` is yielded; see
            below). ``None``: call :meth:`RedisPublisher.publish` yourself.
        redis: an open coredis ``Redis`` / ``RedisCluster`` client to use instead of a URL.
        feed: the feed (default: the source's); picks the layout ``ta:{<feed>}:...``.
        account: API key id for the trading stream layout ``ta:{acct:<key id>}:trade_updates``.
        channels: ``{channel: symbols}`` published, for the markers (default: the source's
            confirmed subscriptions); streams seen in the data are added as they appear.
        per_symbol: one stream per channel and symbol (``ta:{iex}:t:AAPL``).
        prefix: first key segment (``"ta"``).
        cluster: ``redis_url`` names a Redis Cluster node (coredis ``RedisCluster``).
        maxlen: keep about this many entries per stream (``XADD MAXLEN ~``).
        retention: instead of ``maxlen``, keep about this many seconds (``XADD MINID ~``).
        queue_size: bound of the queue in front of Redis, in messages.
        max_entries_per_call: entries per write script call (several calls share one pipeline).
        epoch: use this epoch (the hub passes the one of its lease); default: ``INCR`` the
            layout's epoch key, which fences off any older publisher.
        gap_since_last: when the streams already hold entries, start with a gap marker from the
            last entry's receive time to now (a restart or takeover is a gap for consumers).
        backoff: Redis retry delays (default: 50 ms doubling to 2 s, with jitter).
        max_redis_outage: end the block with :class:`RedisUnavailableError` after Redis failed
            for that many seconds (default: retry forever, dropping with markers).
        status_fields: more fields for the ``started`` status entry (the hub adds its token).

    The publisher writes status entries (kind ``status``) into ``ta:{<feed>}:status``:
    ``started`` when the block is entered, ``stopped`` when it ends (``reason`` ``closed``,
    ``error`` or ``fenced``; not when it is cancelled from outside), and, when the
    source is a client, the upstream's ``connected``, ``authenticated``, ``subscribed`` and
    ``disconnected`` (with the reason); see :doc:`/guides/fanout-layout`.

    **A relay** (``source=relay``): ``feed``, ``account``, ``channels`` and ``epoch`` are not
    given (each upstream client names its own); the other options apply to every layout.
    Market data of feed ``F`` goes to ``ta:{F}:...``, an account's trade updates to
    ``ta:{acct:<key id>}:trade_updates``. Each layout gets its own epoch (fencing any other
    publisher of it, a hub included) when the relay first opens an upstream for it; it keeps it
    while the relay closes and reopens that upstream (``upstream_closed`` / ``connected``
    status entries, no gap marker: nobody was subscribed). Upstream reconnects become gap
    markers, as for a client. Two relay accounts streaming the same feed share its layout and
    each message is published once: a (channel, symbol) is taken from the first upstream that
    delivers it, and when that upstream closes another one streaming it takes over, behind a
    gap marker with ``attempts`` 0.

    Raises:
        FencedError: another publisher (a newer epoch) took over.
        UsageError: bad options, or no feed/account to derive the layout from.
    """
    if _is_relay(source):
        return _open_relay_publisher(redis_url, source, **options)
    return _open_redis_publisher(redis_url, source, **options)


async def _start_publisher(
    client: Any,
    layout: StreamLayout,
    keys: list[str],
    nursery: trio.Nursery,
    *,
    epoch: int | None,
    gap_since_last: bool,
    backoff: Backoff | None,
    status_fields: Mapping[str, Any],
    **options: Any,
) -> RedisPublisher:
    """Make a publisher (an epoch, the restart gap marker, ``started``) and start its writer."""
    if epoch is None:
        epoch = await _retrying(lambda: acquire_epoch(client, layout), backoff)
    assert epoch is not None
    publisher = RedisPublisher(client, layout, epoch, keys=keys, backoff=backoff, **options)
    if gap_since_last:
        known = [
            k
            for k in dict.fromkeys([*keys, *await _registry(client, layout)])
            if k != layout.status_key
        ]
        publisher._known.update(dict.fromkeys(known))
        last = await _retrying(lambda: last_rx_ns(client, known), backoff)
        if last is not None:
            now = time.time_ns()
            publisher.mark_gap(Reconnected(min(last, now), now, 1), now)
    publisher.status("started", **status_fields)
    nursery.start_soon(publisher._run_writer, name="trioalpaca-redis-writer")
    return publisher


@asynccontextmanager
async def _open_redis_publisher(
    redis_url: str | None = None,
    source: Any = None,
    *,
    redis: Any = None,
    feed: str | None = None,
    account: str | None = None,
    channels: Mapping[str, Iterable[str]] | None = None,
    per_symbol: bool = False,
    prefix: str = "ta",
    cluster: bool = False,
    maxlen: int | None = 100_000,
    retention: float | None = None,
    queue_size: int = 100_000,
    max_entries_per_call: int = 500,
    epoch: int | None = None,
    gap_since_last: bool = True,
    backoff: Backoff | None = None,
    max_redis_outage: float | None = None,
    status_fields: Mapping[str, Any] | None = None,
) -> AsyncIterator[RedisPublisher]:
    if (redis_url is None) == (redis is None):
        raise UsageError("give redis_url or an open redis client, not both or neither")
    _check_options(maxlen, retention, queue_size, max_entries_per_call)
    if account is not None:
        layout = StreamLayout.for_account(account, prefix=prefix)
    else:
        if feed is None:
            endpoint = getattr(source, "endpoint", None)
            feed = getattr(endpoint, "feed", None)
        if feed is None:
            raise UsageError("give feed= (or account= for the trading stream)")
        layout = StreamLayout.for_feed(feed, prefix=prefix, per_symbol=per_symbol)
    keys = _source_keys(layout, source, channels)
    fields = dict(status_fields or {})
    observers = getattr(source, "observers", None)
    with single_error():
        async with _maybe_client(redis_url, redis, cluster) as client:
            publisher: RedisPublisher | None = None
            try:
                async with trio.open_nursery() as n:
                    publisher = await _start_publisher(
                        client,
                        layout,
                        keys,
                        n,
                        epoch=epoch,
                        gap_since_last=gap_since_last,
                        backoff=backoff,
                        status_fields=fields,
                        maxlen=maxlen,
                        retention=retention,
                        queue_size=queue_size,
                        max_entries_per_call=max_entries_per_call,
                        max_redis_outage=max_redis_outage,
                    )
                    tap = None
                    if isinstance(observers, list):
                        tap = _StatusTap(publisher, {})
                        observers.append(tap)
                    if source is not None:
                        n.start_soon(publisher.pump, source, name="trioalpaca-redis-pump")
                    try:
                        yield publisher
                        publisher.status("stopped", reason="closed")
                        await publisher.flush(5.0)
                    finally:
                        if tap is not None and isinstance(observers, list) and tap in observers:
                            observers.remove(tap)
                        publisher.state = "closed" if publisher.state != "fenced" else "fenced"
                        n.cancel_scope.cancel()
            except BaseException as exc:
                if publisher is not None:
                    await publisher._last_word(exc)
                raise


class _LayoutFeed:
    """One layout of a relay publisher: its publisher once Redis gave it an epoch, and what
    the relay's upstreams delivered before that (bounded; the excess becomes a ``Dropped``)."""

    def __init__(self, layout: StreamLayout, limit: int) -> None:
        self.layout = layout
        self.publisher: RedisPublisher | None = None
        self.pending: list[tuple[Any, ...]] = []
        self.pending_messages = 0
        self.lost = 0
        self.limit = limit
        self.closed = False
        self.started = trio.Event()
        #: the live taps of this layout (two or more: several relay accounts stream this feed)
        self.taps: list[_RelayTap] = []
        #: with two or more taps: (T, S) -> the tap whose upstream publishes that channel and
        #: symbol (the first to deliver it; the others' copies are dropped as duplicates)
        self.owners: dict[tuple[Any, Any], _RelayTap] = {}

    def owned(self, tap: _RelayTap, items: list[Any]) -> list[Any]:
        """The messages of ``tap``'s batch that this layout takes from it: every marker, and
        the data messages of the (channel, symbol) pairs it owns (claiming the new ones)."""
        claim = self.owners.setdefault
        return [
            m
            for m in items
            if m.get("T") in _MARKER_TYPES or claim((m.get("T"), m.get("S")), tap) is tap
        ]

    def release(self, tap: _RelayTap) -> None:
        """``tap``'s upstream closed: another upstream streaming its pairs takes them over at
        their next message. The layout's streams get a gap marker (``attempts`` 0: a hand-over,
        not a reconnect) from the closed upstream's last batch to now: around the hand-over,
        messages may be missing or repeated (two connections do not deliver in lockstep)."""
        if tap in self.taps:
            self.taps.remove(tap)
        moved = [key for key, owner in self.owners.items() if owner is tap]
        for key in moved:
            del self.owners[key]
        if len(self.taps) < 2:
            self.owners.clear()
        if moved and self.taps and not self.closed:
            now = time.time_ns()
            self.publish([Reconnected(min(tap.last_rx_ns or now, now), now, 0).to_wire()], now)

    def publish(self, items: list[Any], rx_ns: int) -> None:
        if self.closed:
            return
        pub = self.publisher
        if pub is None:
            if self.pending_messages + len(items) > self.limit:
                self.lost += len(items)
                return
            self.pending.append(("data", items, rx_ns))
            self.pending_messages += len(items)
            return
        if pub.state == "fenced":
            return  # the writer ends the publisher's block with FencedError
        pub.publish(items, rx_ns)

    def status(self, event: str, **fields: Any) -> None:
        if self.closed:
            return
        pub = self.publisher
        if pub is None:
            self.pending.append(("status", event, time.time_ns(), fields))
        else:
            pub.status(event, **fields)

    def ready(self, publisher: RedisPublisher) -> None:
        for op in self.pending:
            if op[0] == "data":
                publisher.publish(op[1], op[2])
            else:
                publisher.status(op[1], op[2], **op[3])
        self.pending = []
        self.pending_messages = 0
        if self.lost:
            publisher.mark_dropped(Dropped(self.lost, "relay publisher: Redis not ready yet"))
            self.lost = 0
        self.publisher = publisher
        self.started.set()


class _RelayTap:
    """One upstream client of the relay: an :class:`~trioalpaca.relay.UpstreamTap` for its
    batches and a client observer for its session events."""

    def __init__(self, feed: _LayoutFeed, upstream: Any, taps: list[_RelayTap]) -> None:
        self.feed = feed
        self.upstream = upstream
        self.status = _StatusTap(feed, {"account": upstream.account})
        self.last_rx_ns = 0  # receive time of the last batch
        self._taps = taps  # the publisher's list of live taps (this one leaves it when closed)

    def batch(self, messages: list[dict[str, Any]], rx_ns: int) -> None:
        feed = self.feed
        self.last_rx_ns = rx_ns
        if len(feed.taps) > 1:  # several accounts stream this feed: one copy of each message
            messages = feed.owned(self, messages)
            if not messages:
                return
        feed.publish(messages, rx_ns)

    def closed(self) -> None:
        observers = self.upstream.client.observers
        if self.status in observers:
            observers.remove(self.status)
        if self in self._taps:
            self._taps.remove(self)
        self.feed.status("upstream_closed", account=self.upstream.account)
        self.feed.release(self)


class RelayPublisher:
    """Publishes every upstream client of a :class:`~trioalpaca.relay.Relay` into Redis
    Streams, one layout per feed (and per account for trade updates).

    Yielded by ``open_redis_publisher(url, relay)``; the publishers run inside that block.

    Attributes:
        relay: the relay published.
    """

    def __init__(
        self, redis: Any, relay: Relay, nursery: trio.Nursery, options: dict[str, Any]
    ) -> None:
        self.relay = relay
        self._redis = redis
        self._nursery = nursery
        self._options = options
        self._per_symbol = bool(options.pop("per_symbol", False))
        self._prefix = str(options.pop("prefix", "ta"))
        self._feeds: dict[str, _LayoutFeed] = {}
        self._taps: list[_RelayTap] = []
        self.state = "running"
        """``running`` or ``closed``."""

    @property
    def publishers(self) -> dict[str, RedisPublisher]:
        """Layout tag (``"iex"``, ``"acct:PK..."``) -> its running :class:`RedisPublisher`."""
        return {
            tag: feed.publisher for tag, feed in self._feeds.items() if feed.publisher is not None
        }

    @property
    def published_messages(self) -> int:
        """Messages Redis confirmed written so far, every layout together."""
        return sum(p.published_messages for p in self.publishers.values())

    def statistics(self) -> dict[str, Any]:
        """``state``, ``published_messages`` (all layouts), ``waiting_messages`` (received
        before their layout's publisher had its epoch) and ``layouts``: tag ->
        :meth:`RedisPublisher.statistics`."""
        return {
            "state": self.state,
            "published_messages": self.published_messages,
            "waiting_messages": sum(f.pending_messages for f in self._feeds.values()),
            "layouts": {tag: p.statistics() for tag, p in self.publishers.items()},
        }

    async def flush(self, seconds: float | None = None) -> bool:
        """Wait until everything queued so far is written; ``False`` if ``seconds`` ran out."""
        with trio.move_on_after(math.inf if seconds is None else seconds):
            for feed in list(self._feeds.values()):
                await feed.started.wait()
            for pub in self.publishers.values():
                await pub.flush()
            return True
        return False

    def _layout_for(self, upstream: Any) -> StreamLayout:
        from trioalpaca.endpoints import StreamKind

        if upstream.endpoint.kind is StreamKind.TRADING:
            return StreamLayout.for_account(upstream.key_id, prefix=self._prefix)
        return StreamLayout.for_feed(
            upstream.endpoint.feed, prefix=self._prefix, per_symbol=self._per_symbol
        )

    def _hook(self, upstream: Any) -> _RelayTap | None:
        if self.state != "running":
            return None
        try:
            layout = self._layout_for(upstream)
        except UsageError as exc:
            logger.warning("relay upstream %s not published: %s", upstream.endpoint.feed, exc)
            return None
        feed = self._feeds.get(layout.tag)
        if feed is None:
            feed = self._feeds[layout.tag] = _LayoutFeed(
                layout, int(self._options.get("queue_size", 100_000))
            )
            self._nursery.start_soon(self._start, feed, name=f"trioalpaca-relay-pub-{layout.tag}")
        tap = _RelayTap(feed, upstream, self._taps)
        self._taps.append(tap)
        feed.taps.append(tap)
        upstream.client.observers.append(tap.status)
        if upstream.client.state in ("connected", "reconnecting"):
            feed.status("connected", account=upstream.account)
        return tap

    async def _start(self, feed: _LayoutFeed) -> None:
        opts = dict(self._options)
        publisher = await _start_publisher(
            self._redis,
            feed.layout,
            [],
            self._nursery,
            epoch=None,
            gap_since_last=opts.pop("gap_since_last", True),
            backoff=opts.pop("backoff", None),
            status_fields={**opts.pop("status_fields", {}), "source": "relay"},
            **opts,
        )
        feed.ready(publisher)

    def _close(self) -> None:
        self.state = "closed"
        for tap in self._taps:
            observers = tap.upstream.client.observers
            if tap.status in observers:
                observers.remove(tap.status)


@asynccontextmanager
async def _open_relay_publisher(
    redis_url: str | None,
    relay: Relay,
    *,
    redis: Any = None,
    cluster: bool = False,
    **options: Any,
) -> AsyncIterator[RelayPublisher]:
    if (redis_url is None) == (redis is None):
        raise UsageError("give redis_url or an open redis client, not both or neither")
    for name in ("feed", "account", "channels", "epoch"):
        if options.get(name) is not None:
            raise UsageError(f"{name}= cannot be given with a relay: each upstream names its own")
        options.pop(name, None)
    allowed = {
        "per_symbol",
        "prefix",
        "maxlen",
        "retention",
        "queue_size",
        "max_entries_per_call",
        "gap_since_last",
        "backoff",
        "max_redis_outage",
        "status_fields",
    }
    unknown = set(options) - allowed
    if unknown:
        raise UsageError(f"unknown option(s) for a relay publisher: {', '.join(sorted(unknown))}")
    _check_options(
        options.get("maxlen", 100_000),
        options.get("retention"),
        options.get("queue_size", 100_000),
        options.get("max_entries_per_call", 500),
    )
    with single_error():
        async with _maybe_client(redis_url, redis, cluster) as client, trio.open_nursery() as n:
            rp = RelayPublisher(client, relay, n, options)
            relay.add_upstream_hook(rp._hook)
            try:
                yield rp
                relay.remove_upstream_hook(rp._hook)
                rp._close()
                for pub in rp.publishers.values():
                    pub.status("stopped", reason="closed")
                await rp.flush(5.0)
            finally:
                relay.remove_upstream_hook(rp._hook)
                rp._close()
                for pub in rp.publishers.values():
                    pub.state = "closed" if pub.state != "fenced" else "fenced"
                n.cancel_scope.cancel()


async def _registry(client: Any, layout: StreamLayout) -> list[str]:
    async def read() -> list[str]:
        members = await client.smembers(layout.registry_key)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    members: list[str] = await _retrying(read, None)
    return members


async def _retrying(fn: Any, backoff: Backoff | None) -> Any:
    schedule = (backoff if backoff is not None else Backoff(initial=0.05, cap=2.0)).schedule()
    while True:
        try:
            return await fn()
        except TrioAlpacaError:
            raise
        except Exception as exc:
            if not is_redis_failure(exc):
                raise
            delay = schedule.next_delay()
            logger.warning(
                "redis unavailable (%s: %s); retry in %.2f s", type(exc).__name__, exc, delay
            )
            await trio.sleep(delay)


@asynccontextmanager
async def _maybe_client(url: str | None, client: Any, cluster: bool) -> AsyncIterator[Any]:
    if client is not None:
        yield client
        return
    assert url is not None
    async with open_redis_client(url, cluster=cluster) as opened:
        yield opened
