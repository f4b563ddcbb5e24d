"""Alpaca stream endpoints: feeds, paths, channels per stream kind and URL building.

Each feed name maps to an :class:`Endpoint` (see :data:`FEEDS`). Paths follow the Alpaca
documentation; note the irregular ones:

* stocks ``iex``, ``sip``, ``delayed_sip`` and ``test`` live under ``/v2/``, but ``boats`` and
  ``overnight`` under ``/v1beta1/``;
* crypto is ``/v1beta3/crypto/{location}`` with locations ``us`` (Alpaca), ``us-1`` (Kraken US) and
  ``eu-1`` (Kraken EU); perpetual futures are ``/v1beta1/crypto-perps/global`` (adds ``pricing``);
* options (``opra``, ``indicative``) are ``/v1beta1/...`` and accept **msgpack only**;
* news is ``/v1beta1/news``;
* the trading ``trade_updates`` stream is ``/stream`` on ``paper-api.alpaca.markets`` (paper) or
  ``api.alpaca.markets`` (live), not on the market data host;
* old SDKs still connect to retired paths, listed in :data:`LEGACY_PATHS` (the emulator serves
  them as aliases).

Channel names exist in two spellings: the wire names the server uses (``dailyBars``,
``updatedBars``, ``cancelErrors``) and python keyword names (``daily_bars``, ``updated_bars``,
``cancel_errors``). :func:`channel_to_wire` and :func:`channel_to_python` accept either.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

import attrs

from ._errors import UsageError

__all__ = [
    "CHANNELS",
    "DATA_HOST",
    "DATA_SANDBOX_HOST",
    "DEFAULT_FEED",
    "FEEDS",
    "LEGACY_PATHS",
    "LIVE_TRADING_HOST",
    "MIRRORED_CHANNELS",
    "PAPER_TRADING_HOST",
    "PYTHON_CHANNEL_NAMES",
    "WIRE_CHANNEL_NAMES",
    "Endpoint",
    "StreamKind",
    "channel_to_python",
    "channel_to_wire",
    "check_symbol",
    "feed_from_url",
    "proxy_from_env",
    "resolve_feed",
    "stream_url",
]

#: Market data websocket host.
DATA_HOST = "wss://stream.data.alpaca.markets"
#: Sandbox market data host (same paths).
DATA_SANDBOX_HOST = "wss://stream.data.sandbox.alpaca.markets"
#: Paper trading host for the ``trade_updates`` stream.
PAPER_TRADING_HOST = "wss://paper-api.alpaca.markets"
#: Live trading host for the ``trade_updates`` stream.
LIVE_TRADING_HOST = "wss://api.alpaca.markets"


class StreamKind(str, enum.Enum):
    """The family of a stream; decides message types, channels and the protocol."""

    STOCKS = "stocks"
    CRYPTO = "crypto"
    OPTIONS = "options"
    NEWS = "news"
    TRADING = "trading"


_STOCK_CHANNELS = frozenset(
    {"trades", "quotes", "bars", "dailyBars", "updatedBars", "statuses", "lulds", "imbalances"}
)
_CRYPTO_CHANNELS = frozenset({"trades", "quotes", "bars", "dailyBars", "updatedBars", "orderbooks"})

#: Channels a client may subscribe to, per stream kind (wire names). Crypto perpetuals add
#: ``pricing`` (see the ``crypto-perps/global`` endpoint's ``channels``).
CHANNELS: Mapping[StreamKind, frozenset[str]] = MappingProxyType(
    {
        StreamKind.STOCKS: _STOCK_CHANNELS,
        StreamKind.CRYPTO: _CRYPTO_CHANNELS,
        StreamKind.OPTIONS: frozenset({"trades", "quotes"}),
        StreamKind.NEWS: frozenset({"news"}),
        StreamKind.TRADING: frozenset({"trade_updates"}),
    }
)

#: Server-maintained channels that mirror ``trades`` on stock feeds (never sent by the client).
MIRRORED_CHANNELS = ("corrections", "cancelErrors")


def _ack_channels(kind: StreamKind, channels: frozenset[str]) -> tuple[str, ...]:
    """Key order of the server's ``subscription`` message for an endpoint."""
    if kind is StreamKind.STOCKS:
        return (
            "trades",
            "quotes",
            "bars",
            "updatedBars",
            "dailyBars",
            "statuses",
            "lulds",
            "corrections",
            "cancelErrors",
            "imbalances",
        )
    if kind is StreamKind.CRYPTO:
        order = ["trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars", "pricing"]
        return tuple(c for c in order if c in channels)
    if kind is StreamKind.OPTIONS:
        return ("trades", "quotes")
    if kind is StreamKind.NEWS:
        return ("news",)
    return ()


