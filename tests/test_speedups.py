"""The optional C accelerator (``trioalpaca._speedups``): built in CI, and the same answers as
the pure-Python code it replaces, for every input."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any
from unittest import mock

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import _codec
from trioalpaca._codec import Decoder, Encoder
from trioalpaca.testing import strategies as tst

KINDS = ["stocks", "crypto", "options", "news"]

needs_speedups = pytest.mark.skipif(
    not _codec.SPEEDUPS,
    reason="trioalpaca._speedups is not in use (not built, or TRIOALPACA_NO_SPEEDUPS is set)",
)


def test_the_accelerator_is_built_in_ci() -> None:
    """CI installs a C compiler, so a missing accelerator there is a build failure, not a
    reason to skip the comparisons below."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("only checked in CI (CI=true)")
    assert "TRIOALPACA_NO_SPEEDUPS" not in os.environ
    assert _codec.SPEEDUPS


@pytest.mark.parametrize(("value", "expected"), [("1", False), ("yes", False), ("0", None)])
def test_no_speedups_environment_variable(value: str, expected: bool | None) -> None:
    code = "import trioalpaca._codec as c; print(c.SPEEDUPS)"
    env = {**os.environ, "TRIOALPACA_NO_SPEEDUPS": value}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    built = importlib.util.find_spec("trioalpaca._speedups") is not None
    assert out == str(built if expected is None else expected)


# ------------------------------------------------------------------------------- raw_check

#: Keys the raw check reads, plus a few it must ignore.
_KEYS = ["T", "t", "r", "ft", "created_at", "updated_at", "S", "p"]
_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack packs
_VALUES = st.one_of(
    _INTS,
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.sampled_from(["t", "q", "b", "n", "success", "2021-02-22T15:51:44Z"]),
    st.none(),
    st.lists(_INTS, max_size=2),
    st.binary(max_size=2),
)
#: What a timestamp key may hold in an odd element.
_TIMESTAMPS = st.one_of(
    st.integers(min_value=0, max_value=2**62),
    st.booleans(),
    st.floats(allow_nan=False),
    st.sampled_from(["2021-02-22T15:51:44Z", ""]),
    st.none(),
)
#: Mostly well-formed elements (so that frames often pass), with odd timestamps at times.
_WELL_FORMED = st.fixed_dictionaries(
    {"T": st.sampled_from(["t", "q", "p", "n", "x"]), "t": st.integers(0, 2**62)},
    optional={"r": _TIMESTAMPS, "ft": _TIMESTAMPS, "created_at": _TIMESTAMPS,
              "updated_at": _TIMESTAMPS, "S": _VALUES},
)  # fmt: skip
_ELEMENTS = st.one_of(
    _WELL_FORMED,
    _WELL_FORMED.map(lambda d: {**d, "t": "2021-02-22T15:51:44Z"}),
    st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=len(_KEYS)),
    _VALUES,
)


def _python_answer(check: Any, items: list[Any]) -> bool:
    try:
        return bool(check(items))
    except Exception:  # what decode_raw does with an exception: the careful path
        return False


@needs_speedups
@pytest.mark.parametrize("kind", [*KINDS, "trading"])
@settings(max_examples=300)
@given(items=st.lists(st.one_of(_WELL_FORMED, _WELL_FORMED, _ELEMENTS), max_size=4))
def test_c_check_answers_as_the_python_loop(kind: str, items: list[Any]) -> None:
    # the decoder's input: what msgpack makes of the frame (interned str keys, exact types)
    items = msgpack.unpackb(msgpack.packb(items), timestamp=2)
    python_check = _codec._make_raw_check(kind, accelerated=False)
    c_check = _codec._make_raw_check(kind)
    assert c_check is not python_check
    assert c_check(items) is _python_answer(python_check, items)


@needs_speedups
def test_c_check_distinguishes_exact_types() -> None:
    check = _codec._make_raw_check("stocks")
    good = {"T": "t", "t": 5, "r": 6}
    assert check([good, good]) is True
    assert check([]) is True
    for bad in (
        {"T": "t", "t": True},  # bool is not a timestamp
        {"T": "t", "t": 5, "r": False},
        {"T": "t", "t": 5.0},
        {"T": "t", "t": 5, "r": None},  # present but not an int: the careful path decides
        {"T": b"t", "t": 5},
        {"t": 5},
        {"T": "t"},
        [("T", "t")],
        "T",
    ):
        assert check([good, bad]) is False, bad
    assert check(({"T": "t", "t": 5},)) is False  # type: ignore[arg-type]  # (a tuple)


