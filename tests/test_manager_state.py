"""Refcount correctness of StreamManager under random subscribe/unsubscribe/update sequences.

A hypothesis RuleBasedStateMachine drives a manager running in a trio loop on a helper thread
(steps are synchronous, the manager is not) and compares the fake server's state and the
manager's reference counts against a plain model after every step.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from tests.test_manager import FakeClient
from trioalpaca._errors import SymbolLimitError
from trioalpaca.manager import StreamManager, Subscription

T = TypeVar("T")

SYMBOLS = ["AAPL", "MSFT", "TSLA", "*", "BAD"]
TYPES = ["trades", "quotes", "daily_bars", "control"]
WIRE = {"trades": "trades", "quotes": "quotes", "daily_bars": "dailyBars"}


class TrioThread:
    """A trio loop on a thread; ``call`` runs an async function there and returns its result."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._cancel = nursery.cancel_scope
            self._ready.set()
            await trio.sleep_forever()

    def call(self, afn: Callable[[], Awaitable[T]]) -> T:
        return trio.from_thread.run(afn, trio_token=self._token)

    def stop(self) -> None:
        assert self._cancel is not None
        trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(timeout=10)


def pairs_of(symbols: frozenset[str], types: frozenset[str]) -> set[tuple[str, str]]:
    return {(WIRE[t], s) for t in types if t != "control" for s in symbols}


class ManagerMachine(RuleBasedStateMachine):
    subs = Bundle("subs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = TrioThread()
        self.client = FakeClient(reject={"BAD"})
        self.manager = StreamManager(
            self.client,
            consume=False,
            coalesce_window=0.001,
            requests_per_second=1e6,
            burst=1000,
        )
        nursery = self.loop.nursery
        assert nursery is not None
        self.loop.call(lambda: nursery.start(self.manager.run))
        self.model: dict[int, set[tuple[str, str]]] = {}

    def teardown(self) -> None:
        self.loop.stop()

    async def _subscribe(self, symbols: frozenset[str], types: frozenset[str]) -> Any:
        try:
            return await self.manager.subscribe(symbols=symbols, data_types=types, handler=print)
        except SymbolLimitError as exc:
            return exc

    @rule(
        target=subs,
        symbols=st.frozensets(st.sampled_from(SYMBOLS), min_size=1, max_size=3),
        types=st.frozensets(st.sampled_from(TYPES), min_size=1, max_size=2),
    )
    def subscribe(self, symbols: frozenset[str], types: frozenset[str]) -> Any:
        result = self.loop.call(lambda: self._subscribe(symbols, types))
        wants_bad = "BAD" in symbols and types != {"control"}
        if wants_bad:
            assert isinstance(result, SymbolLimitError)
            return None
        assert isinstance(result, Subscription)
        self.model[result.id] = pairs_of(symbols, types)
        return result

    @rule(sub=consumes(subs))
    def unsubscribe(self, sub: Subscription | None) -> None:
        if sub is None:
            return
        self.loop.call(sub.unsubscribe)
        self.model.pop(sub.id, None)

    @rule(sub=subs, symbols=st.frozensets(st.sampled_from(SYMBOLS[:4]), min_size=1, max_size=3))
    def update(self, sub: Subscription | None, symbols: frozenset[str]) -> None:
        if sub is None or not sub.active:
            return
        self.loop.call(lambda: sub.update(symbols=symbols))
        types = frozenset("daily_bars" if t == "dailyBars" else t for t in sub.data_types)
        self.model[sub.id] = pairs_of(symbols, types)

    @rule(
        batch=st.lists(
            st.tuples(
                st.frozensets(st.sampled_from(SYMBOLS), min_size=1, max_size=2),
                st.frozensets(st.sampled_from(TYPES[:3]), min_size=1, max_size=2),
            ),
            min_size=2,
            max_size=6,
        ),
        drop=subs,
    )
    def concurrent(
        self, batch: list[tuple[frozenset[str], frozenset[str]]], drop: Subscription | None
    ) -> None:
        """Several subscribes (and one unsubscribe) at once: they coalesce into one flush."""
        results: list[Any] = []

        async def run_all() -> None:
            async with trio.open_nursery() as nursery:
                for symbols, types in batch:

                    async def one(
                        symbols: frozenset[str] = symbols, types: frozenset[str] = types
                    ) -> None:
                        results.append((symbols, types, await self._subscribe(symbols, types)))

                    nursery.start_soon(one)
                if drop is not None:
                    nursery.start_soon(drop.unsubscribe)

        self.loop.call(run_all)
        if drop is not None:
            self.model.pop(drop.id, None)
        for symbols, types, result in results:
            if "BAD" in symbols:
                assert isinstance(result, SymbolLimitError)
            elif isinstance(result, Subscription):
                self.model[result.id] = pairs_of(symbols, types)
            else:
                # Shared a rejected request with a BAD subscription: allowed to fail too.
                assert isinstance(result, SymbolLimitError)

    @invariant()
    def server_state_is_the_union(self) -> None:
        union: set[tuple[str, str]] = set().union(*self.model.values()) if self.model else set()
        assert self.client.state == union
        assert self.client.redundant == 0

    @invariant()
    def refcounts_match_model(self) -> None:
        for ch in ("trades", "quotes", "dailyBars"):
            for sym in SYMBOLS:
                expected = sum((ch, sym) in p for p in self.model.values())
                assert self.manager.refcount(ch, sym) == expected, (ch, sym)
        assert {s.id for s in self.manager.subscriptions} == set(self.model)
        assert all(s.active for s in self.manager.subscriptions)
        self.manager._book.check_invariants()


ManagerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestManagerRefcounts = ManagerMachine.TestCase
