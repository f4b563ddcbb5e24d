"""The client's connection supervisor: the reconnect loop and the session lifecycle.

One :class:`Supervisor` per :class:`~trioalpaca.client.AlpacaWebSocketClient`. Its
:meth:`~Supervisor.run` is the client's *connection task*: open a connection, let a new
``_Session`` authenticate and subscribe, watch it (staleness), and when it fails with a
retryable error back off and do it again, under the first-connect policy until the stream has
been up once and under ``max_reconnect_attempts`` after that. It owns the connection-side state
(``state``, ``ready``, the current connection and session); the client's public methods read it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from trioalpaca import __version__
from trioalpaca._connection import Connection, open_connection
from trioalpaca._errors import (
    MalformedStreamError,
    ReconnectLimitError,
    StaleStreamError,
    TransportError,
    TrioAlpacaError,
)
from trioalpaca._protocol.client import DataClientProtocol
from trioalpaca.endpoints import StreamKind
from trioalpaca.models import Reconnected

if TYPE_CHECKING:
    from trioalpaca._client_settings import ClientSettings
    from trioalpaca._client_stats import Tally
    from trioalpaca._client_subs import Subscriptions
    from trioalpaca._protocol.stream import StreamClientProtocol
    from trioalpaca.client import AlpacaWebSocketClient, _Session

__all__ = ["Supervisor"]

logger = logging.getLogger("trioalpaca.client")


class Supervisor:
    """Runs one client's connections, one after the other (see the module documentation)."""

    def __init__(
        self,
        client: AlpacaWebSocketClient,
        settings: ClientSettings,
        subs: Subscriptions,
        tally: Tally,
        session_type: type[_Session],
    ) -> None:
        self._client = client
        self._settings = settings
        self._subs = subs
        self._tally = tally
        self._session_type = session_type
        #: the client's :attr:`~trioalpaca.client.AlpacaWebSocketClient.state`
        self.state = "idle"
        #: set while a session is ready (its subscriptions confirmed); replaced when lost
        self.ready = trio.Event()
        self.conn: Connection | None = None
        self.session: _Session | None = None
        self._session_id = 0
        #: the first-connect deadline's scope, until a session of this run was ready
        self._first_scope: trio.CancelScope | None = None
        self._session_was_ready = False
        self._ready_wall_ns = 0

    # -- the reconnect loop -----------------------------------------------------------------

    async def run(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """The connection task of one :meth:`~trioalpaca.client.AlpacaWebSocketClient.connect`:
        runs until ``scope`` is cancelled or an error stops the stream; sets ``done``."""
        settings = self._settings
        rx = self._client._rx
        schedule = settings.backoff.schedule()
        attempts = 0
        gap_start: int | None = None
        # First-connect policy: until a session of this run has been ready, attempts run under
        # a deadline and a permanent cause ends the run at once.
        established = False
        limit = settings.first_connect_timeout
        deadline = math.inf if limit is None else trio.current_time() + limit
        last: TrioAlpacaError | None = None
        waited_out_limit = False
        try:
            with scope:
                while True:
                    self.state = "connecting" if gap_start is None else "reconnecting"
                    rx.data_flowed = False
                    self._session_was_ready = False
                    try:
                        with trio.CancelScope(
                            deadline=math.inf if established else deadline
                        ) as first:
                            self._first_scope = first
                            await self._session_run(gap_start, attempts)
                        if first.cancelled_caught:
                            raise self._first_connect_failed(attempts, last, cut_off=True)
                        return  # pragma: no cover - sessions only end by raising
                    except TrioAlpacaError as exc:
                        self._tally.count_error(exc)
                        if self._client.observers:
                            code = getattr(exc, "code", None)
                            self.notify(
                                "disconnect",
                                reason=str(exc),
                                error=type(exc).__name__,
                                code=code if isinstance(code, int) else None,
                                fatal=exc.fatal,
                            )
                        if exc.fatal:
                            self.state = "failed"
                            logger.error(  # noqa: TRY400 - the error propagates to the user
                                "stream %s stopped: %s", settings.label, exc
                            )
                            raise
                        established = established or self._session_was_ready
                        if not established and exc.permanent:
                            self.state = "failed"
                            logger.error(  # noqa: TRY400 - the error propagates to the user
                                "stream %s: first connection failed for good: %s",
                                settings.label,
                                exc,
                            )
                            raise
                        last = exc
                        if self.ready.is_set():
                            self.ready = trio.Event()
                        lost_at = time.time_ns()
                        if self._session_was_ready:
                            # A new gap: anything after the last frame (or after this connection
                            # became ready, if nothing came) may be missing.
                            last_rx = max(rx.last_rx_wall_ns or 0, self._ready_wall_ns)
                            gap_start = min(lost_at, last_rx)
                        if rx.data_flowed and not isinstance(exc, MalformedStreamError):
                            attempts = 0
                            schedule.reset()
                        attempts += 1
                        if settings.max_attempts is not None and attempts > settings.max_attempts:
                            self.state = "failed"
                            raise ReconnectLimitError(attempts - 1, exc) from exc
                        delay = schedule.next_delay(connection_limit=exc.connection_limit)
                        if exc.connection_limit and not established and not waited_out_limit:
                            # 406: the server reaps a dropped session of this key in about
                            # 90 s (a restarted program meets its own old session). Wait that
                            # out once, then the usual deadline applies again.
                            waited_out_limit = True
                            now = trio.current_time()
                            deadline = max(deadline, now + delay + 2 * settings.connect_timeout)
                        if not established and trio.current_time() + delay >= deadline:
                            raise self._first_connect_failed(attempts, exc)  # noqa: B904 - exc itself
                        self.state = "reconnecting"
                        logger.warning(
                            "stream %s %s (%s: %s); %s attempt %d in %.2f s",
                            settings.label,
                            "lost" if established else "could not connect",
                            type(exc).__name__,
                            exc,
                            "reconnect" if established else "connection",
                            attempts + (0 if established else 1),
                            delay,
                        )
                        await trio.sleep(delay)
        finally:
            self.conn = None
            self._first_scope = None
            done.set()

    def _first_connect_failed(
        self, attempts: int, last: TrioAlpacaError | None, *, cut_off: bool = False
    ) -> TrioAlpacaError:
        """The error ending a run whose first connection did not succeed in time: the last
        attempt's own error (with a note on the policy), or a TransportError when no attempt
        finished at all."""
        self.state = "failed"
        settings = self._settings
        limit = settings.first_connect_timeout
        policy = (
            f"no connection to {settings.url} within first_connect_timeout={limit:g} s "
            f"({attempts + (1 if cut_off else 0)} attempt(s))"
        )
        if last is None:
            err: TrioAlpacaError = TransportError(
                f"{policy}; the attempt was still in progress (is the host reachable?)"
            )
        else:
            err = last
            if hasattr(err, "add_note"):  # Python 3.11+
                err.add_note(policy)
        logger.error("stream %s: %s; last error: %s", settings.label, policy, last)
        return err

    # -- one connection ---------------------------------------------------------------------

    async def _session_run(self, gap_start: int | None, attempts: int) -> None:
        """One connection's lifetime; always ends by raising."""
        settings = self._settings
        session = self._new_session(gap_start, attempts)
        headers = [("User-Agent", f"trioalpaca/{__version__}")]
        if settings.encoding == "msgpack":
            headers.append(("Content-Type", "application/msgpack"))
        buffer = self._client._buffer
        gate = buffer if buffer.policy == "block" else None
        try:
            async with open_connection(
                settings.url,
                on_frame=session.on_frame,
                gate=gate,
                busy=buffer.backlogged,
                headers=headers,
                connect_timeout=settings.connect_timeout,
                close_timeout=settings.close_timeout,
                heartbeat_interval=settings.heartbeat_interval,
                heartbeat_timeout=settings.heartbeat_timeout,
                ssl_context=settings.ssl_context,
                stream_factory=settings.stream_factory,
            ) as conn:
                self.conn = conn
                session.conn = conn
                if self._client.observers:
                    self.notify("connect", url=settings.url, session=session.id)
                session.flush()
                await self._until_ready(session)
                await self._watch()
        except BaseException as exc:
            session.lost(exc)
            raise
        raise TransportError("connection closed")  # pragma: no cover

    async def _until_ready(self, session: _Session) -> None:
        timeout = self._settings.connect_timeout
        with trio.move_on_after(timeout) as cs:
            await session.ready.wait()
        if cs.cancelled_caught:
            raise TransportError(
                f"the server did not complete authentication and subscription within {timeout:g} s"
            )

    async def _watch(self) -> None:
        """Staleness detection: raise StaleStreamError when a subscribed channel stays silent
        longer than its limit (sleeps forever when no channel has one)."""
        staleness = self._settings.staleness
        if not staleness:
            await trio.sleep_forever()
        after_data = self._settings.staleness_after_data
        start = trio.current_time()
        seen = self._client._rx.channel_seen
        seen.clear()
        step = min(staleness.values()) / 4
        while True:
            await trio.sleep(step)
            now = trio.current_time()
            acknowledged = self._subs.acknowledged
            for channel, limit in staleness.items():
                if not acknowledged.get(channel):
                    continue
                if after_data and channel not in seen:
                    continue  # "auto": armed once the channel delivered data on this connection
                last = max(seen.get(channel, start), start)
                if now - last > limit:
                    raise StaleStreamError(now - last, channel)

    def _new_session(self, gap_start: int | None, attempts: int) -> _Session:
        previous = self.session
        self._subs.carry_over(None if previous is None else previous.proto)
        self._session_id += 1
        session = self._session_type(
            self._client, self._session_id, gap_start, attempts, self._make_protocol()
        )
        self.session = session
        return session

    def _make_protocol(self) -> StreamClientProtocol:
        settings = self._settings
        key, secret = settings.key.reveal(), settings.secret.reveal()
        if settings.kind is StreamKind.TRADING:
            from trioalpaca._protocol.trading import TradingClientProtocol

            proto = TradingClientProtocol(
                key,
                secret,
                encoding=settings.encoding,
                raw=settings.raw_data,
                on_malformed=self._tally.note_malformed,
            )
            proto.listen(("trade_updates",))
            return proto
        return DataClientProtocol(
            settings.endpoint,
            settings.encoding,
            key,
            secret,
            raw=settings.raw_data,
            resubscribe=self._subs.desired,
            on_malformed=self._tally.note_malformed,
        )

    # -- called by the sessions (synchronously, in the reader) ------------------------------

    def notify(self, name: str, **data: Any) -> None:
        """Report session event ``name`` to the client's observers."""
        for observer in self._client.observers:
            observer.event(name, data)

    def session_ready(self, session: _Session) -> None:
        """``session``'s subscriptions are confirmed: the stream is (again) up."""
        self._session_was_ready = True
        first = self._first_scope
        if first is not None:
            first.deadline = math.inf  # the first-connect policy is over for this run
            self._first_scope = None
        now_wall = self._ready_wall_ns = time.time_ns()
        observers = self._client.observers
        if observers:
            self.notify("ready", session=session.id)
        if session.gap_start is not None:
            self._tally.reconnects += 1
            if observers:
                self.notify(
                    "reconnected",
                    gap_start_ns=session.gap_start,
                    gap_end_ns=now_wall,
                    attempts=session.attempts,
                )
            self._client._buffer.put_marker(
                Reconnected(session.gap_start, now_wall, session.attempts)
            )
            logger.info(
                "stream %s reconnected after %.3f s (%d attempt(s))",
                self._settings.label,
                (now_wall - session.gap_start) / 1e9,
                session.attempts,
            )
        self.state = "connected"
        self.ready.set()
        self._subs.session_ready(session.id)
