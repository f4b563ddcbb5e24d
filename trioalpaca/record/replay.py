"""Replaying a recording through the client's own decoder: :func:`open_replay`.

Every recorded frame goes through the decoder the live client used (``Decoder.decode`` /
``decode_raw`` of :mod:`trioalpaca._codec`, or the trading protocol), and control messages are
dropped exactly where the live client drops them, so the replay yields the same objects the live
stream yielded. Markers come back where the live consumer got them: a recorded ``reconnected``
event becomes the :class:`~trioalpaca.models.Reconnected` marker (with the recorded values)
before the data of the frame that completed the reconnect; a recorded ``dropped`` event (the
recorder could not keep up) and a file cut short become :class:`~trioalpaca.models.Dropped`
markers.
"""

from __future__ import annotations

import collections
import datetime as _dt
import heapq
import itertools
import json
import math
import os
import types
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    MutableSequence,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, cast

import trio

from trioalpaca import _codec
from trioalpaca._codec import Decoder
from trioalpaca._errors import ProtocolError, UsageError
from trioalpaca._groups import single_error
from trioalpaca._time import parse_rfc3339_ns
from trioalpaca.models import (
    Authenticated,
    Connected,
    Dropped,
    Listening,
    Reconnected,
    ServerError,
    SubscriptionChanged,
)
from trioalpaca.record._format import (
    ChunkInfo,
    RecordingError,
    RecordingReader,
    RecordKind,
    Truncated,
)
from trioalpaca.record.recorder import FILE_SUFFIX, parse_recording_name

__all__ = ["ReplayStream", "TimeBound", "find_streams", "open_replay", "to_ns"]

TimeBound = int | str | _dt.datetime | None
"""A replay bound: int nanoseconds since the epoch, an aware ``datetime`` or RFC 3339 text."""

_CONTROL_TYPES = (Connected, Authenticated, SubscriptionChanged, ServerError)
_CONTROL_T = frozenset({"success", "error", "subscription"})
#: Unpaced iteration checkpoints once this many items were handed out since the last one.
_CHECKPOINT_EVERY = 512
#: A refill decodes frames until this many items are ready (or its chunk ends). Small enough
#: that a block's objects (two GC-tracked containers per market-data message) stay under the
#: garbage collector's default generation-0 threshold (700), so unpaced replay triggers almost
#: no collections while the consumer drops what it took: a block of 512 made the collector run
#: on every block and cost a tenth of the replay's CPU time.
_BLOCK = 128
#: Chunks each stream's prefetch task keeps ready ahead of the one being decoded.
_PREFETCH = 1
#: What _load_or_flush returns when a failed read's held-back messages were queued instead.
_FLUSHED: list[tuple[int, int, Any]] = []


