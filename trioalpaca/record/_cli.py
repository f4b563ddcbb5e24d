"""Shared plumbing of the ``record``, ``replay`` and ``export`` commands (errors, exit codes)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["CommandUsage", "run_command", "say"]

_AUTH_ERRORS = (
    "CredentialsError",
    "AuthFailedError",
    "InsufficientSubscriptionError",
    "InsufficientScopeError",
)


class CommandUsage(Exception):
    """A usage error found by a command itself (exit 2)."""


def say(err: IO[str], command: str, text: str) -> None:
    """One line on ``err``, prefixed with the command name."""
    try:
        err.write(f"trioalpaca {command}: {text}\n")
        err.flush()
    except (OSError, ValueError):
        pass


def run_command(
    command: str, main: Callable[..., Awaitable[int]], *args: Any, err: IO[str] | None = None
) -> int:
    """``trio.run(main, *args)`` with one-line errors: exit 2 for usage/auth, 1 for the rest."""
    import trio

    from trioalpaca._errors import TrioAlpacaError, UsageError
    from trioalpaca._groups import exception_leaves

    err = err if err is not None else sys.stderr
    try:
        return trio.run(main, *args)
    except KeyboardInterrupt:
        return 0
    except CommandUsage as exc:
        say(err, command, f"error: {exc}")
        return 2
    except TrioAlpacaError as exc:
        say(err, command, f"error: {exc}")
        usage = isinstance(exc, UsageError) or type(exc).__name__ in _AUTH_ERRORS
        return 2 if usage or getattr(exc, "status_code", None) in (401, 403) else 1
    except OSError as exc:
        say(err, command, f"error: {exc.strerror or exc}")
        return 1
    except BaseExceptionGroup as group:
        leaves = [e for e in exception_leaves(group) if isinstance(e, Exception)]
        if not leaves:
            return 0
        say(err, command, f"error: {leaves[0]}")
        return 1
