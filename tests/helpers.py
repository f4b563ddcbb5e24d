"""Helpers shared by several test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio.testing
from trio_websocket import open_websocket_url


@pytest.fixture(name="autojump_clock")
def loopback_autojump_clock() -> trio.testing.MockClock:
    """``autojump_clock`` replacement: virtual time that jumps only after 1 ms of real idleness.

    Import it into a test module to use it there. pytest-trio's own fixture jumps at once; with
    real loopback sockets a frame can be "in flight" in the kernel for a moment on a loaded
    machine, and an instant jump would then fire timeouts that could never fire in reality.
    """
    return trio.testing.MockClock(autojump_threshold=0.001)


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
