"""The interface every client-side protocol state machine offers to the client.

:class:`~trioalpaca._protocol.client.DataClientProtocol` (market data) and
:class:`~trioalpaca._protocol.trading.TradingClientProtocol` (``trade_updates``) both implement
:class:`StreamClientProtocol`, so the client's session drives either through one typed surface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .._codec import Frame
from .._errors import AlpacaServerError, TrioAlpacaError
from .client import ClientState
from .common import ChannelSpec

__all__ = ["StreamClientProtocol"]


class StreamClientProtocol(Protocol):
    """A sans-IO client protocol: frames in, messages and frames out."""

    error: TrioAlpacaError | None
    """The error that ended (or is ending) the connection, if any."""
    last_control: bool
    """Whether the last frame given to :meth:`receive` was control traffic only."""

    @property
    def state(self) -> ClientState:
        """The connection's state."""

    @property
    def authenticated(self) -> bool:
        """Whether the server accepted the credentials."""

    @property
    def ready(self) -> bool:
        """Whether data flows: authenticated and subscribed (or listening)."""

    @property
    def acknowledged(self) -> dict[str, tuple[str, ...]]:
        """The subscriptions the server confirmed last (wire channel names)."""

    def receive(self, frame: Frame) -> list[Any]:
        """Feed one frame; return the data messages it carried."""

    def data_to_send(self) -> list[Frame]:
        """Drain the frames to send."""

    def completed(self) -> list[tuple[int, AlpacaServerError | None]]:
        """Drain the answered requests: ``(request id, error or None)``."""

    def subscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Request more subscriptions; return the request id."""

    def unsubscribe(self, channels: Mapping[str, ChannelSpec]) -> int:
        """Request fewer subscriptions; return the request id."""

    def connection_closed(self, error: TrioAlpacaError | None = None) -> None:
        """The socket is gone."""
