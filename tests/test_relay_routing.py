"""The relay's routing state (no sockets): a hypothesis state machine with 50 clients, plus
focused cases for acknowledgements, failures and routing."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trioalpaca._book import pairs_of_channels
from trioalpaca.endpoints import FEEDS
from trioalpaca.relay._routing import Routes, covered, pairs_of_state

CHANNELS = ["trades", "quotes", "bars"]
SYMBOLS = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "META", "*"]
N_CLIENTS = 50
_T = {"trades": "t", "quotes": "q", "bars": "b"}


def matches(state: dict[str, set[str]], channel: str, symbol: str) -> bool:
    syms = state.get(channel, set())
    return symbol in syms or "*" in syms


class RelayRouting(RuleBasedStateMachine):
    """Clients connect, subscribe, unsubscribe and leave at random; upstream syncs now and then.

    Invariants: the upstream plan always takes upstream to exactly the union of the live clients'
    sets; after a sync nothing is left to send and every acknowledgement was released, in request
    order per client; every routed message reaches exactly the clients whose own set matches.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: Routes[int] = Routes(FEEDS["iex"])
        self.model: dict[int, dict[str, set[str]]] = {}
        self.upstream: set[tuple[str, str]] = set()  # what upstream confirmed
        self.acks_sent: dict[int, list[int]] = {}
        self.acks_expected: dict[int, list[int]] = {}
        self.seq = 0

    def _state(self, cid: int) -> dict[str, tuple[str, ...]]:
        # what a DataServerProtocol reports: every channel, plus the mirrored ones
        st_ = {ch: tuple(sorted(self.model[cid].get(ch, set()))) for ch in CHANNELS}
        st_["corrections"] = st_["trades"]
        st_["cancelErrors"] = st_["trades"]
        return st_

    def _acked(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for ch, sym in self.upstream:
            out.setdefault(ch, []).append(sym)
        return out

    def _change(self, cid: int, channel: str, symbols: list[str], add: bool) -> None:
        before = pairs_of_state(self._state(cid))
        target = self.model[cid].setdefault(channel, set())
        if add:
            target.update(symbols)
        else:
            target.difference_update(symbols)
        after = self._state(cid)
        self.routes.set_state(cid, after)
        added = pairs_of_state(after) - before
        need = [p for p in added if not covered([p], self.upstream)]
        self.seq += 1
        self.acks_expected.setdefault(cid, []).append(self.seq)
        if need or self.routes.has_pending(cid):
            self.routes.hold_ack(cid, self.seq, need)
        else:
            self.acks_sent.setdefault(cid, []).append(self.seq)

    @rule(cid=st.integers(0, N_CLIENTS - 1))
    def connect(self, cid: int) -> None:
        if cid in self.model:
            return
        self.model[cid] = {}
        self.routes.attach(cid)

    @precondition(lambda self: bool(self.model))
    @rule(
        data=st.data(),
        channel=st.sampled_from(CHANNELS),
        symbols=st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3),
    )
    def subscribe(self, data: st.DataObject, channel: str, symbols: list[str]) -> None:
        cid = data.draw(st.sampled_from(sorted(self.model)))
        self._change(cid, channel, symbols, True)

    @precondition(lambda self: bool(self.model))
    @rule(
        data=st.data(),
        channel=st.sampled_from(CHANNELS),
        symbols=st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3),
    )
    def unsubscribe(self, data: st.DataObject, channel: str, symbols: list[str]) -> None:
        cid = data.draw(st.sampled_from(sorted(self.model)))
        self._change(cid, channel, symbols, False)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.model)))
        before = self.routes.desired()
        removed = self.routes.detach(cid)
        del self.model[cid]
        self.acks_expected.pop(cid, None)
        self.acks_sent.pop(cid, None)
        # only pairs nobody else wants leave the union: nothing else is touched
        assert removed == before - self.routes.desired()
        for other in self.model.values():
            assert not (pairs_of_channels(other) & removed)

    @precondition(lambda self: bool(self.model))
    @rule()
    def sync_upstream(self) -> None:
        sub, unsub = self.routes.plan(self._acked())
        self.upstream |= pairs_of_channels(sub)
        self.upstream -= pairs_of_channels(unsub)
        for cid, seq in self.routes.release(self._acked()):
            self.acks_sent.setdefault(cid, []).append(seq)
        assert self.routes.plan(self._acked()) == ({}, {})
        assert self.routes.pending_count() == 0
        for cid in self.model:
            assert self.acks_sent.get(cid, []) == self.acks_expected.get(cid, [])

    @invariant()
    def union_is_union_of_live_sets(self) -> None:
        want = set()
        for state in self.model.values():
            want |= pairs_of_channels(state)
        assert self.routes.desired() == want
        sub, unsub = self.routes.plan(self._acked())
        assert (self.upstream | pairs_of_channels(sub)) - pairs_of_channels(unsub) == want
        self.routes.check_invariants()
        assert set(self.routes.members) == set(self.model)

    @invariant()
    def acks_in_order(self) -> None:
        for cid, sent in self.acks_sent.items():
            assert sent == self.acks_expected[cid][: len(sent)]

    @invariant()
    def routing_is_exact(self) -> None:
        msgs: list[dict[str, Any]] = [
            {"T": _T[ch], "S": sym} for ch in CHANNELS for sym in SYMBOLS if sym != "*"
        ]
        msgs.append({"T": "c", "S": "AAPL"})  # a correction follows trades
        routed = self.routes.route(msgs)
        for cid, state in self.model.items():
            expected = [
                m
                for m in msgs
                if matches(state, {"t": "trades", "c": "trades"}.get(m["T"], ""), m["S"])
                or (m["T"] == "q" and matches(state, "quotes", m["S"]))
                or (m["T"] == "b" and matches(state, "bars", m["S"]))
            ]
            assert routed.get(cid, []) == expected
        assert set(routed) <= set(self.model)


