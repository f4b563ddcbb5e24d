"""The relay against the emulator, with trioalpaca clients downstream."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from tests.helpers import loopback_autojump_clock, ws_connect  # noqa: F401 (autojump_clock)
from trioalpaca import (
    AlpacaWebSocketClient,
    AuthFailedError,
    CredentialsError,
    Reconnected,
    SymbolLimitError,
    UsageError,
    open_stream,
)
from trioalpaca.relay import LocalKey, Relay, serve_relay
from trioalpaca.testing import Emulator, open_emulator

UP_KEY = "PKUPSTREAM0123456789"
UP_SECRET = "upstream-secret-never-forwarded-0123456789"
KEYS = {f"local{i}": f"local-secret-{i}" for i in range(12)}
SYMBOLS = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "META", "GOOG", "AMD", "INTC", "IBM"]


@asynccontextmanager
async def setup(
    emu_kwargs: dict[str, Any] | None = None, **relay_kwargs: Any
) -> AsyncIterator[tuple[Emulator, Relay]]:
    ek = {"symbols": SYMBOLS, "rate": 100.0, "credentials": {UP_KEY: UP_SECRET}}
    ek.update(emu_kwargs or {})
    async with open_emulator(**ek) as emu, trio.open_nursery() as nursery:
        relay_kwargs.setdefault("local_keys", KEYS)
        relay_kwargs.setdefault("upstream_options", {"heartbeat_interval": 1.0})
        relay: Relay = await nursery.start(
            lambda task_status: serve_relay(
                (UP_KEY, UP_SECRET),
                port=0,
                upstream_url=emu.url,
                task_status=task_status,
                **relay_kwargs,
            )
        )
        try:
            yield emu, relay
        finally:
            nursery.cancel_scope.cancel()
        assert relay.errors == []
        assert emu.errors == []


def local(relay: Relay, i: int, feed: str = "iex", **kwargs: Any) -> AlpacaWebSocketClient:
    kwargs.setdefault("heartbeat_interval", 1.0)
    markers = kwargs.pop("markers", False)
    return open_stream(
        f"local{i}",
        f"local-secret-{i}",
        feed=feed,
        url=relay.url_for(feed, markers=markers),
        **kwargs,
    )


async def take(stream: AlpacaWebSocketClient, n: int) -> list[Any]:
    out = []
    async for msg in stream:
        out.append(msg)
        if len(out) >= n:
            break
    return out


def upstream_conns(emu: Emulator, feed: str = "iex") -> list[Any]:
    return [c for c in emu.connections if c.feed == feed]


async def test_clients_get_exactly_their_symbols_over_one_upstream(
    autojump_clock: trio.abc.Clock,
) -> None:
    sets = [SYMBOLS[i : i + 2] for i in range(0, 10, 2)] + [["AAPL", "IBM"]]
    async with setup() as (emu, relay), AsyncExitStackCompat() as stack:
        streams = []
        for i, syms in enumerate(sets):
            s = await stack.enter(local(relay, i, trades=syms, raw_data=True))
            streams.append(s)
        for i, s in enumerate(streams):
            assert s.subscriptions == {"trades": tuple(sets[i])}
            msgs = await take(s, 40)
            got = {m["S"] for m in msgs}
            assert got <= set(sets[i])
            assert got == set(sets[i])
            assert all(m["T"] in ("t", "c", "x") for m in msgs)
        # exactly one upstream connection on the endpoint, carrying the union
        conns = upstream_conns(emu)
        assert len(conns) == 1
        assert set(conns[0].subscriptions["trades"]) == set(SYMBOLS)
        m = relay.get_metrics()
        assert m["clients_connected"] == len(sets)
        assert m["upstreams"]["default/iex"]["clients"] == len(sets)
        assert all(c["messages"] >= 40 for c in m["clients"].values())


class AsyncExitStackCompat:
    """A tiny AsyncExitStack for async context managers (kept local for readability)."""

    def __init__(self) -> None:
        from contextlib import AsyncExitStack

        self._stack = AsyncExitStack()

    async def __aenter__(self) -> AsyncExitStackCompat:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._stack.__aexit__(*exc)

    async def enter(self, cm: Any) -> Any:
        return await self._stack.enter_async_context(cm)


async def test_runtime_changes_ack_own_set_and_leaving_does_not_resubscribe(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup() as (emu, relay):
        async with local(relay, 0, trades=["AAPL"], raw_data=True) as a:
            async with local(relay, 1, trades=["AAPL", "MSFT"], raw_data=True) as b:
                await b.subscribe(quotes=["TSLA"])
                assert b.subscriptions == {"trades": ("AAPL", "MSFT"), "quotes": ("TSLA",)}
                assert a.subscriptions == {"trades": ("AAPL",)}
                up = upstream_conns(emu)[0]
                assert set(up.subscriptions["quotes"]) == {"TSLA"}
                frames_before = up.received_frames
                # b leaves: only MSFT trades and TSLA quotes leave upstream, in one request
                # each way at most; AAPL is never unsubscribed and a keeps its data
            await trio.sleep(0.5)
            assert up.subscriptions["trades"] == ("AAPL",)
            assert up.subscriptions["quotes"] == ()
            assert up.received_frames == frames_before + 1  # one coalesced unsubscribe
            msgs = await take(a, 30)
            assert {m["S"] for m in msgs} == {"AAPL"}
            await a.unsubscribe(trades=["AAPL"])
            assert a.subscriptions == {}
            await trio.sleep(0.2)
            assert up.subscriptions["trades"] == ()
        assert len(upstream_conns(emu)) == 1


async def test_shared_symbol_leave_sends_nothing_upstream(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as (emu, relay), local(relay, 0, trades=["AAPL"], raw_data=True) as a:
        async with local(relay, 1, trades=["AAPL"], raw_data=True):
            up = upstream_conns(emu)[0]
            frames = up.received_frames
        await trio.sleep(1.0)
        assert up.received_frames == frames  # nothing at all: AAPL is still wanted
        got = await take(a, 20)
        assert {m["S"] for m in got} == {"AAPL"}


async def test_wrong_local_key_is_402_and_upstream_key_is_not_a_local_key(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup() as (emu, relay):
        with pytest.raises(AuthFailedError):
            async with open_stream(
                "local0", "wrong", feed="iex", url=relay.url_for("iex"), trades=["AAPL"]
            ):
                pass  # pragma: no cover
        with pytest.raises(AuthFailedError):
            async with open_stream(
                UP_KEY, UP_SECRET, feed="iex", url=relay.url_for("iex"), trades=["AAPL"]
            ):
                pass  # pragma: no cover
        assert relay.get_metrics()["auth_failures"] == 2
        assert emu.connections == []  # nothing was opened upstream for refused clients


async def test_raw_sessions_per_client_codec_and_own_ack(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as (_emu, relay):
        url = relay.url_for("iex")
        mp = [("Content-Type", "application/msgpack")]
        async with ws_connect(url, mp) as ws_m, ws_connect(url) as ws_j:
            assert msgpack.unpackb(await ws_m.get_message()) == [
                {"T": "success", "msg": "connected"}
            ]
            assert json.loads(await ws_j.get_message()) == [{"T": "success", "msg": "connected"}]
            await ws_m.send_message(
                msgpack.packb({"action": "auth", "key": "local0", "secret": "local-secret-0"})
            )
            await ws_j.send_message(
                json.dumps({"action": "auth", "key": "local1", "secret": "local-secret-1"})
            )
            assert msgpack.unpackb(await ws_m.get_message())[0]["msg"] == "authenticated"
            assert json.loads(await ws_j.get_message())[0]["msg"] == "authenticated"
            await ws_m.send_message(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
            await ws_j.send_message(json.dumps({"action": "subscribe", "quotes": ["MSFT"]}))
            ack_m = msgpack.unpackb(await ws_m.get_message())[0]
            ack_j = json.loads(await ws_j.get_message())[0]
            assert ack_m["T"] == "subscription" and ack_m["trades"] == ["AAPL"]
            assert ack_m["quotes"] == [] and ack_m["corrections"] == ["AAPL"]
            assert ack_j["T"] == "subscription" and ack_j["quotes"] == ["MSFT"]
            assert ack_j["trades"] == []
            # data: msgpack with ext timestamps for one, JSON with RFC 3339 text for the other
            frame = await ws_m.get_message()
            assert isinstance(frame, bytes)
            msg = msgpack.unpackb(frame, timestamp=3)[0]
            assert msg["S"] == "AAPL" and msg["T"] in ("t", "c", "x")
            text = await ws_j.get_message()
            assert isinstance(text, str)
            jm = json.loads(text)[0]
            assert jm["S"] == "MSFT" and jm["T"] == "q" and jm["t"].endswith("Z")
            # request errors go to the requester only, with Alpaca's code
            await ws_j.send_message(json.dumps({"action": "subscribe", "orderbooks": ["MSFT"]}))
            while True:
                reply = json.loads(await ws_j.get_message())
                if reply[0]["T"] == "error":
                    break
            assert reply == [
                {"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}
            ]
            await ws_j.send_message("[{not json")
            while True:
                reply = json.loads(await ws_j.get_message())
                if reply[0]["T"] == "error":
                    break
            assert reply[0]["code"] == 400
            # the msgpack session saw none of that
            for _ in range(5):
                for m in msgpack.unpackb(await ws_m.get_message()):
                    assert m["T"] != "error"


async def test_option_star_quotes_is_413_for_the_requester(autojump_clock: trio.abc.Clock) -> None:
    mp = [("Content-Type", "application/msgpack")]
    async with setup() as (_emu, relay), ws_connect(relay.url_for("opra"), mp) as ws:
        await ws.get_message()
        await ws.send_message(
            msgpack.packb({"action": "auth", "key": "local0", "secret": "local-secret-0"})
        )
        assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "authenticated"
        await ws.send_message(msgpack.packb({"action": "subscribe", "quotes": ["*"]}))
        assert msgpack.unpackb(await ws.get_message()) == [
            {"T": "error", "code": 413, "msg": "star subscription is not allowed for option quotes"}
        ]
        assert relay.get_metrics()["upstreams"]["default/opra"]["subscribe_requests"] == 0


async def test_options_are_msgpack_only(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as (_emu, relay), ws_connect(relay.url_for("opra")) as ws:
        assert json.loads(await ws.get_message())[0]["msg"] == "connected"
        assert json.loads(await ws.get_message()) == [
            {
                "T": "error",
                "code": 412,
                "msg": "option messages are only available in MsgPack format",
            }
        ]


async def test_upstream_symbol_limit_405_goes_to_the_requester(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        setup({"symbol_limit": 3}) as (emu, relay),
        local(relay, 0, trades=["AAPL", "MSFT"], raw_data=True) as a,
        local(relay, 1, trades=["AAPL"], raw_data=True) as b,
    ):
        with pytest.raises(SymbolLimitError):
            await b.subscribe(trades=["TSLA", "NVDA"])  # union would be 4 symbols
        assert b.subscriptions == {"trades": ("AAPL",)}
        assert a.subscriptions == {"trades": ("AAPL", "MSFT")}
        await b.subscribe(quotes=["TSLA"])  # 3 symbols: fine
        assert set(upstream_conns(emu)[0].subscriptions["trades"]) == {"AAPL", "MSFT"}
        got = await take(a, 20)
        assert {m["S"] for m in got} <= {"AAPL", "MSFT"}
        assert 405 in relay.clients[1].errors_sent
        assert 405 not in relay.clients[0].errors_sent


async def test_upstream_loss_keeps_downstream_and_marks_the_gap_for_those_who_asked(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        setup() as (emu, relay),
        local(relay, 0, trades=["AAPL"], markers=True) as typed,
        local(relay, 1, trades=["AAPL"], raw_data=True, markers=True) as raw,
        local(relay, 2, trades=["AAPL"], raw_data=True) as plain,
    ):
        await take(plain, 5)
        emu.drop(feed="iex", how="reset")
        got_typed = await take(typed, 60)
        markers = [m for m in got_typed if isinstance(m, Reconnected)]
        assert len(markers) == 1
        assert markers[0].gap_end_ns >= markers[0].gap_start_ns
        after = got_typed[got_typed.index(markers[0]) + 1 :]
        assert after, "data resumes after the marker"
        got_raw = await take(raw, 60)
        assert next(m for m in got_raw if m["T"] == "reconnected")["source"] == "relay"
        got_plain = await take(plain, 60)
        assert all(m["T"] != "reconnected" for m in got_plain)
        # the downstream sockets survived: same sessions, no local reconnect
        assert typed.get_metrics()["reconnects"] == 0
        assert plain.get_metrics()["reconnects"] == 0
        assert len(upstream_conns(emu)) == 2
        assert len(emu.open_connections("iex")) == 1
        assert relay.get_metrics()["upstreams"]["default/iex"]["reconnects"] == 1


async def test_slow_client_is_cut_with_407_others_keep_flowing(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with setup(send_buffer_limit=64 * 1024) as (_emu, relay):
        emu_rate_symbols = ["AAPL", "MSFT", "TSLA"]
        async with (
            local(relay, 0, trades=emu_rate_symbols, quotes=emu_rate_symbols) as fast,
            ws_connect(relay.url_for("iex")) as slow,
        ):
            await slow.get_message()
            await slow.send_message(
                json.dumps({"action": "auth", "key": "local1", "secret": "local-secret-1"})
            )
            await slow.get_message()
            await slow.send_message(
                json.dumps(
                    {
                        "action": "subscribe",
                        "trades": emu_rate_symbols,
                        "quotes": emu_rate_symbols,
                    }
                )
            )
            await slow.get_message()

            # the slow session stops reading; the fast one keeps its full rate meanwhile:
            # it gets every message upstream delivered (both want the same set)
            def upstream_in() -> int:
                return int(relay.get_metrics()["upstreams"]["default/iex"]["messages_in"])

            n0, u0, t0 = (
                fast.get_metrics()["messages_received"],
                upstream_in(),
                trio.current_time(),
            )
            while not relay.get_metrics()["slow_clients"]:
                await take(fast, 50)
            await take(fast, 300)
            n1, u1 = fast.get_metrics()["messages_received"], upstream_in()
            assert n1 - n0 >= 0.95 * (u1 - u0)
            # about 300 messages/s (100 per symbol) over 3 symbols: the full emulator rate
            assert (n1 - n0) / (trio.current_time() - t0) > 0.8 * 300
            with trio.fail_after(5):  # the cut session closes (after at most 1 s of abort grace)
                while not (closed := [s for s in relay.closed_clients if s.slow_client]):
                    await trio.sleep(0.05)
            assert len(closed) == 1 and 407 in closed[0].errors_sent


async def test_trade_updates_per_account(autojump_clock: trio.abc.Clock) -> None:
    accounts = {"a": ("PKA000", "secret-a"), "b": ("PKB000", "secret-b")}
    creds = {"PKA000": "secret-a", "PKB000": "secret-b"}
    keys = {"ka": LocalKey("sa", "a"), "kb": LocalKey("sb", "b"), "kb2": LocalKey("sb2", "b")}
    async with open_emulator(credentials=creds, rate=0) as emu, trio.open_nursery() as nursery:
        relay: Relay = await nursery.start(
            lambda task_status: serve_relay(
                accounts, local_keys=keys, port=0, upstream_url=emu.url, task_status=task_status
            )
        )
        url = relay.url_for("trading")
        async with (
            open_stream("ka", "sa", stream_type="trading", url=url, raw_data=True) as ta,
            open_stream("kb", "sb", stream_type="trading", url=url, raw_data=True) as tb,
            open_stream("kb2", "sb2", stream_type="trading", url=url, raw_data=True) as tb2,
        ):
            # listening, not just authenticated: an order placed before that is not heard
            await emu.wait_for_connections(2, feed="trading", listening=True)
            emu.submit_order("AAPL", qty=1, key="PKA000", step_delay=0.01)
            emu.submit_order("MSFT", qty=2, key="PKB000", step_delay=0.01)
            for stream, symbol in ((ta, "AAPL"), (tb, "MSFT"), (tb2, "MSFT")):
                got = await take(stream, 2)  # new, fill
                assert [u["event"] for u in got] == ["new", "fill"]
                assert {u["order"]["symbol"] for u in got} == {symbol}
            # one upstream trading connection per account, not per client
            assert len([c for c in emu.connections if c.feed == "trading"]) == 2
            assert sorted(relay.upstream_feeds()) == [("a", "trading"), ("b", "trading")]
        nursery.cancel_scope.cancel()


async def test_configuration_refusals() -> None:
    up = (UP_KEY, UP_SECRET)
    with pytest.raises(UsageError, match="non-loopback"):
        await serve_relay(up, local_keys=KEYS, host="0.0.0.0", port=0)
    with pytest.raises(UsageError, match="loopback"):
        await serve_relay(up, accept_any_key=True, host="0.0.0.0", port=0, allow_insecure_bind=True)
    with pytest.raises(UsageError, match="local keys"):
        await serve_relay(up, port=0)
    with pytest.raises(UsageError, match="unknown account"):
        await serve_relay(up, local_keys={"k": LocalKey("s", "nope")}, port=0)
    with pytest.raises(UsageError, match="exactly one"):
        await serve_relay({"default": up, "x": up}, accept_any_key=True, port=0)
    with pytest.raises(CredentialsError):
        await serve_relay(("", ""), local_keys=KEYS, port=0)


async def test_accept_any_key_on_loopback_and_secret_never_leaves(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with setup(local_keys=None, accept_any_key=True) as (emu, relay):
        seen: list[bytes] = []
        async with ws_connect(
            relay.url_for("iex"), [("Content-Type", "application/msgpack")]
        ) as ws:
            seen.append(await ws.get_message())
            await ws.send_message(
                msgpack.packb({"action": "auth", "key": "anything", "secret": "x"})
            )
            seen.append(await ws.get_message())
            await ws.send_message(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
            for _ in range(20):
                seen.append(await ws.get_message())
        assert msgpack.unpackb(seen[1])[0]["msg"] == "authenticated"
        blob = b"".join(seen)
        assert UP_SECRET.encode() not in blob and UP_KEY.encode() not in blob
        assert emu.connections[0].key == UP_KEY  # upstream used the configured account
        assert UP_SECRET not in repr(relay.get_metrics()) and UP_SECRET not in relay.status_line()
    assert all(UP_SECRET not in r.getMessage() for r in caplog.records)


async def test_upstream_lingers_then_closes_and_reopens(autojump_clock: trio.abc.Clock) -> None:
    async with setup(linger=2.0) as (emu, relay):
        async with local(relay, 0, trades=["AAPL"], raw_data=True) as a:
            await take(a, 3)
        async with local(relay, 1, trades=["MSFT"], raw_data=True) as b:  # within the linger
            await take(b, 3)
        assert len(upstream_conns(emu)) == 1
        await trio.sleep(1.0)
        assert relay.upstream_feeds() == [("default", "iex")]
        await trio.sleep(2.0)
        assert relay.upstream_feeds() == []
        assert emu.open_connections("iex") == []
        async with local(relay, 2, trades=["TSLA"], raw_data=True) as c:
            assert {m["S"] for m in await take(c, 5)} == {"TSLA"}
        assert len(upstream_conns(emu)) == 2
        assert relay.get_metrics()["upstreams_opened"] == 2


async def test_upstream_refusal_reaches_clients_and_is_remembered(
    autojump_clock: trio.abc.Clock,
) -> None:
    # the relay's upstream key is not accepted upstream: clients hear 402, without a spin upstream
    async with setup({"credentials": {"OTHER": "x"}}) as (emu, relay):
        with pytest.raises(AuthFailedError):
            async with local(relay, 0, trades=["AAPL"]) as s:
                await take(s, 1)  # pragma: no cover
        for i in range(3):
            with pytest.raises(AuthFailedError):
                async with local(relay, i, trades=["AAPL"]):
                    pass  # pragma: no cover
        assert len(upstream_conns(emu)) == 1  # remembered: no new upstream attempt per client
        assert not relay.healthy()[0]


async def test_metrics_endpoint_scraped(autojump_clock: trio.abc.Clock) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_ops import _get, _request
    from trioalpaca._ops import serve_ops_http
    from trioalpaca.relay._prom import relay_registry

    async with setup() as (_emu, relay), trio.open_nursery() as nursery:
        ops = await nursery.start(serve_ops_http, 0, relay_registry(relay), relay.healthy)
        async with local(relay, 0, trades=["AAPL"], raw_data=True) as a:
            await take(a, 10)
            status, _, body = await _get(ops.port, _request("/metrics"))
            assert status == 200
            fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
            sample = fams["trioalpaca_relay_client_messages"].samples[0]
            assert sample.labels == {"client": "1", "feed": "iex", "account": "default"}
            assert sample.value >= 10
            up = fams["trioalpaca_relay_upstream_connected"].samples[0]
            assert up.labels == {"account": "default", "feed": "iex"} and up.value == 1
            assert fams["trioalpaca_relay_clients"].samples[0].value == 1
            status, _, body = await _get(ops.port, _request("/healthz"))
            assert status == 200 and json.loads(body)["clients"] == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_traffic_socket_level(seed: int, autojump_clock: trio.abc.Clock) -> None:
    """A seeded random walk of 8 clients over real sockets: after every step upstream carries
    exactly the union of the live clients' confirmed sets; each client's data matches its set."""
    import random

    rnd = random.Random(seed)
    pool = SYMBOLS[:6]

    async def run_client(
        relay: Relay, i: int, trades: list[str], task_status: trio.TaskStatus[Any]
    ) -> None:
        async with local(relay, i, trades=trades, raw_data=True) as s:
            leave = trio.Event()
            task_status.started((s, leave))
            await leave.wait()

    async with setup() as (emu, relay), trio.open_nursery() as nursery:
        live: dict[int, tuple[AlpacaWebSocketClient, trio.Event]] = {}
        for step in range(40):
            op = rnd.choice(["connect", "subscribe", "unsubscribe", "leave"])
            if op == "connect" or not live:
                free = [i for i in range(8) if i not in live]
                if not free:
                    continue
                i = rnd.choice(free)
                live[i] = await nursery.start(run_client, relay, i, rnd.sample(pool, 2))
            else:
                i = rnd.choice(sorted(live))
                s, leave = live[i]
                if op == "subscribe":
                    await s.subscribe(**{rnd.choice(["trades", "quotes"]): rnd.sample(pool, 2)})
                elif op == "unsubscribe":
                    await s.unsubscribe(**{rnd.choice(["trades", "quotes"]): rnd.sample(pool, 3)})
                else:
                    leave.set()
                    del live[i]
            await trio.sleep(0.3)  # let coalesced unsubscribes and leaving sessions settle
            union: dict[str, set[str]] = {}
            for s, _ in live.values():
                for ch, syms in s.subscriptions.items():
                    union.setdefault(ch, set()).update(syms)
            ups = emu.open_connections("iex")
            assert len(ups) == 1, step
            got = {ch: set(v) for ch, v in ups[0].subscriptions.items() if v}
            got.pop("corrections", None)
            got.pop("cancelErrors", None)
            assert got == union, (step, op)
        for s, _ in live.values():
            while s.get_metrics()["buffered"]:  # data from before the last change
                await s.receive_batch()
            if s.subscriptions:
                for m in await take(s, 20):
                    ch = "quotes" if m["T"] == "q" else "trades"
                    assert m["S"] in s.subscriptions.get(ch, ())
        for _, leave in live.values():
            leave.set()
        assert len(upstream_conns(emu)) == 1


async def test_drop_policy_keeps_answering_pings_with_a_full_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    syms = ["AAPL", "MSFT", "TSLA"]
    async with (
        setup(
            {"rate": 400.0},
            send_buffer_limit=16 * 1024,
            slow_client="drop",
            socket_send_buffer=32 * 1024,
        ) as (_emu, relay),
        ws_connect(relay.url_for("iex", markers=True)) as ws,
    ):
        # a slow remote: small kernel buffers on both ends, so the backlog sits in the relay
        ws._stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        await ws.get_message()
        await ws.send_message(
            json.dumps({"action": "auth", "key": "local0", "secret": "local-secret-0"})
        )
        await ws.get_message()
        await ws.send_message(json.dumps({"action": "subscribe", "trades": syms, "quotes": syms}))
        got: list[Any] = []

        async def slow_reader() -> None:
            while True:
                got.extend(json.loads(await ws.get_message()))
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            with trio.fail_after(30):
                while not relay.clients or relay.clients[0].dropped == 0:
                    await trio.sleep(0.05)
            # the relay's queue for this client is at its limit and dropping; pings still work
            for _ in range(3):
                with trio.fail_after(2):
                    await ws.ping()
                assert relay.clients[0].dropped > 0
            stats = relay.get_metrics()["clients"][relay.clients[0].id]
            assert stats["max_queue_bytes"] > 8 * 1024 and not stats["slow_client"]
            nursery.cancel_scope.cancel()
        # the session asked for markers: the drops were announced in-band
        with trio.fail_after(10):
            while not any(m.get("T") == "dropped" for m in got):
                got.extend(json.loads(await ws.get_message()))
        marker = next(m for m in got if m.get("T") == "dropped")
        assert marker["count"] > 0 and "slow client" in marker["reason"]
        assert relay.get_metrics()["slow_clients"] == 0


async def test_healthz_reports_an_upstream_that_stays_down(autojump_clock: trio.abc.Clock) -> None:
    async with setup() as (emu, relay):
        emu.reject_upgrades(503, feed="iex", count=None)
        async with ws_connect(relay.url_for("iex")) as ws:
            await ws.get_message()
            await ws.send_message(
                json.dumps({"action": "auth", "key": "local0", "secret": "local-secret-0"})
            )
            assert json.loads(await ws.get_message())[0]["msg"] == "authenticated"
            await ws.send_message(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
            await trio.sleep(5)
            assert relay.healthy()[0]  # within the grace period
            await trio.sleep(30)
            ok, details = relay.healthy()
            assert not ok and details["disconnected"] == ["default/iex"]
            emu.clear_faults()
            emu.faults.upgrade_rejections.clear() if hasattr(
                emu.faults, "upgrade_rejections"
            ) else None
            # the upstream client retries with backoff; once connected the held ack arrives
            with trio.fail_after(120):
                ack = json.loads(await ws.get_message())[0]
            assert ack["T"] == "subscription" and ack["trades"] == ["AAPL"]
            assert relay.healthy()[0]


async def test_late_orderbook_subscriber_gets_a_snapshot(autojump_clock: trio.abc.Clock) -> None:
    from trioalpaca import Orderbook

    pairs = ["BTC/USD", "ETH/USD"]
    async with (
        setup({"symbols": pairs, "rate": 50.0}) as (emu, relay),
        local(relay, 0, feed="crypto/us", orderbooks=pairs) as first,
    ):
        got = await take(first, 30)
        assert all(isinstance(m, Orderbook) for m in got)
        assert {m.symbol for m in got if m.reset} == set(pairs)  # upstream's own snapshots
        async with local(relay, 1, feed="crypto/us", orderbooks=["BTC/USD"]) as late:
            msgs = await take(late, 10)
            assert msgs[0].reset and msgs[0].symbol == "BTC/USD"  # built by the relay
            assert msgs[0].bids and msgs[0].asks
            assert msgs[0].bids[0].price < msgs[0].asks[0].price
            assert all(m.symbol == "BTC/USD" for m in msgs)
        assert len([c for c in emu.connections if c.feed == "crypto/us"]) == 1
