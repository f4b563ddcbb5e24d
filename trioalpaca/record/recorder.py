"""Recording a live client (or every connection of a pool) to disk: :func:`open_recorder`.

The tap (:class:`~trioalpaca.client.StreamObserver`) runs in the client's reader task, before
the frame is decoded. It only appends ``(kind, rx_ns, frame)`` to a per-stream list and counts
bytes; a writer task in the recorder's nursery swaps those lists out and hands them to a worker
thread (``trio.to_thread``) that packs, compresses and writes the chunks. When the not-yet-written
data exceeds ``max_pending_bytes`` (the disk cannot keep up) new frames are discarded and counted,
and a ``dropped`` event marks the hole in the recording (replay turns it into a
:class:`~trioalpaca.models.Dropped` marker); :meth:`Recorder.get_metrics` reports the count.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

from trioalpaca import __version__
from trioalpaca._codec import Frame, decode_request, encode_request
from trioalpaca._errors import ProtocolError, UsageError
from trioalpaca._groups import single_error
from trioalpaca.client import AlpacaWebSocketClient
from trioalpaca.record._format import RecordingError, RecordingWriter, RecordKind

if TYPE_CHECKING:
    from trioalpaca.pool import ConnectionPool

__all__ = ["FILE_SUFFIX", "Recorder", "open_recorder", "recording_name"]

FILE_SUFFIX = ".tarec"
"""File name suffix of recording files."""

_NAME_RE = re.compile(r"^(?P<stream>[A-Za-z0-9_.]+?)-(?P<stamp>\d{8}T\d{6}Z)-(?P<seq>\d+)\.tarec$")
_STREAM_RE = re.compile(r"^[A-Za-z0-9_]+$")

_IN = 0  # frame-in whose kind (binary / text) the writer thread decides

#: How long the writer gathers frames before handing them to its worker thread (seconds).
BATCH_SECONDS = 0.05


def recording_name(stream: str, start_ns: int, seq: int) -> str:
    """File name of a rotated recording file: ``STREAM-YYYYmmddTHHMMSSZ-SEQ.tarec``."""
    stamp = _dt.datetime.fromtimestamp(start_ns / 1e9, _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stream}-{stamp}-{seq:04d}{FILE_SUFFIX}"


def parse_recording_name(name: str) -> tuple[str, str, int] | None:
    """``(stream, stamp, seq)`` of a rotated file name, ``None`` for other names."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return match["stream"], match["stamp"], int(match["seq"])


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _redact(frame: Frame) -> Frame:
    """An outgoing frame with auth credentials replaced by ``***``."""
    try:
        req = decode_request(frame)
    except ProtocolError:
        return frame
    if req.get("action") != "auth":
        return frame
    req = {k: ("***" if k in ("key", "secret") else v) for k, v in req.items()}
    return encode_request(req, "msgpack" if isinstance(frame, bytes) else "json")