def to_ns(value: TimeBound) -> int | None:
    """Convert a :data:`TimeBound` to int nanoseconds (``None`` stays ``None``).

    Raises:
        UsageError: a naive datetime or unparsable text.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise UsageError("replay bounds must be timezone-aware datetimes (e.g. tz=UTC)")
        delta = value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, str):
        try:
            return parse_rfc3339_ns(value)
        except ValueError as exc:
            raise UsageError(f"not an RFC 3339 time: {value!r} ({exc})") from None
    raise UsageError(f"not a time: {value!r}")


def find_streams(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The recording streams under ``path``: stream name -> its files in order.

    A file is one stream (named after the header's ``stream``). A directory groups its
    ``STREAM-STAMP-SEQ.tarec`` files by stream, oldest first; other ``.tarec`` files are streams of
    their own, named after the file.

    Raises:
        RecordingError: nothing to replay there.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return {os.path.basename(path).removesuffix(FILE_SUFFIX): [path]}
    if not os.path.isdir(path):
        raise RecordingError(f"no recording at {path}")
    groups: dict[str, list[tuple[str, int, str]]] = {}
    for name in sorted(os.listdir(path)):
        if not name.endswith(FILE_SUFFIX):
            continue
        parsed = parse_recording_name(name)
        full = os.path.join(path, name)
        if parsed is None:
            groups.setdefault(name.removesuffix(FILE_SUFFIX), []).append(("", 0, full))
        else:
            stream, stamp, seq = parsed
            groups.setdefault(stream, []).append((stamp, seq, full))
    if not groups:
        raise RecordingError(f"no {FILE_SUFFIX} files in {path}")
    return {stream: [f for _, _, f in sorted(files)] for stream, files in sorted(groups.items())}


def _trading_control(msg: Any) -> bool:
    if type(msg) is dict:
        return "stream" in msg
    return isinstance(msg, (Authenticated, Listening))


class _StreamDecoder:
    """Frames of one stream -> what the live client yielded for them."""

    def __init__(self, header: dict[str, Any], raw: bool) -> None:
        self.raw = raw
        kind = header.get("kind", "stocks")
        encoding = header.get("encoding", "msgpack")
        if encoding not in ("msgpack", "json"):
            raise RecordingError(f"unsupported recorded encoding {encoding!r}")
        self.trading = kind == "trading"
        self._encoding = encoding
        self._proto: Any = None
        if self.trading:
            self.new_session()
        else:
            try:
                decoder = Decoder(kind, encoding)
            except (KeyError, ValueError, ProtocolError) as exc:
                raise RecordingError(f"unsupported recorded stream kind {kind!r}") from exc
            self._decode: Callable[[Any], list[Any]] = decoder.decode_raw if raw else decoder.decode

    def new_session(self) -> None:
        if self.trading:
            from trioalpaca._protocol.trading import TradingClientProtocol

            self._proto = TradingClientProtocol(
                "replay", "replay", encoding=self._encoding, raw=self.raw
            )
            self._proto.listen(("trade_updates",))
            self._decode = self._proto.receive

    def frame(self, frame: bytes | str) -> list[Any]:
        try:
            msgs = self._decode(frame)
        except ProtocolError:
            return []  # the live client dropped the connection on this frame: nothing yielded
        if self.trading:
            return [m for m in msgs if not _trading_control(m)]
        if len(msgs) == 1:
            msg = msgs[0]
            if self.raw:
                if msg.get("T") in _CONTROL_T:
                    return []
            elif isinstance(msg, _CONTROL_TYPES):
                return []
        return msgs


#: A planned item read from the file: reader, chunk (or truncation), its marker time, bytes.
_Fetched = tuple[RecordingReader, ChunkInfo | Truncated, int, tuple[bytes, bytes] | None]


class _Cursor:
    """One stream's position: its files, the chunks selected, the records loaded."""

    def __init__(
        self, stream: str, readers: list[RecordingReader], start: int | None, end: int | None
    ) -> None:
        self.stream = stream
        self.readers = readers
        self.start = start
        self.end = end
        header = next((r.header for r in readers if r.header is not None), None)
        if header is None:
            raise RecordingError(f"stream {stream!r}: no file with a readable header")
        self.header = header
        # (reader, chunk) to read, and truncation markers after their file's chunks
        self.plan: collections.deque[tuple[RecordingReader, ChunkInfo | Truncated, int]] = (
            collections.deque()
        )
        for reader in readers:
            for chunk in reader.select(start, end):
                self.plan.append((reader, chunk, 0))
            cut = reader.truncated
            if cut is None:
                continue
            # the lost part follows the last complete chunk: mark it if it may be in range
            last = reader.chunks[-1].last_rx_ns if reader.chunks else 0
            if not last and reader.header is not None:
                last = int(reader.header.get("start_ns", 0))
            if end is None or last <= end:
                self.plan.append((reader, cut, max(last, start or 0)))
        #: receive time of the first record to replay (``None``: no chunk selected); kept
        #: apart from the plan, which the prefetch task consumes
        self.first_rx_ns: int | None = min(
            (
                max(item.first_rx_ns, start or 0)
                for _reader, item, _ in self.plan
                if isinstance(item, ChunkInfo)
            ),
            default=None,
        )

    def fetch(self) -> _Fetched | None:
        """The I/O half of loading a chunk (blocking: for a worker thread): the next planned
        item and, for a chunk, its bytes from the file; ``None`` when done."""
        if not self.plan:
            return None
        reader, item, cut_ns = self.plan.popleft()
        if isinstance(item, Truncated):
            return reader, item, cut_ns, None
        return reader, item, cut_ns, reader.fetch_chunk(item)

    def fetch_cached(self) -> _Fetched | None:
        """:meth:`fetch` if that needs no blocking I/O (a truncation marker, or a chunk the OS
        has cached: :meth:`RecordingReader.fetch_chunk_cached`), else ``None`` and the plan is
        left as it was."""
        if not self.plan:
            return None
        reader, item, cut_ns = self.plan[0]
        if isinstance(item, Truncated):
            blob = None
        else:
            blob = reader.fetch_chunk_cached(item)
            if blob is None:
                return None
        self.plan.popleft()
        return reader, item, cut_ns, blob

    def parse(self, fetched: _Fetched) -> list[tuple[int, int, Any]]:
        """The CPU half of loading a chunk: decompress and split a fetched chunk, keep the
        records in ``[start, end]`` (a truncation becomes its one marker record)."""
        reader, item, cut_ns, blob = fetched
        if isinstance(item, Truncated):
            return [(-1, cut_ns, item)]
        assert blob is not None
        records = reader.decode_chunk(item, blob)
        start, end = self.start, self.end
        if (start is not None and item.first_rx_ns < start) or (
            end is not None and item.last_rx_ns > end
        ):
            records = [
                r
                for r in records
                if (start is None or r[1] >= start) and (end is None or r[1] <= end)
            ]
        return records


