"""The client's subscription state across its sessions, and the subscription-change machinery.

One :class:`Subscriptions` per :class:`~trioalpaca.client.AlpacaWebSocketClient` (it outlives
the sessions): what every new connection subscribes to (``desired``), what the server last
confirmed (``acknowledged``), and the one change that waits for its acknowledgement
(``pending``). :meth:`Subscriptions.change` is the body of
:meth:`~trioalpaca.client.AlpacaWebSocketClient.subscribe` /
:meth:`~trioalpaca.client.AlpacaWebSocketClient.unsubscribe`: serialised by one lock, sent on
the current session, answered by the reader through :meth:`Subscriptions.request_done` (or by
the next session's resubscription when the connection dropped meanwhile).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import trio

from trioalpaca._errors import SubscriptionTimeoutError
from trioalpaca._protocol.client import DataClientProtocol
from trioalpaca.endpoints import MIRRORED_CHANNELS

if TYPE_CHECKING:
    from trioalpaca._buffer import MessageBuffer
    from trioalpaca._client_run import Supervisor
    from trioalpaca._protocol.stream import StreamClientProtocol
    from trioalpaca.client import _Session

__all__ = ["Pending", "Subscriptions"]

#: Channels the server fills in itself (they follow ``trades``); never subscribed explicitly.
_MIRRORED = frozenset(MIRRORED_CHANNELS)


class Pending:
    """A subscription change waiting for its acknowledgement."""

    __slots__ = ("done", "error", "position", "request_id", "session")

    def __init__(self, request_id: int, session: int) -> None:
        self.request_id = request_id
        self.session = session
        self.done = trio.Event()
        self.error: BaseException | None = None
        #: the stream position when the acknowledgement arrived
        self.position = 0


class Subscriptions:
    """Desired, acknowledged and pending subscriptions of one client (wire channel names)."""

    def __init__(
        self, desired: dict[str, tuple[str, ...]], buffer: MessageBuffer, timeout: float
    ) -> None:
        #: what the next connection subscribes to
        self.desired = desired
        #: what the server confirmed last
        self.acknowledged: dict[str, tuple[str, ...]] = {}
        self.pending: Pending | None = None
        self._lock = trio.Lock()
        self._buffer = buffer
        #: seconds a change may wait (``subscription_timeout``)
        self._timeout = timeout

    @property
    def confirmed(self) -> dict[str, tuple[str, ...]]:
        """The confirmed subscriptions, non-empty only, without the mirrored channels."""
        return {ch: syms for ch, syms in self.acknowledged.items() if syms and ch not in _MIRRORED}

    # -- called by the sessions (synchronously, in the reader) ------------------------------

    def acknowledge(self, acknowledged: dict[str, tuple[str, ...]]) -> None:
        """The server confirmed ``acknowledged`` (the whole current state)."""
        self.acknowledged = acknowledged

    def request_done(self, session: _Session, request_id: int, error: BaseException | None) -> None:
        """Request ``request_id`` of ``session`` was answered (``error``: it was refused)."""
        pending = self.pending
        if (
            pending is not None
            and pending.session == session.id
            and pending.request_id == request_id
        ):
            pending.error = error
            pending.position = self._buffer.appended
            pending.done.set()

    def session_ready(self, session_id: int) -> None:
        """Session ``session_id`` is subscribed: a change pending on a lost connection was part
        of its resubscription, so it is done."""
        pending = self.pending
        if pending is not None and pending.session != session_id:
            pending.done.set()

    def carry_over(self, previous: StreamClientProtocol | None) -> None:
        """Before a new session: resubscribe to what the previous one had confirmed, plus what
        was pending there (the trading stream always listens to trade_updates)."""
        if previous is not None and isinstance(previous, DataClientProtocol):
            self.desired = previous.desired

    # -- called by the client ---------------------------------------------------------------

    async def change(
        self,
        action: Literal["subscribe", "unsubscribe"],
        wanted: dict[str, tuple[str, ...]],
        supervisor: Supervisor,
    ) -> int:
        """Send one change on the current session once it is ready and wait for its
        acknowledgement; return the stream position at the acknowledgement.

        Raises:
            SubscriptionTimeoutError: no acknowledgement within ``subscription_timeout``.
            AlpacaServerError: the server refused the change.
        """
        timeout = self._timeout
        try:
            with trio.fail_after(timeout):
                async with self._lock:
                    await supervisor.ready.wait()
                    session = supervisor.session
                    assert session is not None
                    request_id = session.request(action, wanted)
                    pending = Pending(request_id, session.id)
                    self.pending = pending
                    try:
                        await pending.done.wait()
                    finally:
                        self.pending = None
        except trio.TooSlowError:
            raise SubscriptionTimeoutError(timeout) from None
        if pending.error is not None:
            raise pending.error
        return pending.position
