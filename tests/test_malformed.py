"""One bad element costs neither its neighbours nor the connection (issue 9, part 1).

Element-level: a bad element becomes a MalformedMessage in its place and the rest of the frame
is delivered. Frame-level: an undecodable frame becomes one MalformedMessage (frame=True); ten in
a row make the stream count as broken (MalformedStreamError), reconnected with a backoff that the
broken connection's data does not reset. Everything here crosses a websocket to the emulator,
over in-memory streams (``tests.helpers.in_memory``) on pytest-trio's autojump clock.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest
import trio

from tests.helpers import in_memory
from trioalpaca import (
    AlpacaWebSocketClient,
    Backoff,
    MalformedMessage,
    MalformedStreamError,
    Quote,
    Reconnected,
    RemoteProtocolError,
    Trade,
    TradingStatus,
    open_stream,
)
from trioalpaca import models as m
from trioalpaca._malformed import LOG_INTERVAL, MalformedTally
from trioalpaca._protocol import DataClientProtocol, DataServerProtocol
from trioalpaca._protocol.client import MAX_UNDECODABLE_FRAMES
from trioalpaca.testing import Emulator, open_emulator

KEY, SECRET = "PKMALFORMED", "malformed-secret"
TS = 1_700_000_000_123_456_789


def trade(i: int, symbol: str = "AAPL") -> dict[str, Any]:
    return Trade(symbol, i, "V", 10.5, 100, ("@",), TS + i, "C").to_wire()


BAD_QUOTE = {"T": "q", "S": "AAPL", "bx": "V", "bp": "abc", "bs": 1, "ax": "V", "ap": 1.0,
             "as": 1, "t": TS}  # fmt: skip
QUOTE_WITH_STRING_C = {**BAD_QUOTE, "bp": 10.0, "c": "R"}
STATUS = {"T": "s", "S": "AAPL", "sc": "H", "sm": "Halted", "rc": "T12", "rm": "News", "t": TS}


@asynccontextmanager
async def stream_on(**kwargs: Any) -> AsyncIterator[tuple[Emulator, AlpacaWebSocketClient]]:
    async with open_emulator(symbols=["AAPL"], rate=0) as emu:
        kwargs.setdefault("backoff", Backoff(initial=0.5, seed=1))
        kwargs.setdefault("stream_factory", in_memory(emu))
        async with open_stream(
            KEY, SECRET, feed="iex", url=emu.url_for("iex"), trades=["AAPL"], **kwargs
        ) as stream:
            yield emu, stream


async def take(stream: AlpacaWebSocketClient, n: int) -> list[Any]:
    out: list[Any] = []
    with trio.fail_after(30):
        async for msg in stream:
            out.append(msg)
            if len(out) == n:
                return out
    raise AssertionError("stream ended")  # pragma: no cover


async def test_good_bad_good_delivers_two_messages_and_one_marker(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with stream_on() as (emu, stream):
        emu.inject_frame(msgpack.packb([trade(1), BAD_QUOTE, trade(2)]), feed="iex")
        first, bad, last = await take(stream, 3)
        assert first == Trade.from_wire(trade(1)) and last == Trade.from_wire(trade(2))
        assert isinstance(bad, MalformedMessage)
        assert bad.raw == BAD_QUOTE and not bad.frame
        assert bad.error == "'q' message: 'bp' must be a number, got 'abc'"
        metrics = stream.get_metrics()
        assert metrics["reconnects"] == 0 and metrics["errors"] == {}
        assert metrics["malformed_messages"] == 1 and metrics["undecodable_frames"] == 0
        assert len(emu.connections) == 1


async def test_the_issue_frame_is_normalised_whole(autojump_clock: trio.abc.Clock) -> None:
    # [trade, quote whose "c" is the string "R", status, trade]: "R" becomes ("R",)
    frame = msgpack.packb([trade(1), QUOTE_WITH_STRING_C, STATUS, trade(2)])
    async with stream_on(quotes=["AAPL"], statuses=["AAPL"]) as (emu, stream):
        emu.inject_frame(frame, feed="iex")
        t1, quote, status, t2 = await take(stream, 4)
        assert (type(t1), type(quote), type(status), type(t2)) == (
            Trade, Quote, TradingStatus, Trade,
        )  # fmt: skip
        assert quote.conditions == ("R",)
        assert stream.get_metrics()["malformed_messages"] == 0
        assert stream.get_metrics()["reconnects"] == 0


async def test_raw_mode_marks_the_bad_element_in_place(autojump_clock: trio.abc.Clock) -> None:
    bad_ts = {**trade(3), "t": "half past noon"}
    text_ts = {**trade(4), "t": "2023-11-14T22:13:20.123456789Z"}
    async with stream_on(raw_data=True) as (emu, stream):
        emu.inject_frame(msgpack.packb([trade(1), bad_ts, text_ts]), feed="iex")
        first, bad, converted = await take(stream, 3)
        assert first == trade(1)
        assert bad["T"] == "malformed" and bad["raw"] == bad_ts and not bad["frame"]
        assert "'t' is not a valid timestamp" in bad["error"]
        assert converted["t"] == 1_700_000_000_123_456_789  # int ns, even from msgpack text
        assert stream.get_metrics()["malformed_messages"] == 1


async def test_warnings_are_rate_limited_per_type(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioalpaca")
    async with stream_on() as (emu, stream):
        for _ in range(5):
            emu.inject_frame(msgpack.packb([BAD_QUOTE, {"T": "t", "S": "AAPL"}]), feed="iex")
        await take(stream, 10)
        warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(warnings) == 2  # one per T type ('q' and 't'), not one per message
        await trio.sleep(LOG_INTERVAL + 1)
        emu.inject_frame(msgpack.packb([BAD_QUOTE]), feed="iex")
        await take(stream, 1)
        warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(warnings) == 3
        assert "malformed 'q' message skipped (4 more since the last report)" in warnings[-1]
        assert stream.get_metrics()["malformed_messages"] == 11


async def test_garbage_forever_never_becomes_a_fast_reconnect_loop(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A server that sends good data and then only garbage, on every connection: the client
    reconnects with a growing backoff (data on the broken connection does not reset it)."""
    async with stream_on() as (emu, stream):
        spoiled: set[int] = set()

        async def spoil_every_connection() -> None:
            while True:
                for conn in emu.open_connections("iex"):
                    if conn.subscriptions.get("trades") and conn.id not in spoiled:
                        spoiled.add(conn.id)
                        emu.inject_frame(msgpack.packb([trade(conn.id)]), feed="iex")
                        for _ in range(MAX_UNDECODABLE_FRAMES):
                            emu.inject_malformed(feed="iex")
                await trio.sleep(0.05)

        markers: list[Reconnected] = []
        arrived: list[float] = []  # virtual time of each marker
        delivered: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spoil_every_connection)
            with trio.move_on_after(60):
                async for msg in stream:
                    if isinstance(msg, Reconnected):
                        markers.append(msg)
                        arrived.append(trio.current_time())
                    else:
                        delivered.append(msg)
            nursery.cancel_scope.cancel()
        # backoff 0.5, 1, 2, 4, 8, 16, 30 s (with jitter): a handful of connections in a minute,
        # not the ~100 a reset-on-data backoff would make
        assert 3 <= len(markers) <= 8
        # the marker's own gap is wall-clock time (near zero under the autojump clock), so the
        # growth is read off the virtual clock: the time between reconnections grows
        spacing = [b - a for a, b in itertools.pairwise(arrived)]
        assert spacing[-1] > 4 * spacing[0]
        errors = stream.get_metrics()["errors"]
        assert set(errors) == {"MalformedStreamError"}
        frames = [x for x in delivered if isinstance(x, MalformedMessage)]
        assert frames and all(x.frame for x in frames)
        # each broken connection delivered nine frame markers, then broke on the tenth
        broken = errors["MalformedStreamError"]
        assert broken in (len(markers), len(markers) + 1)
        assert (MAX_UNDECODABLE_FRAMES - 1) * (broken - 1) <= len(frames)
        assert len(frames) <= (MAX_UNDECODABLE_FRAMES - 1) * broken


