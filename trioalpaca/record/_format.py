"""The recording file format (version 1): a synchronous writer and reader.

The byte layout is documented in ``docs/guides/recording.rst`` ("File format"); this module is
its reference implementation. Everything here is plain blocking file I/O: the recorder runs the
writer in a worker thread (``trio.to_thread``), the replay runs the reader there.

Layout (all integers little-endian)::

    file    := file-header chunk* [footer]
    file-header := MAGIC(8) u16 version u16 flags u32 header_len  header_json(header_len)
    chunk   := b"TACK" u32 payload_len u32 raw_len u32 records u64 first_rx_ns u64 last_rx_ns
               u32 crc32(payload)  payload(payload_len)          # payload: one zstd frame
    record  := u8 kind u64 rx_ns u32 len  data(len)               # inside a decompressed payload
    footer  := b"TAIX" u32 n  n * (u64 offset u64 first_rx_ns u64 last_rx_ns u32 records)
               u64 footer_offset  END_MAGIC(8)

    sidecar FILE.idx := IDX_MAGIC(8) u16 version u16 flags u32 crc32(file-header)
               u32 crc32(previous 16 bytes)  entry*
    entry   := u64 offset u64 first_rx_ns u64 last_rx_ns u32 records u32 crc32(previous 28 bytes)

A chunk is written with one ``write`` call and flushed to the OS before the next one starts, so a
killed process loses at most the chunk it was still filling. After each chunk the writer appends
its entry to the sidecar index ``FILE.idx`` (removed once the footer is written). A reader of a
file without a valid footer (still being written, or cut) takes the chunks the sidecar lists,
verifying each one's header in the data file (never trusting the sidecar: a bad, stale or foreign
sidecar only stops its use at the first entry that does not match), then walks the chunk headers
after them, keeping every chunk whose payload is complete and whose CRC matches, and reports
where the file was cut in :attr:`RecordingReader.truncated`.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import attrs

from trioalpaca._errors import TrioAlpacaError

__all__ = [
    "CHUNK_HEADER",
    "FORMAT_VERSION",
    "MAGIC",
    "SIDECAR_SUFFIX",
    "ChunkInfo",
    "RecordKind",
    "RecordingError",
    "RecordingFormatError",
    "RecordingReader",
    "RecordingWriter",
    "Truncated",
]

MAGIC = b"\x89TAREC\r\n"
"""First 8 bytes of every recording file."""
END_MAGIC = b"TAEND\r\n\x1a"
"""Last 8 bytes of a cleanly closed recording file."""
FORMAT_VERSION = 1
"""The format version this module writes (and the newest it reads)."""
CHUNK_MAGIC = b"TACK"
INDEX_MAGIC = b"TAIX"
SIDECAR_MAGIC = b"TAIDX\r\n\x1a"
"""First 8 bytes of a sidecar index (``FILE.idx``)."""
SIDECAR_VERSION = 1
"""The sidecar index version this module writes (and the newest it reads)."""
SIDECAR_SUFFIX = ".idx"
"""Appended to a recording's file name to name its sidecar index."""

_FILE_HEAD = struct.Struct("<8sHHI")
CHUNK_HEADER = struct.Struct("<4sIIIQQI")
"""Chunk header: magic, payload length, raw length, record count, first/last rx ns, CRC-32."""
_RECORD = struct.Struct("<BQI")
_INDEX_ENTRY = struct.Struct("<QQQI")
_INDEX_HEAD = struct.Struct("<4sI")
_TRAILER = struct.Struct("<Q8s")
_SIDECAR_HEAD = struct.Struct("<8sHHI")  # + u32 crc32 of these 16 bytes
_SIDECAR_ENTRY = struct.Struct("<QQQI")  # + u32 crc32 of these 28 bytes
#: ``os.RWF_NOWAIT`` where ``os.preadv`` takes it (Linux), else ``None``.
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None) if hasattr(os, "preadv") else None

#: A header larger than this is not a recording header (guards against reading garbage).
MAX_HEADER_BYTES = 1 << 20


