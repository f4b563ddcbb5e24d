"""StreamOptions: the per-connection settings a component passes to every client it creates.

The pool (and the relay, and anything else that opens clients on a user's behalf) takes one
frozen :class:`StreamOptions` instead of a free-form ``**client_options`` dict: a misspelt or
unsupported option is refused up front with a clear :class:`~trioalpaca.UsageError`, before
anything connects, and the values are typed.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from trioalpaca._connection import StreamFactory
from trioalpaca._errors import UsageError

__all__ = ["StreamOptions"]

_CLIENT_OVERFLOW = ("block", "drop_oldest", "disconnect")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class StreamOptions:
    """Settings of each :class:`~trioalpaca.client.AlpacaWebSocketClient` a component opens.

    Every field is the client's keyword argument of the same name, with the same default.
    Build one directly, or with :meth:`from_kwargs` from keyword arguments (unknown names are
    refused).
    """

    encoding: Literal["msgpack", "json"] | None = None
    """Wire encoding (default: msgpack where the feed supports it)."""
    heartbeat_interval: float | None = attrs.field(default=10.0, validator=_positive)
    """Seconds between pings (``None``: no heartbeat)."""
    heartbeat_timeout: float = attrs.field(default=5.0, validator=_positive)
    """Seconds a pong may take."""
    buffer_size: int = attrs.field(default=10_000)
    """The client's buffer bound (messages)."""
    overflow: Literal["block", "drop_oldest", "disconnect"] = "block"
    """The client's overflow policy."""
    subscription_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds a subscription change may wait for its acknowledgement."""
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds connecting and authenticating may take."""
    close_timeout: float = attrs.field(default=0.5, validator=_positive)
    """Seconds the closing handshake may take."""
    ssl_context: ssl.SSLContext | None = None
    """TLS settings for ``wss://`` URLs (default: the system's)."""
    staleness_timeout: float | Mapping[str, float] | Literal["auto"] | None = "auto"
    """Silence limit before reconnecting (see the client)."""
    base_url: str | None = None
    """Host (and scheme) to use instead of Alpaca's, when no full URL is given."""
    sandbox: bool = False
    """Use Alpaca's sandbox market data host, when no full URL is given."""
    stream_factory: StreamFactory | None = None
    """Opens each connection's byte stream instead of TCP (see the client's argument)."""

    def __attrs_post_init__(self) -> None:
        if self.buffer_size < 1:
            raise UsageError(f"buffer_size must be at least 1, got {self.buffer_size!r}")
        if self.overflow not in _CLIENT_OVERFLOW:
            raise UsageError(
                f"overflow must be one of {', '.join(_CLIENT_OVERFLOW)}, not {self.overflow!r}"
            )
        if self.encoding not in (None, "msgpack", "json"):
            raise UsageError(f"encoding must be 'msgpack' or 'json', not {self.encoding!r}")

    @classmethod
    def names(cls) -> frozenset[str]:
        """The option names (the client keyword arguments a StreamOptions carries)."""
        return frozenset(a.name for a in attrs.fields(cls) if a.init)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> StreamOptions:
        """Build from keyword arguments.

        Raises:
            UsageError: an unknown option, or an invalid value.
        """
        unknown = sorted(set(kwargs) - cls.names())
        if unknown:
            raise UsageError(
                f"unknown stream option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(cls.names()))}"
            )
        return cls(**kwargs)

    def client_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of :class:`~trioalpaca.client.AlpacaWebSocketClient`."""
        return {a.name: getattr(self, a.name) for a in attrs.fields(type(self)) if a.init}
