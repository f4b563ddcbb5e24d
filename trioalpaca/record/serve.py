"""Serving a recording as a live Alpaca stream: :func:`serve_replay`.

The server is the emulator's (:mod:`trioalpaca.testing`), started with its synthetic market
switched off (``rate=0``): it does the websocket upgrade, authentication, subscription acks and
per-connection filtering exactly as for generated data, and encodes for each client in the
encoding it negotiated. The replay publishes the recorded messages into it, paced by their
receive times, so every client gets what its own subscription selects, as if it were live.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from trioalpaca._errors import UsageError
from trioalpaca.record.replay import TimeBound, find_streams, open_replay

__all__ = ["ReplayServer", "serve_replay"]

#: Unpaced serving waits while any connection has more than this many bytes queued.
UNPACED_HIGH_WATER = 256 * 1024
_BATCH = 500


@attrs.define(eq=False)
class ReplayServer:
    """Handle of a running :func:`serve_replay` (what ``task_status.started`` reports)."""

    emulator: Any
    """The underlying :class:`~trioalpaca.testing.Emulator`."""
    streams: dict[str, str]
    """Stream name -> the feed it is served on."""
    started: trio.Event = attrs.Factory(trio.Event)
    """Set when playback starts (once ``wait_for_clients`` clients are subscribed)."""
    finished: trio.Event = attrs.Factory(trio.Event)
    """Set when every recorded message has been published."""
    published: int = 0
    """Messages published so far."""

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.emulator.port)

    @property
    def url(self) -> str:
        """Base URL ``ws://HOST:PORT`` (append a feed path, or use :meth:`url_for`)."""
        return str(self.emulator.url)

    def url_for(self, feed: str) -> str:
        """Full URL of a feed's endpoint, e.g. ``url_for("iex")``."""
        return str(self.emulator.url_for(feed))


async def serve_replay(
    path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    speed: float | None = 1.0,
    start: TimeBound = None,
    end: TimeBound = None,
    wait_for_clients: int = 1,
    credentials: Mapping[str, str] | None = None,
    streams: Sequence[str] | None = None,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the recording at ``path`` over the Alpaca websocket protocol until cancelled.

    Use with ``server = await nursery.start(serve_replay, path, ...)``; point any client or SDK
    at ``server.url_for(feed)``. Each stream of the recording is served on its recorded feed's
    endpoint.

    Args:
        path: recording file or directory (see :func:`~trioalpaca.record.open_replay`).
        host, port: where to listen (``port=0`` picks a free port).
        speed: pace: ``1.0`` is the recorded pace, ``5.0`` five times faster; ``None`` as fast as
            the clients read (publishing waits while a client has much unsent data).
        start, end: the part of the recording to serve.
        wait_for_clients: start playback once this many clients are subscribed (``0``: at once).
        credentials: accepted ``{key: secret}``; ``None`` accepts any non-empty pair.
        streams: stream names to serve (default: all).

    Raises:
        RecordingError: no recording at ``path``.
        UsageError: bad arguments.
    """
    from trioalpaca.testing import serve_emulator

    if wait_for_clients < 0:
        raise UsageError("wait_for_clients must be >= 0")
    if speed is not None and not (isinstance(speed, (int, float)) and 0 < speed < math.inf):
        raise UsageError(f"speed must be a positive number or None, not {speed!r}")
    found = await trio.to_thread.run_sync(find_streams, path)
    names = list(streams) if streams is not None else list(found)
    async with trio.open_nursery() as nursery:
        emu = await nursery.start(
            functools.partial(
                serve_emulator,
                host=host,
                port=port,
                rate=0.0,
                credentials=credentials,
                connection_limit=1000,
            )
        )
        # feed per stream, from the headers (open_replay reads them)
        feeds: dict[str, str] = {}
        async with open_replay(path, streams=names) as probe:
            for name, header in probe.headers.items():
                feeds[name] = str(header.get("feed", "iex"))
        server = ReplayServer(emu, feeds)
        task_status.started(server)
        while wait_for_clients:
            subscribed = [  # data: subscribed to something; trading: listening to trade_updates
                c
                for c in emu.open_connections()
                if c.authenticated and (any(c.subscriptions.values()) or c.listening)
            ]
            if len(subscribed) >= wait_for_clients:
                break
            await trio.sleep(0.01)
        server.started.set()
        origin = (trio.current_time(), await _first_rx_ns(path, names, start))
        async with trio.open_nursery() as players:
            for name in names:
                players.start_soon(
                    _play, server, path, name, feeds[name], speed, start, end, origin
                )
        server.finished.set()
        await trio.sleep_forever()


async def _first_rx_ns(path: str | os.PathLike[str], names: list[str], start: TimeBound) -> int:
    async with open_replay(path, streams=names, start=start) as stream:
        return stream.first_rx_ns()


async def _play(
    server: ReplayServer,
    path: str | os.PathLike[str],
    name: str,
    feed: str,
    speed: float | None,
    start: TimeBound,
    end: TimeBound,
    origin: tuple[float, int],
) -> None:
    emu = server.emulator
    trading = feed == "trading"
    async with open_replay(
        path, speed=speed, start=start, end=end, raw_data=True, streams=[name]
    ) as stream:
        stream.set_origin(*origin)
        while True:
            try:
                batch = await stream.receive_batch(_BATCH)
            except trio.EndOfChannel:
                return
            data = [m for m in batch if m.get("T") not in ("reconnected", "dropped")]
            if not data:
                continue
            if trading:
                for m in data:
                    emu._broadcast_trade_update(m)
            else:
                emu.publish(feed, data)
            server.published += len(data)
            if speed is None:
                # the emulator has no "drained" event: poll its per-connection queues
                while any(c.queued_bytes > UNPACED_HIGH_WATER for c in emu._conns.values()):  # noqa: ASYNC110
                    await trio.sleep(0.001)