@attrs.frozen
class Endpoint:
    """One websocket endpoint (a feed).

    Attributes:
        feed: canonical feed name, the key in :data:`FEEDS` (``"sip"``, ``"crypto/us"``, ...).
        path: URL path on the host (``"/v2/sip"``).
        kind: the stream family.
        channels: wire channel names a client may subscribe to here.
        msgpack_only: the server rejects JSON sessions with error 412 (options).
        ack_channels: key set, in order, of the server's ``subscription`` acknowledgement: every
            subscribable channel plus the server-maintained ``corrections`` / ``cancelErrors`` on
            stock feeds (``imbalances`` included; unused channels are echoed as empty lists).
    """

    feed: str
    path: str
    kind: StreamKind
    channels: frozenset[str]
    msgpack_only: bool = False
    ack_channels: tuple[str, ...] = attrs.field(default=())

    def __attrs_post_init__(self) -> None:
        if not self.ack_channels:
            object.__setattr__(self, "ack_channels", _ack_channels(self.kind, self.channels))

    @property
    def mirrors_trades(self) -> bool:
        """Whether the server adds ``corrections`` / ``cancelErrors`` mirroring ``trades``."""
        return self.kind is StreamKind.STOCKS


def _stock(feed: str, version: str = "v2") -> Endpoint:
    return Endpoint(feed, f"/{version}/{feed}", StreamKind.STOCKS, _STOCK_CHANNELS)


def _crypto(loc: str) -> Endpoint:
    return Endpoint(f"crypto/{loc}", f"/v1beta3/crypto/{loc}", StreamKind.CRYPTO, _CRYPTO_CHANNELS)


def _build_feeds() -> dict[str, Endpoint]:
    eps = [
        _stock("iex"),
        _stock("sip"),
        _stock("delayed_sip"),
        _stock("boats", "v1beta1"),
        _stock("overnight", "v1beta1"),
        _stock("test"),
        _crypto("us"),
        _crypto("us-1"),
        _crypto("eu-1"),
        Endpoint(
            "crypto-perps/global",
            "/v1beta1/crypto-perps/global",
            StreamKind.CRYPTO,
            _CRYPTO_CHANNELS | {"pricing"},
        ),
        Endpoint("opra", "/v1beta1/opra", StreamKind.OPTIONS, CHANNELS[StreamKind.OPTIONS], True),
        Endpoint(
            "indicative",
            "/v1beta1/indicative",
            StreamKind.OPTIONS,
            CHANNELS[StreamKind.OPTIONS],
            True,
        ),
        Endpoint("news", "/v1beta1/news", StreamKind.NEWS, CHANNELS[StreamKind.NEWS]),
        Endpoint("trading", "/stream", StreamKind.TRADING, CHANNELS[StreamKind.TRADING]),
    ]
    feeds = {ep.feed: ep for ep in eps}
    feeds["options"] = feeds["opra"]
    feeds["crypto"] = feeds["crypto/us"]
    return feeds


#: Every known feed name (and the aliases ``"options"`` -> ``opra``, ``"crypto"`` -> ``crypto/us``)
#: mapped to its :class:`Endpoint`.
FEEDS: Mapping[str, Endpoint] = MappingProxyType(_build_feeds())


#: Retired endpoint paths that official SDKs still hard-code, mapped to the feed serving the same
#: data today. The legacy Python SDK (``alpaca-trade-api`` 3.x) connects its crypto stream to
#: ``/v1beta2/crypto`` (optionally with ``?exchanges=...``); its parser reads the v1beta3 messages
#: unchanged, so the emulator serves this path exactly like ``crypto/us`` (one venue: the
#: ``exchanges`` query is accepted and ignored).
LEGACY_PATHS: Mapping[str, str] = MappingProxyType({"/v1beta2/crypto": "crypto/us"})


