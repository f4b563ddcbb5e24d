"""The relay's routing state for one upstream connection, without I/O.

One :class:`Routes` exists per upstream (credentials, endpoint). It holds:

* the members (downstream sessions attached to this upstream);
* their subscription sets, in the shared :class:`~trioalpaca._book.SubscriptionBook`, whose
  union is what upstream must carry;
* acknowledgements waiting until upstream covers what a request added (each member's
  acknowledgements stay in request order);
* the routing of upstream messages to the members whose own set matches.

The socket-level code (:mod:`trioalpaca.relay._server`) performs what this module decides: it
sends the planned subscribe/unsubscribe upstream, the released acknowledgements and the routed
messages downstream. Everything here is synchronous, so the hypothesis state machine in
``tests/test_relay_routing.py`` drives it directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

from .._book import BookDelta, Pair, SubscriptionBook, group_pairs
from ..endpoints import MIRRORED_CHANNELS, Endpoint
from ..models import CHANNEL_BY_WIRE_TYPE

__all__ = ["MARKER_TYPES", "PendingAck", "Routes", "pairs_of_state"]

O = TypeVar("O", bound=Hashable)  # noqa: E741 - the member type

#: ``T`` codes of the in-band markers (models.Reconnected / models.Dropped wire forms).
MARKER_TYPES = frozenset({"reconnected", "dropped"})

#: Wire ``T`` -> the channel a message is routed by (corrections and cancel errors follow trades).
_ROUTE_CHANNEL: dict[str, str] = {
    t: ch for t, ch in CHANNEL_BY_WIRE_TYPE.items() if ch not in ("control", "trade_updates")
}
_ROUTE_CHANNEL["c"] = "trades"
_ROUTE_CHANNEL["x"] = "trades"


def pairs_of_state(state: Mapping[str, Iterable[str]]) -> set[Pair]:
    """The ``(channel, symbol)`` pairs of a subscription state, without the mirrored channels
    (``corrections`` / ``cancelErrors`` follow ``trades`` and are never requested)."""
    return {(ch, sym) for ch, syms in state.items() if ch not in MIRRORED_CHANNELS for sym in syms}


@attrs.define(eq=False)
class PendingAck:
    """A member's acknowledgement held until upstream covers ``need``."""

    frame: Any
    """The frame to send (the member's own ``subscription`` message, built at request time)."""
    need: frozenset[Pair]
    """Pairs the request added that upstream did not carry yet."""


def covered(need: Iterable[Pair], acked: Iterable[Pair] | frozenset[Pair]) -> bool:
    """Whether upstream's confirmed pairs ``acked`` deliver every pair of ``need`` (a ``"*"``
    upstream covers every symbol of its channel)."""
    have = acked if isinstance(acked, (set, frozenset)) else set(acked)
    return all(p in have or (p[0], "*") in have for p in need)


