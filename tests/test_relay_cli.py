"""``trioalpaca relay``: the command in a subprocess in front of an in-process emulator, and its
usage errors; plus the frame merging the relay's sender uses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.test_ops import _get, _request
from trioalpaca import open_stream
from trioalpaca.relay import LocalKey, load_keys_file
from trioalpaca.relay._server import merge_frames
from trioalpaca.testing import open_emulator

ENV = {**os.environ, "APCA_API_KEY_ID": "PKCLI", "APCA_API_SECRET_KEY": "cli-secret"}


def _relay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trioalpaca", "relay", *args]


def test_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trioalpaca.cli import main

    monkeypatch.setenv("APCA_API_KEY_ID", "PKCLI")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "cli-secret")
    cases = [
        (["--listen", "0.0.0.0:0", "--accept-any-key"], "non-loopback"),
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--local-key", "only-a-key"], "KEY:SECRET"),
        (["--keys-file", str(tmp_path / "missing.txt")], "cannot read keys file"),
        (["--listen", "127.0.0.1:0"], "local keys"),
    ]
    for args, text in cases:
        assert main(["relay", *args]) == 2, args
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    assert main(["relay", "--accept-any-key"]) == 2
    assert "no upstream credentials" in capsys.readouterr().err


def test_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# local keys\nnotebook pw1\n\nstrategy pw2 paper2  # second account\n")
    assert load_keys_file(path) == {
        "notebook": LocalKey("pw1"),
        "strategy": LocalKey("pw2", "paper2"),
    }
    assert "pw1" not in repr(load_keys_file(path))


async def test_relay_command_end_to_end(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("cli-user cli-pw\n")
    async with open_emulator(
        symbols=["AAPL"], rate=100.0, credentials={"PKCLI": "cli-secret"}
    ) as emu:
        cmd = _relay_cmd(
            "--listen", "127.0.0.1:0", "--keys-file", str(keys), "--upstream-url", emu.url,
            "--metrics-port", "0", "--status-interval", "0.2",
        )  # fmt: skip
        proc = await trio.lowlevel.open_process(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive_some(1)
            event = json.loads(line)
            assert event["event"] == "listening" and event["accounts"] == ["default"]
            url = event["url"] + "/v2/iex"
            async with open_stream("cli-user", "cli-pw", url=url, trades=["AAPL"]) as s:
                n = 0
                async for _msg in s:
                    n += 1
                    if n == 20:
                        break
            port = int(event["metrics_url"].rsplit(":", 1)[1].split("/")[0])
            status, _, body = await _get(port, _request("/metrics"))
            assert status == 200 and b"trioalpaca_relay_sessions_total 1.0" in body
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await proc.wait()
            assert proc.returncode == 0
            err = b""
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk
            assert b"relay ws://127.0.0.1:" in err  # the status line
            assert b"cli-secret" not in err
            assert [c.key for c in emu.connections] == ["PKCLI"]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


_msg = st.dictionaries(
    st.sampled_from(["T", "S", "p"]), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)
)


@given(st.lists(st.lists(_msg, min_size=1, max_size=40), min_size=1, max_size=5))
def test_merge_frames_is_concatenation(frames: list[list[dict[str, object]]]) -> None:
    packed = [msgpack.packb(f) for f in frames]
    merged = merge_frames(packed, [len(f) for f in frames])
    assert msgpack.unpackb(merged) == [m for f in frames for m in f]
    texts = [json.dumps(f) for f in frames]
    assert json.loads(merge_frames(texts, [len(f) for f in frames])) == [
        m for f in frames for m in f
    ]  # type: ignore[arg-type]


def test_merge_frames_large_counts() -> None:
    big = [{"i": i} for i in range(70_000)]
    merged = merge_frames([msgpack.packb(big[:20]), msgpack.packb(big[20:])], [20, 69_980])
    assert msgpack.unpackb(merged) == big


def test_busy_port_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from trioalpaca.cli import main

    monkeypatch.setenv("APCA_API_KEY_ID", "PKCLI")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "cli-secret")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["relay", "--listen", f"127.0.0.1:{port}", "--accept-any-key"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"port {port} is already in use" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
