"""The one bounded message buffer, its overflow vocabulary and its ``Dropped`` markers.

Every component that queues messages for a consumer (the client between its reader and the
application, each :class:`~trioalpaca.pool.PooledConnection` handle, each worker lane of the
:class:`~trioalpaca.pipeline.MessageHandler`) speaks the same overflow vocabulary,
:data:`OverflowPolicy`, and documents the subset it accepts:

==================  ===============================================================  ==========
policy              when the buffer is full                                           used by
==================  ===============================================================  ==========
``block``           the producer waits for room (back-pressure)                      all
``drop_oldest``     the oldest queued messages make room; a ``Dropped`` marker says  all
                    how many, right before the next item the consumer gets
``drop_newest``     the new messages are discarded                                   pipeline
``conflate``        latest-value channels keep one queued message per symbol         pipeline
``disconnect``      the producer gives up (the client reconnects)                    client
==================  ===============================================================  ==========

:class:`MessageBuffer` is the FIFO of the client, the pool handles and the pipeline's worker
lanes. Markers (``Reconnected``, ``Dropped``) bypass the bound and are never discarded. Discards
are reported by one ``Dropped`` marker built by :func:`dropped_marker`, whoever discards, or,
for a buffer built with ``keep_discards`` (the pipeline counts them per channel), in its
:attr:`~MessageBuffer.discards` and :attr:`~MessageBuffer.replaced` lists.

Two producer forms share the policies: :meth:`MessageBuffer.put` takes a received frame's
messages at once under the buffer's own policy (the client's reader); :meth:`MessageBuffer.offer`
takes one message under a policy of its own, ``conflate`` included (the pipeline's router, whose
policies are per channel). ``conflate`` keeps one queued entry per key: a message whose key is
queued replaces that entry's content in place (the replaced message counts as discarded), and a
full buffer falls back to its own policy. :meth:`MessageBuffer.get_full_batch` is the batching
consumer (wait for the first item, then a while for a full batch).

Delivery positions: every item that enters the buffer gets the next position (1, 2, ...;
:attr:`MessageBuffer.appended` is the last one). An item counts as *delivered* once the consumer
has taken it **and come back for the next one** (or it was discarded): at that point the
consumer is done with it, whatever it did with it (the pool routes it to its handles).
:meth:`MessageBuffer.wait_delivered` waits for a position; the client returns the position of
its acknowledgements from ``subscribe`` / ``unsubscribe`` so that a caller can wait, without
polling, until everything received before the acknowledgement went through.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Any, Literal

import trio

from trioalpaca.models import Dropped, Message, Reconnected

__all__ = ["MessageBuffer", "OverflowPolicy", "dropped_marker", "is_marker"]

OverflowPolicy = Literal["block", "drop_oldest", "drop_newest", "conflate", "disconnect"]
"""Every overflow policy of trioalpaca; each component accepts a documented subset."""

#: Take this many items without a checkpoint at most (a consumer that never waits still yields).
_CHECKPOINT_EVERY = 512
#: The reader yields after a frame once this many items are queued (at most a quarter of the
#: buffer): see :meth:`MessageBuffer.backlogged`. Instruction counts of a burst in frames of 100
#: were the same for 64 to 256 and 7 % higher at 512.
_YIELD_BACKLOG = 128


def dropped_marker(count: int, policy: str, where: str = "buffer") -> Dropped:
    """The ``Dropped`` marker reporting that ``count`` messages were discarded by ``policy``."""
    return Dropped(count=count, reason=f"{where} overflow ({policy})")


_MARKER_T = ("reconnected", "dropped")
_MARKERS = (Reconnected, Dropped)
_MARKER_CLASSES = frozenset(_MARKERS)


def is_marker(item: Any) -> bool:
    """Whether ``item`` is a ``Reconnected`` / ``Dropped`` marker (typed or as a wire dict)."""
    if type(item) is dict:
        return item.get("T") in ("reconnected", "dropped")
    return isinstance(item, (Reconnected, Dropped))


class _Entry:
    """The queued entry of a conflation key: ``msg`` is replaced by newer messages of that key
    until the entry leaves the queue (the consumer only ever sees ``msg``)."""

    __slots__ = ("key", "msg")

    def __init__(self, key: Hashable, msg: Any) -> None:
        self.key = key
        self.msg = msg


class MessageBuffer:
    """A bounded FIFO between one producer and one consumer, with an overflow policy.

    Its own policy is ``block``, ``drop_oldest``, ``drop_newest`` or ``disconnect``; ``conflate``
    is per message (:meth:`offer` with a key), since a full buffer needs a policy to fall back to.

    * :meth:`put` is synchronous: under ``block`` it appends anyway and the producer is expected
      to pause while :meth:`full` (the client's reader does, through :meth:`wait_for_space`);
      :meth:`send` is the awaiting form that waits for room itself.
    * The consumer side is :meth:`get` / :meth:`get_batch`; they raise ``trio.EndOfChannel``
      once the buffer is closed and drained.

    Args:
        maxsize: most queued messages (markers not counted).
        policy: the overflow policy.
        raw: markers are queued as wire dicts (``raw_data=True`` consumers).
        where: names the buffer in ``Dropped`` reasons.
        low_water: :meth:`wait_for_space` / :meth:`send` resume once at most this many messages
            are queued (default half of ``maxsize``).
        keep_discards: instead of the ``Dropped`` marker, discarded messages are appended to
            :attr:`discards` (conflated away: :attr:`replaced`) for the owner to count and clear.
    """

    __slots__ = (
        "_progress",
        "_since_checkpoint",
        "_space",
        "_waiter",
        "_yield_at",
        "appended",
        "attention",
        "closed",
        "discards",
        "dropped_total",
        "head_markers",
        "in_hand",
        "latest",
        "low_water",
        "maxsize",
        "pending_drop",
        "policy",
        "q",
        "raw",
        "replaced",
        "wake_at",
        "where",
    )

    def __init__(
        self,
        maxsize: int,
        policy: OverflowPolicy,
        *,
        raw: bool = False,
        where: str = "buffer",
        low_water: int | None = None,
        keep_discards: bool = False,
    ) -> None:
        if policy == "conflate":
            raise ValueError(
                "conflate is per message (offer(msg, 'conflate', key)); the buffer's own policy "
                "is what a full buffer falls back to"
            )
        self.maxsize = maxsize
        self._yield_at = max(1, min(_YIELD_BACKLOG, maxsize // 4))
        self.low_water = max(maxsize // 2, 1) if low_water is None else low_water
        self.policy = policy
        self.raw = raw
        self.where = where
        self.q: collections.deque[Any] = collections.deque()
        #: the next get() must return a marker first (head_markers, or pending_drop)
        self.attention = False
        self.head_markers: list[Any] = []
        self.pending_drop = 0
        #: messages ever discarded by the policy
        self.dropped_total = 0
        #: items ever appended (the position of the last one)
        self.appended = 0
        #: items handed out by the last get / get_batch that are not finished yet
        self.in_hand = 0
        self.closed = False
        self._waiter: trio.Event | None = None
        self._space: trio.Event | None = None
        self._progress: trio.Event | None = None
        self._since_checkpoint = 0
        #: conflation: key -> the queued entry of that key (its ``msg`` is the latest content)
        self.latest: dict[Hashable, _Entry] = {}
        #: with keep_discards: messages the policies discarded / conflation replaced
        self.discards: list[Any] | None = [] if keep_discards else None
        self.replaced: list[Any] = []
        #: a waiting get_full_batch() is woken once this many items are queued
        self.wake_at = 1

    # -- producer side ----------------------------------------------------------------------

    def put(self, msgs: list[Any]) -> bool:
        """Append messages; return ``False`` if the ``disconnect`` policy tripped (nothing of
        ``msgs`` was queued then: a ``Dropped`` marker was)."""
        q = self.q
        if len(q) + len(msgs) > self.maxsize and self.policy != "block":
            if self.policy == "disconnect":
                self.dropped_total += len(msgs)
                self._append(self._marker(dropped_marker(len(msgs), "disconnect", self.where)))
                return False
            if self.policy == "drop_newest":
                room = max(self.maxsize - len(q), 0)
                self._discarded(len(msgs) - room)
                msgs = msgs[:room]
                q.extend(msgs)
                self.appended += len(msgs)
            else:
                q.extend(msgs)
                self.appended += len(msgs)
                self._drop_head(len(q) - self.maxsize)
        else:
            q.extend(msgs)
            self.appended += len(msgs)
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None
        return True

    def offer(self, msg: Any, policy: OverflowPolicy | None = None, key: Hashable = None) -> bool:
        """Queue one message under ``policy`` (default: the buffer's own).

        ``conflate`` needs ``key``: when an entry of that key is queued, ``msg`` becomes its
        content and the message it replaces is discarded; otherwise ``msg`` is queued as that
        key's entry, and a full buffer applies the buffer's own policy. Under ``block`` nothing
        is queued while the buffer is full: ``False`` is returned (:meth:`wait_for_space`, then
        offer again); ``disconnect`` refuses like :meth:`put` (``False`` and a ``Dropped``
        marker). Does not wake a consumer waiting for more than is queued (see :meth:`notify`).
        """
        q = self.q
        if policy is None:
            policy = self.policy
        if policy == "conflate":
            if key is None:
                raise ValueError("conflate needs a key")
            latest = self.latest
            entry = latest.get(key)
            if entry is not None:
                old = entry.msg
                entry.msg = msg
                if self.discards is not None and self._progress is None:
                    self.dropped_total += 1
                    self.replaced.append(old)  # _discard(), inlined: the common conflate case
                else:
                    self._discard(old, True)
                return True
            if len(q) >= self.maxsize:
                policy = self.policy  # full: the buffer's own policy
            if len(q) < self.maxsize or policy == "drop_oldest":
                msg = latest[key] = _Entry(key, msg)
                self.attention = True  # get() / get_batch() unbox entries one by one
        if len(q) < self.maxsize:
            q.append(msg)
            self.appended += 1
            if self._waiter is not None:
                self.notify()
            return True
        # full
        if policy == "drop_newest":
            victim = msg
        elif policy == "drop_oldest":
            victim = None
            while q:  # evict the oldest message (markers are kept, as in put())
                old = q.popleft()
                t = type(old)
                if t in _MARKER_CLASSES or (t is dict and old.get("T") in _MARKER_T):
                    self.head_markers.append(old)
                    self.attention = True
                    continue
                victim = self._unbox(old) if t is _Entry else old
                break
            q.append(msg)
            self.appended += 1
            if self._waiter is not None:
                self.notify()
            if victim is None:
                return True
        elif policy == "block":
            return False
        else:  # disconnect
            self.dropped_total += 1
            self._append(self._marker(dropped_marker(1, "disconnect", self.where)))
            return False
        discards = self.discards
        if discards is not None and self._progress is None:
            self.dropped_total += 1
            discards.append(victim)  # _discard(), inlined: the overload path
        else:
            self._discard(victim, False)
        return True

    def _discard(self, msg: Any, conflated: bool) -> None:
        discards = self.discards
        if discards is None:
            self._discarded(1)
            return
        self.dropped_total += 1
        (self.replaced if conflated else discards).append(msg)
        if self._progress is not None:
            self._advance()

    def _unbox(self, entry: _Entry) -> Any:
        """A conflated entry leaves the queue: forget its key, return its latest content."""
        del self.latest[entry.key]
        self._recheck()
        return entry.msg

    def _recheck(self) -> None:
        self.attention = bool(self.head_markers or self.pending_drop or self.latest)

    def notify(self) -> None:
        """Wake a consumer waiting in :meth:`get_full_batch` if what is queued now is what it
        waits for (producers that append in bulk call it once after the bulk)."""
        w = self._waiter
        if w is not None and len(self.q) >= self.wake_at:
            w.set()
            self._waiter = None

    async def send(self, msg: Any) -> None:
        """Append one message; under ``block`` wait for room first (until at most
        ``low_water`` are queued). Does nothing once closed."""
        if self.policy == "block":
            while len(self.q) >= self.maxsize and not self.closed:
                if self._space is None:
                    self._space = trio.Event()
                await self._space.wait()
        if not self.closed:
            self.put([msg])

    def put_marker(self, marker: Message) -> None:
        """Append a control marker, bypassing the bound."""
        self._append(self._marker(marker))

    def _append(self, item: Any) -> None:
        self.q.append(item)
        self.appended += 1
        self._wake()

    def _discarded(self, count: int) -> None:
        if count > 0:
            self.pending_drop += count
            self.dropped_total += count
            self.attention = True
            self._advance()

    def _drop_head(self, excess: int) -> None:
        q = self.q
        dropped = 0
        if self.latest:  # conflated entries are queued (offer()): forget the ones dropped
            while excess > 0 and q:
                item = q.popleft()
                if is_marker(item):
                    self.head_markers.append(item)
                    continue
                if type(item) is _Entry:
                    self._unbox(item)
                dropped += 1
                excess -= 1
        while excess > 0 and q:
            item = q.popleft()
            if is_marker(item):
                self.head_markers.append(item)
                continue
            dropped += 1
            excess -= 1
        self._discarded(dropped)
        if self.head_markers:
            self.attention = True

    def _marker(self, marker: Message) -> Any:
        return marker.to_wire() if self.raw else marker

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def close(self) -> None:
        """No more items: the consumer drains what is queued, then gets ``EndOfChannel``."""
        self.closed = True
        self._wake()
        if self._space is not None:
            self._space.set()
            self._space = None
        self._advance()

    def reopen(self) -> None:
        """Accept items again (the client reuses its buffer across reconnects)."""
        self.closed = False

    def backlogged(self) -> bool:
        """Whether the consumer has a backlog worth yielding to (the reader asks after each
        frame; see ``busy`` in :func:`trioalpaca._connection.open_connection`): at least
        ``min(128, maxsize // 4)`` items queued."""
        return len(self.q) >= self._yield_at

    # -- Gate protocol (block policy) -------------------------------------------------------

    def full(self) -> bool:
        """Whether the producer should pause (``block``)."""
        return len(self.q) >= self.maxsize

    async def wait_for_space(self) -> None:
        """Wait until at most ``low_water`` messages are queued (or the buffer is closed)."""
        while len(self.q) > self.low_water and not self.closed:
            if self._space is None:
                self._space = trio.Event()
            await self._space.wait()

    # -- delivery positions -----------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Position up to which every item was delivered (taken and finished) or discarded."""
        return self.appended - len(self.q) - self.in_hand

    def _advance(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    async def wait_delivered(self, position: int) -> None:
        """Wait until every item up to ``position`` was delivered or discarded (at once if it
        already was). Waits as long as the consumer takes: race it with a timeout."""
        while self.delivered < position:
            if self._progress is None:
                self._progress = trio.Event()
            await self._progress.wait()

    # -- consumer side ----------------------------------------------------------------------

    def _attention_item(self) -> Any:
        if self.head_markers:
            item = self.head_markers.pop(0)
        elif self.pending_drop:
            item = self._marker(dropped_marker(self.pending_drop, self.policy, self.where))
            self.pending_drop = 0
        else:
            # conflated entries are queued: the head, with its latest content
            item = self.q.popleft()
            if type(item) is _Entry:
                item = self._unbox(item)
            self.in_hand = 1
            if self._space is not None:
                self._after_take()
        self._recheck()
        return item

    def _after_take(self) -> None:
        if self._space is not None and len(self.q) <= self.low_water:
            self._space.set()
            self._space = None

    def _finished(self) -> None:
        # The consumer came back: it is done with what it took last time.
        self.in_hand = 0
        self._advance()

    async def get(self) -> Any:
        """Return the next item (a marker first when one is due).

        Raises:
            trio.EndOfChannel: the buffer is closed and drained.
        """
        if self.in_hand:
            self._finished()
        while True:
            if self.attention:
                return self._attention_item()
            q = self.q
            if q:
                self._since_checkpoint += 1
                if self._since_checkpoint >= _CHECKPOINT_EVERY:
                    # before taking: a Cancelled raised here leaves the item queued
                    self._since_checkpoint = 0
                    await trio.lowlevel.checkpoint()
                    continue  # (what is due may have changed meanwhile)
                item = q.popleft()
                self.in_hand = 1
                if self._space is not None:
                    self._after_take()
                return item
            if self.closed:
                raise trio.EndOfChannel
            self._since_checkpoint = 0
            self._waiter = trio.Event()
            await self._waiter.wait()

    async def get_batch(self, max_items: int | None) -> list[Any]:
        """Return every queued item (at most ``max_items``), waiting for the first; a due
        marker comes alone.

        Raises:
            trio.EndOfChannel: the buffer is closed and drained.
        """
        if self.in_hand:
            self._finished()
        # One checkpoint per call, always before anything is taken (a Cancelled leaves the
        # items queued): waiting for the first item is one, else an explicit one. A consumer
        # that keeps up waits every time, so it pays no second pass through the scheduler.
        checkpointed = False
        while True:
            if self.attention:
                return [self._attention_item()]
            q = self.q
            if q:
                if not checkpointed:
                    await trio.lowlevel.checkpoint()
                    checkpointed = True
                    continue  # (more may have come, or a marker fallen due, meanwhile)
                if max_items is None or len(q) <= max_items:
                    items = list(q)
                    q.clear()
                else:
                    items = [q.popleft() for _ in range(max_items)]
                self.in_hand = len(items)
                if self._space is not None:
                    self._after_take()
                return items
            if self.closed:
                raise trio.EndOfChannel
            self._waiter = trio.Event()
            await self._waiter.wait()
            checkpointed = True

    async def get_full_batch(self, max_items: int, linger: float) -> list[Any]:
        """Wait for the first item, then up to ``linger`` seconds until ``max_items`` are queued;
        return at most ``max_items``, conflated entries with their latest content (the batching
        consumer: the pipeline's workers). A due marker comes alone.

        Raises:
            trio.EndOfChannel: the buffer is closed and drained.
        """
        if self.in_hand:
            self._finished()
        await trio.lowlevel.checkpoint_if_cancelled()
        q = self.q
        while not q:
            if self.head_markers or self.pending_drop:
                return [self._attention_item()]
            if self.closed:
                raise trio.EndOfChannel
            self.wake_at = 1
            self._waiter = trio.Event()
            await self._waiter.wait()
        if len(q) < max_items and linger > 0 and not self.closed:
            self.wake_at = max_items
            with trio.move_on_after(linger):
                while len(q) < max_items and not self.closed:
                    self._waiter = trio.Event()
                    await self._waiter.wait()
            self.wake_at = 1
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if self.head_markers or self.pending_drop:
            return [self._attention_item()]
        if len(q) <= max_items:
            items = list(q)
            q.clear()
        else:
            popleft = q.popleft
            items = [popleft() for _ in range(max_items)]
        latest = self.latest
        if latest:
            for i, m in enumerate(items):
                if type(m) is _Entry:
                    del latest[m.key]
                    items[i] = m.msg
            self._recheck()
        self.in_hand = len(items)
        if self._space is not None:
            self._after_take()
        return items

    def push_front(self, item: Any) -> None:
        """Put back the item the consumer just took (it did not handle it)."""
        self.q.appendleft(item)
        self.in_hand = max(self.in_hand - 1, 0)
