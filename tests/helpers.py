"""Helpers shared by several test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio.testing
from trio_websocket import open_websocket_url

from trioalpaca import StreamFactory, _codec
from trioalpaca.testing import Emulator


@pytest.fixture(name="autojump_clock")
def loopback_autojump_clock() -> trio.testing.MockClock:
    """``autojump_clock`` replacement: virtual time that jumps only after 1 ms of real idleness.

    Import it into a test module to use it there. pytest-trio's own fixture jumps at once; with
    real loopback sockets a frame can be "in flight" in the kernel for a moment on a loaded
    machine, and an instant jump would then fire timeouts that could never fire in reality.
    """
    return trio.testing.MockClock(autojump_threshold=0.001)


@pytest.fixture(name="loopback_clock")
def loopback_clock_fixture() -> trio.testing.MockClock:
    """The same 1 ms-threshold clock under its own name, for the one test of a module whose
    subject is the socket while the others run in memory on pytest-trio's ``autojump_clock``
    (pytest-trio takes any fixture that is a clock as the test's clock)."""
    return trio.testing.MockClock(autojump_threshold=0.001)


@pytest.fixture(name="iteration", params=["c", "python"])
def replay_iteration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which replay ``async for`` the test uses: the C accelerator's ``Items`` (skipped when it
    is not built; CI requires it) or the pure-Python async generator. Import it into a test
    module to use it there."""
    if request.param == "c" and not _codec.SPEEDUPS:
        pytest.skip("trioalpaca._speedups is not in use (not built, or TRIOALPACA_NO_SPEEDUPS)")
    if request.param == "python":
        monkeypatch.setattr(_codec, "_speedups", None)
    return str(request.param)


def in_memory(*emulators: Emulator) -> StreamFactory:
    """A ``stream_factory`` that serves each connection in memory by the emulator listening on
    the URL's port (``emulator.connect_in_memory``): no sockets, so pytest-trio's own
    ``autojump_clock`` (jump at once) is exact and the tests can assert exact virtual times.

    Use loopback (no factory, and :func:`loopback_autojump_clock`) only where the socket itself
    is under test. A port none of ``emulators`` listens on is refused like a closed port.
    """
    by_port = {emu.port: emu for emu in emulators}

    async def connect(host: str, port: int, secure: bool) -> trio.abc.Stream:
        emu = by_port.get(port)
        if emu is None:
            raise ConnectionRefusedError(f"no in-memory emulator on port {port}")
        return await emu.connect_in_memory(host, port, secure)

    return connect


@asynccontextmanager
async def ws_connect(url: str, headers: list[tuple[str, str]] | None = None) -> AsyncIterator[Any]:
    """``open_websocket_url`` that also closes the TCP stream when the server closed first
    (trio-websocket's client leaves it to the garbage collector, a ResourceWarning)."""
    conn = None
    try:
        async with open_websocket_url(url, extra_headers=headers or []) as ws:
            conn = ws
            yield ws
    finally:
        if conn is not None:
            await conn._stream.aclose()
