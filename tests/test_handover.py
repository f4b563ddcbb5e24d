"""The pool's pure handover machine: nothing lost, nothing twice, order kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca._handover import HandoverTable, Verdict

OLD, NEW = object(), object()


def test_verdicts_through_one_handover() -> None:
    table = HandoverTable(drain_seconds=5.0)
    assert table.route("AAPL", OLD, 1, now=0.0) is Verdict.PASS  # not moving
    table.begin({"AAPL": (OLD, NEW)})
    assert "AAPL" in table and bool(table)
    assert table.route("AAPL", OLD, 1, now=0.0) is Verdict.DELIVER
    assert table.route("AAPL", NEW, 1, now=0.0) is Verdict.HOLD
    assert table.route("AAPL", NEW, 2, now=0.0) is Verdict.HOLD
    assert table.route("AAPL", object(), 9, now=0.0) is Verdict.DROP  # a third session
    handover = table.start_flush("AAPL")
    assert handover is not None and table.start_flush("AAPL") is None
    assert table.route("AAPL", OLD, 3, now=0.0) is Verdict.DROP  # the old one is done
    assert table.next_held(handover) == (True, 2)  # 1 was delivered by the old session
    assert table.next_held(handover) == (False, None)
    table.end_flush("AAPL", handover, now=0.0)
    assert "AAPL" not in table  # nothing left to de-duplicate


def test_draining_drops_late_copies_until_the_deadline() -> None:
    table = HandoverTable(drain_seconds=5.0)
    table.begin({"AAPL": (OLD, NEW)})
    for i in (1, 2, 3):
        assert table.route("AAPL", OLD, i, now=0.0) is Verdict.DELIVER
    handover = table.start_flush("AAPL")
    assert handover is not None
    table.end_flush("AAPL", handover, now=0.0)  # the new session had sent nothing yet
    assert table.route("AAPL", NEW, 1, now=1.0) is Verdict.DROP  # a late copy
    assert table.route("AAPL", NEW, 4, now=1.0) is Verdict.PASS
    assert "AAPL" in table  # 2 and 3 may still come
    assert table.route("AAPL", NEW, 5, now=6.0) is Verdict.PASS
    assert "AAPL" not in table  # drain time is up


def test_abandon_forgets_only_moves_that_did_not_reach_the_flush() -> None:
    table = HandoverTable()
    table.begin({"AAPL": (OLD, NEW), "MSFT": (OLD, NEW)})
    assert table.start_flush("MSFT") is not None
    table.abandon(["AAPL", "MSFT", "TSLA"])
    assert "AAPL" not in table and "MSFT" in table


@settings(max_examples=300, deadline=None)
@given(
    old_first=st.integers(0, 5),
    old_len=st.integers(0, 15),
    overlap=st.integers(0, 15),
    new_extra=st.integers(0, 15),
    schedule=st.lists(st.booleans(), max_size=80),
)
def test_any_interleaving_delivers_each_message_once_in_order(
    old_first: int, old_len: int, overlap: int, new_extra: int, schedule: list[bool]
) -> None:
    """The old session carries ``old_first .. old_last``; the new one starts ``overlap``
    messages before that end (make before break) and goes on. The two arrive interleaved as
    ``schedule`` says; the old one is drained before the flush (as the pool guarantees)."""
    old_last = old_first + old_len - 1
    new_first = max(old_first, old_last + 1 - overlap)
    new_last = old_last + new_extra
    old_msgs = [("AAPL", i) for i in range(old_first, old_last + 1)]
    new_msgs = [("AAPL", i) for i in range(new_first, new_last + 1)]
    table = HandoverTable(drain_seconds=5.0)
    table.begin({"AAPL": (OLD, NEW)})
    out: list[tuple[str, int]] = []
    live = OLD  # the session the pool delivers normally from

    def arrive(source: object, msg: tuple[str, int]) -> None:
        verdict = table.route("AAPL", source, msg, now=0.0)
        if verdict is Verdict.DELIVER or (verdict is Verdict.PASS and source is live):
            out.append(msg)

    steps = iter(schedule)
    # Moving: both sessions deliver, interleaved; the old one until it is drained.
    while old_msgs:
        if next(steps, True) or not new_msgs:
            arrive(OLD, old_msgs.pop(0))
        else:
            arrive(NEW, new_msgs.pop(0))
    live = NEW  # ownership switched to the target
    handover = table.start_flush("AAPL")
    assert handover is not None
    # Flushing: the flush task delivers held messages while the new session keeps arriving.
    while True:
        if new_msgs and next(steps, False):
            arrive(NEW, new_msgs.pop(0))
            continue
        more, msg = table.next_held(handover)
        if not more:
            break
        out.append(msg)
    table.end_flush("AAPL", handover, now=0.0)
    while new_msgs:  # draining, then normal routing
        arrive(NEW, new_msgs.pop(0))
    assert out == [("AAPL", i) for i in range(old_first, new_last + 1)]
