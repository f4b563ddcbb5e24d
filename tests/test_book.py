"""The subscription book: unit tests and a hypothesis state machine against a plain model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trioalpaca._book import BookDelta, Pair, SubscriptionBook, group_pairs, pairs_of_channels

CHANNELS = ["trades", "quotes", "bars"]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "*"]
OWNERS = ["a", "b", "c", "d"]

pairs_st = st.frozensets(st.tuples(st.sampled_from(CHANNELS), st.sampled_from(SYMBOLS)))


def test_add_and_remove_return_the_delta() -> None:
    book: SubscriptionBook[str] = SubscriptionBook()
    assert book.add("h1", {("trades", "AAPL"), ("quotes", "AAPL")}) == {
        ("trades", "AAPL"),
        ("quotes", "AAPL"),
    }
    assert book.add("h2", [("trades", "AAPL")]) == frozenset()
    assert book.refcount(("trades", "AAPL")) == 2
    assert book.owners(("trades", "AAPL")) == ("h1", "h2")
    assert book.owners_of_symbol("AAPL") == ("h1", "h2")
    assert book.channels_of("AAPL") == {"trades", "quotes"}
    assert book.remove_owner("h1") == {("quotes", "AAPL")}
    assert book.owners_of_symbol("AAPL") == ("h2",)
    assert book.remove_owner("h1") == frozenset()  # not registered any more
    assert book.discard("h2", [("trades", "AAPL"), ("bars", "X")]) == {("trades", "AAPL")}
    assert "h2" in book and len(book) == 1  # still registered, with nothing
    assert book.union() == frozenset() and not book.has_symbol("AAPL")
    book.check_invariants()


def test_replace_keeps_pairs_that_stay() -> None:
    book: SubscriptionBook[int] = SubscriptionBook()
    book.add(1, {("trades", "AAPL"), ("trades", "MSFT")})
    book.add(2, {("trades", "MSFT")})
    delta = book.replace(1, {("trades", "MSFT"), ("quotes", "TSLA")})
    assert delta == BookDelta(added=frozenset({("quotes", "TSLA")}), removed={("trades", "AAPL")})
    assert bool(delta) and not BookDelta()
    assert book.replace(1, book.pairs_of(1)) == BookDelta()
    assert book.by_channel() == {"trades": {"MSFT"}, "quotes": {"TSLA"}}
    assert book.by_channel(["TSLA"]) == {"quotes": {"TSLA"}}
    assert list(book) == [1, 2]
    book.check_invariants()


def test_owners_of_symbol_is_a_snapshot() -> None:
    book: SubscriptionBook[str] = SubscriptionBook()
    book.add("a", [("trades", "AAPL")])
    book.add("b", [("quotes", "AAPL")])
    seen = []
    for owner in book.owners_of_symbol("AAPL"):
        seen.append(owner)
        book.remove_owner("b")  # a change while iterating does not break the iteration
    assert seen == ["a", "b"]
    assert book.owners_of_symbol("AAPL") == ("a",)


def test_check_invariants_catches_corruption() -> None:
    book: SubscriptionBook[str] = SubscriptionBook()
    book.add("a", [("trades", "AAPL")])
    book._by_pair[("quotes", "MSFT")] = {"a": None}
    with pytest.raises(AssertionError, match="union"):
        book.check_invariants()


def test_group_and_ungroup() -> None:
    pairs = {("trades", "MSFT"), ("trades", "AAPL"), ("quotes", "AAPL")}
    grouped = group_pairs(pairs)
    assert grouped == {"quotes": ["AAPL"], "trades": ["AAPL", "MSFT"]}
    assert pairs_of_channels(grouped) == pairs


class BookMachine(RuleBasedStateMachine):
    """Random add / discard / replace / remove_owner against ``owner -> set of pairs``."""

    def __init__(self) -> None:
        super().__init__()
        self.book: SubscriptionBook[str] = SubscriptionBook()
        self.model: dict[str, set[Pair]] = {}

    def union(self) -> set[Pair]:
        return {p for mine in self.model.values() for p in mine}

    @rule(owner=st.sampled_from(OWNERS), pairs=pairs_st)
    def add(self, owner: str, pairs: frozenset[Pair]) -> None:
        before = self.union()
        added = self.book.add(owner, pairs)
        self.model.setdefault(owner, set()).update(pairs)
        assert added == self.union() - before

    @rule(owner=st.sampled_from(OWNERS), pairs=pairs_st)
    def discard(self, owner: str, pairs: frozenset[Pair]) -> None:
        before = self.union()
        removed = self.book.discard(owner, pairs)
        if owner in self.model:
            self.model[owner] -= pairs
        assert removed == before - self.union()

    @rule(owner=st.sampled_from(OWNERS), pairs=pairs_st)
    def replace(self, owner: str, pairs: frozenset[Pair]) -> None:
        before = self.union()
        delta = self.book.replace(owner, pairs)
        self.model[owner] = set(pairs)
        after = self.union()
        assert delta.added == after - before
        assert delta.removed == before - after

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove_owner(self, data: st.DataObject) -> None:
        owner = data.draw(st.sampled_from(sorted(self.model)))
        before = self.union()
        removed = self.book.remove_owner(owner)
        del self.model[owner]
        assert removed == before - self.union()
        assert owner not in self.book

    @invariant()
    def agrees_with_model(self) -> None:
        self.book.check_invariants()
        assert self.book.union() == self.union()
        assert list(self.book) == list(self.model)
        for owner, mine in self.model.items():
            assert self.book.pairs_of(owner) == mine
        for ch in CHANNELS:
            for sym in SYMBOLS:
                holders = [o for o, mine in self.model.items() if (ch, sym) in mine]
                assert self.book.refcount((ch, sym)) == len(holders)
                assert set(self.book.owners((ch, sym))) == set(holders)
        for sym in SYMBOLS:
            holders = [o for o, mine in self.model.items() if any(s == sym for _, s in mine)]
            assert set(self.book.owners_of_symbol(sym)) == set(holders)
            assert self.book.channels_of(sym) == {
                ch for mine in self.model.values() for ch, s in mine if s == sym
            }
        assert self.book.symbol_count() == len({s for _, s in self.union()})


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
