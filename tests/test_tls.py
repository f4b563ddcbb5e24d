"""TLS: the emulator serves wss://, and handshake failures end the first ``async with`` at once.

Certificates come from ``trustme`` (a throwaway CA per test session).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trio
import trustme

from trioalpaca import (
    AlpacaWebSocketClient,
    TLSError,
    Trade,
    TransportError,
    UsageError,
    open_pool,
    open_stream,
)
from trioalpaca.testing import open_emulator

KW = {"api_key": "key", "api_secret": "secret"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def client_context(ca: trustme.CA) -> Iterator[ssl.SSLContext]:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    yield ctx


# tls-guide-start
async def test_stream_over_tls_with_trusted_ca() -> None:
    ca = trustme.CA()  # a throwaway certificate authority
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with open_emulator(ssl_context=server_context, rate=200, symbols=["AAPL"]) as emu:
        assert emu.url.startswith("wss://")
        async with open_stream(
            "key", "secret", url=emu.url_for("iex"), ssl_context=client_context, trades=["AAPL"]
        ) as stream:
            async for msg in stream:
                if isinstance(msg, Trade):
                    assert msg.symbol == "AAPL"
                    break
        # tls-guide-end
        assert emu.errors == []


async def test_untrusted_certificate_fails_fast_with_reason(
    server_context: ssl.SSLContext,
) -> None:
    async with open_emulator(ssl_context=server_context) as emu:
        start = trio.current_time()
        with pytest.raises(TLSError) as info:
            async with open_stream(url=emu.url_for("iex"), trades=["AAPL"], **KW):
                pytest.fail("connected without a trusted certificate")  # pragma: no cover
        assert trio.current_time() - start < 1.0
        err = info.value
        assert isinstance(err, TransportError)
        assert err.fatal and not err.retryable
        assert "certificate verify failed" in err.reason
        assert "certificate verify failed" in str(err)
        assert isinstance(err.__cause__, ssl.SSLCertVerificationError)
        # exactly one attempt: a wrong certificate is not retried
        assert len(emu.connections) == 0
        assert emu.errors == []


async def test_wrong_host_name_is_a_tls_error(ca: trustme.CA) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("elsewhere.example").configure_cert(ctx)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    async with open_emulator(ssl_context=ctx) as emu:
        with pytest.raises(TLSError, match="certificate verify failed") as info:
            async with open_stream(url=emu.url_for("iex"), ssl_context=trust, **KW):
                pass  # pragma: no cover
        assert "127.0.0.1" in info.value.reason or "mismatch" in info.value.reason


async def test_plain_server_behind_wss_url_is_a_tls_error(
    client_context: ssl.SSLContext,
) -> None:
    async with open_emulator() as emu:
        url = emu.url_for("iex").replace("ws://", "wss://")
        start = trio.current_time()
        with pytest.raises(TLSError, match="does not speak TLS") as info:
            async with open_stream(url=url, ssl_context=client_context, **KW):
                pass  # pragma: no cover
        assert trio.current_time() - start < 1.0
        assert "wrong version number" in info.value.reason
        assert emu.errors == []


async def test_tls_emulator_survives_clients_that_fail_the_handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with open_emulator(ssl_context=server_context) as emu:
        # plain HTTP, garbage, an untrusting client and a silent one
        for payload in (b"GET /v2/iex HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01garbage"):
            raw = await trio.open_tcp_stream("127.0.0.1", emu.port)
            await raw.send_all(payload)
            with trio.fail_after(2):
                while await raw.receive_some(4096):
                    pass  # the server hangs up
            await raw.aclose()
        with pytest.raises(TLSError):
            async with open_stream(url=emu.url_for("iex"), **KW):
                pass  # pragma: no cover
        async with open_stream(
            url=emu.url_for("iex"), ssl_context=client_context, trades=["AAPL"], **KW
        ) as stream:
            assert stream.state == "connected"
        assert emu.errors == []


async def test_pool_passes_ssl_context(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with open_emulator(ssl_context=server_context) as emu:
        async with open_pool(
            url=emu.url_for("iex"), ssl_context=client_context, pool_size=1, **KW
        ) as pool:
            assert pool.get_pool_metrics()["connections"][0]["state"] == "ready"
        with pytest.raises(TLSError):
            async with open_pool(url=emu.url_for("iex"), pool_size=1, **KW):
                pass  # pragma: no cover


def test_ssl_context_must_be_a_context() -> None:
    with pytest.raises(UsageError, match=r"ssl\.SSLContext"):
        AlpacaWebSocketClient(ssl_context="yes", **KW)  # type: ignore[arg-type]


async def test_plain_ws_client_to_a_tls_server_is_told_at_once(
    server_context: ssl.SSLContext,
) -> None:
    async with open_emulator(ssl_context=server_context) as emu:
        url = emu.url_for("iex").replace("wss://", "ws://")
        start = trio.current_time()
        with pytest.raises(TransportError, match="during the websocket upgrade") as info:
            async with open_stream(url=url, first_connect_timeout=0.5, **KW):
                pass  # pragma: no cover
        assert trio.current_time() - start <= 0.6  # each attempt ends at once; the bound ends it
        assert "try wss://" in str(info.value)
        assert emu.errors == []
