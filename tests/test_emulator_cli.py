"""``trioalpaca emulator`` as a subprocess: prints the endpoint URLs, serves, stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url

from trioalpaca.cli import build_parser, main


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
    match = re.search(r"listening on (wss?://127\.0\.0\.1:\d+)", text)
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


async def test_cli_serves_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    proc, url, _ = await start("--certfile", str(certfile), "--keyfile", str(keyfile))
    try:
        assert url.startswith("wss://")
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        async with open_websocket_url(url + "/v2/iex", ssl_context=ctx) as ws:
            assert json.loads(await ws.get_message())[0]["msg"] == "connected"
    finally:
        assert await stop(proc, signal.SIGTERM) == 0


def test_cli_port_in_use_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"trioalpaca emulator: port {port} is already in use on 127.0.0.1\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--certfile", "/nonexistent/cert.pem"], "cannot read /nonexistent/cert.pem"),
        (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
        (["--credentials", "nocolon"], "--credentials expects KEY:SECRET"),
    ],
)
def test_cli_bad_options_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_bad_pem_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    assert main(["emulator", "--port", "0", "--certfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the certificate" in err


@pytest.mark.parametrize("value", ["-1", "0", "inf", "soon"])
def test_demo_duration_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", "--duration", value])
    assert info.value.code == 2
    assert "argument --duration" in capsys.readouterr().err