# ------------------------------------------------------------------ sans-IO protocol level


def ready_protocol(raw: bool = False) -> tuple[DataClientProtocol, list[m.MalformedMessage]]:
    seen: list[m.MalformedMessage] = []
    server = DataServerProtocol("iex", "msgpack")
    client = DataClientProtocol(
        "iex", "msgpack", KEY, SECRET, raw=raw, resubscribe={"trades": ["AAPL"]},
        on_malformed=seen.append,
    )  # fmt: skip
    for frame in server.opening_frames():
        client.receive(frame)
    for _ in range(4):  # auth, subscribe
        for frame in client.data_to_send():
            for reply in server.receive(frame):
                client.receive(reply)
    assert client.state.value == "ready"
    return client, seen


@pytest.mark.parametrize("raw", [False, True])
def test_undecodable_frames_in_a_row(raw: bool) -> None:
    client, seen = ready_protocol(raw)
    good = msgpack.packb([trade(1)])
    for _round in range(3):  # a good frame in between resets the count
        for i in range(MAX_UNDECODABLE_FRAMES - 1):
            [marker] = client.receive(b"\xc1garbage")
            if raw:
                assert marker["T"] == "malformed" and marker["frame"] is True
            else:
                assert isinstance(marker, MalformedMessage) and marker.frame
                assert marker.raw == b"\xc1garbage" and "malformed msgpack" in marker.error
            assert client.undecodable_in_a_row == i + 1
        assert len(client.receive(good)) == 1
        assert client.undecodable_in_a_row == 0
    assert len(seen) == 3 * (MAX_UNDECODABLE_FRAMES - 1)
    for _ in range(MAX_UNDECODABLE_FRAMES - 1):
        client.receive("{}")  # valid JSON but not an array: undecodable too
    with pytest.raises(MalformedStreamError, match="10 frames in a row did not decode"):
        client.receive(b"\xc1")
    assert client.state.value == "closed"
    assert isinstance(client.error, MalformedStreamError) and client.error.retryable


