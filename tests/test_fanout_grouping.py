"""The publisher's C-level grouping of a batch (``RedisPublisher._group_raw``) queues exactly what
its general per-message loop queues, for any batch (no Redis needed: nothing is written)."""

from __future__ import annotations

import collections
import enum
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca.fanout._layout import STREAM_CODE_BY_T, StreamLayout
from trioalpaca.fanout.publisher import RedisPublisher, _pack_data
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


def test_grouping_keeps_each_streams_order_and_first_appearance_order() -> None:
    pub = RedisPublisher(_NoRedis(), StreamLayout.for_feed("iex"), 1)
    items = [{"T": t, "n": n} for n, t in enumerate("qtqbtq")]
    groups = pub._group_raw(items, pub._route)
    assert groups is not None
    assert list(groups) == [pub._route["q"], pub._route["t"], pub._route["b"]]
    assert [d["n"] for d in groups[pub._route["q"]]] == [0, 2, 5]
    assert [d["n"] for d in groups[pub._route["t"]]] == [1, 4]
    assert [d["n"] for d in groups[pub._route["b"]]] == [3]


@pytest.mark.parametrize(
    "bad",
    [
        {"S": "no T"},
        {"T": "tq"},
        {"T": ""},
        {"T": 7},
        {"T": ["t"]},
        "t",
        ["t"],
        {"T": "reconnected"},
    ],
)
def test_grouping_leaves_for_the_general_loop(bad: Any) -> None:
    pub = RedisPublisher(_NoRedis(), StreamLayout.for_feed("iex"), 1)
    items = [{"T": "t", "n": 1}, bad, {"T": "q", "n": 2}]
    assert pub._group_raw(items, pub._route) is None


class _Flag(enum.IntEnum):
    ON = 1


@pytest.mark.parametrize(
    "msgs",
    [
        [{"T": "t", "S": "AAPL", "p": 1.5, "c": ["@", "I"], "t": 2**62, "x": None, "b": b"\x00"}],
        [{"T": "t", "c": ("@",)}],  # a tuple: only the lenient packer takes it
        [{"T": "t", "s": _Flag.ON}],  # a subclass of int
        [collections.OrderedDict(T="t")],
    ],
)
def test_data_is_packed_as_the_lenient_packer_packs_it(msgs: list[Any]) -> None:
    assert _pack_data(msgs) == msgpack.packb(msgs, use_bin_type=True)


def test_unpackable_data_still_raises() -> None:
    with pytest.raises(TypeError):
        _pack_data([{"T": "t", "x": object()}])
