"""Helpers shared by the conformance modules (importable because pytest puts conformance/ on
sys.path: the directory has no ``__init__.py``).

Each SDK runs in its own environment (see noxfile.py); this module needs only the standard
library and pytest, so every environment can import it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

#: Emulator options shared by every SDK: market time 60x (a minute bar closes every second),
#: 20 trades + quotes per symbol per second, a news item every 10 market seconds, a scripted order
#: every 0.3 s, fixed seed.
EMULATOR_ARGS = (
    "--port",
    "0",
    "--speed",
    "60",
    "--rate",
    "20",
    "--news-interval",
    "10",
    "--orders-every",
    "0.3",
    "--seed",
    "42",
)


@contextmanager
def running_command(args: Sequence[str], what: str) -> Iterator[str]:
    """Run ``python -m trioalpaca ARGS`` in a subprocess; yield the first ``ws://``/``wss://``
    base URL it prints (``ws://127.0.0.1:PORT``). It must exit with code 0 on SIGTERM."""
    cmd = [sys.executable, "-m", "trioalpaca", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"wss?://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"{what} did not start: {line!r} {err}")
    try:
        yield match.group(0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if shutdown hangs
            proc.kill()
            _out, err = proc.communicate()
        assert proc.returncode == 0, err


@contextmanager
def running_emulator(extra: Sequence[str] = ()) -> Iterator[str]:
    """Run ``trioalpaca emulator`` in a subprocess; yield its base URL (``ws://127.0.0.1:PORT``,
    or ``wss://`` with ``--certfile``). It must exit with code 0 on SIGTERM."""
    with running_command(["emulator", *EMULATOR_ARGS, *extra], "emulator") as url:
        yield url


class Recorder:
    """Collects what an SDK stream delivers, by channel; ``done`` is set once every wanted channel
    has delivered at least one message."""

    def __init__(self, channels: set[str]) -> None:
        self.wanted = channels
        self.got: dict[str, list[Any]] = defaultdict(list)
        self.done = threading.Event()

    def add(self, channel: str, msg: Any) -> None:
        self.got[channel].append(msg)
        if all(self.got[c] for c in self.wanted):
            self.done.set()

    def handler(self, channel: str) -> Callable[[Any], Any]:
        """An ``async def`` handler recording into ``channel`` (the SDKs refuse plain functions)."""

        async def handle(msg: Any) -> None:
            self.add(channel, msg)

        return handle

    def missing(self) -> list[str]:
        return sorted(c for c in self.wanted if not self.got[c])


def problems(records: Sequence[logging.LogRecord], level: int = logging.ERROR) -> list[str]:
    """Log records at ``level`` or above, or carrying an exception, as text."""
    return [
        f"{r.name}: {r.levelname}: {r.getMessage()}"
        for r in records
        if r.levelno >= level or r.exc_info
    ]