@needs_speedups
def test_c_check_survives_a_key_that_changes_the_list() -> None:
    """Not the decoder's input (msgpack keys are str or bytes), but no caller can crash it: a
    key whose ``__eq__`` empties the list while ``T`` is looked up."""
    items: list[Any] = []

    class Collider:
        def __hash__(self) -> int:
            return hash("T")

        def __eq__(self, other: object) -> bool:
            items.clear()
            return False

    good = {"T": "t", "t": 5}
    for check in (_codec._make_raw_check("stocks"), _codec._make_raw_check("stocks", False)):
        items[:] = [{Collider(): 0, "T": "t", "t": 5}, good, good]
        assert check(items) is True and items == []


@needs_speedups
def test_c_check_refuses_bad_arguments() -> None:
    from trioalpaca import _speedups

    with pytest.raises(TypeError, match="3 arguments"):
        _speedups.raw_check((), ())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tuples"):
        _speedups.raw_check(["t"], (), [])  # type: ignore[arg-type]


@needs_speedups
@settings(max_examples=150)
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_decode_raw_is_the_same_with_either_check(data: st.DataObject, kind: str) -> None:
    """Whole frames (valid messages mixed with odd elements): ``decode_raw`` gives the same
    dicts, malformed markers included, with the C check and with the Python loop."""
    messages = data.draw(tst.frames(kind, max_size=6))
    frame = Encoder(kind, "msgpack").encode(messages)
    if data.draw(st.booleans()):  # odd elements among the messages
        items: list[Any] = msgpack.unpackb(frame)
        for _ in range(data.draw(st.integers(1, 3))):
            items.insert(data.draw(st.integers(0, len(items))), data.draw(_ELEMENTS))
        frame = msgpack.packb(items)
    accelerated = Decoder(kind, "msgpack").decode_raw(frame)
    python_check = _codec._make_raw_check(kind, accelerated=False)
    with mock.patch.dict(_codec._RAW_CHECKS, {kind: python_check}):
        pure = Decoder(kind, "msgpack").decode_raw(frame)
    assert accelerated == pure


# ----------------------------------------------------------------------------------- Items


def _items(blocks: list[list[Any]]) -> Any:
    """An ``Items`` whose refill hands out ``blocks`` one after the other, then ends."""
    from trioalpaca import _speedups

    pending = list(blocks)

    async def refill() -> Any:
        await trio.lowlevel.checkpoint()
        while pending:
            block = pending.pop(0)
            if block:
                items.it = it = iter(block)
                return next(it)
        raise StopAsyncIteration

    items = _speedups.Items(refill)
    return items


@needs_speedups
@settings(max_examples=50)
@given(blocks=st.lists(st.lists(st.integers(), max_size=5), max_size=5))
async def test_items_hand_out_every_block_in_order(blocks: list[list[int]]) -> None:
    items = _items(blocks)
    assert [x async for x in items] == [x for block in blocks for x in block]
    assert [x async for x in items] == []  # ended: refill keeps saying so
    assert items.it is None


@needs_speedups
async def test_items_under_a_tracer() -> None:
    """With a tracer (coverage, debuggers) CPython awaits through the iterator protocol, where
    an item travels in a StopIteration: tuples and None too."""
    values: list[Any] = [(1, 2), None, StopIteration("x"), {"T": "t"}]
    old = sys.gettrace()
    sys.settrace(lambda *args: None)
    try:
        got = [x async for x in _items([values[:2], values[2:]])]
    finally:
        sys.settrace(old)
    assert got == values


@needs_speedups
async def test_items_misuse_is_a_clear_error() -> None:
    from trioalpaca import _speedups

    with pytest.raises(TypeError, match="callable"):
        _speedups.Items(5)  # type: ignore[arg-type]
    items = _items([[1, 2]])
    with pytest.raises(TypeError, match="iterator"):
        items.it = [1, 2]
    items.it = iter([7])
    ready = items.__anext__()
    assert await ready == 7
    with pytest.raises(RuntimeError, match="already awaited"):
        await ready
    items.it = iter([8])
    with pytest.raises(TypeError, match="non-None value to a ready item"):
        items.__anext__().send(1)

    def broken() -> Any:
        yield 1
        raise ValueError("the block's iterator failed")

    items.it = broken()
    assert await items.__anext__() == 1
    with pytest.raises(ValueError, match="iterator failed"):
        await items.__anext__()


@needs_speedups
async def test_items_survive_a_block_that_replaces_itself() -> None:
    """A block iterator that sets ``it`` while it runs (the replay's never do) is kept alive
    until it returns."""
    items = _items([[9]])

    def block() -> Any:
        items.it = iter([2, 3])  # drops the only other reference to this generator
        yield 1

    items.it = block()
    assert [x async for x in items] == [1, 2, 3, 9]


@needs_speedups
def test_items_in_a_reference_cycle_are_collected() -> None:
    import gc
    import weakref

    class Owner:
        items: Any = None

    owner = Owner()
    owner.items = _items([[1]])  # refill's closure holds items; items holds refill
    ref = weakref.ref(owner)
    owner.items.it = iter([owner])  # and the block holds the owner
    del owner
    gc.collect()
    assert ref() is None
