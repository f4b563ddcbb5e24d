"""The pool's handover machine: moving a symbol between two sessions without loss or repeats.

Pure and synchronous (no I/O, no clock: every call that needs the time takes ``now``). The pool
feeds it every message of a symbol that is moving and does what the verdict says:

* :attr:`Verdict.DELIVER` -- deliver it to the handles now;
* :attr:`Verdict.HOLD` -- the machine keeps it; it is delivered later, in order, by the flush;
* :attr:`Verdict.DROP` -- a copy of something already delivered (or from a session that no longer
  counts): discard it;
* :attr:`Verdict.PASS` -- no handover applies any more: route it the normal way.

The life of one handover, from session ``old`` to session ``new`` (both carry the same market):

1. ``moving``: ``old`` keeps delivering, and every message it delivers is remembered; the messages
   of ``new`` are held back.
2. ``flushing`` (:meth:`HandoverTable.start_flush`, once ``old`` is unsubscribed and has routed
   everything it had received): the held messages are delivered in arrival order, skipping those
   ``old`` already delivered (:meth:`HandoverTable.next_held`); ``new`` keeps appending.
3. ``draining`` (:meth:`HandoverTable.end_flush`): for ``drain_seconds`` late copies of messages
   ``old`` delivered are still dropped; then the handover is forgotten.

Per symbol: nothing lost, nothing twice, order kept (``tests/test_handover.py`` checks it with
hypothesis over interleavings of the two sessions).
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Handover", "HandoverTable", "Verdict"]


class Verdict(enum.Enum):
    """What to do with one message of a moving symbol."""

    DELIVER = "deliver"
    HOLD = "hold"
    DROP = "drop"
    PASS = "pass"


class Handover:
    """One symbol moving from session ``old`` to session ``new`` (any objects compared by
    identity, e.g. the pool's sessions)."""

    __slots__ = ("deadline", "delivered", "held", "new", "old", "state")

    def __init__(self, old: object, new: object) -> None:
        self.old = old
        self.new = new
        #: messages ``old`` delivered (forgotten once ``new``'s copy was skipped)
        self.delivered: dict[Any, None] = {}
        #: messages of ``new`` waiting for the flush, in arrival order
        self.held: collections.deque[Any] = collections.deque()
        self.state = "moving"  # moving | flushing | draining
        self.deadline = math.inf

    def _remember(self, msg: Any) -> None:
        try:
            self.delivered[msg] = None
        except TypeError:  # pragma: no cover - unhashable payload: cannot de-duplicate
            pass

    def seen(self, msg: Any) -> bool:
        """Whether ``old`` already delivered ``msg`` (forgets it: copies come once)."""
        try:
            if msg in self.delivered:
                del self.delivered[msg]
                return True
        except TypeError:  # pragma: no cover - unhashable payload
            pass
        return False

    def route(self, source: object, msg: Any) -> Verdict:
        """The verdict for ``msg`` arriving from session ``source``."""
        if self.state != "draining":
            if source is self.new:
                self.held.append(msg)  # delivered in order once the old one is done
                return Verdict.HOLD
            if source is self.old and self.state == "moving":
                self._remember(msg)
                return Verdict.DELIVER
            return Verdict.DROP
        if self.seen(msg):
            return Verdict.DROP  # a late copy of what the old session delivered
        return Verdict.PASS

    def over(self, now: float) -> bool:
        """Whether a draining handover can be forgotten (no copies left to expect, or its
        drain time is up)."""
        return self.state == "draining" and (not self.delivered or now > self.deadline)


class HandoverTable:
    """The handovers in progress, by symbol."""

    __slots__ = ("_moves", "drain_seconds")

    def __init__(self, drain_seconds: float = 5.0) -> None:
        self._moves: dict[str, Handover] = {}
        self.drain_seconds = drain_seconds

    def __bool__(self) -> bool:
        return bool(self._moves)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._moves

    def get(self, symbol: str) -> Handover | None:
        """The handover of ``symbol``, if one is in progress."""
        return self._moves.get(symbol)

    def begin(self, moves: Mapping[str, tuple[object, object]]) -> None:
        """Start moving each symbol from ``old`` to ``new`` (``{symbol: (old, new)}``)."""
        for sym, (old, new) in moves.items():
            self._moves[sym] = Handover(old, new)

    def route(self, symbol: str, source: object, msg: Any, now: float) -> Verdict:
        """The verdict for ``msg`` of ``symbol`` from session ``source`` (``PASS`` when the
        symbol is not moving); forgets a handover whose drain is over."""
        handover = self._moves.get(symbol)
        if handover is None:
            return Verdict.PASS
        verdict = handover.route(source, msg)
        if verdict is Verdict.PASS and handover.over(now):
            del self._moves[symbol]
        return verdict

    def abandon(self, symbols: Iterable[str]) -> None:
        """Forget the handovers of ``symbols`` that did not reach the flush (the move failed or
        was cancelled: the symbol stays where ownership says)."""
        for sym in symbols:
            handover = self._moves.get(sym)
            if handover is not None and handover.state == "moving":
                del self._moves[sym]

    def start_flush(self, symbol: str) -> Handover | None:
        """``old`` is done with ``symbol``: return its handover, now flushing (``None`` if it is
        not moving)."""
        handover = self._moves.get(symbol)
        if handover is None or handover.state != "moving":
            return None
        handover.state = "flushing"
        return handover

    @staticmethod
    def next_held(handover: Handover) -> tuple[bool, Any]:
        """The next held message to deliver while flushing: ``(True, msg)``, or ``(False,
        None)`` when nothing is left; copies of what ``old`` delivered are skipped."""
        while handover.held:
            msg = handover.held.popleft()
            if not handover.seen(msg):
                return True, msg
        return False, None

    def end_flush(self, symbol: str, handover: Handover, now: float) -> None:
        """The flush is over (or was interrupted): drain late copies for a while."""
        handover.held.clear()
        handover.state = "draining"
        handover.deadline = now + self.drain_seconds
        if not handover.delivered and self._moves.get(symbol) is handover:
            del self._moves[symbol]
