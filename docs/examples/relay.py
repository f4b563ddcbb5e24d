"""Serve a relay and connect two local clients to it (upstream: Alpaca, or DATA_PROXY_WS)."""

from __future__ import annotations

import functools
import os

import trio

import trioalpaca
from trioalpaca.relay import serve_relay


async def main(messages: int = 5) -> None:
    # [serve]
    upstream = (  # the real Alpaca key: it never leaves the relay
        os.environ.get("APCA_API_KEY_ID") or os.environ["ALPACA_API_KEY"],
        os.environ.get("APCA_API_SECRET_KEY") or os.environ["ALPACA_API_SECRET"],
    )
    local_keys = {"notebook": "notebook-pw", "strategy": "strategy-pw"}
    async with trio.open_nursery() as nursery:
        relay = await nursery.start(
            functools.partial(
                serve_relay,
                upstream,
                local_keys=local_keys,
                port=0,  # 8765 by default
                upstream_url=os.environ.get("DATA_PROXY_WS"),  # None: Alpaca's own hosts
            )
        )
        # [serve end]
        # [clients]
        async with (
            trioalpaca.open_stream(
                "notebook", "notebook-pw", url=relay.url_for("iex"), trades=["AAPL"]
            ) as notebook,
            trioalpaca.open_stream(
                "strategy",
                "strategy-pw",
                url=relay.url_for("iex", markers=True),  # Reconnected on upstream gaps
                quotes=["MSFT"],
            ) as strategy,
        ):
            print("notebook", notebook.subscriptions)
            print("strategy", strategy.subscriptions)
            for stream in (notebook, strategy):
                seen = 0
                async for msg in stream:
                    print(type(msg).__name__, msg.symbol)
                    seen += 1
                    if seen == messages:
                        break
            print(relay.status_line())
        # [clients end]
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
