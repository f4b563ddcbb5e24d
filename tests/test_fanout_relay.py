"""Publishing a relay's upstream clients into Redis (``open_redis_publisher(url, relay)``).

Real redis-server (tests/redis_fixtures.py), the emulator upstream, real clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.redis_fixtures import RedisServer
from tests.test_relay import UP_KEY, UP_SECRET, setup
from trioalpaca import Reconnected, UsageError, open_stream
from trioalpaca.fanout import PublisherStatus, open_redis_publisher, open_redis_stream
from trioalpaca.fanout._layout import StreamLayout
from trioalpaca.relay import LocalKey, Relay, RelayUpstream, serve_relay
from trioalpaca.testing import Emulator, open_emulator

KEYS = {"local0": "local-secret-0", "local1": "local-secret-1"}
SYMBOLS = ["AAPL", "MSFT", "TSLA", "NVDA"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


@asynccontextmanager
async def relay_setup(linger: float = 5.0) -> AsyncIterator[tuple[Emulator, Relay]]:
    """The relay tests' emulator + relay (tests/test_relay.py), with this module's feed."""
    async with setup({"symbols": SYMBOLS, "rate": 300.0}, local_keys=KEYS, linger=linger) as env:
        yield env


class _Recorder:
    """A test upstream hook: what the relay's upstream clients delivered, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.ended = 0
        self.upstreams: list[RelayUpstream] = []

    def __call__(self, upstream: RelayUpstream) -> _Recorder:
        self.upstreams.append(upstream)
        return self

    def batch(self, messages: list[dict[str, Any]], rx_ns: int) -> None:
        self.batches.append(list(messages))

    def closed(self) -> None:
        self.ended += 1


