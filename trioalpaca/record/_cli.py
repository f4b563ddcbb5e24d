"""Shared plumbing of the ``record``, ``replay`` and ``export`` commands (errors, exit codes)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

from trioalpaca._cli_common import CliUsage, error_exit, say

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["CommandUsage", "run_command", "say"]

CommandUsage = CliUsage  # a usage error found by a command itself (exit 2)


def run_command(
    command: str, main: Callable[..., Awaitable[int]], *args: Any, err: IO[str] | None = None
) -> int:
    """``trio.run(main, *args)`` with one-line errors: exit 2 for usage/auth, 1 for the rest."""
    import trio

    err = err if err is not None else sys.stderr
    try:
        return trio.run(main, *args)
    except KeyboardInterrupt:
        return 0
    except (Exception, BaseExceptionGroup) as exc:
        code = error_exit(command, exc, err)
        if code is None:
            raise
        return code