class Routes(Generic[O]):
    """Members, their sets, waiting acknowledgements and message routing of one upstream."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        #: The shared refcounted book: member -> its pairs; the union is what upstream needs.
        self.book: SubscriptionBook[O] = SubscriptionBook()
        self._members: dict[O, None] = {}
        self._pending: dict[O, deque[PendingAck]] = {}

    # ------------------------------------------------------------------ members

    @property
    def members(self) -> tuple[O, ...]:
        """Attached members, in attach order."""
        return tuple(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def attach(self, member: O) -> None:
        """Attach a member with an empty set."""
        self._members[member] = None
        self.book.add(member)

    def detach(self, member: O) -> frozenset[Pair]:
        """Detach a member (its waiting acknowledgements are discarded); returns the pairs that
        left the union (what upstream may now unsubscribe)."""
        self._members.pop(member, None)
        self._pending.pop(member, None)
        return self.book.remove_owner(member)

    def set_state(self, member: O, state: Mapping[str, Iterable[str]]) -> BookDelta:
        """Make ``state`` (the member's whole acknowledged set) its set in the book."""
        return self.book.replace(member, pairs_of_state(state))

    # ------------------------------------------------------------------ upstream plan

    def desired(self) -> frozenset[Pair]:
        """The union of the members' sets: what upstream should be subscribed to."""
        return self.book.union()

    def plan(
        self, acked: Mapping[str, Iterable[str]]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """``(subscribe, unsubscribe)`` request bodies taking upstream from its confirmed state
        ``acked`` to :meth:`desired` (empty dicts when nothing is to do). Several member changes
        made meanwhile become one request each way (coalesced)."""
        have = pairs_of_state(acked)
        want = self.desired()
        return group_pairs(want - have), group_pairs(have - want)

    # ------------------------------------------------------------------ acknowledgements

    def hold_ack(self, member: O, frame: Any, need: Iterable[Pair]) -> None:
        """Queue ``frame`` for ``member`` until upstream covers ``need`` (and every earlier
        acknowledgement of that member was released)."""
        self._pending.setdefault(member, deque()).append(PendingAck(frame, frozenset(need)))

    def has_pending(self, member: O) -> bool:
        """Whether ``member`` has acknowledgements waiting."""
        return bool(self._pending.get(member))

    def pending_count(self) -> int:
        """Acknowledgements waiting across all members."""
        return sum(len(q) for q in self._pending.values())

    def release(self, acked: Mapping[str, Iterable[str]]) -> list[tuple[O, Any]]:
        """Acknowledgements whose needs upstream's confirmed state ``acked`` now covers, in order
        per member: ``[(member, frame), ...]`` to send now. Needed pairs the member has dropped
        meanwhile are not waited for."""
        have = frozenset(pairs_of_state(acked))
        out: list[tuple[O, Any]] = []
        for member, queue in list(self._pending.items()):
            # a pair the member no longer wants (a later unsubscribe) is not waited for
            wants = self.book.pairs_of(member)
            while queue and covered(queue[0].need & wants, have):
                out.append((member, queue.popleft().frame))
            if not queue:
                del self._pending[member]
        return out

    def fail(self, pairs: Iterable[Pair]) -> list[tuple[O, PendingAck]]:
        """Upstream refused a request carrying ``pairs``: remove and return each waiting
        acknowledgement whose need intersects them (the caller answers those members with the
        error and takes the need out of their sets)."""
        bad = frozenset(pairs)
        out: list[tuple[O, PendingAck]] = []
        for member, queue in list(self._pending.items()):
            keep: deque[PendingAck] = deque()
            for entry in queue:
                if entry.need & bad:
                    out.append((member, entry))
                else:
                    keep.append(entry)
            if keep:
                self._pending[member] = keep
            else:
                del self._pending[member]
        return out

    # ------------------------------------------------------------------ routing

    def route(self, msgs: Sequence[Mapping[str, Any]]) -> dict[O, list[Mapping[str, Any]]]:
        """Split upstream messages by member: each gets the messages its own set matches.

        ``"*"`` matches every symbol of its channel; a news item goes to members subscribed to
        any of its symbols; corrections and cancel errors follow ``trades``. Messages of an
        unknown type go to every member (the relay is transparent to new types); markers are
        not routed here.
        """
        out: dict[O, list[Mapping[str, Any]]] = {}
        owners = self.book.owners
        wanted = self.book.wanted
        wild: dict[str, tuple[O, ...]] = {}
        for m in msgs:
            t = m.get("T")
            ch = _ROUTE_CHANNEL.get(t) if type(t) is str else None
            if ch is None:
                if t in MARKER_TYPES or t == "malformed":
                    continue  # malformed markers stay here (counted in the upstream's metrics)
                targets: Iterable[O] = self._members
            else:
                star = wild.get(ch)
                if star is None:
                    star = wild[ch] = owners((ch, "*")) if wanted((ch, "*")) else ()
                if ch == "news":
                    found: dict[O, None] = dict.fromkeys(star)
                    syms = m.get("symbols")
                    if isinstance(syms, (list, tuple)):
                        for s in syms:
                            if type(s) is str:
                                found.update(dict.fromkeys(owners((ch, s))))
                    targets = found
                else:
                    direct = owners((ch, m.get("S")))  # type: ignore[arg-type]
                    targets = direct
                    if star:
                        targets = dict.fromkeys(direct + star) if direct else star
            for member in targets:
                lst = out.get(member)
                if lst is None:
                    out[member] = [m]
                else:
                    lst.append(m)
        return out

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` unless the book and the members agree."""
        self.book.check_invariants()
        assert set(self.book) == set(self._members), "book owners differ from the members"
        assert set(self._pending) <= set(self._members), "pending acks of a detached member"
