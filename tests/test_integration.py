"""Tests against the real Alpaca service.

They run only with ``pytest --integration`` and ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` in
the environment; otherwise they are skipped (see ``conftest.py``). They use the always-on ``test``
feed (symbol ``FAKEPACA``), the free ``iex`` feed and the paper trading stream, so a free account
is enough.
"""

from __future__ import annotations

import pytest
import trio

import trioalpaca
from trioalpaca.models import Trade

pytestmark = pytest.mark.integration


async def test_test_feed_streams_fakepaca() -> None:
    # The /v2/test stream is on around the clock; FAKEPACA trades arrive within seconds.
    with trio.fail_after(60):
        async with trioalpaca.open_stream(feed="test", trades=["FAKEPACA"]) as stream:
            assert stream.subscriptions.get("trades") == ("FAKEPACA",)
            async for msg in stream:
                if isinstance(msg, Trade):
                    assert msg.symbol == "FAKEPACA"
                    assert msg.price > 0
                    break


async def test_iex_subscription_is_acknowledged() -> None:
    with trio.fail_after(30):
        async with trioalpaca.open_stream(feed="iex", quotes=["AAPL"]) as stream:
            await stream.subscribe(trades=["MSFT"])
            assert stream.subscriptions["trades"] == ("MSFT",)
            await stream.unsubscribe(quotes=["AAPL"])
            assert "quotes" not in stream.subscriptions


async def test_paper_trading_stream_authorizes() -> None:
    with trio.fail_after(30):
        async with trioalpaca.open_stream(stream_type="trading", paper=True) as stream:
            # Entering the block means the server authorized us and acknowledged the listen.
            assert stream.get_metrics()["state"] == "connected"