class RecordKind:
    """Record kinds (the ``u8`` in front of every record)."""

    FRAME_IN_BINARY = 1
    """A binary (msgpack) websocket frame received from the server."""
    FRAME_IN_TEXT = 2
    """A text (JSON) websocket frame received from the server; data is its UTF-8 encoding."""
    FRAME_OUT_BINARY = 3
    """A binary frame the client sent (auth frames are redacted)."""
    FRAME_OUT_TEXT = 4
    """A text frame the client sent (auth frames are redacted)."""
    EVENT = 16
    """A session event, as a UTF-8 JSON object with an ``"event"`` key (see the format docs)."""

    ALL = frozenset({1, 2, 3, 4, 16})


class RecordingError(TrioAlpacaError):
    """A recording could not be written or read."""


class RecordingFormatError(RecordingError, ValueError):
    """The file is not a trioalpaca recording, or is of an unsupported format version."""


@attrs.frozen
class ChunkInfo:
    """Index entry of one complete chunk."""

    offset: int
    """Byte offset of the chunk header in the file."""
    first_rx_ns: int
    """Receive time of the chunk's first record (ns since the epoch)."""
    last_rx_ns: int
    """Receive time of the chunk's last record."""
    records: int
    """Number of records in the chunk."""


@attrs.frozen
class Truncated:
    """Where a file without a valid footer ends: every chunk before ``offset`` was recovered."""

    path: str
    """The file."""
    offset: int
    """Byte offset just after the last complete chunk (where the cut part begins)."""
    size: int
    """The file's size."""
    lost_records: int | None
    """Records of the incomplete chunk if its header survived (``0``: the file was cut between
    chunks or inside the footer; ``None``: unknown)."""

    def describe(self) -> str:
        """One human-readable line."""
        lost = (
            "an unknown number of records"
            if self.lost_records is None
            else f"{self.lost_records} record(s)"
        )
        return (
            f"recording {os.path.basename(self.path)} ends without its index at byte "
            f"{self.offset} of {self.size} (cut or still being written); {lost} of the "
            "incomplete chunk lost"
        )


def _encode_header(header: Mapping[str, Any]) -> bytes:
    data = json.dumps(dict(header), separators=(",", ":"), sort_keys=True).encode()
    return _FILE_HEAD.pack(MAGIC, FORMAT_VERSION, 0, len(data)) + data


def _crc_tail(data: bytes) -> bytes:
    return data + struct.pack("<I", zlib.crc32(data))


def sidecar_path(path: str | os.PathLike[str]) -> str:
    """The sidecar index of the recording file ``path``: ``path + ".idx"``."""
    return os.fspath(path) + SIDECAR_SUFFIX


