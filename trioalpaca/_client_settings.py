"""The client's settings: every constructor argument of
:class:`~trioalpaca.client.AlpacaWebSocketClient`, validated and resolved once, then frozen.

:meth:`ClientSettings.build` does what the constructor used to do inline: refuse bad values
with a :class:`~trioalpaca.UsageError` (in the same order, with the same messages), resolve the
credentials, the endpoint, the encoding and the URL, and normalise the initial subscriptions
and the staleness limits. The client, its supervisor (``trioalpaca._client_run``) and its
sessions read the result; nothing changes it afterwards.
"""

from __future__ import annotations

import math
import ssl
import warnings
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from trioalpaca._connection import StreamFactory
from trioalpaca._credentials import resolve_credentials
from trioalpaca._errors import UsageError
from trioalpaca._protocol.common import normalize_channels
from trioalpaca.backoff import Backoff
from trioalpaca.endpoints import (
    CHANNELS,
    DEFAULT_FEED,
    FEEDS,
    Endpoint,
    StreamKind,
    channel_to_wire,
    check_symbol,
    feed_from_url,
    proxy_from_env,
    resolve_feed,
    stream_url,
)

__all__ = ["AUTO_STALENESS_TIMEOUT", "SPARSE_CHANNELS", "ClientSettings", "Secret"]

#: Channels that are quiet for long stretches by nature (see ``trioalpaca.client``).
SPARSE_CHANNELS = frozenset(
    {
        "bars",
        "dailyBars",
        "updatedBars",
        "statuses",
        "lulds",
        "imbalances",
        "corrections",
        "cancelErrors",
        "news",
        "trade_updates",
    }
)

#: Default silence limit of ``staleness_timeout="auto"`` (seconds).
AUTO_STALENESS_TIMEOUT = 120.0

#: The keyword arguments that name initial subscriptions (client spelling).
_CHANNEL_ARGS = (
    "trades",
    "quotes",
    "bars",
    "daily_bars",
    "updated_bars",
    "statuses",
    "lulds",
    "imbalances",
    "orderbooks",
    "news",
    "pricing",
)


