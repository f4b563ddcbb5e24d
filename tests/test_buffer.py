"""The shared bounded buffer: overflow policies, markers, delivery positions, closing."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import loopback_autojump_clock  # noqa: F401 (the autojump_clock fixture)
from trioalpaca import Dropped, Reconnected
from trioalpaca._buffer import MessageBuffer, dropped_marker, is_marker

GAP = Reconnected(gap_start_ns=1, gap_end_ns=2, attempts=1)


async def drain(buf: MessageBuffer) -> list[object]:
    out: list[object] = []
    while buf.q or buf.attention:
        out.append(await buf.get())
    return out


async def test_drop_oldest_reports_one_marker_before_the_next_item() -> None:
    buf = MessageBuffer(3, "drop_oldest")
    assert buf.put([1, 2, 3])
    buf.put_marker(GAP)  # markers are always queued (they take room) and never discarded
    assert buf.put([4, 5])
    assert buf.dropped_total == 3
    got = await drain(buf)
    assert got == [dropped_marker(3, "drop_oldest"), GAP, 4, 5]
    assert got[0] == Dropped(count=3, reason="buffer overflow (drop_oldest)")


async def test_a_marker_in_the_dropped_range_is_kept_and_comes_first() -> None:
    buf = MessageBuffer(2, "drop_oldest")
    buf.put([1, 2])
    buf.put_marker(GAP)
    buf.put([3, 4])
    assert await drain(buf) == [GAP, dropped_marker(3, "drop_oldest"), 4]


async def test_drop_newest_keeps_what_was_queued() -> None:
    buf = MessageBuffer(3, "drop_newest", where="lane")
    buf.put([1, 2])
    buf.put([3, 4, 5])
    assert await drain(buf) == [Dropped(count=2, reason="lane overflow (drop_newest)"), 1, 2, 3]


async def test_disconnect_refuses_and_leaves_a_marker() -> None:
    buf = MessageBuffer(2, "disconnect", raw=True)
    assert buf.put([1, 2])
    assert not buf.put([3])
    assert buf.dropped_total == 1
    got = await drain(buf)
    assert got[:2] == [1, 2] and is_marker(got[2]) and got[2]["count"] == 1  # type: ignore[index]


async def test_block_send_waits_for_room_and_close_releases_everyone() -> None:
    buf = MessageBuffer(2, "block", low_water=1)
    await buf.send("a")
    await buf.send("b")
    assert buf.full()
    sent = []

    async def producer() -> None:
        await buf.send("c")
        sent.append("c")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []
        assert await buf.get() == "a"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["c"]
    buf.close()
    assert [await buf.get(), await buf.get()] == ["b", "c"]
    with pytest.raises(trio.EndOfChannel):
        await buf.get()
    await buf.send("late")  # closed: ignored
    assert not buf.q


async def test_delivered_once_the_consumer_comes_back() -> None:
    buf = MessageBuffer(10, "drop_oldest")
    buf.put(["a", "b", "c"])
    position = buf.appended
    assert position == 3 and buf.delivered == 0
    reached = trio.Event()

    async def waiter() -> None:
        await buf.wait_delivered(position)
        reached.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        assert await buf.get_batch(2) == ["a", "b"]
        assert buf.delivered == 0  # taken, not finished
        assert await buf.get() == "c"  # came back: a and b are done
        assert buf.delivered == 2
        await trio.testing.wait_all_tasks_blocked()
        assert not reached.is_set()
        buf.put(["d"])
        assert await buf.get() == "d"  # c is done
        await trio.testing.wait_all_tasks_blocked()
        assert reached.is_set()


async def test_discarded_items_count_as_delivered() -> None:
    buf = MessageBuffer(2, "drop_oldest")
    buf.put([1, 2, 3, 4])
    assert buf.delivered == 2
    await buf.wait_delivered(2)  # at once
    assert await buf.get() == dropped_marker(2, "drop_oldest")
    assert await buf.get() == 3
    buf.push_front(3)
    assert buf.delivered == 2 and list(buf.q) == [3, 4]


def test_conflate_is_per_message_not_the_buffers_own_policy() -> None:
    with pytest.raises(ValueError, match="conflate"):
        MessageBuffer(1, "conflate")
    with pytest.raises(ValueError, match="key"):
        MessageBuffer(1, "drop_oldest").offer("x", "conflate")


# ------------------------------------------------------------------ offer(): one message, a policy


async def test_offer_conflates_in_place_and_falls_back_when_full() -> None:
    buf = MessageBuffer(3, "drop_newest", keep_discards=True)
    assert buf.offer("a1", "conflate", "A")
    assert buf.offer("t1")
    assert buf.offer("a2", "conflate", "A")  # replaces a1's content, keeps its place
    assert buf.offer("b1", "conflate", "B")
    assert buf.offer("c1", "conflate", "C")  # full: the buffer's own policy (drop_newest)
    assert buf.replaced == ["a1"] and buf.discards == ["c1"]
    assert buf.dropped_total == 2
    assert await buf.get_full_batch(10, 0) == ["a2", "t1", "b1"]
    assert not buf.latest and not buf.attention
    assert buf.offer("a3", "conflate", "A")  # the entry left: a new one
    assert await buf.get() == "a3"  # get() unboxes conflated entries too


async def test_offer_drop_oldest_evicts_a_conflated_entry_with_its_latest_content() -> None:
    buf = MessageBuffer(2, "drop_oldest", keep_discards=True)
    buf.offer("a1", "conflate", "A")
    buf.offer("a2", "conflate", "A")
    buf.offer("t1")
    buf.offer("t2")  # evicts the A entry (content a2)
    assert buf.discards == ["a2"] and buf.replaced == ["a1"]
    assert not buf.latest
    assert await buf.get_batch(None) == ["t1", "t2"]


async def test_offer_block_refuses_when_full_and_markers_without_keep_discards() -> None:
    buf = MessageBuffer(1, "block")
    assert buf.offer(1)
    assert not buf.offer(2)
    assert not buf.offer(3, "conflate", "K")  # conflate falls back to block: not queued either
    assert not buf.latest
    assert list(buf.q) == [1]
    drops = MessageBuffer(1, "drop_newest", where="lane")
    drops.offer(1)
    drops.offer(2)
    assert await drain(drops) == [Dropped(count=1, reason="lane overflow (drop_newest)"), 1]


async def test_get_full_batch_waits_for_a_full_batch_or_the_linger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buf = MessageBuffer(100, "block")
    got: list[tuple[float, list[object]]] = []

    async def consumer() -> None:
        while True:
            try:
                batch = await buf.get_full_batch(3, 1.0)
            except trio.EndOfChannel:
                return
            got.append((trio.current_time(), batch))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.sleep(0.5)
        buf.offer("a")
        await trio.sleep(0.2)
        buf.offer("b")
        buf.offer("c")  # three queued: the consumer wakes before its linger ends
        await trio.sleep(5)
        buf.offer("d")  # alone: taken when the linger (1 s) ends
        await trio.sleep(5)
        buf.close()
    assert got == [(0.7, ["a", "b", "c"]), (6.7, ["d"])]


PolicyName = Literal["block", "drop_oldest", "drop_newest"]


class _Model:
    """A plain list of ``[key, content]`` entries with the policies spelled out."""

    def __init__(self, maxsize: int, own: PolicyName) -> None:
        self.maxsize = maxsize
        self.own = own
        self.entries: list[list[Any]] = []
        self.discards: list[Any] = []
        self.replaced: list[Any] = []

    def offer(self, msg: Any, policy: str, key: Any) -> bool:
        if policy == "conflate":
            for entry in self.entries:
                if entry[0] == key:
                    self.replaced.append(entry[1])
                    entry[1] = msg
                    return True
        else:
            key = None
        if len(self.entries) < self.maxsize:
            self.entries.append([key, msg])
            return True
        if policy == "conflate":
            policy = self.own
        if policy == "block":
            return False
        if policy == "drop_newest":
            self.discards.append(msg)
            return True
        self.discards.append(self.entries.pop(0)[1])
        self.entries.append([key, msg])
        return True

    def take(self, n: int) -> list[Any]:
        out = [content for _, content in self.entries[:n]]
        del self.entries[:n]
        return out


offers = st.tuples(
    st.sampled_from(["own", "block", "drop_oldest", "drop_newest", "conflate"]),
    st.integers(0, 3),
)
steps = st.lists(st.one_of(offers, st.integers(1, 4).map(lambda n: ("take", n))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    maxsize=st.integers(1, 5),
    own=st.sampled_from(["block", "drop_oldest", "drop_newest"]),
    ops=steps,
    use_get=st.booleans(),
)
def test_offer_policies_match_a_plain_model(
    maxsize: int, own: PolicyName, ops: list[tuple[Any, int]], use_get: bool
) -> None:
    async def run() -> None:
        buf = MessageBuffer(maxsize, own, keep_discards=True)
        model = _Model(maxsize, own)
        taken: list[Any] = []
        expected: list[Any] = []
        for n, (op, arg) in enumerate(ops):
            if op == "take":
                if use_get:
                    for _ in range(min(arg, len(buf.q))):
                        taken.append(await buf.get())
                elif buf.q:
                    taken.extend(await buf.get_full_batch(arg, 0))
                expected.extend(model.take(arg))
            else:
                policy = None if op == "own" else op
                msg = f"m{n}"
                assert buf.offer(msg, policy, arg) == model.offer(msg, policy or own, arg)
            assert taken == expected
            assert len(buf.q) == len(model.entries) <= maxsize
            assert buf.discards == model.discards
            assert buf.replaced == model.replaced
            assert buf.dropped_total == len(model.discards) + len(model.replaced)
            assert sorted(buf.latest) == sorted(k for k, _ in model.entries if k is not None)
        assert taken + model.take(maxsize) == expected + [
            c for c in (await buf.get_full_batch(maxsize, 0) if buf.q else [])
        ]

    trio.run(run)
