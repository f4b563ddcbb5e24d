"""Decode benchmark: typed ``Decoder.decode`` vs ``msgpack.unpackb`` + building the models by hand.

Usage: ``python bench/decode.py [--frames N] [--repeat R]``. Everything is measured in one run on
the same frame (100 stock trades and quotes, mixed, as Alpaca sends them: msgpack, ``T`` first,
ext -1 timestamps). Printed figures are the best of ``--repeat`` runs, in microseconds per frame.

* ``baseline``: ``msgpack.unpackb(frame, timestamp=2)`` then ``Trade(...)`` / ``Quote(...)``
  positional constructor calls written out by hand (the fastest straightforward user code);
* ``typed``: :meth:`trioalpaca._codec.Decoder.decode` (validates every field's type too);
* ``raw``: :meth:`trioalpaca._codec.Decoder.decode_raw` vs a bare ``msgpack.unpackb`` loop.

Ratios above 1.0 mean trioalpaca is faster than the baseline.
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

import msgpack

from trioalpaca._codec import Decoder, Encoder
from trioalpaca.models import Message, Quote, Trade


def make_frame(n: int = 100) -> bytes:
    """A msgpack frame of ``n`` alternating stock trades and quotes."""
    messages: list[Message] = []
    base = 1_700_000_000_123_456_789
    for i in range(n):
        if i % 2 == 0:
            messages.append(
                Trade(
                    "AAPL",
                    52983525029461 + i,
                    "V",
                    189.25 + i / 100,
                    100 + i,
                    ("@", "I"),
                    base + i * 1_000,
                    "C",
                )
            )
        else:
            messages.append(
                Quote("AAPL", "V", 189.24, 3, "Q", 189.26, 4, ("R",), base + i * 1_000, "C")
            )
    frame = Encoder("stocks", "msgpack").encode(messages)
    assert isinstance(frame, bytes)
    return frame


def by_hand(frame: bytes) -> list[Any]:
    """The baseline: unpackb, then the models built by hand."""
    out: list[Any] = []
    append = out.append
    for d in msgpack.unpackb(frame, timestamp=2):
        if d["T"] == "t":
            append(Trade(d["S"], d["i"], d["x"], d["p"], d["s"], tuple(d["c"]), d["t"], d["z"]))
        else:
            append(
                Quote(
                    d["S"],
                    d["bx"],
                    d["bp"],
                    d["bs"],
                    d["ax"],
                    d["ap"],
                    d["as"],
                    tuple(d["c"]),
                    d["t"],
                    d["z"],
                )
            )
    return out


def bare_unpack(frame: bytes) -> list[Any]:
    """A bare ``msgpack.unpackb`` (what raw mode is compared with)."""
    result: list[Any] = msgpack.unpackb(frame, timestamp=2)
    return result


def best(fn: Any, frame: bytes, number: int, repeat: int) -> float:
    """Best time per call in microseconds."""
    return min(timeit.repeat(lambda: fn(frame), number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=300, help="frames per timing run")
    parser.add_argument("--repeat", type=int, default=15, help="timing runs (best is kept)")
    args = parser.parse_args()

    frame = make_frame(100)
    decoder = Decoder("stocks", "msgpack")
    assert decoder.decode(frame) == by_hand(frame), "typed decode disagrees with the baseline"
    assert decoder.decode_raw(frame) == bare_unpack(frame)

    # interleave the runs so drift on a shared machine hits both sides alike
    base_t, typed_t, bare_t, raw_t = [], [], [], []
    for _ in range(args.repeat):
        base_t.append(best(by_hand, frame, args.frames, 1))
        typed_t.append(best(decoder.decode, frame, args.frames, 1))
        bare_t.append(best(bare_unpack, frame, args.frames, 1))
        raw_t.append(best(decoder.decode_raw, frame, args.frames, 1))
    base, typed, bare, raw = min(base_t), min(typed_t), min(bare_t), min(raw_t)
    print(f"frame: 100 messages (50 trades + 50 quotes), {len(frame)} bytes msgpack")
    print(f"baseline unpackb + models by hand : {base:8.1f} us/frame")
    print(f"Decoder.decode (typed)            : {typed:8.1f} us/frame")
    print(f"typed ratio (baseline / typed)    : {base / typed:8.3f}  (>= 1.0: as fast or faster)")
    print(f"bare msgpack.unpackb              : {bare:8.1f} us/frame")
    print(f"Decoder.decode_raw                : {raw:8.1f} us/frame")
    print(f"raw ratio (bare / raw)            : {bare / raw:8.3f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