class ReplayStream:
    """The stream :func:`open_replay` yields: ``async for msg in stream``.

    Yields what the live client yielded (typed messages, or wire dicts with ``raw_data=True``)
    plus the markers; iteration ends at the end of the recording (or at ``end``).

    One consumer task at a time, as with the live client: while one task waits for the next
    messages (``async for``, :meth:`receive`, :meth:`receive_batch`), another task asking for
    them gets a :class:`~trioalpaca.UsageError`.
    """

    def __init__(
        self,
        cursors: list[_Cursor],
        *,
        speed: float | None,
        raw: bool,
        receive_times: bool = False,
    ) -> None:
        self._cursors = cursors
        self._decoders = [_StreamDecoder(c.header, raw) for c in cursors]
        self._raw = raw
        self._speed = speed
        self._paced = speed is not None
        self._timed = self._paced or receive_times
        # decoded items not handed out yet: paced or timed replay takes them one by one from a
        # deque (beside their receive times); unpaced, untimed replay hands out the list a
        # refill filled, whole (no copy), and starts a new one
        self._dq: collections.deque[Any] = collections.deque()
        self._q: MutableSequence[Any] = self._dq if self._timed else []
        self._times: collections.deque[int] = collections.deque()
        # unpaced, untimed mode: the block being handed out (items before those in _q)
        self._it: Iterator[Any] = iter(())
        self._agen: types.AsyncGeneratorType[Any, None] | None = None
        # `async for` with the C accelerator: its iterator shares self._it (see __aiter__)
        self._items: Any = None
        if _codec._speedups is not None and not self._timed:
            self._items = _codec._speedups.Items(self._next_item)
        self._held: list[list[Any]] = [[] for _ in cursors]
        self._held_ns: list[int] = [0 for _ in cursors]
        self._done = False
        self._filling = False  # a task is in _fill (see there)
        self._n = 0
        self._t0: float | None = None
        self._base_ns = 0
        self._messages = 0
        self._markers = 0
        self._records = 0
        # each stream's prefetch channel (see _prefetch), once started; a failed load's error,
        # raised again on every later read
        self._chunks: list[trio.MemoryReceiveChannel[Any]] = []
        self._load_error: list[BaseException | None] = [None for _ in cursors]
        # multi-stream merge state
        self._loaded: list[list[tuple[int, int, Any]] | None] = [[] for _ in cursors]
        self._pos = [0 for _ in cursors]
        self._exhausted = [False for _ in cursors]

    @property
    def header(self) -> dict[str, Any]:
        """The header of the first file of the (first) stream."""
        return self._cursors[0].header

    @property
    def headers(self) -> dict[str, dict[str, Any]]:
        """Stream name -> header of its first file."""
        return {c.stream: c.header for c in self._cursors}

    def first_rx_ns(self) -> int:
        """Receive time of the first record to be replayed (``0`` for an empty recording)."""
        return min((c.first_rx_ns for c in self._cursors if c.first_rx_ns is not None), default=0)

    def set_origin(self, trio_time: float, rx_ns: int) -> None:
        """Paced replay: deliver the record received at ``rx_ns`` at ``trio_time`` (default: the
        first record, when iteration starts). Lets several replays share one timeline."""
        self._t0 = trio_time
        self._base_ns = rx_ns

    def statistics(self) -> dict[str, Any]:
        """``chunks_read``, ``records``, ``messages`` and ``markers`` so far, ``files``."""
        return {
            "chunks_read": sum(r.chunks_read for c in self._cursors for r in c.readers),
            "records": self._records,
            "messages": self._messages,
            "markers": self._markers,
            "files": sum(len(c.readers) for c in self._cursors),
        }

    # -- turning records into output ----------------------------------------------------------

    def _emit(self, items: list[Any], ns: int) -> None:
        if not items:
            return
        self._q.extend(items)
        if self._timed:
            self._times.extend([ns] * len(items))

    def _marker(self, marker: Reconnected | Dropped, ns: int) -> None:
        self._markers += 1
        self._emit([marker.to_wire() if self._raw else marker], ns)

    def _flush_held(self, i: int) -> None:
        held = self._held[i]
        if held:
            self._messages += len(held)
            self._emit(held, self._held_ns[i])
            self._held[i] = []

    def _process(
        self, i: int, recs: Sequence[tuple[int, int, Any]], start: int, stop: int, want: int
    ) -> int:
        """Decode ``recs[start:stop]`` of stream ``i``, stopping early once ``want`` items are
        queued; return the index of the first record not processed.

        A frame's messages are held back while events follow it (a ``reconnected`` event right
        after the frame that completed the reconnect goes first, as in the live client), and at
        the end of a chunk (the next chunk may begin with such an event).
        """
        decoder = self._decoders[i]
        frame = decoder.frame
        last = len(recs) - 1
        q = self._q
        timed = self._timed
        binary, event_kind = RecordKind.FRAME_IN_BINARY, RecordKind.EVENT
        frame_kinds = (binary, RecordKind.FRAME_IN_TEXT)
        held = self._held
        k = start
        while k < stop:
            kind, ns, data = recs[k]
            if kind in frame_kinds:
                if held[i]:
                    self._flush_held(i)
                msgs = frame(data if kind == binary else data.decode())
                if msgs:
                    if k < last and recs[k + 1][0] != event_kind:
                        self._messages += len(msgs)
                        q.extend(msgs)
                        if timed:
                            self._times.extend([ns] * len(msgs))
                    else:
                        held[i] = msgs
                        self._held_ns[i] = ns
            elif kind == event_kind:
                self._event(i, ns, data)
            elif kind == -1:
                self._flush_held(i)
                cut: Truncated = data
                self._marker(Dropped(cut.lost_records or 0, cut.describe()), ns)
            k += 1
            if len(q) >= want:
                break
        self._records += k - start
        return k

    def _event(self, i: int, ns: int, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        name = event.get("event")
        if name == "reconnected":
            try:
                marker = Reconnected(
                    int(event["gap_start_ns"]), int(event["gap_end_ns"]), int(event["attempts"])
                )
            except (KeyError, TypeError, ValueError):
                return
            self._marker(marker, ns)
            self._flush_held(i)
        elif name == "dropped":
            self._flush_held(i)
            self._marker(Dropped(int(event.get("count", 0)), str(event.get("reason", ""))), ns)
        elif name == "connect":
            self._flush_held(i)
            self._decoders[i].new_session()

    # -- reading chunks -----------------------------------------------------------------------
    #
    # A prefetch task per stream (in open_replay's nursery) reads the stream's chunks from the
    # file one chunk ahead of the decoder, so the decoder never waits on the disk: in this
    # thread if the OS has the chunk cached (a non-blocking read), else in a worker thread.
    # Decompressing and splitting a chunk happen here, in the decoder's thread: done in the
    # worker they cost more than they save (the worker's every return to the GIL forces a switch
    # away from the decoder, and a thread round trip per chunk adds latency).

    def _start_prefetch(self, nursery: trio.Nursery) -> None:
        chunks = []
        for i in range(len(self._cursors)):
            send, receive = trio.open_memory_channel[Any](_PREFETCH)
            nursery.start_soon(self._prefetch, i, send)
            chunks.append(receive)
        self._chunks = chunks

    async def _prefetch(self, i: int, send: trio.MemorySendChannel[Any]) -> None:
        """Fetch stream ``i``'s planned chunks in order into ``send``, ``None`` after the last;
        a failed read's exception instead of its chunk (raised where the decoder reads it).

        A chunk the OS has in its page cache is read here, without blocking; only the others
        are read in a worker thread (its round trip and the threads' handovers of the GIL cost
        about 5 % of an unpaced replay of a cached file)."""
        cursor = self._cursors[i]
        fetch, fetch_cached = cursor.fetch, cursor.fetch_cached
        async with send:
            while True:
                try:
                    fetched = fetch_cached()
                    if fetched is None and cursor.plan:
                        fetched = await trio.to_thread.run_sync(fetch)
                except Exception as exc:
                    await send.send(exc)
                    return
                await send.send(fetched)
                if fetched is None:
                    return

    async def _load(self, i: int) -> list[tuple[int, int, Any]] | None:
        """Stream ``i``'s next chunk's records (``None``: no more). A failure (the file read,
        or a corrupt chunk) is raised again by every later call."""
        error = self._load_error[i]
        if error is not None:
            raise error
        cursor = self._cursors[i]
        try:
            fetched = await self._fetched(i)
            return None if fetched is None else cursor.parse(fetched)
        except Exception as exc:
            self._load_error[i] = exc
            raise

    async def _fetched(self, i: int) -> _Fetched | None:
        """Stream ``i``'s next fetched chunk, from its prefetch task."""
        try:
            fetched = await self._chunks[i].receive()
        except trio.EndOfChannel:
            return None
        if isinstance(fetched, BaseException):  # the read failed in the prefetch task
            raise fetched
        return cast("_Fetched | None", fetched)

    async def _load_or_flush(self, i: int) -> list[tuple[int, int, Any]] | None:
        """:meth:`_load`; if it fails while messages are held back (the final frame of a
        stream's last chunk, see :meth:`_process`), those are queued instead (``_FLUSHED``) and
        the failure is raised by the next call: nothing decoded before the failure is lost."""
        try:
            return await self._load(i)
        except Exception:
            held = [j for j, items in enumerate(self._held) if items]
            if not held:
                raise
            for j in sorted(held, key=self._held_ns.__getitem__):
                self._flush_held(j)
            return _FLUSHED

    async def _fill(self, want: int = _BLOCK) -> bool:
        """Decode records into the queue until it holds ``want`` items or the loaded chunk
        ends; ``False`` once the recording is exhausted (the queue may still hold its last
        items).

        Raises:
            UsageError: another task is filling (waiting for a chunk): one consumer at a time.
        """
        if self._filling:
            raise UsageError(
                "another task is already waiting for this replay's next messages: one "
                "consumer task per replay (fan out through a trio memory channel)"
            )
        self._filling = True
        try:
            return await self._fill_one(want)
        finally:
            self._filling = False

    async def _fill_one(self, want: int) -> bool:
        if len(self._cursors) == 1:
            recs, pos = self._loaded[0], self._pos[0]
            assert recs is not None
            q = self._q
            while True:
                n = len(recs)
                if pos < n:
                    self._pos[0] = pos = self._process(0, recs, pos, n, want)
                    if q:
                        return True
                    continue
                if self._exhausted[0]:
                    return False
                records = await self._load_or_flush(0)
                if records is _FLUSHED:  # a failed read: what was held back goes out first
                    return True
                if records is None:
                    self._exhausted[0] = True
                    self._flush_held(0)
                    self._loaded[0] = []
                    return False
                self._loaded[0], self._pos[0] = recs, pos = records, 0
        return await self._fill_merged()

    async def _fill_merged(self) -> bool:
        loaded, pos = self._loaded, self._pos
        for i in range(len(self._cursors)):
            while not self._exhausted[i] and pos[i] >= len(loaded[i] or ()):
                records = await self._load_or_flush(i)
                if records is _FLUSHED:  # a failed read: what was held back goes out first
                    return True
                if records is None:
                    self._exhausted[i] = True
                    self._flush_held(i)
                else:
                    loaded[i], pos[i] = records, 0
        heap = [
            (self._sort_ns(loaded[i], pos[i]), i)
            for i in range(len(self._cursors))
            if not self._exhausted[i]
        ]
        if not heap:
            return False
        heapq.heapify(heap)
        # merge until something is queued, or one stream's loaded records run out (then it
        # must be reloaded first)
        while heap and not self._q:
            _, i = heap[0]
            recs = loaded[i]
            assert recs is not None
            self._process(i, recs, pos[i], pos[i] + 1, 1)
            pos[i] += 1
            if pos[i] >= len(recs):
                break
            heapq.heapreplace(heap, (self._sort_ns(recs, pos[i]), i))
        return True

    def _sort_ns(self, recs: Sequence[tuple[int, int, Any]] | None, pos: int) -> int:
        assert recs is not None
        return recs[pos][1]

    # -- consuming ----------------------------------------------------------------------------
    #
    # Unpaced replay without receive times hands out blocks: a refill decodes about _BLOCK items
    # into a list and the consumer takes them through a list iterator (self._it). `async for`
    # goes through the C accelerator's Items when it is built: its `it` is self._it (set
    # together), it hands out the block's items through awaitables that complete at once, and
    # calls _next_item when the block is exhausted. Else through an async generator (one
    # resumption per item is cheaper than creating a coroutine per __anext__ call); the stream
    # keeps it and open_replay closes it, so one abandoned by `break` is never left to the
    # garbage collector. Paced and timed replay go item by item through the queues (self._q,
    # self._times).

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._timed:
            return self
        if self._items is not None:
            return cast(AsyncIterator[Any], self._items)
        agen = self._agen
        if agen is None or agen.ag_frame is None:  # none yet, or ended (e.g. cancelled)
            agen = self._agen = cast(types.AsyncGeneratorType[Any, None], self._iterate())
        elif agen.ag_running:  # another task waits in it: __anext__ refuses with UsageError
            return self
        return agen

    async def _iterate(self) -> AsyncGenerator[Any, None]:
        while True:
            it = self._it
            for item in it:
                yield item
            # (a receive() or receive_batch() between two items may have started a new block)
            if it is self._it and not await self._refill():
                return

    async def _next_item(self) -> Any:
        """Items' refill: the next block's first item."""
        if not await self._refill():
            raise StopAsyncIteration
        return next(self._it)

    def _set_block(self, items: list[Any]) -> None:
        self._it = it = iter(items)
        if self._items is not None:
            self._items.it = it

    async def _aclose(self) -> None:
        agen, self._agen = self._agen, None
        if agen is not None and agen.ag_frame is not None and not agen.ag_running:
            await agen.aclose()

    async def _next_block(self) -> list[Any] | None:
        """Unpaced, untimed: the next decoded items (``None``: the recording is exhausted).
        Checkpoints once ``_CHECKPOINT_EVERY`` items were handed out (loading a chunk from disk
        checkpoints too)."""
        while not self._q:
            if self._done:
                return None
            if not await self._fill():
                self._done = True
        items = cast(list[Any], self._q)
        self._q = []
        self._n += len(items)
        return items

    async def _refill(self) -> bool:
        items = await self._next_block()
        if items is None:
            return False
        self._set_block(items)
        if self._n >= _CHECKPOINT_EVERY:
            self._n = 0
            await trio.lowlevel.checkpoint()  # the block is kept if this raises Cancelled
        return True

    async def __anext__(self) -> Any:
        if not self._timed:
            for item in self._it:
                return item
            if not await self._refill():
                raise StopAsyncIteration
            return next(self._it)
        q, times = self._dq, self._times
        while True:
            while not q:
                if self._done:
                    raise StopAsyncIteration
                if not await self._fill():
                    self._done = True
            # wait (paced) or checkpoint before taking: a Cancelled leaves the item and its
            # time queued, together
            if self._paced:
                await self._pace(times[0])
            else:
                self._n += 1
                if self._n >= _CHECKPOINT_EVERY:
                    self._n = 0
                    await trio.lowlevel.checkpoint()
            if q:
                times.popleft()
                return q.popleft()

    async def _pace(self, ns: int) -> None:
        if self._t0 is None:
            self._t0 = trio.current_time()
            self._base_ns = ns
        assert self._speed is not None
        deadline = self._t0 + (ns - self._base_ns) / 1e9 / self._speed
        if deadline > trio.current_time():
            await trio.sleep_until(deadline)
        else:
            await trio.lowlevel.checkpoint()

    async def receive(self) -> Any:
        """The next message or marker.

        Raises:
            trio.EndOfChannel: the recording is exhausted.
        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    async def receive_timed_batch(self, max_items: int | None = None) -> list[tuple[int, Any]]:
        """Like :meth:`receive_batch` (unpaced), with each item's receive time:
        ``[(rx_ns, item), ...]``. Needs ``open_replay(..., receive_times=True)``.

        Raises:
            trio.EndOfChannel: the recording is exhausted.
        """
        if not self._timed or self._paced:
            raise UsageError(
                "receive_timed_batch needs open_replay(receive_times=True, speed=None)"
            )
        q, times = self._dq, self._times
        await trio.lowlevel.checkpoint()  # before taking: a Cancelled leaves the items queued
        while not q:
            if self._done:
                raise trio.EndOfChannel
            if not await self._fill(_BLOCK if max_items is None else max(1, max_items)):
                self._done = True
        n = len(q) if max_items is None else min(max_items, len(q))
        return [(times.popleft(), q.popleft()) for _ in range(n)]

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """The next items, in order: at least one, up to ``max_items`` (unpaced: about a
        hundred or more at a time, as decoded; paced: those due now). As in ``async for`` and
        :meth:`receive`, its waits and checkpoints come before it takes anything: a
        ``Cancelled`` leaves the items (and their receive times) for the next call.

        Raises:
            trio.EndOfChannel: the recording is exhausted.
        """
        if max_items is not None and max_items < 1:
            raise UsageError("max_items must be at least 1")
        if self._paced:
            items = [await self.receive()]
            times, q = self._times, self._dq
            assert self._t0 is not None and self._speed is not None
            due_ns = self._base_ns + (trio.current_time() - self._t0) * self._speed * 1e9
            while q and times[0] <= due_ns and (max_items is None or len(items) < max_items):
                times.popleft()
                items.append(q.popleft())
            return items
        if self._timed:
            return [item for _, item in await self.receive_timed_batch(max_items)]
        if self._n >= _CHECKPOINT_EVERY:
            # before taking: a Cancelled leaves the items where they are
            self._n = 0
            await trio.lowlevel.checkpoint()
        # first what an interleaved receive() left of the current block
        items = list(self._it if max_items is None else itertools.islice(self._it, max_items))
        if not items:
            block = await self._next_block()
            if block is None:
                raise trio.EndOfChannel
            if max_items is not None and len(block) > max_items:
                self._set_block(block)
                block = list(itertools.islice(self._it, max_items))
            items = block
        return items


@asynccontextmanager
async def open_replay(
    path: str | os.PathLike[str],
    *,
    speed: float | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
    raw_data: bool = False,
    streams: Sequence[str] | None = None,
    receive_times: bool = False,
) -> AsyncIterator[ReplayStream]:
    """Replay a recording (a ``.tarec`` file or a recording directory).

    ::

        async with open_replay("recordings/", speed=10.0) as stream:
            async for msg in stream:
                ...

    Args:
        path: a recording file, or a directory of rotated files (every stream in it is replayed,
            merged by receive time, unless ``streams`` names some).
        speed: ``None`` (default): as fast as possible. A number: paced by the recorded receive
            times, ``speed`` times faster than real time (``1.0`` is the original pace).
        start: skip records received before this time (int ns, aware datetime or RFC 3339).
            Only the chunks overlapping ``[start, end]`` are read.
        end: stop after the records received at this time.
        raw_data: yield wire dicts (as ``open_stream(raw_data=True)`` does) instead of models.
        streams: stream names to replay (see :func:`find_streams`); default all.
        receive_times: keep each item's receive time for
            :meth:`ReplayStream.receive_timed_batch` (unpaced only).

    Raises:
        RecordingError: no recording there, or a stream name that is not in it.
        RecordingFormatError: a file that is not a recording.
        UsageError: bad ``speed`` or bounds.
    """
    if speed is not None and not (isinstance(speed, (int, float)) and 0 < speed < math.inf):
        raise UsageError(f"speed must be a positive number or None, not {speed!r}")
    start_ns, end_ns = to_ns(start), to_ns(end)
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise UsageError("end is before start")
    found = await trio.to_thread.run_sync(find_streams, path)
    if streams is not None:
        missing = [s for s in streams if s not in found]
        if missing:
            raise RecordingError(
                f"no stream {', '.join(missing)} in {os.fspath(path)}; it has {', '.join(found)}"
            )
        found = {s: found[s] for s in streams}
    readers: list[RecordingReader] = []
    try:

        def open_all() -> list[_Cursor]:
            cursors = []
            for name, files in found.items():
                mine = []
                for f in files:
                    reader = RecordingReader(f)
                    readers.append(reader)
                    mine.append(reader)
                cursors.append(_Cursor(name, mine, start_ns, end_ns))
            return cursors

        cursors = await trio.to_thread.run_sync(open_all)
        stream = ReplayStream(
            cursors,
            speed=None if speed is None else float(speed),
            raw=raw_data,
            receive_times=receive_times,
        )
        # the prefetch tasks end (their thread's read finished) before the readers close
        with single_error():
            async with trio.open_nursery() as nursery:
                stream._start_prefetch(nursery)
                try:
                    yield stream
                finally:
                    await stream._aclose()
                    nursery.cancel_scope.cancel()
    finally:
        for reader in readers:
            reader.close()