def resolve_feed(feed: str | Endpoint) -> Endpoint:
    """Return the :class:`Endpoint` for a feed name (case-insensitive) or pass an Endpoint through.

    Raises:
        UsageError: (a :class:`ValueError`) for an unknown feed, listing the valid names.
    """
    if isinstance(feed, Endpoint):
        return feed
    ep = FEEDS.get(feed) or FEEDS.get(str(feed).strip().lower())
    if ep is None:
        valid = ", ".join(sorted(FEEDS))
        if str(feed).strip().lower() == "otc":
            raise UsageError(
                "Alpaca has no real-time websocket feed 'otc' (OTC data is REST-only); "
                f"valid feeds: {valid}"
            )
        raise UsageError(f"unknown feed {feed!r}; valid feeds: {valid}")
    return ep


#: The feed used when none is given (and the ``url`` does not name one): ``iex``, the feed of
#: Alpaca's free plan and alpaca-py's default. ``sip`` needs a paid plan (error 409 otherwise).
DEFAULT_FEED = "iex"


def feed_from_url(url: str | None) -> str | None:
    """Return the feed whose path ``url`` ends with (``".../v2/iex"`` -> ``"iex"``), else ``None``.

    Used when a client gets ``url=`` but no ``feed=``, so that an emulator, relay or replay URL
    selects the matching message types and channels. The trading path (``/stream``) is not
    inferred: the trading stream is chosen with ``stream_type="trading"``.
    """
    if not url:
        return None
    path = urlsplit(url if "://" in url else "wss://" + url).path.rstrip("/")
    best: Endpoint | None = None
    for ep in FEEDS.values():
        if ep.kind is StreamKind.TRADING or not path.endswith(ep.path):
            continue
        if best is None or len(ep.path) > len(best.path):
            best = ep
    return None if best is None else best.feed


def proxy_from_env(kind: StreamKind) -> str | None:
    """The proxy base URL from the environment for a market data stream of ``kind``, if any.

    ``DATA_PROXY_WS`` (read by the legacy Python SDK and the Go SDK to reach a proxy such as
    alpaca-proxy-agent, a relay or the emulator) applies to every market data stream; crypto
    prefers ``DATA_CRYPTO_PROXY_WS`` when set (the Go SDK's crypto variable). The trading stream
    ignores both. The value is a base URL: the endpoint's path is appended (a base ending in the
    version segment, such as Go's ``ws://host:port/v2``, gets only the rest).
    """
    if kind is StreamKind.TRADING:
        return None
    value = os.environ.get("DATA_CRYPTO_PROXY_WS") if kind is StreamKind.CRYPTO else None
    return value or os.environ.get("DATA_PROXY_WS") or None


def check_symbol(symbol: object) -> str:
    """Validate one symbol of a subscription and return it in upper case.

    ``"*"`` (every symbol) passes unchanged. Symbols are case-insensitive: ``"aapl"`` becomes
    ``"AAPL"`` and ``"btc/usd"`` becomes ``"BTC/USD"`` (Alpaca's symbols are all upper case).

    Raises:
        UsageError: not a string, empty, or containing whitespace, a comma or a control
            character (Alpaca would answer 400 invalid syntax); the message names the symbol.
    """
    if not isinstance(symbol, str):
        raise UsageError(f"symbols must be strings, got {symbol!r:.60}")
    if symbol == "*":
        return symbol
    if not symbol:
        raise UsageError("invalid symbol '': symbols must not be empty")
    if "," in symbol:
        raise UsageError(
            f"invalid symbol {symbol!r}: symbols contain no commas; pass a list, "
            "e.g. trades=['AAPL', 'MSFT']"
        )
    if any(c.isspace() for c in symbol) or not symbol.isprintable():
        raise UsageError(
            f"invalid symbol {symbol!r}: symbols contain no spaces or control characters"
        )
    return symbol.upper()


#: Version segments of the market data paths (``/v2``, ``/v1beta1``, ``/v1beta3``).
_VERSIONS = frozenset(
    "/" + ep.path.split("/")[1] for ep in FEEDS.values() if ep.kind is not StreamKind.TRADING
)

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def _normalize(url: str) -> tuple[str, str, str, str]:
    """Split ``url`` into (scheme, netloc, path, query) with a websocket scheme."""
    if "://" not in url:
        url = "wss://" + url
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise UsageError(
            f"unsupported URL scheme in {url!r}; use ws://, wss://, http:// or https://"
        )
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise UsageError(f"URL {url!r} has an invalid port") from None
    if not parts.hostname:
        raise UsageError(f"URL {url!r} has no host")
    return scheme, parts.netloc, parts.path, parts.query


