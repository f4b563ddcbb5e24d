"""The shared bounded buffer: overflow policies, markers, delivery positions, closing."""

from __future__ import annotations

import pytest
import trio
import trio.testing

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


def test_conflate_is_the_lanes_job() -> None:
    with pytest.raises(ValueError, match="conflate"):
        MessageBuffer(1, "conflate")
