"""``trioalpaca emulator`` as a subprocess: prints the endpoint URLs, serves, stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import msgpack
import pytest
import trio
from trio_websocket import open_websocket_url

from trioalpaca.cli import build_parser


async def start(*args: str) -> tuple[trio.Process, str, str]:
    """Start the emulator; return the process, its base URL and everything it printed first."""
    cmd = [sys.executable, "-m", "trioalpaca", "emulator", "--port", "0", *args]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    out = b""
    with trio.fail_after(30):
        while b"Ctrl-C" not in out:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"emulator exited early: {out!r}"
            out += chunk
    text = out.decode()
    match = re.search(r"listening on (ws://127\.0\.0\.1:\d+)", text)
    assert match, text
    return proc, match.group(1), text


async def stop(proc: trio.Process, sig: int) -> int:
    proc.send_signal(sig)
    with trio.fail_after(15):
        code = await proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            await pipe.aclose()
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_until_signalled(sig: int) -> None:
    proc, url, text = await start("--speed", "60", "--rate", "20", "--seed", "3")
    try:
        for path in ("/v2/iex", "/v2/test", "/v1beta3/crypto/us", "/v1beta1/opra", "/stream"):
            assert url + path in text
        async with open_websocket_url(
            url + "/v2/test", extra_headers=[("Content-Type", "application/msgpack")]
        ) as ws:
            assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "connected"
            await ws.send_message(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
            assert msgpack.unpackb(await ws.get_message())[0]["msg"] == "authenticated"
            await ws.send_message(msgpack.packb({"action": "subscribe", "bars": ["FAKEPACA"]}))
            assert msgpack.unpackb(await ws.get_message())[0]["T"] == "subscription"
            with trio.fail_after(10):  # --speed 60: a minute bar closes every second
                while True:
                    msgs = msgpack.unpackb(await ws.get_message())
                    if any(m["T"] == "b" for m in msgs):
                        break
    finally:
        code = await stop(proc, sig)
    assert code == 0


async def test_cli_scripted_order_flow() -> None:
    proc, url, _ = await start("--orders-every", "0.1", "--rate", "0")
    try:
        async with open_websocket_url(url + "/stream/") as ws:
            auth = {"action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}}
            await ws.send_message(json.dumps(auth))
            assert json.loads(await ws.get_message())["data"]["status"] == "authorized"
            listen = {"action": "listen", "data": {"streams": ["trade_updates"]}}
            await ws.send_message(json.dumps(listen))
            assert json.loads(await ws.get_message())["stream"] == "listening"
            events = set()
            with trio.fail_after(15):
                while not {"new", "fill", "partial_fill", "canceled"} <= events:
                    update = json.loads(await ws.get_message())
                    assert update["stream"] == "trade_updates"
                    events.add(update["data"]["event"])
    finally:
        assert await stop(proc, signal.SIGTERM) == 0


async def test_cli_burst_mode() -> None:
    proc, url, _ = await start("--burst", "50", "--burst-frames", "10", "--rate", "0")
    try:
        async with open_websocket_url(
            url + "/v2/iex", extra_headers=[("Content-Type", "application/msgpack")]
        ) as ws:
            await ws.get_message()
            await ws.send_message(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
            await ws.get_message()
            await ws.send_message(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
            await ws.get_message()
            sizes = [len(msgpack.unpackb(await ws.get_message())) for _ in range(10)]
            assert sizes == [50] * 10
    finally:
        assert await stop(proc, signal.SIGTERM) == 0


def test_cli_arguments() -> None:
    args = build_parser().parse_args(
        ["emulator", "--symbols", "AAPL", "BTC/USD", "--scenario", "flaky", "--credentials", "k:s"]
    )
    assert args.symbols == ["AAPL", "BTC/USD"] and args.scenario == ["flaky"]
    assert args.burst is None and args.port == 8765 and args.host == "127.0.0.1"
    assert build_parser().parse_args(["emulator", "--burst"]).burst == 100
    assert build_parser().parse_args(["emulator", "--burst", "7"]).burst == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulator", "--scenario", "nope"])