class Secret:
    """Holds a credential; never shows it in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


@attrs.frozen(kw_only=True)
class ClientSettings:
    """One client's resolved, validated settings (see :meth:`build`)."""

    key: Secret
    secret: Secret
    stream_type: Literal["data", "trading"]
    endpoint: Endpoint
    kind: StreamKind
    encoding: Literal["msgpack", "json"]
    raw_data: bool
    url: str
    #: the feed, plus `` at <url>`` when that is not the feed's default URL (for the logs)
    label: str
    max_attempts: int | None
    heartbeat_interval: float | None
    heartbeat_timeout: float
    backoff: Backoff
    subscription_timeout: float
    connect_timeout: float
    first_connect_timeout: float | None
    close_timeout: float
    ssl_context: ssl.SSLContext | None
    stream_factory: StreamFactory | None
    handler_errors: Literal["continue", "raise"]
    auto_connect: bool
    buffer_size: int
    overflow: Literal["block", "drop_oldest", "disconnect"]
    #: channel -> silence limit (empty: staleness detection off)
    staleness: dict[str, float]
    #: ``"auto"``: a channel's limit is armed once it delivered data on the connection
    staleness_after_data: bool
    #: the initial subscriptions (wire channel names)
    initial: dict[str, tuple[str, ...]]

    def channels(
        self, channels: Mapping[str, Iterable[str] | str | None]
    ) -> dict[str, tuple[str, ...]]:
        """``channels`` (either spelling) as wire names with checked, upper-cased symbols."""
        return normalize_channels(self.endpoint, channels, symbol=check_symbol)

    @classmethod
    def build(
        cls,
        api_key: str | None,
        api_secret: str | None,
        *,
        stream_type: Literal["data", "trading"],
        feed: str | None,
        raw_data: bool,
        encoding: Literal["msgpack", "json"] | None,
        max_reconnect_attempts: int | None,
        heartbeat_interval: float | None,
        heartbeat_timeout: float,
        url: str | None,
        base_url: str | None,
        sandbox: bool,
        paper: bool,
        buffer_size: int,
        overflow: Literal["block", "drop_oldest", "disconnect"],
        backoff: Backoff | None,
        subscription_timeout: float,
        connect_timeout: float,
        first_connect_timeout: float | None,
        close_timeout: float,
        ssl_context: ssl.SSLContext | None,
        stream_factory: StreamFactory | None,
        staleness_timeout: float | Mapping[str, float] | Literal["auto"] | None,
        handler_errors: Literal["continue", "raise"],
        auto_connect: bool,
        **channels: Iterable[str],
    ) -> ClientSettings:
        """Validate and resolve the client's constructor arguments (same names, same order).

        Called from the client's ``__init__`` (the ``feed`` warning points at its caller).

        Raises:
            CredentialsError: no credentials in the arguments or the environment.
            UsageError: an invalid value.
        """
        if stream_type not in ("data", "trading"):
            raise UsageError(f"stream_type must be 'data' or 'trading', not {stream_type!r}")
        if overflow not in ("block", "drop_oldest", "disconnect"):
            raise UsageError(
                f"overflow must be 'block', 'drop_oldest' or 'disconnect', not {overflow!r}"
            )
        if buffer_size < 1:
            raise UsageError("buffer_size must be at least 1")
        if handler_errors not in ("continue", "raise"):
            raise UsageError("handler_errors must be 'continue' or 'raise'")
        if max_reconnect_attempts is not None and max_reconnect_attempts < 0:
            raise UsageError("max_reconnect_attempts must be >= 0 or None")
        api_key, api_secret = resolve_credentials(api_key, api_secret)

        if stream_type == "trading" and feed not in (None, "trading"):
            warnings.warn(
                f"feed={feed!r} is ignored: the trading stream (trade_updates) has no feed",
                UserWarning,
                stacklevel=3,  # build -> AlpacaWebSocketClient.__init__ -> the caller
            )
        endpoint = (
            FEEDS["trading"]
            if stream_type == "trading"
            else resolve_feed(feed if feed is not None else feed_from_url(url) or DEFAULT_FEED)
        )
        if stream_type == "data" and endpoint.kind is StreamKind.TRADING:
            raise UsageError("feed 'trading' needs stream_type='trading'")
        kind = endpoint.kind
        if encoding is None:
            encoding = "json" if kind is StreamKind.TRADING else "msgpack"
        if encoding not in ("msgpack", "json"):
            raise UsageError(f"encoding must be 'msgpack' or 'json', not {encoding!r}")
        if endpoint.msgpack_only and encoding != "msgpack":
            raise UsageError(f"feed {endpoint.feed!r} only supports msgpack; drop encoding='json'")
        if url is None and base_url is None and not sandbox:
            base_url = proxy_from_env(kind)
        resolved_url = stream_url(
            endpoint, base_url=base_url, sandbox=sandbox, paper=paper, url=url
        )
        label = endpoint.feed
        if resolved_url != stream_url(endpoint, sandbox=sandbox, paper=paper):
            label += f" at {resolved_url}"  # logs name what was really reached

        if first_connect_timeout is not None and not first_connect_timeout > 0:
            raise UsageError("first_connect_timeout must be a positive number of seconds or None")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise UsageError(f"ssl_context must be an ssl.SSLContext, not {ssl_context!r}")
        staleness = _staleness_config(endpoint, staleness_timeout)

        initial: dict[str, tuple[str, ...]] = {}
        if kind is StreamKind.TRADING:
            if any(tuple(channels[name]) for name in _CHANNEL_ARGS):
                raise UsageError("the trading stream has no market data channels")
        else:
            initial = normalize_channels(
                endpoint, {name: channels[name] for name in _CHANNEL_ARGS}, symbol=check_symbol
            )
        return cls(
            key=Secret(api_key),
            secret=Secret(api_secret),
            stream_type=stream_type,
            endpoint=endpoint,
            kind=kind,
            encoding=encoding,
            raw_data=raw_data,
            url=resolved_url,
            label=label,
            max_attempts=max_reconnect_attempts,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            backoff=backoff if backoff is not None else Backoff(),
            subscription_timeout=subscription_timeout,
            connect_timeout=connect_timeout,
            first_connect_timeout=first_connect_timeout,
            close_timeout=close_timeout,
            ssl_context=ssl_context,
            stream_factory=stream_factory,
            handler_errors=handler_errors,
            auto_connect=auto_connect,
            buffer_size=buffer_size,
            overflow=overflow,
            staleness=staleness[0],
            staleness_after_data=staleness[1],
            initial=initial,
        )


def _staleness_config(
    endpoint: Endpoint, staleness: float | Mapping[str, float] | Literal["auto"] | None
) -> tuple[dict[str, float], bool]:
    """The per-channel silence limits, and whether they are armed only after data ("auto")."""
    after_data = staleness == "auto"
    if staleness is None:
        return {}, after_data
    if staleness == "auto":
        staleness = AUTO_STALENESS_TIMEOUT
    if isinstance(staleness, Mapping):
        cfg = {channel_to_wire(k): float(v) for k, v in staleness.items()}
    else:
        value = float(staleness)
        dense = (CHANNELS.get(endpoint.kind, frozenset()) | endpoint.channels) - SPARSE_CHANNELS
        cfg = dict.fromkeys(dense, value)
    for ch, v in cfg.items():
        if not (v > 0 and math.isfinite(v)):
            raise UsageError(f"staleness timeout for {ch!r} must be a positive number")
    return cfg, after_data
