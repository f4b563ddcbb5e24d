"""The Redis Streams consumer: :func:`open_redis_stream` / :class:`RedisStream`.

It yields what :func:`~trioalpaca.client.open_stream` yields -- typed models (or raw dicts with
``raw_data=True``), :class:`~trioalpaca.models.Reconnected` and
:class:`~trioalpaca.models.Dropped` markers --
so code written for a live stream runs unchanged on a hub's output::

    async with open_redis_stream("redis://127.0.0.1:6379", feed="iex", trades=["AAPL"]) as stream:
        async for msg in stream:
            ...

Reading is pull-driven: the next ``XREAD`` (or ``XREADGROUP``) is issued when the consumer has
taken everything already read, so a slow consumer only lags behind in Redis; if the publisher's
retention trims entries it has not read yet, the per-stream entry number ``n`` shows the hole and
a ``Reconnected`` gap marker says so. After losing Redis it reconnects with backoff and resumes
after the last entry it read.
"""

from __future__ import annotations

import collections
import heapq
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import msgpack
import trio

from trioalpaca._errors import UsageError
from trioalpaca._groups import single_error
from trioalpaca.backoff import Backoff
from trioalpaca.fanout._layout import (
    KIND_DATA,
    KIND_DROPPED,
    KIND_GAP,
    KIND_STATUS,
    STATUS_CODE,
    StreamLayout,
)
from trioalpaca.fanout._redis import is_redis_failure, open_redis_client, parse_id
from trioalpaca.models import (
    MARKET_DATA_TYPES,
    Dropped,
    MalformedMessage,
    Reconnected,
    TradeUpdate,
    _WireAccess,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["MalformedEntry", "PublisherStatus", "RedisStream", "open_redis_stream"]

logger = logging.getLogger("trioalpaca.fanout")

_CHANNEL_KWARGS = (
    ("trades", "trades"),
    ("quotes", "quotes"),
    ("bars", "bars"),
    ("daily_bars", "dailyBars"),
    ("updated_bars", "updatedBars"),
    ("statuses", "statuses"),
    ("lulds", "lulds"),
    ("imbalances", "imbalances"),
    ("orderbooks", "orderbooks"),
    ("news", "news"),
    ("pricing", "pricing"),
)


@attrs.frozen
class MalformedEntry(MalformedMessage):
    """Local event: a Redis stream entry that is not in the publisher's format.

    Something other than a trioalpaca publisher wrote to the stream (or the entry was damaged).
    The consumer delivers it in the entry's place and carries on.

    It *is* a :class:`~trioalpaca.models.MalformedMessage` (a subclass, with the same wire type
    ``"malformed"``), so code written for a live stream's malformed data handles it unchanged;
    it adds where the entry is (:attr:`stream`, :attr:`entry_id`). ``raw`` holds the entry's
    fields (``{name: bytes}``; only ``{"d": ...}`` when the fields are fine but ``d`` does
    not decode), ``error`` what is wrong with it, and ``frame`` is true (the
    whole entry was refused).
    """

    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "T": "wire_type",
            "raw": "raw",
            "error": "error",
            "frame": "frame",
            "stream": "stream",
            "id": "entry_id",
        }
    )

    stream: str = attrs.field(default="", kw_only=True)
    """The stream key."""
    entry_id: str = attrs.field(default="", kw_only=True)
    """The entry's ID."""

    @property
    def reason(self) -> str:
        """What is wrong with the entry (the same as ``error``)."""
        return self.error

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the dict :meth:`to_wire` produces."""
        return cls(
            d.get("raw"),
            d.get("error", ""),
            bool(d.get("frame", True)),
            stream=d.get("stream", ""),
            entry_id=d.get("id", ""),
        )

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "malformed", "raw": fields, "error": text, "frame": true, "stream": key,
        "id": entry id}`` (raw mode)."""
        return {
            "T": "malformed",
            "raw": self.raw,
            "error": self.error,
            "frame": self.frame,
            "stream": self.stream,
            "id": self.entry_id,
        }


