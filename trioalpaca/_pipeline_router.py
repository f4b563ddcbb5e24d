"""The pipeline's router: message classification, lane selection and the worker lanes.

:class:`Router` is owned by :class:`~trioalpaca.pipeline.MessageHandler`. It owns the lanes (one
:class:`Lane` per worker plus the control lane), chooses a message's lane from its channel and
symbol (``crc32(symbol) % worker_count``, cached per symbol), applies the per-channel overflow
policies, counts what they discard into the handler's
:class:`~trioalpaca._pipeline_stats.PipelineStats`, and runs the router task that drains the
intake channel. See the :mod:`trioalpaca.pipeline` documentation for the pipeline's shape and
guarantees.

:meth:`Router.route_all` is the hot path (once per message): typed market data (by class) and raw
market data dicts (by ``T`` code) with a processor and a non-conflating policy take a fast branch
through per-class tables; everything else goes through ``_put_slow``, which fills those tables.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from trioalpaca._buffer import MessageBuffer
from trioalpaca._handlers import _T_TO_CHANNEL as _ALL_T_TO_CHANNEL
from trioalpaca._pipeline_stats import ChannelStats, PipelineStats
from trioalpaca.models import Listening, TradeUpdate

if TYPE_CHECKING:
    from trioalpaca.pipeline import OverflowPolicy, Processor

__all__ = ["Lane", "Router"]

logger = logging.getLogger("trioalpaca.pipeline")

#: Raw-dict ``T`` codes to channels (a plain dict, looked up per message). Trading-stream messages
#: carry ``stream`` instead of ``T``, so their wire types are left out.
_T_TO_CHANNEL: dict[str, str] = {
    t: ch
    for t, ch in _ALL_T_TO_CHANNEL.items()
    if t not in (TradeUpdate.wire_type, Listening.wire_type)
}
_SYMBOL_CACHE_MAX = 200_000


class Lane(MessageBuffer):
    """The bounded queue feeding one worker: a :class:`~trioalpaca._buffer.MessageBuffer` whose
    own policy is the handler's default (``"*"``) policy and whose discards are counted per
    channel (``keep_discards``: the router settles its ``discards`` / ``replaced`` lists after
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


if TYPE_CHECKING:
    #: A message that found its lane full under ``block``: the lane, its policy, its conflation
    #: key.
    _Blocked = tuple[Lane, OverflowPolicy, Hashable | None]
    _Fast = tuple[ChannelStats, OverflowPolicy, str]


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


class Router:
    """Routes messages into :attr:`lanes` (one per worker) and :attr:`control`.

    ``processors`` is the handler's registry (shared, not copied: a channel without a processor
    and without ``"*"`` is counted ``unhandled`` and not queued); call :meth:`forget` whenever it
    changes. ``stats`` receives the counts (``received``, ``dropped``, ``conflated``,
    ``unhandled``, control tallies).
    """

    __slots__ = (
        "_fast",
        "_fast_raw",
        "_lane_of",
        "_processors",
        "_stats",
        "class_channel",
        "control",
        "default_policy",
        "lanes",
        "policies",
        "worker_count",
    )

    def __init__(
        self,
        *,
        worker_count: int,
        buffer_size: int,
        default_policy: OverflowPolicy,
        policies: Mapping[str, OverflowPolicy],
        processors: Mapping[str, Processor],
        stats: PipelineStats,
    ) -> None:
        self.worker_count = worker_count
        self.default_policy: OverflowPolicy = default_policy
        self.policies = dict(policies)
        self.lanes = [Lane(i, buffer_size, default_policy) for i in range(worker_count)]
        self.control = Lane(-1, buffer_size, "block")
        self._processors = processors
        self._stats = stats
        #: symbol -> its worker's lane (cache of crc32(symbol) % worker_count)
        self._lane_of: dict[str, Lane] = {}
        #: hot-path cache: message class -> (stats, overflow policy, channel)
        self._fast: dict[type, _Fast] = {}
        #: the same for raw dicts, keyed by their ``T`` code
        self._fast_raw: dict[str, _Fast] = {}
        #: message class -> channel (shared with the workers' dispatch)
        self.class_channel: dict[type, str] = {}

    def forget(self) -> None:
        """Drop the hot-path tables (the processors changed)."""
        self._fast.clear()
        self._fast_raw.clear()

    def worker_for(self, symbol: str) -> int:
        """The index of the worker that owns ``symbol``."""
        return zlib.crc32(symbol.encode()) % self.worker_count

    def close(self) -> None:
        """Close every lane (the workers drain them, then end)."""
        for lane in self.lanes:
            lane.close()
        self.control.close()

    async def run(self, intake: trio.MemoryReceiveChannel[Any]) -> None:
        """The router task: route what arrives on ``intake`` until it ends, then close the
        lanes."""
        try:
            async with intake:
                while True:
                    try:
                        first = await intake.receive()
                    except trio.EndOfChannel:
                        break
                    msgs = [first]
                    # take what else is queued without waiting, then route it all at once
                    while len(msgs) < 1000:
                        try:
                            msgs.append(intake.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self.route_all(msgs)
        finally:
            self.close()

    async def route_all(self, msgs: Iterable[Any]) -> None:
        """Route ``msgs`` in order, then wake the workers (waits for room under ``block``)."""
        if self.lanes[0].closed:
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
                    self.notify_all()
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
                self.notify_all()
                await self._put_blocking((lane, f[1], None), msg)
        self.notify_all()

    def notify_all(self) -> None:
        """Settle every lane's discards and wake the workers that have messages."""
        for lane in self.lanes:
            if lane.discards or lane.replaced:
                self.settle(lane)
            if lane.q:
                lane.notify()
        if self.control.q:
            self.control.notify()

    def settle_all(self) -> None:
        """Count every lane's pending discards (before a metrics snapshot)."""
        for lane in self.lanes:
            if lane.discards or lane.replaced:
                self.settle(lane)

    def _lane_for(self, key: str) -> Lane:
        lane = self._lane_of.get(key)
        if lane is None:
            if len(self._lane_of) >= _SYMBOL_CACHE_MAX:
                self._lane_of.clear()
            lane = self._lane_of[key] = self.lanes[self.worker_for(key)]
        return lane

    def _put_slow(self, msg: Any) -> _Blocked | None:
        channel = _channel_of(msg)
        procs = self._processors
        st = self._stats.for_channel(channel)
        cls = type(msg)
        if channel == "control":
            notable = self._stats.note_control(msg)
            if "control" not in procs and "*" not in procs:
                st.unhandled += 1
                if notable:
                    logger.warning(
                        "unhandled control event (register a 'control' processor): %r", msg
                    )
                return None
            st.received += 1
            lane = self.control
            if lane.offer(msg):
                return None
            return (lane, "block", None)  # control events are never dropped: wait for room
        if channel not in procs and "*" not in procs:
            st.unhandled += 1
            return None
        key = _key_of(msg)
        lane = self._lane_for(key)
        st.received += 1
        policy = self.policies.get(channel, self.default_policy)
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

    def channel(self, msg: Any) -> str:
        """The channel of ``msg`` (cached per class for typed messages)."""
        cls = type(msg)
        if cls is dict:
            return _channel_of(msg)
        ch = self.class_channel.get(cls)
        if ch is None:
            ch = self.class_channel[cls] = _channel_of(msg)
        return ch

    def settle(self, lane: Lane) -> None:
        """Count what ``lane``'s policies discarded since the last call, per channel."""
        fast = self._fast
        discards = lane.discards
        assert discards is not None
        for msg in discards:
            f = fast.get(type(msg))
            st = f[0] if f is not None else self._stats.for_channel(self.channel(msg))
            st.dropped += 1
        discards.clear()
        chans = self.class_channel
        stats = self._stats.by_channel
        for msg in lane.replaced:
            ch = chans.get(type(msg))
            cst = stats.get(ch) if ch is not None else None
            if cst is None:
                cst = self._stats.for_channel(self.channel(msg))
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
                self._stats.for_channel(_channel_of(msg)).dropped += 1
        if not offered:
            raise trio.ClosedResourceError("the MessageHandler is closed")
        if lane.replaced:
            self.settle(lane)
        lane.notify()