def stream_url(
    endpoint: Endpoint | str,
    *,
    base_url: str | None = None,
    sandbox: bool = False,
    paper: bool = True,
    url: str | None = None,
) -> str:
    """Build the websocket URL of an endpoint.

    Args:
        endpoint: an :class:`Endpoint` or a feed name.
        base_url: replaces the host (scheme + host[:port]); the endpoint's path is appended unless
            the base already ends with it (``"ws://127.0.0.1:8765"`` + ``/v2/sip``); a trailing
            version segment of the base is replaced by the endpoint's (``"ws://h:1/v2"`` gives
            ``ws://h:1/v2/sip`` and ``ws://h:1/v1beta1/news``), so the Go SDK's style of
            ``DATA_PROXY_WS`` works too.
            ``http``/``https`` become ``ws``/``wss``; a base without scheme gets ``wss://``.
        sandbox: use the market data sandbox host (not available for the trading stream).
        paper: trading stream only: paper host (default) or live host.
        url: a complete URL used as-is (only the scheme is normalised), like alpaca-py's
            ``url_override``; wins over everything else.

    Raises:
        UsageError: unknown feed, unsupported scheme, or ``sandbox`` with the trading stream.
    """
    ep = resolve_feed(endpoint)
    if url is not None:
        scheme, netloc, path, query = _normalize(url)
        return urlunsplit((scheme, netloc, path, query, ""))
    if base_url is not None:
        scheme, netloc, path, query = _normalize(base_url)
        path = path.rstrip("/")
        if not path.endswith(ep.path):
            # A Go-style base ends with a version segment (".../v2"): the endpoint's own
            # version replaces it.
            head, _, last = path.rpartition("/")
            if "/" + last in _VERSIONS:
                path = head
            path += ep.path
        return urlunsplit((scheme, netloc, path, query, ""))
    if ep.kind is StreamKind.TRADING:
        if sandbox:
            raise UsageError(
                "Alpaca documents no sandbox trading stream; use paper=True for paper trading"
            )
        host = PAPER_TRADING_HOST if paper else LIVE_TRADING_HOST
    else:
        host = DATA_SANDBOX_HOST if sandbox else DATA_HOST
    return host + ep.path


_PY_TO_WIRE: Mapping[str, str] = MappingProxyType(
    {
        "trades": "trades",
        "quotes": "quotes",
        "bars": "bars",
        "daily_bars": "dailyBars",
        "updated_bars": "updatedBars",
        "statuses": "statuses",
        "lulds": "lulds",
        "imbalances": "imbalances",
        "orderbooks": "orderbooks",
        "news": "news",
        "pricing": "pricing",
        "corrections": "corrections",
        "cancel_errors": "cancelErrors",
        "trade_updates": "trade_updates",
    }
)
_WIRE_TO_PY: Mapping[str, str] = MappingProxyType({w: p for p, w in _PY_TO_WIRE.items()})

#: Python keyword names of all channels (``daily_bars``, ...), in a stable order.
PYTHON_CHANNEL_NAMES: tuple[str, ...] = tuple(_PY_TO_WIRE)
#: Wire names of all channels (``dailyBars``, ...), in the same order.
WIRE_CHANNEL_NAMES: tuple[str, ...] = tuple(_PY_TO_WIRE.values())


def channel_to_wire(name: str) -> str:
    """Return the wire name of a channel given either spelling (``daily_bars`` -> ``dailyBars``).

    Raises:
        UsageError: for an unknown channel name.
    """
    wire = _PY_TO_WIRE.get(name)
    if wire is not None:
        return wire
    if name in _WIRE_TO_PY:
        return name
    raise UsageError(f"unknown channel {name!r}; valid channels: {', '.join(PYTHON_CHANNEL_NAMES)}")


def channel_to_python(name: str) -> str:
    """Return the python keyword name of a channel given either spelling.

    Raises:
        UsageError: for an unknown channel name.
    """
    py = _WIRE_TO_PY.get(name)
    if py is not None:
        return py
    if name in _PY_TO_WIRE:
        return name
    raise UsageError(f"unknown channel {name!r}; valid channels: {', '.join(PYTHON_CHANNEL_NAMES)}")
