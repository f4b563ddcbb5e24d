"""The first connection fails in bounded time (issue 9, part 4), under the autojump clock.

Over in-memory streams (``tests.helpers.in_memory``) on pytest-trio's autojump clock, asserting
exact virtual times; the tests of a refused TCP connection keep the loopback socket (and the
1 ms-threshold ``loopback_clock``).

Until a stream has been up once, retries stop after ``first_connect_timeout`` (30 s) with the last
error; a cause that cannot heal ends the first ``async with`` at the first attempt. Once the stream
has been up, reconnects keep retrying.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import in_memory, loopback_clock_fixture  # noqa: F401 (loopback_clock)
from trioalpaca import (
    Backoff,
    HandshakeRejectedError,
    HostNotFoundError,
    Reconnected,
    Trade,
    TransportError,
    open_pool,
    open_stream,
)
from trioalpaca.testing import open_emulator

KW: dict[str, Any] = {"api_key": "key", "api_secret": "secret"}
BOUND = 30.0


def _closed_port() -> int:
    """A local port with nothing listening (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _NoSuchHost(trio.abc.HostnameResolver):
    """Every name is NXDOMAIN (EAI_NONAME), without asking the machine's DNS."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def policy_end(backoff: Backoff, bound: float) -> float:
    """When the first-connect policy gives up on attempts that each fail at once: the next
    attempt would start at or after ``bound``."""
    schedule = backoff.schedule()
    t = 0.0
    while t + (delay := schedule.next_delay()) < bound:
        t += delay
    return t


@contextmanager
def nxdomain() -> Iterator[None]:
    """Install :class:`_NoSuchHost` for the current trio run (call it inside the test)."""
    previous = trio.socket.set_custom_hostname_resolver(_NoSuchHost())
    try:
        yield
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def test_nothing_listening_fails_within_the_bound_with_the_last_cause(
    loopback_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Over loopback: the subject is the socket (a refused TCP connect).
    caplog.set_level(logging.WARNING, logger="trioalpaca.client")
    url = f"ws://127.0.0.1:{_closed_port()}/v2/iex"
    start = trio.current_time()
    with pytest.raises(TransportError, match="connection refused") as info:
        async with open_stream(url=url, trades=["AAPL"], **KW):
            pytest.fail("connected to nothing")  # pragma: no cover
    elapsed = trio.current_time() - start
    assert elapsed <= BOUND
    assert elapsed > 5  # it did retry with backoff meanwhile
    assert any("first_connect_timeout=30 s" in note for note in info.value.__notes__)
    retries = [r for r in caplog.records if "could not connect" in r.getMessage()]
    assert len(retries) >= 3  # every failed attempt is logged


async def test_a_server_that_never_answers_is_cut_off_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers: list[trio.abc.Stream] = []

    async def silent(host: str, port: int, secure: bool) -> trio.abc.Stream:
        client_half, server_half = trio.testing.memory_stream_pair()
        peers.append(server_half)  # connected, never answers the upgrade
        return client_half

    start = trio.current_time()
    with pytest.raises(TransportError, match="took longer than 10 s"):
        async with open_stream(url="ws://127.0.0.1:1/v2/iex", stream_factory=silent, **KW):
            pass  # pragma: no cover
    # 10 s attempts, jittered delays of 0.5-1 s and 1-2 s: the third attempt is cut off at 30 s
    assert trio.current_time() - start == BOUND
    assert len(peers) == 3


async def test_custom_first_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(seed=5)
    start = trio.current_time()
    with pytest.raises(TransportError, match="connection refused"):
        async with open_stream(
            url="ws://127.0.0.1:1/v2/iex",
            first_connect_timeout=3.0,
            backoff=backoff,
            stream_factory=in_memory(),  # no emulator: every attempt is refused at once
            **KW,
        ):
            pass  # pragma: no cover
    assert trio.current_time() - start == policy_end(backoff, 3.0)


async def test_unknown_host_fails_at_the_first_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    with nxdomain(), pytest.raises(HostNotFoundError, match="does not resolve") as info:
        async with open_stream(url="wss://stream.example.invalid/v2/iex", **KW):
            pass  # pragma: no cover
    assert trio.current_time() - start < 0.5
    assert info.value.host == "stream.example.invalid"
    assert info.value.permanent


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_http_4xx_at_the_upgrade_fails_at_the_first_attempt(
    autojump_clock: trio.testing.MockClock, status: int
) -> None:
    async with open_emulator(rate=0) as emu:
        emu.reject_upgrades(status, count=None)
        start = trio.current_time()
        with pytest.raises(HandshakeRejectedError) as info:
            async with open_stream(url=emu.url_for("iex"), stream_factory=in_memory(emu), **KW):
                pass  # pragma: no cover
        assert trio.current_time() == start  # no retry, no timer
        assert info.value.status_code == status
        assert len(emu.connections) == 0  # rejected at the upgrade, once


async def test_wrong_path_404_fails_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_emulator(rate=0) as emu:
        with pytest.raises(HandshakeRejectedError, match="HTTP 404"):
            async with open_stream(
                url=emu.url + "/v2/nope", feed="iex", stream_factory=in_memory(emu), **KW
            ):
                pass  # pragma: no cover


async def test_retryable_rejection_gives_up_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_emulator(rate=0) as emu:
        emu.reject_upgrades(429, count=None)
        backoff = Backoff(seed=3)
        start = trio.current_time()
        with pytest.raises(HandshakeRejectedError) as info:
            async with open_stream(
                url=emu.url_for("iex"), backoff=backoff, stream_factory=in_memory(emu), **KW
            ):
                pass  # pragma: no cover
        assert trio.current_time() - start == policy_end(backoff, BOUND)
        assert info.value.status_code == 429


async def test_connection_limit_at_first_connect_is_waited_out_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_emulator(rate=0) as emu:
        emu.fail_auth(406, count=1)  # e.g. this program's own session before a restart
        backoff = Backoff(connection_limit_floor=90.0, seed=1)
        start = trio.current_time()
        async with open_stream(
            url=emu.url_for("iex"),
            trades=["AAPL"],
            backoff=backoff,
            stream_factory=in_memory(emu),
            **KW,
        ) as stream:
            # one 406, one delay of at least the floor (beyond the 30 s bound), then connected
            delay = backoff.schedule().next_delay(connection_limit=True)
            assert trio.current_time() - start == delay
            assert delay >= 90.0
            assert stream.state == "connected"


async def test_after_the_stream_was_up_reconnects_keep_retrying(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trade = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 1.0, "s": 1, "c": ["@"], "t": 1}
    async with (
        open_emulator(rate=0) as emu,
        open_stream(
            url=emu.url_for("iex"),
            trades=["AAPL"],
            staleness_timeout=None,
            stream_factory=in_memory(emu),
            **KW,
        ) as s,
    ):
        emu.reject_upgrades(503, count=None)
        emu.drop(how="abort")
        await trio.sleep(5 * BOUND)  # far beyond the first-connect bound
        assert s.state == "reconnecting"
        emu.clear_faults()
        with trio.fail_after(120):
            assert isinstance(await s.receive(), Reconnected)
            emu.publish("iex", [trade])
            assert isinstance(await s.receive(), Trade)


async def test_pool_first_connect_is_bounded_and_logged(
    loopback_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Over loopback: the subject is the socket (a refused TCP connect).
    caplog.set_level(logging.WARNING, logger="trioalpaca.pool")
    url = f"ws://127.0.0.1:{_closed_port()}/v2/iex"
    start = trio.current_time()
    with pytest.raises(TransportError, match="connection refused") as info:
        async with open_pool(url=url, pool_size=1, **KW):
            pass  # pragma: no cover
    assert trio.current_time() - start <= BOUND + 0.01
    assert any("first_connect_timeout=30 s" in note for note in info.value.__notes__)
    failures = [r for r in caplog.records if "pool connection 0 could not connect" in r.message]
    assert len(failures) >= 3


async def test_pool_slot_with_unknown_host_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    with nxdomain(), pytest.raises(HostNotFoundError):
        async with open_pool(url="wss://stream.example.invalid/v2/iex", pool_size=1, **KW):
            pass  # pragma: no cover
    assert trio.current_time() - start < 0.5