def test_tally_rate_limits_per_type(caplog: pytest.LogCaptureFixture) -> None:
    tally = MalformedTally(logging.getLogger("trioalpaca.test"), "iex")
    q = MalformedMessage({"T": "q"}, "bad q")
    frame = MalformedMessage(b"\xc1", "bad frame", frame=True)
    with caplog.at_level(logging.WARNING, logger="trioalpaca.test"):
        assert tally.note(q, 0.0)
        assert not tally.note(q, 1.0)
        assert tally.note(frame, 1.0)  # another type: logged
        assert not tally.note(q, LOG_INTERVAL - 0.1)
        assert tally.note(q, LOG_INTERVAL)
        assert tally.note(MalformedMessage(7, "not a map"), 2.0)
    assert (tally.messages, tally.frames) == (6, 1)
    texts = [r.getMessage() for r in caplog.records]
    assert texts == [
        "stream iex: malformed 'q' message skipped: bad q",
        "stream iex: undecodable frame skipped: bad frame",
        "stream iex: malformed 'q' message skipped (2 more since the last report): bad q",
        "stream iex: malformed element without a T message skipped: not a map",
    ]


# ------------------------------------------------------------------------- trading stream

AUTHORIZED = '{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}'
UPDATE = {"event": "new", "order": {"symbol": "AAPL"}, "timestamp": "2024-01-02T15:04:05.5Z"}


@pytest.mark.parametrize("raw", [False, True])
def test_trading_stream_skips_bad_updates_once_authorized(raw: bool) -> None:
    import json

    from trioalpaca._protocol.trading import TradingClientProtocol

    seen: list[m.MalformedMessage] = []
    proto = TradingClientProtocol(KEY, SECRET, raw=raw, on_malformed=seen.append)
    proto.receive(AUTHORIZED)
    good = json.dumps({"stream": "trade_updates", "data": UPDATE})
    bad = json.dumps({"stream": "trade_updates", "data": {**UPDATE, "timestamp": "soon"}})
    no_data = json.dumps({"stream": "trade_updates", "data": 5})
    [ok] = proto.receive(good)
    assert ok == (UPDATE if raw else m.TradeUpdate.from_wire(UPDATE))
    if not raw:  # raw mode passes trade update fields on as received
        [marker] = proto.receive(bad)
        assert isinstance(marker, MalformedMessage) and "invalid trade update" in marker.error
    [marker] = proto.receive(no_data)
    assert (marker["T"] if raw else marker.wire_type) == "malformed"
    for _ in range(MAX_UNDECODABLE_FRAMES - 1):
        [frame_marker] = proto.receive("{not json")
        assert (frame_marker["frame"] if raw else frame_marker.frame) is True
    assert proto.receive(good)  # decodes: the count starts over
    for _ in range(MAX_UNDECODABLE_FRAMES - 1):
        proto.receive("{not json")
    with pytest.raises(MalformedStreamError):
        proto.receive("{not json")
    assert proto.error is not None and proto.state.value == "closed"
    assert len(seen) == (1 if raw else 2) + 2 * (MAX_UNDECODABLE_FRAMES - 1)


def test_trading_stream_garbage_before_authorization_still_fails() -> None:
    from trioalpaca._protocol.trading import TradingClientProtocol

    proto = TradingClientProtocol(KEY, SECRET)
    with pytest.raises(RemoteProtocolError):
        proto.receive("{not json")


def test_relay_does_not_forward_malformed_markers() -> None:
    from trioalpaca.endpoints import FEEDS
    from trioalpaca.relay._routing import Routes

    routes: Routes[str] = Routes(FEEDS["iex"])
    routes.attach("member")
    routes.set_state("member", {"trades": ("AAPL",)})
    frame_marker = MalformedMessage(b"\xc1", "malformed msgpack frame", frame=True).to_wire()
    element_marker = MalformedMessage({"T": "t"}, "'t' (Trade) message without ...").to_wire()
    routed = routes.route([trade(1), frame_marker, element_marker, trade(2)])
    assert routed == {"member": [trade(1), trade(2)]}
