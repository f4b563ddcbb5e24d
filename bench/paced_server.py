"""A paced, send-stamped Alpaca-compatible server for the latency benchmark.

Unlike the emulator (which delivers on a 5 ms tick and stamps messages with *market* time, late
prints included), this server sends each frame the moment it is due and stamps every message's
``t`` with the wall-clock time at which the frame was handed to the socket. A client's delivery
time minus ``t`` is therefore the latency the client (and the kernel) added, nothing else.

Prints one JSON line ``{"port": N}`` once listening; serves until stdin closes. Each connection
does the usual handshake (``connected``, auth, one subscribe), then receives ``--rate`` msgs/s in
frames of ``--per-frame`` messages (half trades, half quotes) for ``--seconds`` seconds, then a
final ``{"T": "bench_end", ...}`` message carrying what the server achieved (frames sent late).

    python bench/paced_server.py --rate 20000 --per-frame 10 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import msgpack
import trio
import trio_websocket


def _messages(symbols: list[str], per_frame: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(per_frame):
        sym = symbols[i % len(symbols)]
        if i % 2 == 0:
            out.append(
                {"T": "t", "S": sym, "i": i, "x": "V", "p": 187.25, "s": 100, "c": ["@"], "z": "C"}
            )
        else:
            out.append(
                {
                    "T": "q",
                    "S": sym,
                    "bx": "V",
                    "bp": 187.2,
                    "bs": 3,
                    "ax": "V",
                    "ap": 187.3,
                    "as": 2,
                    "c": ["R"],
                    "z": "C",
                }
            )
    return out


async def _serve_one(request: trio_websocket.WebSocketRequest, args: argparse.Namespace) -> None:
    headers = {k.lower(): v for k, v in request.headers}
    use_msgpack = b"msgpack" in headers.get(b"content-type", b"")
    ws = await request.accept()

    def encode(obj: Any) -> bytes | str:
        if use_msgpack:
            return msgpack.packb(obj)  # type: ignore[no-any-return]
        return json.dumps(obj)

    def decode(data: bytes | str) -> Any:
        return msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)

    try:
        await ws.send_message(encode([{"T": "success", "msg": "connected"}]))
        await ws.get_message()  # auth: any key is fine here
        await ws.send_message(encode([{"T": "success", "msg": "authenticated"}]))
        sub = decode(await ws.get_message())
        symbols = list(sub.get("trades") or sub.get("quotes") or ["AAPL"])
        ack = {"T": "subscription", "trades": symbols, "quotes": symbols, "bars": []}
        await ws.send_message(encode([ack]))
        await _pace(ws, symbols, args, use_msgpack)
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
        return


async def _pace(
    ws: trio_websocket.WebSocketConnection,
    symbols: list[str],
    args: argparse.Namespace,
    use_msgpack: bool,
) -> None:
    msgs = _messages(symbols, args.per_frame)
    interval = args.per_frame / args.rate
    start = trio.current_time()
    end = start + args.seconds
    due = start
    frames = late = 0
    max_lag = 0.0
    packb = msgpack.packb
    from_ns = msgpack.Timestamp.from_unix_nano
    while due < end:
        now = trio.current_time()
        if now < due:
            await trio.sleep(due - now)
            now = trio.current_time()
        # Send every frame that is due now, each stamped with its own send time.
        while due <= now and due < end:
            lag = now - due
            if lag > 0.001:
                late += 1
            max_lag = max(max_lag, lag)
            stamp_ns = time.time_ns()
            if use_msgpack:
                ts = from_ns(stamp_ns)
                for m in msgs:
                    m["t"] = ts
                frame: bytes | str = packb(msgs)
            else:
                for m in msgs:
                    m["t"] = stamp_ns
                frame = json.dumps(msgs)
            await ws.send_message(frame)
            frames += 1
            due += interval
            now = trio.current_time()
    elapsed = trio.current_time() - start
    summary = {
        "T": "bench_end",
        "frames": frames,
        "msgs": frames * args.per_frame,
        "late_frames": late,
        "max_send_lag_ms": max_lag * 1e3,
        "achieved_rate": frames * args.per_frame / elapsed if elapsed else 0.0,
    }
    await ws.send_message(packb([summary]) if use_msgpack else json.dumps([summary]))
    # Leave the socket open: the client closes it once it has read the summary.
    await trio.sleep_forever()


async def _stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                lambda request: _serve_one(request, args),
                "127.0.0.1",
                0,
                ssl_context=None,
                max_message_size=64 * 1024 * 1024,
                task_status=task_status,
            )
        )
        print(json.dumps({"port": server.port}), flush=True)
        await _stdin_closed()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="msgs/s per connection")
    parser.add_argument("--per-frame", type=int, default=10, help="messages per frame")
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to send")
    trio.run(main, parser.parse_args())
