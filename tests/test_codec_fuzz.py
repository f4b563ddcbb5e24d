"""Fuzzing-style tests of the decoders: only ProtocolError may ever escape, nothing hangs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioalpaca import _codec
from trioalpaca import models as m
from trioalpaca._codec import Decoder, Encoder, decode_request, decode_trading
from trioalpaca._errors import ProtocolError
from trioalpaca.testing import strategies as tst

KINDS = ["stocks", "crypto", "options", "news", "trading"]
ENCODINGS = ["msgpack", "json"]
DECODERS = [Decoder(kind, enc) for kind in KINDS for enc in ENCODINGS]  # type: ignore[arg-type]

_EXPECTED_TYPES: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: type(v) is str,
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) is float,
    "ts": lambda v: type(v) is int,
    "bool": lambda v: type(v) is bool,
    "strs": lambda v: type(v) is tuple and all(type(x) is str for x in v),
    "images": lambda v: (
        type(v) is tuple
        and all(
            type(im) is m.NewsImage and type(im.size) is str and type(im.url) is str for im in v
        )
    ),
    "levels": lambda v: (
        type(v) is tuple
        and all(
            type(lv) is m.OrderbookLevel and type(lv.price) is float and type(lv.size) is float
            for lv in v
        )
    ),
}


def assert_well_typed(msg: Any) -> None:
    """A decoded model never carries a value of the wrong type."""
    spec = _codec._SPECS.get(type(msg))
    if spec is None:
        return
    for attr, key, kind, default in spec:
        value = getattr(msg, attr)
        if value is None and default is None:
            continue  # an optional field that was not sent
        assert _EXPECTED_TYPES[kind](value), (type(msg).__name__, key, value)


def decode_everything(frame: Any) -> None:
    """Feed ``frame`` to every decoder entry point; only ProtocolError may come out."""
    for decoder in DECODERS:
        try:
            for msg in decoder.decode(frame):
                assert_well_typed(msg)
        except ProtocolError:
            pass
        try:
            raw = decoder.decode_raw(frame)
            assert isinstance(raw, list)
            assert all(type(d) is dict for d in raw)
            if decoder.kind != "trading":
                assert all(type(d["T"]) is str for d in raw)
        except ProtocolError:
            pass
    for fn in (decode_request, lambda f: decode_trading(f, "msgpack")):
        try:
            assert type(fn(frame)) is dict
        except ProtocolError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(frame: bytes) -> None:
    decode_everything(frame)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text(frame: str) -> None:
    decode_everything(frame)


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, value in ops:
        if not buf:
            buf.append(value)
            continue
        i = pos % len(buf)
        if op == 0:
            buf[i] = value  # overwrite
        elif op == 1:
            buf[i] ^= 1 << (value % 8)  # flip a bit
        elif op == 2:
            buf.insert(i, value)  # insert
        elif op == 3:
            del buf[i]  # delete
        else:
            del buf[i:]  # truncate
    return bytes(buf)


_OPS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("kind", ["stocks", "crypto", "options", "news"])
@settings(max_examples=40, deadline=None)
@given(data=st.data(), ops=_OPS)
def test_mutated_msgpack_frames(kind: str, data: st.DataObject, ops: list[Any]) -> None:
    messages = data.draw(tst.frames(kind, max_size=4))
    frame = Encoder(kind, "msgpack").encode(messages)
    assert isinstance(frame, bytes)
    decode_everything(_mutate(frame, ops))


@pytest.mark.parametrize("kind", ["stocks", "crypto", "options", "news"])
@settings(max_examples=40, deadline=None)
@given(data=st.data(), ops=_OPS)
def test_mutated_json_frames(kind: str, data: st.DataObject, ops: list[Any]) -> None:
    messages = data.draw(tst.frames(kind, max_size=4))
    frame = Encoder(kind, "json").encode(messages)
    assert isinstance(frame, str)
    mutated = _mutate(frame.encode(), ops)
    decode_everything(mutated)
    decode_everything(mutated.decode("utf-8", errors="replace"))


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["t", "q", "o", "n", "S", "T", "success", "error", "subscription"]),
    st.builds(msgpack.Timestamp, st.integers(-(2**40), 2**40), st.integers(0, 999_999_999)),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
)
_KEYS = st.one_of(st.text(max_size=3), st.sampled_from(["T", "S", "t"]))
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_KEYS, inner, max_size=5),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_TREES)
def test_structured_garbage(tree: Any) -> None:
    try:
        frame = msgpack.packb(tree)
    except (ValueError, OverflowError, TypeError):
        return  # not representable in msgpack
    decode_everything(frame)
    decode_everything(msgpack.packb([tree]))


@pytest.mark.parametrize("kind", ["stocks", "crypto", "options", "news"])
@settings(max_examples=40, deadline=None)
@given(data=st.data(), replacement=_TREES)
def test_type_confusion_in_valid_messages(kind: str, data: st.DataObject, replacement: Any) -> None:
    """A valid message with one field replaced: decodes well-typed or raises ProtocolError."""
    msg = data.draw(tst.market_data(kind))
    wire = msg.to_wire()
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = replacement
    # packed directly: Encoder.encode_raw would refuse (or coerce) many of these values
    try:
        decode_everything(msgpack.packb([wire]))
    except (ValueError, OverflowError, TypeError):
        pass  # not representable in msgpack
    try:
        decode_everything(json.dumps([wire], allow_nan=False))
    except (ValueError, TypeError):
        pass  # not representable in JSON


@pytest.mark.parametrize(
    "frame",
    [
        b"\x91" * 1_000_000,
        b"\xdd\xff\xff\xff\xff" * 1000,
        "[" * 1_000_000,
        '[{"T":"t","c":[' + "[" * 500_000,
        b"\xc7\xff\xff" + b"\x00" * 100,
        b"\x91\x81\xa1t\xd5\xff\x00\x00",  # ext -1 with 2 bytes: no such timestamp form
        b"\x91\x81\xa1t\xc7\x05\xff" + b"\x00" * 5,
        b"[" * 1_000_000,
    ],
)
def test_pathological_input_fails_fast(frame: Any) -> None:
    start = time.perf_counter()
    for decoder in (Decoder("stocks", "msgpack"), Decoder("stocks", "json")):
        with pytest.raises(ProtocolError):
            decoder.decode(frame)
        with pytest.raises(ProtocolError):
            decoder.decode_raw(frame)
    assert time.perf_counter() - start < 5.0
