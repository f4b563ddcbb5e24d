"""The benchmark case registry.

A case is a function run in its **own subprocess** (so every client gets a fresh interpreter
and its own CPU time); it receives :class:`Params` and returns a dict of figures. Add cases from
any ``bench/cases_*.py`` module with the :func:`case` decorator; ``bench/run.py`` imports them all.

Kinds:

* ``"throughput"``: the emulator runs in burst mode (pre-encoded frames of 100 messages, half
  trades half quotes, sent as fast as the socket takes them); return at least
  ``{"msgs": n, "seconds": dt}`` for the ``params.total`` messages.
* ``"latency"``: the emulator is paced (``params.rate`` msgs/s in total); return
  ``{"p50_ms": ..., "p99_ms": ..., "msgs": n}``.
* ``"memory"``: paced feed with a consumer much slower than the feed; return RSS figures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

KEY = "PKBENCHKEY"
SECRET = "bench-secret"


@dataclass(frozen=True)
class Params:
    """What a case gets: the emulator endpoint and the workload."""

    url: str
    symbols: list[str]
    total: int
    seconds: float
    rate: float


@dataclass(frozen=True)
class Case:
    """One named benchmark case."""

    name: str
    label: str
    kind: str
    run: Callable[[Params], dict[str, Any]]


CASES: dict[str, Case] = {}

#: Extra ratio checks printed by ``run.py``: ``(label, numerator case, denominator case, target)``.
RATIOS: list[tuple[str, str, str, float | None]] = []


def ratio(label: str, numerator: str, denominator: str, target: float | None) -> None:
    """Add a ratio line to the report: ``ratio("p1 / a", "p1", "a", 0.7)``; ``target=None``:
    reported, without a verdict."""
    RATIOS.append((label, numerator, denominator, target))


def case(name: str, label: str, kind: str) -> Callable[[Callable[[Params], dict[str, Any]]], Any]:
    """Register a case: ``@case("a", "trioalpaca typed", "throughput")``."""

    def register(fn: Callable[[Params], dict[str, Any]]) -> Callable[[Params], dict[str, Any]]:
        if name in CASES:
            raise ValueError(f"duplicate bench case {name!r}")
        CASES[name] = Case(name, label, kind, fn)
        return fn

    return register


@asynccontextmanager
async def bare_session(url: str, symbols: list[str]) -> AsyncIterator[Any]:
    """The bare floor's connection: trio-websocket with trioalpaca's socket settings, the
    handshake (connected, auth, subscribe to trades and quotes) done by hand; yields the socket."""
    import msgpack
    import trio_websocket

    from trioalpaca._connection import MESSAGE_QUEUE_SIZE, RECEIVE_BUFFER_SIZE

    async with trio_websocket.open_websocket_url(
        url,
        extra_headers=[(b"Content-Type", b"application/msgpack")],
        message_queue_size=MESSAGE_QUEUE_SIZE,
        receive_buffer_size=RECEIVE_BUFFER_SIZE,
        max_message_size=64 * 1024 * 1024,
    ) as ws:
        await ws.get_message()
        await ws.send_message(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
        await ws.get_message()
        sub = {"action": "subscribe", "trades": symbols, "quotes": symbols}
        await ws.send_message(msgpack.packb(sub))
        await ws.get_message()
        yield ws
