"""Record the live feed to disk, replay it through the client's code path, serve it, export it.

* :func:`open_recorder` taps a client (or every connection of a pool) and writes the raw frames,
  before decoding, to zstd-compressed, indexed, rotated ``.tarec`` files.
* :func:`open_replay` yields exactly what the live client yielded, unpaced or paced by the
  recorded receive times; ``start``/``end`` seek through the time index.
* :func:`serve_replay` serves a recording over the emulator's Alpaca-compatible websocket.
* :func:`export_parquet` / :func:`export_csv` write one dataset per channel.

The file format is documented in the "Recording and replay" guide.
"""

from __future__ import annotations

from trioalpaca.record._format import (
    FORMAT_VERSION,
    ChunkInfo,
    RecordingError,
    RecordingFormatError,
    RecordingReader,
    RecordingWriter,
    RecordKind,
    Truncated,
)
from trioalpaca.record.export import ExportResult, export_csv, export_parquet
from trioalpaca.record.recorder import FILE_SUFFIX, Recorder, open_recorder, recording_name
from trioalpaca.record.replay import ReplayStream, TimeBound, find_streams, open_replay, to_ns
from trioalpaca.record.serve import ReplayServer, serve_replay

__all__ = [
    "FILE_SUFFIX",
    "FORMAT_VERSION",
    "ChunkInfo",
    "ExportResult",
    "RecordKind",
    "Recorder",
    "RecordingError",
    "RecordingFormatError",
    "RecordingReader",
    "RecordingWriter",
    "ReplayServer",
    "ReplayStream",
    "TimeBound",
    "Truncated",
    "export_csv",
    "export_parquet",
    "find_streams",
    "open_recorder",
    "open_replay",
    "recording_name",
    "serve_replay",
    "to_ns",
]
