"""Retired paths that official SDKs still hard-code are served as aliases (LEGACY_PATHS)."""

from __future__ import annotations

import msgpack

from tests.helpers import ws_connect
from trioalpaca.endpoints import FEEDS, LEGACY_PATHS
from trioalpaca.testing import open_emulator

MSGPACK = [("Content-Type", "application/msgpack")]


def test_legacy_paths_name_known_feeds_and_differ_from_current_paths() -> None:
    assert LEGACY_PATHS["/v1beta2/crypto"] == "crypto/us"
    current = {ep.path for ep in FEEDS.values()}
    assert all(feed in FEEDS and path not in current for path, feed in LEGACY_PATHS.items())


async def test_v1beta2_crypto_serves_crypto_us_with_or_without_exchanges_query() -> None:
    """The legacy Python SDK connects to /v1beta2/crypto, optionally with ?exchanges=..."""
    async with open_emulator(rate=200, speed=60, seed=3) as emu:
        for query in ("", "?exchanges=CBSE,ERSX"):
            async with ws_connect(emu.url + "/v1beta2/crypto" + query, MSGPACK) as ws:
                assert msgpack.unpackb(await ws.get_message()) == [
                    {"T": "success", "msg": "connected"}
                ]
                await ws.send_message(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
                assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "authenticated"
                await ws.send_message(
                    msgpack.packb({"action": "subscribe", "trades": ["BTC/USD"], "bars": ["*"]})
                )
                ack = msgpack.unpackb(await ws.get_message())
                # The crypto acknowledgement: orderbooks, no stock-only channels.
                assert list(ack[0]) == ["T", *FEEDS["crypto/us"].ack_channels]
                assert ack[0]["trades"] == ["BTC/USD"]
                trade = None
                while trade is None:
                    msgs = msgpack.unpackb(await ws.get_message(), timestamp=3)
                    trade = next((m for m in msgs if m["T"] == "t"), None)
                assert trade["S"] == "BTC/USD" and "tks" in trade
        assert [c.feed for c in emu.connections] == ["crypto/us", "crypto/us"]
        assert emu.errors == []