TestRelayRouting = RelayRouting.TestCase
TestRelayRouting.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


def test_failed_request_returns_only_the_requesters_acks() -> None:
    routes: Routes[str] = Routes(FEEDS["iex"])
    for c in "abc":
        routes.attach(c)
    routes.set_state("a", {"trades": ("TSLA",)})
    routes.set_state("b", {"trades": ("NVDA",)})
    routes.set_state("c", {"quotes": ("AAPL",)})
    routes.hold_ack("a", "ack-a1", [("trades", "TSLA")])
    routes.hold_ack("a", "ack-a2", [])
    routes.hold_ack("b", "ack-b1", [("trades", "NVDA")])
    routes.hold_ack("c", "ack-c1", [("quotes", "AAPL")])
    failed = routes.fail([("trades", "TSLA"), ("trades", "NVDA")])
    assert sorted((m, e.frame) for m, e in failed) == [("a", "ack-a1"), ("b", "ack-b1")]
    # a's later ack (nothing needed) is released now; c still waits for its quotes
    assert routes.release({}) == [("a", "ack-a2")]
    assert routes.release({"quotes": ["*"]}) == [("c", "ack-c1")]


def test_routing_news_and_wildcards() -> None:
    routes: Routes[str] = Routes(FEEDS["news"])
    routes.attach("x")
    routes.attach("y")
    routes.attach("z")
    routes.set_state("x", {"news": ("AAPL",)})
    routes.set_state("y", {"news": ("*",)})
    msgs = [
        {"T": "n", "symbols": ["AAPL", "MSFT"], "id": 1},
        {"T": "n", "symbols": ["TSLA"], "id": 2},
        {"T": "zz", "S": "AAPL"},  # unknown type: everyone
        {"T": "reconnected", "gap_start": 1, "gap_end": 2},  # markers are not routed
    ]
    routed = routes.route(msgs)
    assert [m.get("id") for m in routed["x"]] == [1, None]
    assert [m.get("id") for m in routed["y"]] == [1, 2, None]
    assert routed["z"] == [msgs[2]]


def test_upstream_never_follows_data_proxy_ws() -> None:
    from trioalpaca.relay._server import upstream_address

    ep = FEEDS["iex"]
    assert upstream_address(ep, "ws://127.0.0.1:9", {}) == {"base_url": "ws://127.0.0.1:9"}
    assert upstream_address(ep, None, {}) == {"url": "wss://stream.data.alpaca.markets/v2/iex"}
    sandbox = upstream_address(ep, None, {"sandbox": True})["url"]
    assert sandbox == "wss://stream.data.sandbox.alpaca.markets/v2/iex"
    trading = upstream_address(FEEDS["trading"], None, {"paper": False})["url"]
    assert trading == "wss://api.alpaca.markets/stream"
    assert upstream_address(ep, None, {"url": "ws://x:1/v2/iex"}) == {}
