"""The hub with hot standby (subprocesses, kill -9), a Redis restart mid-stream, the cluster,
consumer groups and the ops endpoint. Real redis-server processes, real clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.fanout_consumer_proc import collect
from tests.redis_fixtures import RedisServer, free_port, require_redis
from trioalpaca import Dropped, Reconnected, open_stream
from trioalpaca.fanout import open_redis_publisher, open_redis_stream, serve_hub
from trioalpaca.fanout._redis import open_redis_client
from trioalpaca.testing import open_emulator

KEY = "PKTESTKEY0123456789"
SECRET = "sEcReT-do-not-leak-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent

# coredis 6.9 leaves the anyio memory streams of connections that died with their server to the
# garbage collector (the fixtures collect them at teardown, inside this filter)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["APCA_API_KEY_ID"] = KEY
    env["APCA_API_SECRET_KEY"] = SECRET
    return env


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _health(port: int) -> dict[str, Any] | None:
    try:
        _status, body = await _http_get(port, "/healthz")
    except OSError:
        return None
    return json.loads(body)  # type: ignore[no-any-return]


def _data(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in lines if d.get("T") not in ("reconnected", "dropped")]


async def test_kill_leader_standby_takes_over_one_gap(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with open_emulator(symbols=["AAPL", "MSFT"], rate=150.0) as emu:
        # like Alpaca, the emulator holds a dropped connection's slot for a while (406 meanwhile)
        emu.set_reap_period(2.0)
        ports = [free_port(), free_port()]
        hubs = [
            subprocess.Popen(
                [
                    sys.executable, "-m", "trioalpaca", "hub",
                    "--redis", url, "--feed", "iex", "--trades", "AAPL,MSFT", "--quotes", "AAPL",
                    "--url", emu.url_for("iex"), "--lease-ttl", "1", "--reap-floor", "0.5",
                    "--metrics-port", str(port),
                ],
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]  # fmt: skip
        consumers: list[subprocess.Popen[bytes]] = []
        try:
            leader = None
            with trio.fail_after(20):
                while leader is None:
                    await trio.sleep(0.1)
                    healths = [await _health(port) for port in ports]
                    if None in healths:
                        continue  # a hub is still starting
                    for i, health in enumerate(healths):
                        if health and health["role"] == "leader" and health["published_messages"]:
                            leader = i
            standby_health = healths[1 - leader]
            assert standby_health is not None and standby_health["role"] == "standby"
            assert standby_health["status"] == "ok"
            status, metrics = await _http_get(ports[leader], "/metrics")
            assert status == 200 and b"trioalpaca_hub_leader" in metrics
            # one consumer process and two consumers in this process, all from the oldest entry
            consumers = [
                subprocess.Popen(
                    [sys.executable, "-m", "tests.fanout_consumer_proc", url, "150"],
                    env=_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    cwd=ROOT,
                )
            ]
            outputs: list[list[dict[str, Any]]] = []

            async def local() -> None:
                items = await collect(url, 150)
                # the same normalisation as the process's JSON lines
                outputs.append([json.loads(json.dumps(d, sort_keys=True)) for d in items])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(local)
                nursery.start_soon(local)
                with trio.fail_after(20):
                    while True:  # let the first leader publish a while
                        health = await _health(ports[leader])
                        if health and health["published_messages"] >= 100:
                            break
                        await trio.sleep(0.1)
                os.kill(hubs[leader].pid, signal.SIGKILL)
                hubs[leader].wait(5)
                with trio.fail_after(20):
                    while True:
                        health = await _health(ports[1 - leader])
                        if health and health["role"] == "leader" and health["published_messages"]:
                            break
                        await trio.sleep(0.1)
            assert health["epoch"] > 0
            # the new leader met the dead leader's slot (406) and waited the reap floor
            assert "406" in health["upstream_errors"]
            out, _ = await trio.to_thread.run_sync(consumers[0].communicate, None, 30)
            outputs.append([json.loads(line) for line in out.decode().splitlines()])
        finally:
            for proc in hubs + consumers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
                if proc.stdout is not None:
                    proc.stdout.close()
    assert outputs[0] == outputs[1] == outputs[2]
    gaps = [d for d in outputs[0] if d.get("T") == "reconnected"]
    assert len(gaps) == 1, gaps
    at = outputs[0].index(gaps[0])
    assert len(_data(outputs[0][:at])) >= 50  # the first leader's data
    assert len(_data(outputs[0][at:])) >= 150  # then the new leader's
    assert gaps[0]["gap_end"] >= gaps[0]["gap_start"]


async def test_redis_restart_mid_stream(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with (
        open_emulator(symbols=["AAPL"], rate=300.0) as emu,
        open_stream(
            KEY, SECRET, feed="iex", url=emu.url_for("iex"), raw_data=True, trades=["AAPL"]
        ) as client,
        open_redis_publisher(url, client, queue_size=50) as pub,
        open_redis_stream(url, feed="iex", trades=["AAPL"]) as stream,
    ):
        seen: list[Any] = []
        marker_at: int | None = None
        with trio.fail_after(20):
            async for item in stream:
                seen.append(item)
                if len(seen) == 30:
                    redis_server.kill()  # its data is gone with it
                    await trio.sleep(0.8)
                    redis_server.start()
                if marker_at is None and len(seen) > 30 and isinstance(item, Reconnected):
                    marker_at = len(seen)
                if marker_at is not None and len(seen) - marker_at > 30:
                    break  # data flows again after the marker
        # The consumer can read a batch before the publisher's writer has taken Redis' reply to
        # it (its state says "redis-down" until then): wait until the writer confirms a write.
        assert await pub.flush(5.0)
        stats = pub.statistics()
    assert stats["redis_errors"] >= 1
    assert stats["dropped"] > 0  # the queue overflowed while Redis was away
    markers = [x for x in seen[30:] if isinstance(x, (Reconnected, Dropped))]
    assert markers, "the restart must be visible to the consumer"
    assert stats["state"] == "running"


async def test_cluster_publisher_and_consumer(redis_cluster: list[RedisServer]) -> None:
    url = redis_cluster[0].url
    channels: dict[str, Any] = {"feed": "iex", "trades": ["*"], "quotes": ["*"]}
    async with (
        open_emulator(symbols=["AAPL", "MSFT"], rate=200.0) as emu,
        open_stream(
            KEY,
            SECRET,
            feed="iex",
            url=emu.url_for("iex"),
            raw_data=True,
            trades=["AAPL", "MSFT"],
            quotes=["AAPL"],
        ) as client,
        open_redis_publisher(url, client, cluster=True) as pub,
        open_redis_stream(url, cluster=True, start="oldest", **channels) as a,
        open_redis_stream(redis_cluster[2].url, cluster=True, start="oldest", **channels) as b,
    ):
        got: dict[str, list[Any]] = {}

        async def take(name: str, stream: Any) -> None:
            out = []
            async for item in stream:
                out.append(item)
                if len(out) >= 200:
                    break
            got[name] = out

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take, "a", a)
                nursery.start_soon(take, "b", b)
        assert pub.statistics()["published_messages"] >= 200
    assert got["a"] == got["b"]
    async with open_redis_client(url, cluster=True) as r:
        slots = {await r.cluster_keyslot(k) for k in ("ta:{iex}:t", "ta:{iex}:q", "ta:{iex}:epoch")}
        assert len(slots) == 1


async def test_consumer_group_shares_work(redis_server: RedisServer) -> None:
    url = redis_server.url
    msg = {"T": "t", "S": "AAPL", "i": 0, "x": "V", "p": 1.5, "s": 1, "t": 1, "c": [], "z": "C"}
    async with open_redis_publisher(url, feed="iex", gap_since_last=False) as pub:
        opts: dict[str, Any] = {"feed": "iex", "trades": ["*"], "group": "g", "count": 10}
        async with (
            open_redis_stream(url, consumer="c1", **opts) as c1,
            open_redis_stream(url, consumer="c2", **opts) as c2,
        ):
            for i in range(1, 201):
                pub.publish([{**msg, "i": i}])
            await pub.flush(5)
            ids: dict[str, list[int]] = {"c1": [], "c2": []}

            async def run(name: str, stream: Any) -> None:
                with trio.move_on_after(1.5):
                    async for item in stream:
                        ids[name].append(item.trade_id)
                        await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "c1", c1)
                nursery.start_soon(run, "c2", c2)
    assert sorted(ids["c1"] + ids["c2"]) == list(range(1, 201))  # each entry to one consumer
    assert ids["c1"] and ids["c2"]
    async with open_redis_client(url) as r:
        pending = await r.xpending("ta:{iex}:t", "g")
    assert pending.pending <= 20  # only what was read last and not yet taken stays pending


async def test_group_consumer_claims_what_a_dead_consumer_left_pending(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    msg = {"T": "t", "S": "AAPL", "i": 0, "x": "V", "p": 1.5, "s": 1, "t": 1, "c": [], "z": "C"}
    opts: dict[str, Any] = {"feed": "iex", "trades": ["*"], "group": "g", "start": "oldest"}
    async with open_redis_publisher(url, feed="iex", gap_since_last=False) as pub:
        for i in range(1, 11):
            pub.publish([{**msg, "i": i}])
        await pub.flush(5)
        # "a" reads five entries and dies before acknowledging them (it never reads again)
        async with open_redis_stream(url, consumer="a", count=5, **opts) as a:
            with trio.fail_after(5):
                taken = await a.receive_batch()
        assert [m.trade_id for m in taken] == [1, 2, 3, 4, 5]
        async with open_redis_client(url) as r:
            assert (await r.xpending("ta:{iex}:t", "g")).pending == 5
        # "b" gets the rest at once, and a's five once they were idle for claim_idle
        got: list[int] = []
        async with open_redis_stream(url, consumer="b", claim_idle=0.2, **opts) as b:
            with trio.fail_after(5):
                async for item in b:
                    got.append(item.trade_id)
                    if len(got) == 10:
                        break
            stats = b.statistics()
        assert sorted(got) == list(range(1, 11))
        assert got[:5] == [6, 7, 8, 9, 10] and got[5:] == [1, 2, 3, 4, 5]
        assert stats["claimed"] == 5
        for i in range(11, 14):
            pub.publish([{**msg, "i": i}])
        await pub.flush(5)
        async with open_redis_stream(url, consumer="d", count=3, **opts) as d:
            with trio.fail_after(5):
                assert [m.trade_id for m in await d.receive_batch()] == [11, 12, 13]
        async with open_redis_stream(url, consumer="e", claim_idle=None, **opts) as e:
            with trio.move_on_after(0.8):
                async for item in e:
                    raise AssertionError(f"claimed without claim_idle: {item}")
            assert e.statistics()["claimed"] == 0
    async with open_redis_client(url) as r:
        pending = await r.xpending("ta:{iex}:t", "g")
    # a's entries are b's now (taken in b's last read: acknowledged before a next read), d's
    # three stay d's (e never claimed them)
    assert {k.decode(): v for k, v in pending.consumers.items()} == {"b": 5, "d": 3}


async def test_hub_steps_down_when_the_lease_is_taken(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with open_emulator(symbols=["AAPL"], rate=100.0) as emu, trio.open_nursery() as n:
        opts: dict[str, Any] = {
            "feed": "iex",
            "channels": {"trades": ["AAPL"]},
            "api_key": KEY,
            "api_secret": SECRET,
            "url": emu.url_for("iex"),
            "lease_ttl": 0.6,
        }
        hub = await n.start(lambda task_status: serve_hub(url, task_status=task_status, **opts))
        with trio.fail_after(10):
            await hub.wait_leader()
            while not (hub.publisher and hub.publisher.statistics()["published_messages"]):
                await trio.sleep(0.05)
        first_epoch = hub.epoch
        async with open_redis_client(url) as r:
            await r.set(hub.layout.lease_key, "someone-else", px=1500)
            with trio.fail_after(10):
                while hub.role == "leader":
                    await trio.sleep(0.05)
            assert hub.client is None  # the upstream connection is closed while standby
            with trio.fail_after(10):
                while hub.role != "leader":
                    await trio.sleep(0.05)
        assert hub.epoch > first_epoch and hub.takeovers == 2
        with trio.fail_after(10):
            while not (hub.publisher and hub.publisher.published_messages):
                await trio.sleep(0.05)
        n.cancel_scope.cancel()
    # each leadership starts with a "started" status entry naming the hub and its epoch
    async with open_redis_stream(
        url, feed="iex", trades=["AAPL"], status_events=True, start="oldest", raw_data=True
    ) as s:
        starts: list[dict[str, Any]] = []
        with trio.fail_after(10):
            async for item in s:
                if item["T"] == "status" and item["event"] == "started":
                    starts.append(item)
                    if len(starts) == 2:
                        break
    assert [(d["hub"], d["takeover"], d["epoch"]) for d in starts] == [
        (hub.token, 1, first_epoch),
        (hub.token, 2, hub.epoch),
    ]


def test_require_redis_skips_locally_and_fails_on_ci() -> None:
    def missing(_name: str) -> None:
        return None

    with pytest.raises(pytest.skip.Exception):
        require_redis({}, missing)
    with pytest.raises(pytest.fail.Exception):
        require_redis({"CI": "true"}, missing)


class _CuttableProxy:
    """A TCP proxy to Redis that can cut its client off (and heal again)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut = False
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.cut:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, upstream)
                        nursery.start_soon(self._pipe, upstream, client)
                finally:
                    self._scopes.discard(scope)

    @staticmethod
    async def _pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def cut_off(self) -> None:
        self.cut = True
        for scope in list(self._scopes):
            scope.cancel()


