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

:class:`MessageBuffer` is the FIFO of the client and the pool handles. Markers (``Reconnected``,
``Dropped``) bypass the bound and are never discarded. Discards are reported by one
``Dropped`` marker built by :func:`dropped_marker`, whoever discards.

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
from typing import Any, Literal

import trio

from trioalpaca.models import Dropped, Message, Reconnected

__all__ = ["MessageBuffer", "OverflowPolicy", "dropped_marker", "is_marker"]

OverflowPolicy = Literal["block", "drop_oldest", "drop_newest", "conflate", "disconnect"]
"""Every overflow policy of trioalpaca; each component accepts a documented subset."""

#: Take this many items without a checkpoint at most (a consumer that never waits still yields).
_CHECKPOINT_EVERY = 512


def dropped_marker(count: int, policy: str, where: str = "buffer") -> Dropped:
    """The ``Dropped`` marker reporting that ``count`` messages were discarded by ``policy``."""
    return Dropped(count=count, reason=f"{where} overflow ({policy})")


def is_marker(item: Any) -> bool:
    """Whether ``item`` is a ``Reconnected`` / ``Dropped`` marker (typed or as a wire dict)."""
    if type(item) is dict:
        return item.get("T") in ("reconnected", "dropped")
    return isinstance(item, (Reconnected, Dropped))


class MessageBuffer:
    """A bounded FIFO between one producer and one consumer, with an overflow policy.

    Accepts ``block``, ``drop_oldest``, ``drop_newest`` and ``disconnect`` (``conflate`` needs
    per-channel keys: the pipeline's lanes implement it).

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
    """

    __slots__ = (
        "_progress",
        "_since_checkpoint",
        "_space",
        "_waiter",
        "appended",
        "attention",
        "closed",
        "dropped_total",
        "head_markers",
        "in_hand",
        "low_water",
        "maxsize",
        "pending_drop",
        "policy",
        "q",
        "raw",
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
    ) -> None:
        if policy == "conflate":
            raise ValueError("MessageBuffer does not conflate (the pipeline's lanes do)")
        self.maxsize = maxsize
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
        else:
            item = self._marker(dropped_marker(self.pending_drop, self.policy, self.where))
            self.pending_drop = 0
        self.attention = bool(self.head_markers or self.pending_drop)
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
                item = q.popleft()
                self.in_hand = 1
                if self._space is not None:
                    self._after_take()
                self._since_checkpoint += 1
                if self._since_checkpoint >= _CHECKPOINT_EVERY:
                    self._since_checkpoint = 0
                    await trio.lowlevel.checkpoint()
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
        while True:
            if self.attention:
                return [self._attention_item()]
            q = self.q
            if q:
                if max_items is None or len(q) <= max_items:
                    items = list(q)
                    q.clear()
                else:
                    items = [q.popleft() for _ in range(max_items)]
                self.in_hand = len(items)
                if self._space is not None:
                    self._after_take()
                await trio.lowlevel.checkpoint()
                return items
            if self.closed:
                raise trio.EndOfChannel
            self._waiter = trio.Event()
            await self._waiter.wait()

    def push_front(self, item: Any) -> None:
        """Put back the item the consumer just took (it did not handle it)."""
        self.q.appendleft(item)
        self.in_hand = max(self.in_hand - 1, 0)