class RecordingWriter:
    """Append records to a new recording file (blocking I/O; one thread at a time).

    Args:
        path: the file to create (an existing file is refused).
        header: JSON-serialisable metadata (never credentials); ``format_version`` is added.
        chunk_bytes: close a chunk once its uncompressed records reach this size.
        chunk_ns: close a chunk once it spans this many nanoseconds of receive time.
        level: zstd compression level.
        fsync: ``os.fsync`` after every chunk (survives power loss, not only a killed process).
        sidecar: keep the sidecar index ``FILE.idx`` up to date while the file is open (a
            seeking reader of the open or crashed file then reads no chunk it does not need);
            removed by :meth:`close`. A sidecar that cannot be written is given up silently:
            readers walk the chunk headers instead.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: Mapping[str, Any],
        *,
        chunk_bytes: int = 1 << 20,
        chunk_ns: int = 1_000_000_000,
        level: int = 1,
        fsync: bool = False,
        sidecar: bool = True,
    ) -> None:
        import zstandard

        if chunk_bytes < 1 or chunk_ns < 1:
            raise RecordingError("chunk_bytes and chunk_ns must be positive")
        self.path = os.fspath(path)
        self.header = {**header, "format_version": FORMAT_VERSION}
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._chunk_bytes = chunk_bytes
        self._chunk_ns = chunk_ns
        self._fsync = fsync
        self._buf = bytearray()
        self._count = 0
        self._first = 0
        self._last = 0
        self.index: list[ChunkInfo] = []
        """Complete chunks written so far."""
        self.records = 0
        """Records written to complete chunks."""
        try:
            self._file: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise RecordingError(f"cannot create recording {self.path}: {exc}") from exc
        self._size = 0
        self.closed = False
        head = _encode_header(self.header)
        self._sidecar: BinaryIO | None = None
        try:
            self._write(head)
            if sidecar:
                self._open_sidecar(head)
        except BaseException:
            self._file.close()
            raise

    def _open_sidecar(self, head: bytes) -> None:
        try:
            f: BinaryIO = open(sidecar_path(self.path), "wb")  # noqa: SIM115 - closed in close()
        except OSError:
            return
        self._sidecar = f
        self._sidecar_write(
            _crc_tail(_SIDECAR_HEAD.pack(SIDECAR_MAGIC, SIDECAR_VERSION, 0, zlib.crc32(head)))
        )

    def _sidecar_write(self, data: bytes) -> None:
        f = self._sidecar
        if f is None:
            return
        try:
            f.write(data)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        except OSError:  # an optimisation only: readers walk the chunk headers instead
            self._drop_sidecar()

    def _drop_sidecar(self) -> None:
        f, self._sidecar = self._sidecar, None
        if f is None:
            return
        try:
            f.close()
        except OSError:
            pass
        try:
            os.remove(sidecar_path(self.path))
        except OSError:
            pass

    @property
    def size(self) -> int:
        """Bytes written to the file so far."""
        return self._size

    @property
    def open_chunk_first_ns(self) -> int | None:
        """Receive time of the first record of the chunk being filled (``None``: empty)."""
        return self._first if self._count else None

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise RecordingError(f"cannot write recording {self.path}: {exc}") from exc

    def add(self, kind: int, rx_ns: int, data: bytes) -> None:
        """Append one record (``data`` is the record's bytes: frame, UTF-8 text or JSON)."""
        if self._count == 0:
            self._first = rx_ns
        elif rx_ns - self._first >= self._chunk_ns:
            self.flush()
            self._first = rx_ns
        buf = self._buf
        buf += _RECORD.pack(kind, rx_ns, len(data))
        buf += data
        self._count += 1
        self._last = rx_ns
        if len(buf) >= self._chunk_bytes:
            self.flush()

    def flush(self) -> None:
        """Close the open chunk (compress and write it); nothing happens if it is empty."""
        if not self._count:
            return
        payload = self._compressor.compress(self._buf)  # (a buffer: no copy of the chunk)
        offset = self._size
        head = CHUNK_HEADER.pack(
            CHUNK_MAGIC,
            len(payload),
            len(self._buf),
            self._count,
            self._first,
            self._last,
            zlib.crc32(payload),
        )
        self._write(head + payload)
        self.index.append(ChunkInfo(offset, self._first, self._last, self._count))
        # after the chunk reached the OS: an entry never lists a chunk not written yet
        self._sidecar_write(
            _crc_tail(_SIDECAR_ENTRY.pack(offset, self._first, self._last, self._count))
        )
        self.records += self._count
        self._buf.clear()
        self._count = 0

    def close(self) -> None:
        """Flush the open chunk, write the footer index and close the file (idempotent)."""
        if self.closed:
            return
        try:
            self.flush()
            offset = self._size
            parts = [_INDEX_HEAD.pack(INDEX_MAGIC, len(self.index))]
            parts += [
                _INDEX_ENTRY.pack(c.offset, c.first_rx_ns, c.last_rx_ns, c.records)
                for c in self.index
            ]
            parts.append(_TRAILER.pack(offset, END_MAGIC))
            self._write(b"".join(parts))
            self._drop_sidecar()  # the footer supersedes it
        finally:
            self.closed = True
            self._file.close()
            f, self._sidecar = self._sidecar, None  # after a write error: left for readers
            if f is not None:
                f.close()


class RecordingReader:
    """Read a recording file: its header, chunk index and records (blocking I/O).

    Opening reads the header and the footer index (or, without a valid footer, walks the chunk
    headers). Records are only read and decompressed chunk by chunk, on demand.

    Raises:
        RecordingFormatError: not a recording, or a newer format version.
        RecordingError: the file cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import zstandard

        self.path = os.fspath(path)
        self._decompressor = zstandard.ZstdDecompressor()
        self._nowait = _RWF_NOWAIT or 0  # the flag; 0: not available (or found not to work)
        self.chunks_read = 0
        """Chunks read and decompressed so far (seeking reads only the chunks it needs)."""
        self.truncated: Truncated | None = None
        """Where the file was cut, if it has no valid footer (else ``None``)."""
        self.index_source = "scan"
        """Where the chunk index came from, one of ``"footer"`` (a closed file), ``"sidecar"`` (an
        open or crashed file with a usable ``FILE.idx``, the chunks after its last entry
        walked) or ``"scan"`` (walked: no usable sidecar)."""
        self._header_crc = 0
        self.chunks_scanned = 0
        """Chunks whose payload was read (to check its CRC) while indexing a file without a
        footer: the chunks the sidecar did not list."""
        self.header: dict[str, Any] | None = None
        """The JSON header; ``None`` only if the file was cut inside it."""
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            self.size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise RecordingError(f"cannot open recording {self.path}: {exc}") from exc
        try:
            self._data_start, self.header = self._read_header()
            self.chunks: list[ChunkInfo] = []
            """Index of the complete chunks, in file order."""
            if self.header is not None and not self._read_footer():
                pos = self._read_sidecar()
                if self.chunks:
                    self.index_source = "sidecar"
                self._scan(pos)
        except BaseException:
            self._file.close()
            raise

    # -- opening ------------------------------------------------------------------------------

    def _read_header(self) -> tuple[int, dict[str, Any] | None]:
        head = self._file.read(_FILE_HEAD.size)
        if len(head) < _FILE_HEAD.size:
            if MAGIC.startswith(head[: len(MAGIC)]):
                # cut inside the fixed file header (or an empty file): nothing to recover
                self.truncated = Truncated(self.path, 0, self.size, None)
                return self.size, None
            raise RecordingFormatError(f"{self.path} is not a trioalpaca recording")
        magic, version, _flags, length = _FILE_HEAD.unpack(head)
        if magic != MAGIC:
            raise RecordingFormatError(f"{self.path} is not a trioalpaca recording")
        if version > FORMAT_VERSION or version < 1:
            raise RecordingFormatError(
                f"{self.path} uses recording format version {version}; this trioalpaca reads "
                f"versions 1..{FORMAT_VERSION}"
            )
        if length > MAX_HEADER_BYTES:
            raise RecordingFormatError(f"{self.path}: implausible header length {length}")
        raw = self._file.read(length)
        if len(raw) < length:
            self.truncated = Truncated(self.path, 0, self.size, None)
            return self.size, None
        self._header_crc = zlib.crc32(head + raw)
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise RecordingFormatError(f"{self.path}: the header is not valid JSON") from exc
        if not isinstance(header, dict):
            raise RecordingFormatError(f"{self.path}: the header is not a JSON object")
        return _FILE_HEAD.size + length, header

    def _read_footer(self) -> bool:
        if self.size < self._data_start + _INDEX_HEAD.size + _TRAILER.size:
            return False
        self._file.seek(self.size - _TRAILER.size)
        offset, end = _TRAILER.unpack(self._file.read(_TRAILER.size))
        if end != END_MAGIC or not self._data_start <= offset < self.size:
            return False
        self._file.seek(offset)
        magic, n = _INDEX_HEAD.unpack(self._file.read(_INDEX_HEAD.size))
        expected = offset + _INDEX_HEAD.size + n * _INDEX_ENTRY.size + _TRAILER.size
        if magic != INDEX_MAGIC or expected != self.size:
            return False
        raw = self._file.read(n * _INDEX_ENTRY.size)
        self.chunks = [ChunkInfo(*e) for e in _INDEX_ENTRY.iter_unpack(raw)]
        self.index_source = "footer"
        return True

    def _read_sidecar(self) -> int:
        """Take the chunks ``FILE.idx`` lists, each verified against its chunk header in the
        data file (contiguous from the first chunk, inside the file, same times and count);
        stop at the first entry that is torn, fails its CRC or does not match. Returns the
        offset after the last chunk taken (where walking goes on)."""
        pos = self._data_start
        try:
            with open(sidecar_path(self.path), "rb") as side:
                raw = side.read()
        except OSError:
            return pos
        hsize = _SIDECAR_HEAD.size + 4
        head = raw[:hsize]
        if len(head) < hsize or zlib.crc32(head[:-4]) != int.from_bytes(head[-4:], "little"):
            return pos
        magic, version, _flags, header_crc = _SIDECAR_HEAD.unpack_from(head)
        if magic != SIDECAR_MAGIC or version != SIDECAR_VERSION or header_crc != self._header_crc:
            return pos  # not a sidecar, a newer one, or another recording's
        esize = _SIDECAR_ENTRY.size + 4
        f = self._file
        size = self.size
        for at in range(hsize, len(raw) - esize + 1, esize):
            entry = raw[at : at + esize]
            if zlib.crc32(entry[:-4]) != int.from_bytes(entry[-4:], "little"):
                break
            offset, first, last, records = _SIDECAR_ENTRY.unpack_from(entry)
            if offset != pos or pos + CHUNK_HEADER.size > size:
                break
            f.seek(pos)
            magic, plen, _raw, count, c_first, c_last, _crc = CHUNK_HEADER.unpack(
                f.read(CHUNK_HEADER.size)
            )
            end = pos + CHUNK_HEADER.size + plen
            if (
                magic != CHUNK_MAGIC
                or (count, c_first, c_last) != (records, first, last)
                or end > size
            ):
                break
            self.chunks.append(ChunkInfo(pos, first, last, records))
            pos = end
        return pos

    def _scan(self, pos: int) -> None:
        size = self.size
        f = self._file
        while True:
            f.seek(pos)
            head = f.read(CHUNK_HEADER.size)
            if not head:
                self.truncated = Truncated(self.path, pos, size, 0)
                return
            if len(head) < CHUNK_HEADER.size:
                lost = 0 if head[:4] == INDEX_MAGIC else None
                self.truncated = Truncated(self.path, pos, size, lost)
                return
            magic, plen, _raw, count, first, last, crc = CHUNK_HEADER.unpack(head)
            if magic != CHUNK_MAGIC:
                lost = 0 if head[:4] == INDEX_MAGIC else None
                self.truncated = Truncated(self.path, pos, size, lost)
                return
            end = pos + CHUNK_HEADER.size + plen
            if end > size:
                self.truncated = Truncated(self.path, pos, size, count)
                return
            payload = f.read(plen)
            self.chunks_scanned += 1
            if zlib.crc32(payload) != crc:
                self.truncated = Truncated(self.path, pos, size, count)
                return
            self.chunks.append(ChunkInfo(pos, first, last, count))
            pos = end

    # -- reading ------------------------------------------------------------------------------

    def select(self, start_ns: int | None = None, end_ns: int | None = None) -> list[ChunkInfo]:
        """The chunks that may hold records with ``start_ns <= rx_ns <= end_ns``."""
        return [
            c
            for c in self.chunks
            if (start_ns is None or c.last_rx_ns >= start_ns)
            and (end_ns is None or c.first_rx_ns <= end_ns)
        ]

    def read_chunk(self, chunk: ChunkInfo) -> list[tuple[int, int, bytes]]:
        """Read and decompress one chunk; return its records as ``(kind, rx_ns, data)``.

        The same as :meth:`decode_chunk` of :meth:`fetch_chunk`.

        Raises:
            RecordingFormatError: the chunk is corrupt (a file modified after writing).
        """
        return self.decode_chunk(chunk, self.fetch_chunk(chunk))

    def fetch_chunk(self, chunk: ChunkInfo) -> tuple[bytes, bytes]:
        """Read one chunk's header and compressed payload from the file (the I/O part of
        :meth:`read_chunk`, for a worker thread); :meth:`decode_chunk` checks and decodes them.
        """
        f = self._file
        f.seek(chunk.offset)
        head = f.read(CHUNK_HEADER.size)
        return head, f.read(self._payload_len(chunk, head))

    def _payload_len(self, chunk: ChunkInfo, head: bytes) -> int:
        """The payload length a chunk header gives, at most what the file holds after it (a
        corrupt length must not allocate gigabytes: the short payload is reported corrupt)."""
        if len(head) != CHUNK_HEADER.size:
            return 0
        plen: int = CHUNK_HEADER.unpack(head)[1]
        return max(0, min(plen, self.size - chunk.offset - CHUNK_HEADER.size))

    def fetch_chunk_cached(self, chunk: ChunkInfo) -> tuple[bytes, bytes] | None:
        """:meth:`fetch_chunk` without blocking: the chunk's bytes if the operating system has
        all of them in its page cache (read with ``preadv(..., RWF_NOWAIT)``, Linux), else
        ``None``, and the caller reads them with :meth:`fetch_chunk` in a worker thread.

        Always ``None`` where the platform or the file system cannot read without blocking
        (found out at the first try, then not tried again for this reader). An I/O error also
        gives ``None`` and ends the tries: :meth:`fetch_chunk` meets the error again and raises
        it.
        """
        if not self._nowait:
            return None
        fd = self._file.fileno()
        head = self._pread_nowait(fd, CHUNK_HEADER.size, chunk.offset)
        if head is None:
            return None
        plen = self._payload_len(chunk, head)
        payload = self._pread_nowait(fd, plen, chunk.offset + CHUNK_HEADER.size)
        if payload is None:
            return None
        return head, payload

    def _pread_nowait(self, fd: int, size: int, offset: int) -> bytes | None:
        buf = bytearray(size)
        try:
            got = os.preadv(fd, [buf], offset, self._nowait)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                # EOPNOTSUPP / EINVAL / ENOSYS: this file (system) cannot; anything else is an
                # I/O error that the blocking read reports
                self._nowait = 0
            return None
        # a short read: part of the range is not cached, or the file ends (a blocking read
        # tells which)
        return bytes(buf) if got == size else None

    def decode_chunk(
        self, chunk: ChunkInfo, fetched: tuple[bytes, bytes]
    ) -> list[tuple[int, int, bytes]]:
        """Check and decompress what :meth:`fetch_chunk` read; return the records.

        Raises:
            RecordingFormatError: the chunk is corrupt (a file modified after writing).
        """
        head, payload = fetched
        try:
            magic, plen, raw_len, count, _first, _last, crc = CHUNK_HEADER.unpack(head)
        except struct.error:
            raise RecordingFormatError(f"{self.path}: no chunk at offset {chunk.offset}") from None
        if (
            magic != CHUNK_MAGIC
            or (count, _first, _last) != (chunk.records, chunk.first_rx_ns, chunk.last_rx_ns)
            or len(payload) != plen
            or zlib.crc32(payload) != crc
        ):
            raise RecordingFormatError(f"{self.path}: corrupt chunk at offset {chunk.offset}")
        try:
            data = self._decompressor.decompress(payload, max_output_size=raw_len)
        except Exception as exc:
            raise RecordingFormatError(
                f"{self.path}: chunk at offset {chunk.offset} does not decompress: {exc}"
            ) from None
        self.chunks_read += 1
        out: list[tuple[int, int, bytes]] = []
        append = out.append
        unpack = _RECORD.unpack_from
        hsize = _RECORD.size
        pos = 0
        n = len(data)
        try:
            while pos < n:
                kind, ns, length = unpack(data, pos)
                pos += hsize
                append((kind, ns, data[pos : pos + length]))
                pos += length
        except struct.error:
            raise RecordingFormatError(
                f"{self.path}: malformed records in chunk at offset {chunk.offset}"
            ) from None
        if pos != n or len(out) != count:
            raise RecordingFormatError(
                f"{self.path}: malformed records in chunk at offset {chunk.offset}"
            )
        return out

    def records(
        self, start_ns: int | None = None, end_ns: int | None = None
    ) -> Iterator[tuple[int, int, bytes]]:
        """Every record with ``start_ns <= rx_ns <= end_ns`` (bounds optional), in file order."""
        for chunk in self.select(start_ns, end_ns):
            for rec in self.read_chunk(chunk):
                ns = rec[1]
                if (start_ns is None or ns >= start_ns) and (end_ns is None or ns <= end_ns):
                    yield rec

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