async def test_leader_cut_off_from_redis_steps_down_and_is_fenced(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    proxy = _CuttableProxy(redis_server.port)
    async with open_emulator(symbols=["AAPL"], rate=200.0) as emu, trio.open_nursery() as n:
        await n.start(proxy.serve)
        opts: dict[str, Any] = {
            "feed": "iex",
            "channels": {"trades": ["AAPL"]},
            "api_key": KEY,
            "api_secret": SECRET,
            "url": emu.url_for("iex"),
            "lease_ttl": 0.6,
            "reap_floor": 0.3,
        }
        a = await n.start(
            lambda task_status: serve_hub(
                f"redis://127.0.0.1:{proxy.port}", task_status=task_status, **opts
            )
        )
        with trio.fail_after(10):
            await a.wait_leader()
            while not (a.publisher and a.publisher.published_messages):
                await trio.sleep(0.05)
        b = await n.start(lambda task_status: serve_hub(url, task_status=task_status, **opts))
        await trio.sleep(0.3)
        assert b.role == "standby" and b.client is None
        old_epoch = a.epoch
        proxy.cut_off()  # the leader loses Redis, but not Alpaca
        with trio.fail_after(10):
            while not (b.role == "leader" and b.publisher and b.publisher.published_messages):
                await trio.sleep(0.05)
            while a.role == "leader":
                await trio.sleep(0.05)
        assert a.client is None  # it closed its Alpaca connection by itself
        assert b.epoch is not None and old_epoch is not None and b.epoch > old_epoch
        n.cancel_scope.cancel()
    async with open_redis_client(url) as r:
        entries = await r.xrange("ta:{iex}:t")
    epochs = [int(e.field_values[b"e"]) for e in entries]
    # every entry of the old epoch precedes the new one's: the deposed leader wrote nothing after
    first_new = epochs.index(b.epoch)
    assert set(epochs[first_new:]) == {b.epoch}
    kinds = [e.field_values[b"k"] for e in entries[first_new:]]
    assert kinds[0] == b"gap"  # the takeover starts with one gap marker
    assert kinds.count(b"gap") == 1


def test_hub_command_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioalpaca.cli import main

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    assert main(["hub", "--redis", "redis://127.0.0.1:1"]) == 2
    assert "give at least one channel" in capsys.readouterr().err
    assert main(["hub", "--redis", "http://nope", "--trades", "AAPL"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trioalpaca hub: not a Redis URL") and "Traceback" not in err
    assert main(["hub", "--redis", "redis://127.0.0.1:1", "--feed", "nope", "--trades", "A"]) == 2
    assert "trioalpaca hub:" in capsys.readouterr().err
