"""The publisher's C-level grouping of a batch (``RedisPublisher._group_raw``) queues exactly what
its general per-message loop queues, for any batch (no Redis needed: nothing is written)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca.fanout._layout import STREAM_CODE_BY_T, StreamLayout
from trioalpaca.fanout.publisher import RedisPublisher
from trioalpaca.models import Trade


class _NoRedis:
    def register_script(self, script: str) -> None:
        return None


_data = st.builds(
    lambda t, s, i: {"T": t, "S": s, "i": i},
    st.sampled_from(sorted(STREAM_CODE_BY_T)),
    st.sampled_from(["AAPL", "MSFT"]),
    st.integers(0, 1000),
)
_other = st.one_of(
    st.just({"T": "reconnected", "gap_start_ns": 1, "gap_end_ns": 2, "attempts": 1}),
    st.just({"T": "dropped", "count": 3, "reason": "test"}),
    st.just({"T": "nonsense"}),
    st.just({"T": 7}),
    st.just({"S": "no T"}),
    st.just(Trade("AAPL", 1, "V", 1.0, 1, (), 1, "C")),
)


def _queued(pub: RedisPublisher) -> list[tuple[Any, ...]]:
    return [(e.key, e.kind, e.data, e.rx, e.seq, e.count) for e in pub._queue]


@settings(max_examples=300)
@given(
    batch=st.one_of(  # plain data batches (the fast path's case) and mixed ones
        st.lists(_data, max_size=30), st.lists(st.one_of(_data, _other), max_size=30)
    ),
    per_symbol=st.booleans(),
)
def test_grouping_fast_path_matches_the_general_loop(batch: list[Any], per_symbol: bool) -> None:
    layout = StreamLayout.for_feed("iex", per_symbol=per_symbol)
    fast = RedisPublisher(_NoRedis(), layout, 1)
    slow = RedisPublisher(_NoRedis(), layout, 1)
    slow._group_raw = lambda items, route: None  # type: ignore[method-assign]
    for pub in (fast, slow):
        pub.publish(list(batch), rx_ns=5)
        pub.publish(list(batch), rx_ns=6)
    assert _queued(fast) == _queued(slow)
    assert fast._unroutable == slow._unroutable
    assert list(fast._known) == list(slow._known)


def test_a_batch_of_one_type_is_one_entry_without_copying() -> None:
    pub = RedisPublisher(_NoRedis(), StreamLayout.for_feed("iex"), 1)
    items = [{"T": "t", "S": "AAPL", "i": n} for n in range(5)]
    assert pub._group_raw(items, pub._route) == {pub._route["t"]: items}