@attrs.frozen
class PublisherStatus(_WireAccess):
    """Local event: a status entry a publisher wrote (``k = status``, the ``ta:{feed}:status``
    stream): the publisher started or stopped, or its upstream connected, authenticated,
    subscribed or disconnected. See :doc:`/guides/fanout-layout` for the events.

    Consumers skip these unless asked (``open_redis_stream(..., status_events=True)``), so code
    written for :func:`~trioalpaca.client.open_stream` never meets them by surprise.
    """

    wire_type: ClassVar[str] = "status"
    channel: ClassVar[str] = "control"
    _wire_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"T": "wire_type", "event": "event", "epoch": "epoch", "at": "at_ns"}
    )

    event: str
    """``started``, ``stopped``, ``connected``, ``authenticated``, ``subscribed``,
    ``disconnected`` or ``upstream_closed`` (other values may come from newer publishers)."""
    epoch: int
    """The epoch of the publisher that wrote it."""
    at_ns: int
    """When it happened, nanoseconds since the epoch (the publisher's wall clock)."""
    details: dict[str, Any] = attrs.field(factory=dict)
    """The event's other fields (``reason``, ``code``, ``subscriptions``, ``hub``, ...)."""

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from ``{"T": "status", "event": ..., "epoch": ..., "at": ns, ...}``."""
        event = d["event"]
        epoch = d.get("epoch", 0)
        at = d.get("at", 0)
        if type(event) is not str or type(epoch) is not int or type(at) is not int:
            raise TypeError("status: 'event' must be text, 'epoch' and 'at' integers")
        rest = {k: v for k, v in d.items() if k not in ("T", "event", "epoch", "at")}
        return cls(event, epoch, at, rest)

    def to_wire(self) -> dict[str, Any]:
        """``{"T": "status", "event": ..., "epoch": ..., "at": ns, **details}`` (raw mode)."""
        return {
            "T": "status",
            "event": self.event,
            "epoch": self.epoch,
            "at": self.at_ns,
            **self.details,
        }


class _Stream:
    __slots__ = ("code", "key", "last_es", "last_id", "last_n", "last_rx", "pending", "rank")

    def __init__(self, key: str, code: str, start: str) -> None:
        self.key = key
        self.code = code
        self.rank = StreamLayout.merge_rank(code)
        self.last_id = start  # last ID read (the next XREAD starts after it)
        self.last_n: int | None = None  # entry number of the last entry seen
        self.last_es: tuple[int, int] | None = None  # (epoch, batch sequence) of the last one
        self.last_rx: int | None = None
        self.pending: collections.deque[tuple[Any, ...]] = collections.deque()


class RedisStream:
    """Consumer of a hub's (or publisher's) Redis streams; create it with
    :func:`open_redis_stream`. Iterate it like an :class:`~trioalpaca.client.AlpacaWebSocketClient`.

    Attributes:
        layout: the streams' layout.
        raw_data: whether plain dicts are yielded.
    """

    def __init__(
        self,
        redis: Any,
        layout: StreamLayout,
        channels: Mapping[str, Iterable[str]],
        *,
        raw_data: bool = False,
        start: Literal["new", "oldest"] | Mapping[str, str] = "new",
        group: str | None = None,
        consumer: str | None = None,
        count: int = 1000,
        block: float = 1.0,
        backoff: Backoff | None = None,
        claim_idle: float | None = 30.0,
        status_events: bool = False,
    ) -> None:
        if count < 1:
            raise UsageError("count must be at least 1")
        if not block > 0:
            raise UsageError("block must be a positive number of seconds")
        if (group is None) != (consumer is None):
            raise UsageError("give both group= and consumer= (consumer groups), or neither")
        if claim_idle is not None and not (claim_idle > 0 and math.isfinite(claim_idle)):
            raise UsageError("claim_idle must be a positive number of seconds (or None)")
        self._redis = redis
        self.layout = layout
        self.raw_data = raw_data
        keys = layout.channel_keys(dict(channels))
        if not keys:
            raise UsageError("subscribe to at least one channel (e.g. trades=['AAPL'])")
        self.status_events = status_events
        if status_events:
            keys[layout.status_key] = STATUS_CODE
        symbols: set[str] = set()
        self._all_symbols = layout.trading or layout.per_symbol
        for syms in channels.values():
            syms = list(syms)
            if "*" in syms:
                self._all_symbols = True
            symbols.update(syms)
        self._symbols = frozenset(symbols)
        if isinstance(start, Mapping):
            ids = dict(start)
            default = "$"
        elif start == "new":
            ids, default = {}, "$"
        elif start == "oldest":
            ids, default = {}, "0-0"
        else:
            raise UsageError("start must be 'new', 'oldest' or a mapping {stream key: last id}")
        self._resume = {k: v for k, v in ids.items() if k in keys}
        self._streams = {
            key: _Stream(key, code, ids.get(key, default)) for key, code in keys.items()
        }
        self._group = group
        self._consumer = consumer
        self._group_start = "$" if start == "new" else "0"
        self._count = count
        # a group consumer claims idle entries (XAUTOCLAIM) every claim_idle seconds, so its
        # blocking read must come back at least that often
        self._claim_idle = claim_idle if group is not None else None
        if self._claim_idle is not None:
            block = min(block, self._claim_idle)
        self._block_ms = max(1, round(block * 1000))
        self._next_claim = -math.inf
        self._claim_cursor: dict[str, str] = dict.fromkeys(keys, "0-0")
        self._backoff = backoff if backoff is not None else Backoff(initial=0.05, cap=2.0)
        self._out: collections.deque[Any] = collections.deque()
        self._to_ack: dict[str, list[Any]] = {}
        self._own_pending = group is not None  # read our own un-acked entries first
        self._ready = False
        self._max_epoch = 0
        self._seen_markers: set[tuple[Any, ...]] = set()
        if layout.trading:
            self._types: dict[str, Any] = {}
        else:
            self._types = {cls.wire_type: cls for cls in MARKET_DATA_TYPES[layout.kind.value]}
        # metrics
        self._delivered = 0
        self._entries = 0
        self._gaps = 0
        self._malformed = 0
        self._stale = 0
        self._redis_errors = 0
        self._claimed = 0
        self._claim_deleted = 0
        self._status_skipped = 0
        self._last_rx: int | None = None
        self.state = "idle"
        """``idle``, ``reading``, ``redis-down`` or ``closed``."""

    # ------------------------------------------------------------------ public surface

    def __aiter__(self) -> RedisStream:
        return self

    async def __anext__(self) -> Any:
        out = self._out
        while not out:
            if self.state == "closed":
                raise StopAsyncIteration
            await self._fill()
        self._delivered += 1
        return out.popleft()

    async def receive(self) -> Any:
        """Return the next message or marker, waiting for one."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """Return what is already read (at least one item, at most ``max_items``), in order.

        It checkpoints before taking anything, so a ``Cancelled`` leaves the items for the next
        call."""
        out = self._out
        if out:  # (else reading from Redis is the checkpoint)
            await trio.lowlevel.checkpoint()  # before taking: a Cancelled leaves the items read
        while not out:
            if self.state == "closed":
                raise trio.EndOfChannel
            await self._fill()
        if max_items is None or len(out) <= max_items:
            items = list(out)
            out.clear()
        else:
            items = [out.popleft() for _ in range(max_items)]
        self._delivered += len(items)
        return items

    @property
    def last_ids(self) -> dict[str, str]:
        """Stream key -> ID of the last entry read; pass it as ``start=`` to resume later."""
        return {k: s.last_id for k, s in self._streams.items() if s.last_id not in ("$", "0-0")}

    @property
    def keys(self) -> list[str]:
        """The stream keys this consumer reads."""
        return list(self._streams)

    def statistics(self) -> dict[str, Any]:
        """A snapshot: ``state``, ``delivered``, ``entries_read``, ``gaps`` (gap markers made
        locally), ``malformed``, ``stale_entries`` (older epoch or duplicates, skipped),
        ``claimed`` (entries taken over from other group consumers with ``XAUTOCLAIM``),
        ``claimed_deleted`` (pending entries found trimmed when claimed: lost),
        ``status_skipped`` (status entries not delivered, ``status_events`` off),
        ``redis_errors``, ``buffered``, ``lag_s`` (now minus the publisher receive time of the
        newest entry read; ``None`` before the first) and ``max_epoch``."""
        return {
            "state": self.state,
            "delivered": self._delivered,
            "entries_read": self._entries,
            "gaps": self._gaps,
            "malformed": self._malformed,
            "stale_entries": self._stale,
            "claimed": self._claimed,
            "claimed_deleted": self._claim_deleted,
            "status_skipped": self._status_skipped,
            "redis_errors": self._redis_errors,
            "buffered": len(self._out),
            "lag_s": None if self._last_rx is None else (time.time_ns() - self._last_rx) / 1e9,
            "max_epoch": self._max_epoch,
        }

    def close(self) -> None:
        """End iteration once the items already read are taken."""
        self.state = "closed"

    # ------------------------------------------------------------------ reading

    async def _fill(self) -> None:
        schedule = self._backoff.schedule()
        while not self._out and self.state != "closed":
            try:
                if not self._ready:
                    await self._prepare()
                    self._ready = True
                await self._ack()
                resp, claimed = await self._read()
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                self._redis_errors += 1
                self._ready = False
                self.state = "redis-down"
                delay = schedule.next_delay()
                logger.warning(
                    "redis read failed (%s: %s); retry in %.2f s", type(exc).__name__, exc, delay
                )
                await trio.sleep(delay)
                continue
            self.state = "reading"
            schedule.reset()
            if resp:
                self._ingest(resp, claimed)

    async def _prepare(self) -> None:
        redis = self._redis
        if self._group is not None:
            import coredis.exceptions as cx

            for key in self._streams:
                try:
                    await redis.xgroup_create(
                        key, self._group, identifier=self._group_start, mkstream=True
                    )
                except cx.StreamDuplicateConsumerGroupError:
                    pass  # the group exists already
                except cx.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._own_pending = True
            return
        # broadcast: resolve "$" once (so entries written between reads are never skipped), and
        # check resumed IDs against trimming
        for s in self._streams.values():
            if s.last_id == "$":
                tail = await redis.xrevrange(s.key, count=1)
                s.last_id = tail[0].identifier.decode() if tail else "0-0"
            elif s.key in self._resume:
                await self._check_resume(s)
        self._resume = {}

    async def _check_resume(self, s: _Stream) -> None:
        from trioalpaca.fanout._redis import PROBE_SCRIPT

        entries = await self._redis.xrange(s.key, s.last_id, s.last_id, count=1)
        if entries:
            fields = entries[0].field_values
            try:
                s.last_n = int(fields[b"n"])
                s.last_rx = int(fields[b"rx"])
                s.last_es = (int(fields[b"e"]), int(fields[b"s"]))
            except (KeyError, ValueError):
                pass  # not one of ours: numbering starts with the next entry
            return
        # The entry at our position is gone: trimmed (or Redis lost its data). Redis 7.0 does not
        # record trimmed IDs (max-deleted-entry-id only follows XDEL), so the rule is: when
        # every entry up to the first one left is gone, data after our position may be missing.
        probe = await self._redis.eval(PROBE_SCRIPT, keys=[s.key], args=[])
        exists, last, first = int(probe[0]), probe[1], probe[3]
        last_id = parse_id(s.last_id)
        if not exists or (last and parse_id(last) < last_id):
            # the stream is gone or younger than our position (Redis lost its data)
            self._local_gap(s, "stream reset")
            s.last_id = "0-0"
        elif first and parse_id(first) > last_id:
            self._local_gap(s, "trimmed past the resume position")

    async def _read(self) -> tuple[Any, bool]:
        """One read: ``(response, claimed)``; ``claimed`` when it holds XAUTOCLAIMed entries."""
        redis = self._redis
        if self._group is None:
            # A blocked XREAD is served with the entries of the stream that woke it only, so it
            # is used as a wake-up: the entries come from a non-blocking XREAD of every stream,
            # which sees each batch of the publisher (one script call) completely or not at all.
            streams = {k: s.last_id for k, s in self._streams.items()}
            resp = await redis.xread(streams, count=self._count)
            if resp:
                return resp, False
            await redis.xread(streams, count=1, block=self._block_ms)
            return await redis.xread(streams, count=self._count), False
        if self._own_pending:
            streams = dict.fromkeys(self._streams, "0")
            resp = await redis.xreadgroup(self._group, self._consumer, streams, count=self._count)
            if not resp or not any(resp.values()):
                self._own_pending = False
                return None, False
            # continue the pending scan after what we got
            return resp, False
        if self._claim_idle is not None and trio.current_time() >= self._next_claim:
            claimed = await self._autoclaim()
            if claimed:
                return claimed, True
        streams = dict.fromkeys(self._streams, ">")
        resp = await redis.xreadgroup(
            self._group, self._consumer, streams, count=self._count, block=self._block_ms
        )
        return resp, False

    async def _autoclaim(self) -> dict[str, Any]:
        """Take over entries other consumers of the group read but did not acknowledge within
        ``claim_idle`` seconds (they died): ``XAUTOCLAIM``, one scan of every stream's pending
        list, ``count`` entries per call."""
        assert self._claim_idle is not None
        idle_ms = max(1, round(self._claim_idle * 1000))
        out: dict[str, Any] = {}
        more = False
        for key in self._streams:
            reply = await self._redis.xautoclaim(
                key,
                self._group,
                self._consumer,
                idle_ms,
                self._claim_cursor[key],
                count=self._count,
            )
            cursor = reply[0]
            self._claim_cursor[key] = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            entries = [e for e in reply[1] if e is not None]
            if len(reply) > 2 and reply[2]:
                self._claim_deleted += len(reply[2])
                logger.warning(
                    "stream %s: %d pending entries of a dead consumer were trimmed before they "
                    "could be claimed",
                    key,
                    len(reply[2]),
                )
            if entries:
                out[key] = entries
            if self._claim_cursor[key] not in ("0-0", "0"):
                more = True  # the scan goes on with the next read
        # a full scan is done: the next one after claim_idle seconds
        self._next_claim = -math.inf if more else trio.current_time() + self._claim_idle
        return out

    async def _ack(self) -> None:
        if not self._to_ack:
            return
        for key, ids in list(self._to_ack.items()):
            await self._redis.xack(key, self._group, ids)
            del self._to_ack[key]

    # ------------------------------------------------------------------ decoding

    def _ingest(self, resp: Mapping[Any, Any], claimed: bool = False) -> None:
        streams = self._streams
        if claimed:
            self._ingest_claimed(resp)
            return
        watermark: tuple[int, int] | None = None
        group = self._group is not None
        for raw_key, entries in resp.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            s = streams.get(key)
            if s is None or not entries:
                continue
            for entry in entries:
                ident = entry.identifier
                item = self._parse(s, ident, entry.field_values)
                if item is not None:
                    s.pending.append(item)
            if not group:
                s.last_id = entries[-1].identifier.decode()
                if len(entries) >= self._count and s.pending:
                    mark = s.pending[-1][:2]
                    watermark = mark if watermark is None else min(watermark, mark)
            else:
                # acknowledged before the next read, once everything read was taken
                self._to_ack.setdefault(key, []).extend(e.identifier for e in entries)
        ready: list[list[tuple[Any, ...]]] = []
        for s in streams.values():
            pending = s.pending
            out: list[tuple[Any, ...]] = []
            while pending and (watermark is None or pending[0][:2] <= watermark):
                out.append(pending.popleft())
            if out:
                ready.append(out)
        # each stream keeps its own order; streams interleave by (epoch, batch, channel rank)
        for item in heapq.merge(*ready, key=_merge_key):
            self._emit(streams[item[3]], item)

    def _ingest_claimed(self, resp: Mapping[str, Any]) -> None:
        # Claimed entries are older than what this consumer has read: they are delivered as they
        # are (at least once), outside the stream's order and duplicate checks, merged by
        # (epoch, batch, channel) among themselves.
        items: list[tuple[Any, ...]] = []
        for key, entries in resp.items():
            s = self._streams[key]
            for entry in entries:
                item = self._parse(s, entry.identifier, entry.field_values)
                if item is not None:
                    items.append(item)
            self._to_ack.setdefault(key, []).extend(e.identifier for e in entries)
            self._claimed += len(entries)
        items.sort(key=_merge_key)
        for item in items:
            self._emit(self._streams[item[3]], item, claimed=True)

    def _parse(
        self, s: _Stream, ident: bytes, fields: Mapping[bytes, bytes]
    ) -> tuple[Any, ...] | None:
        self._entries += 1
        try:
            kind = fields[b"k"]
            epoch = int(fields[b"e"])
            seq = int(fields[b"s"])
            rx = int(fields[b"rx"])
            n = int(fields[b"n"])
            data = fields[b"d"]
        except (KeyError, ValueError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            return self._malformed_item(s, ident, reason or type(exc).__name__, fields)
        if kind not in (KIND_DATA, KIND_GAP, KIND_DROPPED, KIND_STATUS):
            return self._malformed_item(s, ident, f"unknown kind {kind!r}", fields)
        return (epoch, seq, s.rank, s.key, kind, data, rx, n, ident)

    def _malformed_item(
        self, s: _Stream, ident: bytes, reason: str, fields: Mapping[Any, Any]
    ) -> tuple[Any, ...]:
        # keeps its place in the stream: it sorts like the entry before it (the sort is stable)
        if s.pending:
            e, seq = s.pending[-1][:2]
        elif s.last_es is not None:
            e, seq = s.last_es
        else:
            e, seq = self._max_epoch, 0
        bad = MalformedEntry(
            _raw_fields(fields), reason, True, stream=s.key, entry_id=ident.decode()
        )
        return (e, seq, s.rank, s.key, b"malformed", bad, 0, 0, ident)

    def _local_gap(self, s: _Stream, why: str, end_rx: int | None = None) -> None:
        now = time.time_ns()
        start = s.last_rx if s.last_rx is not None else now
        end = end_rx if end_rx is not None else now
        self._gaps += 1
        logger.info("stream %s: gap (%s)", s.key, why)
        marker = Reconnected(min(start, end), end, 1)
        self._out.append(marker.to_wire() if self.raw_data else marker)

    def _emit(self, s: _Stream, item: tuple[Any, ...], claimed: bool = False) -> None:
        epoch, seq, _rank, key, kind, data, rx, n, ident = item
        out = self._out
        if kind == b"malformed":
            self._malformed += 1
            out.append(data.to_wire() if self.raw_data else data)
            return
        if claimed:
            self._emit_payload(key, kind, data, ident, epoch, seq)
            return
        if epoch < self._max_epoch:
            self._stale += 1  # a deposed publisher's entry (fencing, consumer side)
            s.last_n = n
            return
        es = (epoch, seq)
        last_es = s.last_es
        last_n = s.last_n
        s.last_n = n
        if last_es is not None and es <= last_es:
            self._stale += 1  # the same batch again: a write retried after a lost reply
            return
        s.last_es = es
        if self._group is None and last_n is not None and n != last_n + 1:
            if n <= last_n:
                why = "the stream's numbering restarted (Redis lost its data)"
            else:
                why = f"entries {last_n + 1}..{n - 1} were trimmed before they were read"
            self._local_gap(s, why, rx)
        self._max_epoch = epoch
        s.last_rx = rx
        self._last_rx = rx
        self._emit_payload(key, kind, data, ident, epoch, seq)

    def _bad(self, key: str, ident: bytes, data: bytes, why: str, exc: Exception) -> None:
        self._malformed += 1
        bad = MalformedEntry(
            {"d": data},
            f"{why}: {type(exc).__name__}: {exc}",
            True,
            stream=key,
            entry_id=ident.decode(),
        )
        self._out.append(bad.to_wire() if self.raw_data else bad)

    def _emit_payload(
        self, key: str, kind: bytes, data: bytes, ident: bytes, epoch: int, seq: int
    ) -> None:
        out = self._out
        if kind == KIND_DATA:
            try:
                self._emit_data(_unpack_list(data))
            except Exception as exc:
                self._bad(key, ident, data, "bad data", exc)
            return
        if kind == KIND_STATUS:
            if not self.status_events:
                self._status_skipped += 1
                return
            try:
                (d,) = _unpack_list(data)
                status = PublisherStatus.from_wire(d)
            except Exception as exc:
                self._bad(key, ident, data, "bad status", exc)
                return
            out.append(status.to_wire() if self.raw_data else status)
            return
        # a marker: the publisher wrote it into every stream of the batch; yield it once
        mark = (epoch, seq, kind, data)
        if mark in self._seen_markers:
            return
        self._seen_markers.add(mark)
        if len(self._seen_markers) > 1024:
            self._seen_markers = {mark}
        try:
            (d,) = msgpack.unpackb(data, raw=False)
            marker: Any = Reconnected.from_wire(d) if kind == KIND_GAP else Dropped.from_wire(d)
        except Exception as exc:
            self._bad(key, ident, data, "bad marker", exc)
            return
        out.append(marker.to_wire() if self.raw_data else marker)

    def _emit_data(self, msgs: list[Any]) -> None:
        out = self._out
        wanted = None if self._all_symbols else self._symbols
        if self.layout.trading:
            for d in msgs:
                out.append(d if self.raw_data else TradeUpdate.from_wire(d))
            return
        if wanted is not None:
            msgs = [d for d in msgs if _has_symbol(d, wanted)]
        if self.raw_data:
            out.extend(msgs)
            return
        types = self._types
        for d in msgs:
            cls = types.get(d.get("T"))
            if cls is None:
                from trioalpaca.models import UnknownMessage

                out.append(UnknownMessage(dict(d)))
            else:
                out.append(cls.from_wire(d))


def _merge_key(item: tuple[Any, ...]) -> tuple[Any, ...]:
    return item[:3]


def _raw_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v
        for k, v in fields.items()
    }


def _unpack_list(data: bytes) -> list[Any]:
    msgs = msgpack.unpackb(data, raw=False)
    if type(msgs) is not list or not all(type(d) is dict for d in msgs):
        raise TypeError("expected a list of message maps")
    return msgs


def _has_symbol(d: Mapping[str, Any], wanted: frozenset[str]) -> bool:
    sym = d.get("S")
    if sym is not None:
        return sym in wanted
    syms = d.get("symbols")
    if isinstance(syms, list):
        return any(s in wanted for s in syms)
    return True


@asynccontextmanager
async def open_redis_stream(
    redis_url: str | None = None,
    *,
    redis: Any = None,
    feed: str | None = None,
    account: str | None = None,
    per_symbol: bool = False,
    prefix: str = "ta",
    cluster: bool = False,
    raw_data: bool = False,
    start: Literal["new", "oldest"] | Mapping[str, str] = "new",
    group: str | None = None,
    consumer: str | None = None,
    count: int = 1000,
    block: float = 1.0,
    backoff: Backoff | None = None,
    claim_idle: float | None = 30.0,
    status_events: bool = False,
    trades: Iterable[str] = (),
    quotes: Iterable[str] = (),
    bars: Iterable[str] = (),
    daily_bars: Iterable[str] = (),
    updated_bars: Iterable[str] = (),
    statuses: Iterable[str] = (),
    lulds: Iterable[str] = (),
    imbalances: Iterable[str] = (),
    orderbooks: Iterable[str] = (),
    news: Iterable[str] = (),
    pricing: Iterable[str] = (),
) -> AsyncIterator[RedisStream]:
    """Consume a hub's streams for the duration of the block (same iteration surface as
    :func:`~trioalpaca.client.open_stream`).

    Args:
        redis_url: ``redis://host:port[/db]`` (or pass an open coredis client as ``redis``).
        feed: the feed whose streams to read (``"iex"``, ``"crypto/us"``, ...).
        account: read the trading stream of this API key id instead
            (``ta:{acct:<key id>}:trade_updates``; yields :class:`~trioalpaca.models.TradeUpdate`).
        per_symbol: the publisher used the per-symbol layout (then name symbols, no ``"*"``).
        prefix, cluster: as for :func:`~trioalpaca.fanout.open_redis_publisher`.
        raw_data: yield canonical wire dicts instead of typed models.
        start: ``"new"`` (entries written from now on), ``"oldest"`` (everything retained) or
            ``{stream key: last id}`` from a previous consumer's :attr:`RedisStream.last_ids`
            (resume; a gap marker says when entries after that ID were trimmed meanwhile).
        group, consumer: share the work with other consumers of group ``group``
            (``XREADGROUP``, each entry goes to one consumer, acknowledged with ``XACK`` once
            taken; un-acknowledged entries are delivered again to the same consumer name after a
            restart). Without a group every consumer gets everything (``XREAD``).
        count: entries per read and stream.
        block: seconds one blocking read waits before it is issued again.
        backoff: retry delays after a Redis failure.
        claim_idle: with a group: every that many seconds, take over (``XAUTOCLAIM``) and
            deliver the entries other consumers of the group read but have not acknowledged for
            that long -- a consumer that died. Delivery is then *at least once*: a consumer that
            was only slow, or died after handling an entry and before acknowledging it, means
            the entry is handled twice. Claimed entries come out of order (older than what this
            consumer already yielded). ``None``: never claim (restart the dead consumer under
            its name instead). Default 30 s.
        status_events: also read the publishers' status stream (``ta:{feed}:status``) and yield
            its entries as :class:`~trioalpaca.fanout.PublisherStatus` (raw: ``{"T": "status",
            ...}``); by default status entries are skipped.
        trades ... pricing: the channels and symbols (``["*"]`` for all), as for
            :func:`~trioalpaca.client.open_stream`; symbols are filtered locally.

    Raises:
        UsageError: bad options (no channel, a channel the feed lacks, ``"*"`` per symbol).
    """
    if (redis_url is None) == (redis is None):
        raise UsageError("give redis_url or an open redis client, not both or neither")
    given = {
        "trades": trades,
        "quotes": quotes,
        "bars": bars,
        "daily_bars": daily_bars,
        "updated_bars": updated_bars,
        "statuses": statuses,
        "lulds": lulds,
        "imbalances": imbalances,
        "orderbooks": orderbooks,
        "news": news,
        "pricing": pricing,
    }
    channels: dict[str, list[str]] = {}
    for kwarg, wire in _CHANNEL_KWARGS:
        value = given[kwarg]
        syms = [value] if isinstance(value, str) else list(value)
        if syms:
            channels[wire] = syms
    if account is not None:
        if channels:
            raise UsageError("the trading stream has no market data channels")
        layout = StreamLayout.for_account(account, prefix=prefix)
        channels = {"trade_updates": ["*"]}
    elif feed is None:
        raise UsageError("give feed= (or account= for the trading stream)")
    else:
        layout = StreamLayout.for_feed(feed, prefix=prefix, per_symbol=per_symbol)
    with single_error():
        async with _client(redis_url, redis, cluster) as client:
            stream = RedisStream(
                client,
                layout,
                channels,
                raw_data=raw_data,
                start=start,
                group=group,
                consumer=consumer,
                count=count,
                block=block,
                backoff=backoff,
                claim_idle=claim_idle,
                status_events=status_events,
            )
            try:
                # "new" means from the moment the block is entered: resolve positions now
                await stream._prepare()
                stream._ready = True
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                stream._redis_errors += 1  # Redis is down: the first read retries with backoff
            try:
                yield stream
            finally:
                stream.state = "closed"


@asynccontextmanager
async def _client(url: str | None, client: Any, cluster: bool) -> AsyncIterator[Any]:
    if client is not None:
        yield client
        return
    assert url is not None
    async with open_redis_client(url, cluster=cluster) as opened:
        yield opened