class _Sink:
    """The files of one recorded stream (runs in the writer thread only)."""

    def __init__(self, rec: Recorder, stream: str, header: dict[str, Any]) -> None:
        self.rec = rec
        self.stream = stream
        self.header = header
        self.writer: RecordingWriter | None = None
        self.hour: int | None = None
        self.seq = 0
        self.files: list[str] = []

    def _open(self, rx_ns: int) -> RecordingWriter:
        rec = self.rec
        header = dict(self.header)
        header["start_ns"] = rx_ns
        header["start_time"] = _dt.datetime.fromtimestamp(rx_ns / 1e9, _dt.timezone.utc).isoformat()
        header["sequence"] = self.seq
        if self.files:
            header["continues"] = os.path.basename(self.files[-1])
        if rec.single_file:
            path = rec.path
        else:
            while True:
                path = os.path.join(rec.path, recording_name(self.stream, rx_ns, self.seq))
                self.seq += 1
                if not os.path.exists(path):
                    break
        writer = RecordingWriter(
            path,
            header,
            chunk_bytes=rec.chunk_bytes,
            chunk_ns=rec.chunk_ns,
            level=rec.level,
            fsync=rec.fsync,
        )
        rec._files_opened += 1
        self.files.append(path)
        self.hour = rx_ns // 3_600_000_000_000
        return writer

    def _writer_for(self, rx_ns: int) -> RecordingWriter:
        writer = self.writer
        rec = self.rec
        if writer is not None and not rec.single_file:
            rotate = (rec.rotate_hourly and rx_ns // 3_600_000_000_000 != self.hour) or (
                rec.max_bytes is not None and writer.size >= rec.max_bytes
            )
            if rotate:
                self._close_writer()
                writer = None
        if writer is None:
            writer = self.writer = self._open(rx_ns)
        return writer

    def _close_writer(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            before = writer.size
            try:
                writer.close()
            finally:
                self.rec._bytes_written += writer.size - before

    def write(self, items: list[tuple[int, int, Any]]) -> None:
        rec = self.rec
        text, binary, event = (
            RecordKind.FRAME_IN_TEXT,
            RecordKind.FRAME_IN_BINARY,
            RecordKind.EVENT,
        )
        writer: RecordingWriter | None = None
        before = 0
        frames = 0
        hour_ns = 3_600_000_000_000
        for kind, rx_ns, obj in items:
            # the writer changes only on rotation: by the hour (checked per record) or by size
            # (the size changes when a chunk is written)
            if (
                writer is None
                or writer is not self.writer
                or (rec.rotate_hourly and rx_ns // hour_ns != self.hour)
                or (rec.max_bytes is not None and writer.size >= rec.max_bytes)
            ):
                if writer is not None:
                    rec._bytes_written += writer.size - before
                writer = self._writer_for(rx_ns)
                before = writer.size
            if kind == _IN:
                if type(obj) is bytes:
                    writer.add(binary, rx_ns, obj)
                else:
                    writer.add(text, rx_ns, obj.encode())
                frames += 1
            elif kind == event:
                if obj.get("event") == "subscribed":
                    self.header["subscriptions"] = obj.get("subscriptions", {})
                writer.add(kind, rx_ns, json.dumps(obj, separators=(",", ":")).encode())
            else:
                writer.add(kind, rx_ns, obj)
        if writer is not None:
            rec._bytes_written += writer.size - before
        rec._frames += frames
        rec._records += len(items)

    def tick(self, now_ns: int) -> None:
        """Close the open chunk once it is ``chunk_ns`` old (so a crash loses little)."""
        writer = self.writer
        if writer is None:
            return
        first = writer.open_chunk_first_ns
        if first is not None and now_ns - first >= self.rec.chunk_ns:
            before = writer.size
            writer.flush()
            self.rec._bytes_written += writer.size - before

    def close(self) -> None:
        self._close_writer()


class _Tap:
    """The observer attached to one client; appends to a list, never blocks."""

    __slots__ = ("client", "dropped", "pending", "rec", "sink")

    def __init__(self, rec: Recorder, sink: _Sink, client: AlpacaWebSocketClient) -> None:
        self.rec = rec
        self.sink = sink
        self.client = client
        self.pending: list[tuple[int, int, Any]] = []
        self.dropped = 0

    def _admit(self, size: int, ns: int) -> bool:
        rec = self.rec
        if rec._pending_bytes + size > rec.max_pending_bytes or rec._closing:
            self.dropped += 1
            rec._dropped += 1
            return False
        if self.dropped:
            self.pending.append(
                (
                    RecordKind.EVENT,
                    ns,
                    {
                        "event": "dropped",
                        "count": self.dropped,
                        "reason": "recorder: the disk could not keep up",
                    },
                )
            )
            self.dropped = 0
        rec._pending_bytes += size
        if rec._idle:
            rec._idle = False
            rec._wake.set()
        if rec._pending_bytes > rec._urgent_bytes and not rec._urgent.is_set():
            rec._urgent.set()
        return True

    def frame_in(self, frame: Frame, rx_ns: int) -> None:
        if self._admit(len(frame), rx_ns):
            self.pending.append((_IN, rx_ns, frame))

    def frame_out(self, frame: Frame, tx_ns: int) -> None:
        frame = _redact(frame)
        if isinstance(frame, str):
            kind, data = RecordKind.FRAME_OUT_TEXT, frame.encode()
        else:
            kind, data = RecordKind.FRAME_OUT_BINARY, frame
        if self._admit(len(data), tx_ns):
            self.pending.append((kind, tx_ns, data))

    def event(self, name: str, data: dict[str, Any]) -> None:
        if name == "reconnected":
            self.rec._gaps += 1
        ns = time.time_ns()
        if "url" in data:
            data = {**data, "url": _safe_url(str(data["url"]))}
        if self._admit(64, ns):
            self.pending.append((RecordKind.EVENT, ns, {"event": name, **data}))

    def take(self) -> list[tuple[int, int, Any]]:
        items, self.pending = self.pending, []
        return items


class Recorder:
    """A running recording; :func:`open_recorder` creates it.

    Attributes:
        path: the file (single-file mode) or directory being written.
    """

    def __init__(
        self,
        path: str,
        *,
        single_file: bool,
        rotate_hourly: bool,
        max_bytes: int | None,
        chunk_bytes: int,
        chunk_seconds: float,
        max_pending_bytes: int,
        level: int,
        fsync: bool,
    ) -> None:
        self.path = path
        self.single_file = single_file
        self.rotate_hourly = rotate_hourly
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.chunk_seconds = chunk_seconds
        self.chunk_ns = max(int(chunk_seconds * 1e9), 1)
        self.max_pending_bytes = max_pending_bytes
        self.level = level
        self.fsync = fsync
        self._taps: list[_Tap] = []
        self._sinks: dict[str, _Sink] = {}
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._urgent_bytes = max_pending_bytes // 4
        self._idle = True
        self._closing = False
        self._pending_bytes = 0
        self._limiter = trio.CapacityLimiter(1)
        self._files_opened = 0
        self._bytes_written = 0
        self._records = 0
        self._frames = 0
        self._dropped = 0
        self._gaps = 0
        self._error: BaseException | None = None

    # -- attaching ------------------------------------------------------------------------------

    def attach(self, client: AlpacaWebSocketClient, stream: str = "stream") -> None:
        """Record ``client`` as stream ``stream`` (its frames from now on, before decoding).

        Attach before entering the client's ``async with`` to record the handshake too. A client
        attached under a stream name already in use continues that stream (the pool does this
        after a reconnect or rotation of one of its connections).
        """
        if not _STREAM_RE.match(stream):
            raise UsageError(f"stream name must be letters, digits and '_', not {stream!r}")
        if self._closing:
            raise UsageError("this recorder is closed")
        sink = self._sinks.get(stream)
        if sink is None:
            if self.single_file and self._sinks:
                raise UsageError(
                    "a single recording file holds one stream; record to a directory to keep "
                    "several (e.g. a pool's connections)"
                )
            endpoint = client.endpoint
            header: dict[str, Any] = {
                "format": "trioalpaca-recording",
                "trioalpaca_version": __version__,
                "stream": stream,
                "stream_type": client.stream_type,
                "kind": endpoint.kind.value,
                "feed": endpoint.feed,
                "url": _safe_url(client.url),
                "encoding": client.encoding,
                "subscriptions": dict(client.subscriptions or client._subs.desired),
            }
            sink = self._sinks[stream] = _Sink(self, stream, header)
        tap = _Tap(self, sink, client)
        self._taps.append(tap)
        client.observers.append(tap)
        if client.state in ("connected", "reconnecting", "connecting"):
            tap.event("attached", {"subscriptions": client.subscriptions})

    def detach(self, client: AlpacaWebSocketClient) -> None:
        """Stop recording ``client`` (what it delivered so far is still written)."""
        for tap in self._taps:
            if tap.client is client and tap in client.observers:
                client.observers.remove(tap)

    def attach_pool(self, pool: ConnectionPool) -> None:
        """Record every connection of ``pool`` as its own stream ``connN`` (N: its index),
        including the clients the pool creates later (reconnects, failovers, rotations)."""
        for index, client in pool.clients():
            self.attach(client, f"conn{index}")
        pool.client_hooks.append(lambda index, client: self.attach(client, f"conn{index}"))

    # -- status ---------------------------------------------------------------------------------

    @property
    def files(self) -> list[str]:
        """Every file written so far (all streams), oldest first per stream."""
        return [f for sink in self._sinks.values() for f in sink.files]

    def get_metrics(self) -> dict[str, Any]:
        """``files``, ``bytes_written`` (compressed, on disk), ``records``, ``frames``,
        ``dropped`` (frames lost because the disk could not keep up), ``pending_bytes`` (not
        yet handed to the writer), ``gaps`` (reconnects recorded)."""
        return {
            "files": self._files_opened,
            "bytes_written": self._bytes_written,
            "records": self._records,
            "frames": self._frames,
            "dropped": self._dropped,
            "pending_bytes": self._pending_bytes,
            "gaps": self._gaps,
        }

    # -- writer ---------------------------------------------------------------------------------

    def _write_batches(self, batches: list[tuple[_Sink, list[tuple[int, int, Any]]]]) -> None:
        for sink, items in batches:
            sink.write(items)
        now = time.time_ns()
        for sink in self._sinks.values():
            sink.tick(now)

    def _take(self) -> list[tuple[_Sink, list[tuple[int, int, Any]]]]:
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._idle = True
        self._pending_bytes = 0
        return [(tap.sink, tap.take()) for tap in self._taps if tap.pending]

    async def _run_writer(self) -> None:
        try:
            while True:
                with trio.move_on_after(self.chunk_seconds):
                    await self._wake.wait()
                # gather frames for a while (one worker-thread hop per batch, not per frame),
                # unless a quarter of the pending bound is reached first
                with trio.move_on_after(min(BATCH_SECONDS, self.chunk_seconds)):
                    await self._urgent.wait()
                batches = self._take()
                with trio.CancelScope(shield=True):  # a batch taken is always written
                    await trio.to_thread.run_sync(
                        self._write_batches, batches, limiter=self._limiter
                    )
        except RecordingError as exc:
            self._error = exc
            raise

    def _finish(self) -> None:
        """Final flush + footers (in a thread). After a write error only closes the files."""
        if self._error is not None:
            for sink in self._sinks.values():
                try:
                    sink.close()
                except RecordingError:
                    pass
            return
        for tap in self._taps:
            if tap.dropped:
                tap.pending.append(
                    (
                        RecordKind.EVENT,
                        time.time_ns(),
                        {
                            "event": "dropped",
                            "count": tap.dropped,
                            "reason": "recorder: the disk could not keep up",
                        },
                    )
                )
                tap.dropped = 0
        batches = [(tap.sink, tap.take()) for tap in self._taps if tap.pending]
        self._pending_bytes = 0
        try:
            for sink, items in batches:
                sink.write(items)
        finally:
            for sink in self._sinks.values():
                sink.close()


def _prepare(path: str, single: bool) -> None:
    if single:
        if os.path.exists(path):
            raise UsageError(f"{path} exists; the recorder never overwrites a recording")
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise RecordingError(f"cannot create the directory {path}: {exc}") from exc


@asynccontextmanager
async def open_recorder(
    path: str | os.PathLike[str],
    source: AlpacaWebSocketClient | ConnectionPool | None = None,
    *,
    stream: str = "stream",
    rotate: str | None = "hour",
    max_bytes: int | None = None,
    chunk_bytes: int = 1 << 20,
    chunk_seconds: float = 1.0,
    max_pending_bytes: int = 64 << 20,
    level: int = 1,
    fsync: bool = False,
) -> AsyncIterator[Recorder]:
    """Record a client's (or a pool's) frames to ``path`` while the block runs.

    ::

        client = trioalpaca.open_stream(feed="iex", trades=["AAPL"])
        async with open_recorder("recordings/", client), client:
            async for msg in client:
                ...

    Args:
        path: a ``.tarec`` file (one stream, no rotation) or a directory (created if needed)
            that receives ``STREAM-YYYYmmddTHHMMSSZ-SEQ.tarec`` files, rotated per ``rotate``
            and ``max_bytes``.
        source: an :class:`~trioalpaca.client.AlpacaWebSocketClient` (recorded as ``stream``) or a
            :class:`~trioalpaca.pool.ConnectionPool` (each connection recorded as ``connN``);
            ``None`` to call :meth:`Recorder.attach` yourself.
        stream: stream name of a single client.
        rotate: ``"hour"`` starts a new file when the UTC hour changes; ``None`` never (directory
            mode only).
        max_bytes: also start a new file once a file reaches this size (directory mode only).
        chunk_bytes: uncompressed bytes per chunk (default 1 MiB).
        chunk_seconds: receive-time span per chunk (default 1 s); also how long a chunk may stay
            open, i.e. the most a crash can lose.
        max_pending_bytes: bound on frames received but not yet handed to the writer; beyond it
            frames are dropped (counted, and marked by a ``dropped`` event).
        level: zstd level (1, the default, compresses market data about as well as 3 at
            two thirds of the CPU).
        fsync: fsync every chunk (power-loss safety; slower).

    Raises:
        UsageError: bad arguments (e.g. a pool into a single file).
        RecordingError: the files cannot be written (leaves the block as this one error).
    """
    path = os.fspath(path)
    single = path.endswith(FILE_SUFFIX)
    if rotate not in ("hour", None):
        raise UsageError(f"rotate must be 'hour' or None, not {rotate!r}")
    if single and max_bytes is not None:
        raise UsageError("max_bytes rotation needs a directory, not a single .tarec file")
    if max_bytes is not None and max_bytes < 1:
        raise UsageError("max_bytes must be positive")
    if chunk_bytes < 1 or not chunk_seconds > 0 or max_pending_bytes < 1:
        raise UsageError("chunk_bytes, chunk_seconds and max_pending_bytes must be positive")
    await trio.to_thread.run_sync(_prepare, path, single)
    rec = Recorder(
        path,
        single_file=single,
        rotate_hourly=rotate == "hour" and not single,
        max_bytes=max_bytes,
        chunk_bytes=chunk_bytes,
        chunk_seconds=chunk_seconds,
        max_pending_bytes=max_pending_bytes,
        level=level,
        fsync=fsync,
    )
    if source is not None:
        if isinstance(source, AlpacaWebSocketClient):
            rec.attach(source, stream)
        else:
            rec.attach_pool(source)
    with single_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec._run_writer, name="trioalpaca-recorder")
            try:
                yield rec
            finally:
                rec._closing = True
                for tap in rec._taps:
                    if tap in tap.client.observers:
                        tap.client.observers.remove(tap)
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    # let a write in flight finish (the limiter serialises), then flush the rest
                    await trio.to_thread.run_sync(rec._finish, limiter=rec._limiter)