def _consumer_order(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The data messages in the order a consumer yields them: batch by batch, and within a
    batch channel by channel (trades before quotes), as the layout page documents."""
    out: list[dict[str, Any]] = []
    for batch in batches:
        data = [m for m in batch if m["T"] not in ("reconnected", "dropped")]
        data.sort(key=lambda m: StreamLayout.merge_rank("t" if m["T"] in "tcx" else m["T"]))
        out.extend(data)
    return out


async def test_relay_upstream_is_published_exactly_with_gap_on_reconnect(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    recorder = _Recorder()
    async with relay_setup() as (emu, relay):
        relay.add_upstream_hook(recorder)
        async with open_redis_publisher(url, relay) as publisher:
            async with (
                open_stream(
                    "local0", "local-secret-0", feed="iex", url=relay.url_for("iex"),
                    trades=["AAPL"], raw_data=True,
                ) as a,
                open_stream(
                    "local1", "local-secret-1", feed="iex", url=relay.url_for("iex"),
                    trades=["MSFT"], quotes=["TSLA"], raw_data=True,
                ) as b,
                open_redis_stream(
                    url, feed="iex", trades=["*"], quotes=["*"], start="oldest", raw_data=True,
                    status_events=True,
                ) as consumer,
            ):  # fmt: skip
                # the relay still serves its clients their own sets
                with trio.fail_after(10):
                    got_a = [await a.receive() for _ in range(20)]
                    got_b = [await b.receive() for _ in range(20)]
                assert {m["S"] for m in got_a} == {"AAPL"}
                assert {m["S"] for m in got_b} <= {"MSFT", "TSLA"}
                emu.drop(feed="iex", how="reset")
                items: list[dict[str, Any]] = []
                with trio.fail_after(15):
                    while not any(d["T"] == "reconnected" for d in items) or (
                        sum(1 for d in items if d["T"] not in ("status", "reconnected")) < 300
                    ):
                        items.extend(await consumer.receive_batch())
            stats = publisher.statistics()
    assert set(stats["layouts"]) == {"iex"}
    assert recorder.upstreams and recorder.upstreams[0].key_id == UP_KEY
    assert recorder.upstreams[0].endpoint.feed == "iex"
    # exactly the upstream's messages, in the upstream's order (merged by batch and channel)
    data = [d for d in items if d["T"] not in ("status", "reconnected", "dropped")]
    expected = _consumer_order(recorder.batches)
    assert len(expected) >= len(data) >= 300
    assert data == expected[: len(data)]
    assert {d["S"] for d in data if d["T"] in "tcx"} <= {"AAPL", "MSFT"}
    assert {d["S"] for d in data if d["T"] == "q"} == {"TSLA"}
    # the upstream reconnect is one gap marker, where the upstream client had its marker
    gaps = [d for d in items if d["T"] == "reconnected"]
    assert len(gaps) == 1
    upstream_markers = [m for batch in recorder.batches for m in batch if m["T"] == "reconnected"]
    assert gaps[0] == upstream_markers[0]
    before_gap = [d for d in items[: items.index(gaps[0])] if d["T"] in "tcxq"]
    marker_pos = next(
        i for i, b in enumerate(recorder.batches) if any(m["T"] == "reconnected" for m in b)
    )
    assert before_gap == _consumer_order(recorder.batches[:marker_pos])[: len(before_gap)]
    # status entries: the relay publisher's start, the upstream's loss and return
    events = [d["event"] for d in items if d["T"] == "status"]
    assert events[0] == "started"
    assert "disconnected" in events and "subscribed" in events[events.index("disconnected") :]
    assert all(
        d["account"] == "default" for d in items if d["T"] == "status" and d["event"] != "started"
    )


async def test_relay_publisher_attached_late_and_upstream_closing(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url

    def local(i: int) -> Any:
        return open_stream(
            f"local{i}", f"local-secret-{i}", feed="iex", url=relay.url_for("iex"), trades=["AAPL"]
        )

    async def until(consumer: Any, pred: Any) -> list[Any]:
        items: list[Any] = []
        with trio.fail_after(10):
            while not pred(items):
                items.append(await consumer.receive())
        return items

    def n_data(items: list[Any]) -> int:
        return len([x for x in items if not isinstance(x, PublisherStatus)])

    async def hold(stop: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        async with local(0) as a:
            await a.receive()
            task_status.started()
            await stop.wait()

    stop = trio.Event()
    async with relay_setup(linger=0.3) as (_emu, relay), trio.open_nursery() as nursery:
        await nursery.start(hold, stop)
        # attached while the upstream is open: it is published from now on
        async with (
            open_redis_publisher(url, relay, maxlen=1000) as publisher,
            open_redis_stream(
                url, feed="iex", trades=["AAPL"], status_events=True, start="oldest"
            ) as consumer,
        ):
            items = await until(consumer, lambda items: n_data(items) >= 20)
            assert isinstance(items[0], PublisherStatus) and items[0].event == "started"
            assert items[0].details["source"] == "relay"
            assert items[1].event == "connected"  # the upstream was open already
            epoch = items[0].epoch
            # the last client leaves: the relay closes its upstream after linger
            stop.set()
            more = await until(
                consumer,
                lambda items: any(getattr(x, "event", "") == "upstream_closed" for x in items),
            )
            assert relay.upstream_feeds() == []
            assert publisher._taps == []  # the closed upstream's tap is gone
            # a new client: a new upstream, published under the same epoch, without a gap marker
            async with local(1) as b:
                await b.receive()
                more += await until(
                    consumer,
                    lambda items: (
                        any(getattr(x, "event", "") == "subscribed" for x in items)
                        and n_data(items) >= 5
                    ),
                )
            assert all(x.epoch == epoch for x in more if isinstance(x, PublisherStatus))
            assert not any(isinstance(x, Reconnected) for x in items + more)
            events = [x.event for x in more if isinstance(x, PublisherStatus)]
            assert events.index("upstream_closed") < events.index("connected")
            assert publisher.published_messages > 0
            assert set(publisher.publishers) == {"iex"}
    with pytest.raises(UsageError, match="feed= cannot be given with a relay"):
        async with open_redis_publisher(url, relay, feed="iex"):
            pass  # pragma: no cover


async def test_relay_command_publishes_into_redis(redis_server: RedisServer) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "APCA_API_KEY_ID": UP_KEY, "APCA_API_SECRET_KEY": UP_SECRET}
    async with open_emulator(symbols=SYMBOLS, rate=200.0, credentials={UP_KEY: UP_SECRET}) as emu:
        cmd = [
            sys.executable, "-m", "trioalpaca", "relay", "--listen", "127.0.0.1:0",
            "--accept-any-key", "--upstream-url", emu.url, "--status-interval", "0",
            "--redis", redis_server.url,
        ]  # fmt: skip
        proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout is not None
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive_some(1)
            event = json.loads(line)
            assert event["redis"] == redis_server.url
            async with (
                open_redis_stream(
                    redis_server.url, feed="iex", trades=["AAPL"], status_events=True
                ) as consumer,
                open_stream("any", "thing", url=event["url"] + "/v2/iex", trades=["AAPL"]) as s,
            ):
                await s.receive()
                items: list[Any] = []
                with trio.fail_after(10):
                    while len([x for x in items if not isinstance(x, PublisherStatus)]) < 10:
                        items.append(await consumer.receive())
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    while not any(getattr(x, "event", "") == "stopped" for x in items):
                        items.append(await consumer.receive())
            with trio.fail_after(20):
                await proc.wait()
            assert proc.returncode == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def test_relay_command_bad_redis_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trioalpaca.cli import main

    monkeypatch.setenv("APCA_API_KEY_ID", UP_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", UP_SECRET)
    assert main(["relay", "--accept-any-key", "--redis", "http://nope"]) == 2
    err = capsys.readouterr().err
    assert "not a Redis URL" in err and len(err.strip().splitlines()) == 1


async def test_relay_trading_upstreams_are_published_per_account(
    redis_server: RedisServer,
) -> None:
    from trioalpaca import TradeUpdate
    from trioalpaca.relay import LocalKey

    url = redis_server.url
    accounts = {"a": ("PKA000", "secret-a"), "b": ("PKB000", "secret-b")}
    creds = {"PKA000": "secret-a", "PKB000": "secret-b"}
    keys = {"ka": LocalKey("sa", "a"), "kb": LocalKey("sb", "b")}
    async with open_emulator(credentials=creds, rate=0) as emu, trio.open_nursery() as nursery:
        relay: Relay = await nursery.start(
            lambda task_status: serve_relay(
                accounts, local_keys=keys, port=0, upstream_url=emu.url, task_status=task_status
            )
        )
        trading = relay.url_for("trading")
        async with (
            open_redis_publisher(url, relay) as publisher,
            open_redis_stream(url, account="PKA000", start="oldest") as ca,
            open_redis_stream(url, account="PKB000", start="oldest") as cb,
            open_stream("ka", "sa", stream_type="trading", url=trading, raw_data=True) as ta,
            open_stream("kb", "sb", stream_type="trading", url=trading, raw_data=True) as tb,
        ):
            # listening, not just authenticated: an order placed before that is not heard
            await emu.wait_for_connections(2, feed="trading", listening=True)
            emu.submit_order("AAPL", qty=1, key="PKA000", step_delay=0.01)
            emu.submit_order("MSFT", qty=2, key="PKB000", step_delay=0.01)
            with trio.fail_after(10):
                for stream in (ta, tb):  # the relay's own clients still get theirs
                    assert [(await stream.receive())["event"] for _ in range(2)] == ["new", "fill"]
                got = {
                    name: [await c.receive(), await c.receive()]
                    for name, c in (("a", ca), ("b", cb))
                }
            assert set(publisher.publishers) == {"acct:PKA000", "acct:PKB000"}
        nursery.cancel_scope.cancel()
    for name, symbol in (("a", "AAPL"), ("b", "MSFT")):
        assert all(isinstance(u, TradeUpdate) for u in got[name])
        assert [u.event for u in got[name]] == ["new", "fill"]
        assert {u.order["symbol"] for u in got[name]} == {symbol}


async def test_two_accounts_on_one_feed_publish_each_message_once(
    redis_server: RedisServer,
) -> None:
    # accounts a and b both stream iex for their own clients: a AAPL trades, b MSFT trades,
    # then b AAPL too (a's upstream was first with AAPL: it owns it, b's copies are dropped)
    creds = {"PKA000": "secret-a", "PKB000": "secret-b"}
    accounts = {"a": ("PKA000", "secret-a"), "b": ("PKB000", "secret-b")}
    keys = {"ka": LocalKey("sa", "a"), "kb": LocalKey("sb", "b")}
    url = redis_server.url
    items: list[dict[str, Any]] = []

    async def until(pred: Any) -> None:
        with trio.fail_after(15):
            while not pred():
                items.extend(await consumer.receive_batch())

    def trades(part: list[dict[str, Any]], symbol: str) -> list[Any]:
        return [d["i"] for d in part if d["T"] == "t" and d["S"] == symbol]

    async with (
        open_emulator(symbols=SYMBOLS, rate=300.0, credentials=creds) as emu,
        trio.open_nursery() as nursery,
    ):
        relay: Relay = await nursery.start(
            lambda task_status: serve_relay(
                accounts, local_keys=keys, port=0, upstream_url=emu.url, linger=0.2,
                task_status=task_status,
            )
        )  # fmt: skip
        feed = relay.url_for("iex")
        async with (
            open_redis_publisher(url, relay),
            open_redis_stream(
                url, feed="iex", trades=["*"], start="oldest", raw_data=True
            ) as consumer,
            open_stream("kb", "sb", feed="iex", url=feed, trades=["MSFT"], raw_data=True) as b,
        ):  # fmt: skip
            async with open_stream(
                "ka", "sa", feed="iex", url=feed, trades=["AAPL"], raw_data=True
            ):
                await emu.wait_for_connections(2, feed="iex")
                await until(lambda: trades(items, "AAPL") and trades(items, "MSFT"))
                await b.subscribe(trades=["AAPL"])
                both = len(items)  # from here both upstreams stream AAPL
                await until(lambda: len(trades(items[both:], "AAPL")) >= 100)
                ids = trades(items, "AAPL")
                assert len(ids) == len(set(ids)), "AAPL published by both upstreams"
            # a's client left: its upstream closes after the linger and b's takes AAPL over,
            # behind one hand-over gap marker
            await until(lambda: any(d["T"] == "reconnected" for d in items))
            cut = next(i for i, d in enumerate(items) if d["T"] == "reconnected")
            await until(lambda: len(trades(items[cut:], "AAPL")) >= 50)
        nursery.cancel_scope.cancel()
    before, after = items[:cut], items[cut + 1 :]
    for part in (before, after):
        for symbol in ("AAPL", "MSFT"):
            ids = trades(part, symbol)
            assert len(ids) == len(set(ids)), f"{symbol} published twice"
    assert trades(before, "AAPL") and trades(before, "MSFT") and trades(after, "AAPL")
    marker = items[cut]
    assert marker["attempts"] == 0 and marker["gap_start"] <= marker["gap_end"]
    assert [d["T"] for d in items].count("reconnected") == 1
