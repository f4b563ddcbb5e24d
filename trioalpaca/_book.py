"""The subscription book: who wants which ``(channel, symbol)`` pair, reference counted.

Every layer above one connection has the same bookkeeping problem: many *owners* downstream
(a manager's subscriptions, a pool's handles, a relay's clients) each want a set of
``(channel, symbol)`` pairs, and upstream carries exactly the union of those sets, subscribing a
pair when its first owner arrives and unsubscribing it when its last owner leaves.
:class:`SubscriptionBook` is that table, synchronous and without I/O (httpcore's "state first,
I/O afterwards"): every change returns the *delta* of the union, which is precisely what the
caller has to send upstream.

::

    book: SubscriptionBook[Handle] = SubscriptionBook()
    added = book.add(h1, {("trades", "AAPL"), ("quotes", "AAPL")})    # both pairs: send them
    added = book.add(h2, {("trades", "AAPL")})                         # frozenset(): covered
    removed = book.remove_owner(h1)                                    # {("quotes", "AAPL")}

Owners are any hashable objects, compared as the book's keys; each owner's set is kept as it was
given, and :meth:`SubscriptionBook.check_invariants` verifies that the union, the reference
counts and the per-symbol index all agree with the owners' sets (the hypothesis state machine
in ``tests/test_book.py`` calls it after every step).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

import attrs

__all__ = ["BookDelta", "Pair", "SubscriptionBook", "group_pairs", "pairs_of_channels"]

Pair = tuple[str, str]
"""One ``(wire channel, symbol)`` pair, e.g. ``("trades", "AAPL")``."""

O = TypeVar("O")  # noqa: E741 - the owner type


@attrs.frozen
class BookDelta:
    """How the union changed: pairs to subscribe upstream and pairs to unsubscribe."""

    added: frozenset[Pair] = frozenset()
    """Pairs that entered the union (their first owner arrived)."""
    removed: frozenset[Pair] = frozenset()
    """Pairs that left the union (their last owner went)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class SubscriptionBook(Generic[O]):
    """Owners and the ``(channel, symbol)`` pairs each wants; the union is reference counted.

    All methods are synchronous and cheap; the lookups used on hot paths
    (:meth:`owners`, :meth:`owners_of_symbol`, :meth:`refcount`) are single dict reads, and
    :meth:`owners_of_symbol` returns a tuple that stays valid (a snapshot) while the caller
    awaits, even if the book changes meanwhile.

    Iterating the book lists the owners in registration order; :meth:`owners` and
    :meth:`owners_of_symbol` list them in the order they started wanting the pair or symbol.
    """

    __slots__ = ("_by_pair", "_by_symbol", "_owners", "_symbol_owners")

    def __init__(self) -> None:
        #: owner -> the pairs it wants (insertion order = registration order)
        self._owners: dict[O, set[Pair]] = {}
        #: pair -> owners wanting it (the refcount is the length)
        self._by_pair: dict[Pair, dict[O, None]] = {}
        #: symbol -> owner -> number of that owner's pairs with this symbol
        self._by_symbol: dict[str, dict[O, int]] = {}
        #: symbol -> owners, as a tuple (rebuilt when that symbol changes)
        self._symbol_owners: dict[str, tuple[O, ...]] = {}

    # ------------------------------------------------------------------ changes

    def add(self, owner: O, pairs: Iterable[Pair] = ()) -> frozenset[Pair]:
        """Register ``owner`` (if new) and add ``pairs`` to its set.

        Returns the pairs that entered the union (nobody wanted them before): subscribe those.
        Adding a pair the owner already has changes nothing.
        """
        mine = self._owners.get(owner)
        if mine is None:
            mine = self._owners[owner] = set()
        added: list[Pair] = []
        touched: set[str] = set()
        for pair in pairs:
            if pair in mine:
                continue
            mine.add(pair)
            holders = self._by_pair.get(pair)
            if holders is None:
                holders = self._by_pair[pair] = {}
                added.append(pair)
            holders[owner] = None
            sym = pair[1]
            counts = self._by_symbol.setdefault(sym, {})
            counts[owner] = counts.get(owner, 0) + 1
            touched.add(sym)
        self._refresh(touched)
        return frozenset(added)

    def discard(self, owner: O, pairs: Iterable[Pair]) -> frozenset[Pair]:
        """Remove ``pairs`` from ``owner``'s set (pairs it does not have are ignored).

        Returns the pairs that left the union (their last owner went): unsubscribe those. The
        owner stays registered, possibly with an empty set.
        """
        mine = self._owners.get(owner)
        if mine is None:
            return frozenset()
        removed: list[Pair] = []
        touched: set[str] = set()
        for pair in list(pairs):
            if pair not in mine:
                continue
            mine.discard(pair)
            holders = self._by_pair[pair]
            del holders[owner]
            if not holders:
                del self._by_pair[pair]
                removed.append(pair)
            sym = pair[1]
            counts = self._by_symbol[sym]
            left = counts[owner] - 1
            if left:
                counts[owner] = left
            else:
                del counts[owner]
                if not counts:
                    del self._by_symbol[sym]
            touched.add(sym)
        self._refresh(touched)
        return frozenset(removed)

    def remove_owner(self, owner: O) -> frozenset[Pair]:
        """Unregister ``owner`` and drop all its pairs; returns the pairs that left the union.

        Removing an owner that is not registered returns an empty set.
        """
        mine = self._owners.get(owner)
        if mine is None:
            return frozenset()
        removed = self.discard(owner, tuple(mine))
        del self._owners[owner]
        return removed

    def replace(self, owner: O, pairs: Iterable[Pair]) -> BookDelta:
        """Make ``pairs`` the whole set of ``owner`` (registering it if new).

        Returns both sides of the change of the union. A pair that stays wanted by the owner is
        never counted as removed and added again.
        """
        want = set(pairs)
        mine = self._owners.get(owner, set())
        removed = self.discard(owner, mine - want)
        added = self.add(owner, want - mine)
        return BookDelta(added=added, removed=removed)

    def _refresh(self, symbols: Iterable[str]) -> None:
        for sym in symbols:
            counts = self._by_symbol.get(sym)
            if counts is None:
                self._symbol_owners.pop(sym, None)
            else:
                self._symbol_owners[sym] = tuple(counts)

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        """Number of registered owners."""
        return len(self._owners)

    def __contains__(self, owner: object) -> bool:
        return owner in self._owners

    def __iter__(self) -> Iterator[O]:
        """The registered owners, in registration order."""
        return iter(self._owners)

    def pairs_of(self, owner: O) -> frozenset[Pair]:
        """The pairs ``owner`` wants (empty if it is not registered)."""
        return frozenset(self._owners.get(owner, ()))

    def refcount(self, pair: Pair) -> int:
        """How many owners want ``pair``."""
        holders = self._by_pair.get(pair)
        return 0 if holders is None else len(holders)

    def owners(self, pair: Pair) -> tuple[O, ...]:
        """The owners wanting ``pair``, in the order they added it."""
        holders = self._by_pair.get(pair)
        return () if holders is None else tuple(holders)

    def owners_of_symbol(self, symbol: str) -> tuple[O, ...]:
        """The owners wanting any channel of ``symbol``, in the order they first wanted one of its
        channels (a snapshot: safe to iterate while awaiting)."""
        return self._symbol_owners.get(symbol, ())

    def wanted(self, pair: Pair) -> bool:
        """Whether anybody wants ``pair``."""
        return pair in self._by_pair

    def has_symbol(self, symbol: str) -> bool:
        """Whether anybody wants any channel of ``symbol``."""
        return symbol in self._by_symbol

    def union(self) -> frozenset[Pair]:
        """Every pair somebody wants: what upstream should be subscribed to."""
        return frozenset(self._by_pair)

    def symbols(self) -> frozenset[str]:
        """Every symbol somebody wants (any channel)."""
        return frozenset(self._by_symbol)

    def symbol_count(self) -> int:
        """Number of distinct symbols somebody wants."""
        return len(self._by_symbol)

    def channels_of(self, symbol: str) -> frozenset[str]:
        """The channels somebody wants for ``symbol``."""
        owners = self._by_symbol.get(symbol)
        if not owners:
            return frozenset()
        return frozenset(ch for o in owners for ch, s in self._owners[o] if s == symbol)

    def by_channel(self, symbols: Iterable[str] | None = None) -> dict[str, set[str]]:
        """The union as ``{channel: {symbols}}``, optionally restricted to ``symbols``."""
        out: dict[str, set[str]] = {}
        if symbols is None:
            for ch, sym in self._by_pair:
                out.setdefault(ch, set()).add(sym)
            return out
        for sym in symbols:
            for ch in self.channels_of(sym):
                out.setdefault(ch, set()).add(sym)
        return out

    # ------------------------------------------------------------------ checking

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` unless every index agrees with the owners' sets.

        * the union is exactly the union of the owners' sets, and nothing else;
        * each pair's reference count is the number of owners whose set has it;
        * the per-symbol index counts, per owner, that owner's pairs with the symbol;
        * the per-symbol owner tuples list exactly the owners of the per-symbol index, in its
          order.
        """
        union: dict[Pair, dict[O, None]] = {}
        by_symbol: dict[str, dict[O, int]] = {}
        for owner, mine in self._owners.items():
            for pair in mine:
                union.setdefault(pair, {})[owner] = None
                counts = by_symbol.setdefault(pair[1], {})
                counts[owner] = counts.get(owner, 0) + 1
        assert set(union) == set(self._by_pair), "union differs from the owners' sets"
        for pair, holders in union.items():
            assert set(holders) == set(self._by_pair[pair]), f"owners of {pair} differ"
        assert by_symbol == self._by_symbol, "per-symbol index differs"
        for sym, counts in self._by_symbol.items():
            assert counts, f"empty per-symbol entry for {sym}"
        expected = {sym: tuple(counts) for sym, counts in self._by_symbol.items()}
        assert expected == self._symbol_owners, "per-symbol owner tuples differ"

    def __repr__(self) -> str:
        return f"<SubscriptionBook {len(self._owners)} owners, {len(self._by_pair)} pairs>"


def group_pairs(pairs: Iterable[Pair]) -> dict[str, list[str]]:
    """``{channel: [symbols]}`` of ``pairs``, channels and symbols sorted (a request body)."""
    out: dict[str, list[str]] = {}
    for ch, sym in sorted(pairs):
        out.setdefault(ch, []).append(sym)
    return out


def pairs_of_channels(channels: Mapping[str, Iterable[str]]) -> set[Pair]:
    """The pairs of a ``{channel: symbols}`` mapping (the inverse of :func:`group_pairs`)."""
    return {(ch, sym) for ch, syms in channels.items() for sym in syms}
