"""Pieces shared by the command modules (``stream``, ``record``, ``replay``, ``export``, ``hub``,
``relay``): channel flags, connection flags, the embedded emulator, one-line errors and exit codes,
the periodic stderr status line.

Everything heavy is imported inside the functions, so importing this module (``trioalpaca
--help``) stays cheap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING, Any

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from trioalpaca.testing import Emulator

__all__ = [
    "CHANNEL_FLAGS",
    "CliUsage",
    "add_channel_arguments",
    "add_emulator_arguments",
    "channels_from_args",
    "check_url_or_emulator",
    "embedded_emulator",
    "error_exit",
    "is_usage_or_auth",
    "say",
    "status_loop",
    "usage_or_runtime_exit",
]

#: CLI flag -> channel keyword of the client.
CHANNEL_FLAGS: dict[str, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "daily-bars": "daily_bars",
    "updated-bars": "updated_bars",
    "statuses": "statuses",
    "lulds": "lulds",
    "imbalances": "imbalances",
    "orderbooks": "orderbooks",
    "news": "news",
    "pricing": "pricing",
}

#: Server errors that mean "your key cannot do this" (exit 2, like usage errors).
_AUTH_ERRORS = (
    "CredentialsError",
    "AuthFailedError",
    "InsufficientSubscriptionError",
    "InsufficientScopeError",
    "V2NotEnabledError",
)


class CliUsage(Exception):
    """A usage error found by a command itself (exit 2)."""


def say(err: IO[str], command: str, text: str) -> None:
    """One line ``trioalpaca COMMAND: TEXT`` on ``err`` (a closed or broken ``err`` is ignored)."""
    try:
        err.write(f"trioalpaca {command}: {text}\n")
        err.flush()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------- arguments


def add_channel_arguments(
    parser: Any,
    *,
    dest_prefix: str = "ch_",
    default: str | None = None,
    help: str | None = None,
) -> None:
    """One ``--trades SYMBOLS``-style option per entry of :data:`CHANNEL_FLAGS` on ``parser``
    (a parser or an argument group); the value lands in ``args.<dest_prefix><keyword>``."""
    for flag, keyword in CHANNEL_FLAGS.items():
        parser.add_argument(
            f"--{flag}",
            dest=f"{dest_prefix}{keyword}",
            metavar="SYMBOLS",
            default=default,
            help=help or f"comma-separated symbols for {keyword} ('*' = all)",
        )


def channels_from_args(args: argparse.Namespace, *, name_flag: bool = True) -> dict[str, list[str]]:
    """``{keyword: [symbols]}`` of the channel options given (see :func:`add_channel_arguments`).

    An empty symbol (``A,,B``) is a :class:`CliUsage`; its message names the flag when
    ``name_flag`` is true.
    """
    channels: dict[str, list[str]] = {}
    for flag, keyword in CHANNEL_FLAGS.items():
        value = getattr(args, f"ch_{keyword}")
        if value is None:
            continue
        syms = [s.strip() for s in value.split(",")]
        if not all(syms):
            where = f"--{flag}: " if name_flag else ""
            raise CliUsage(f"{where}empty symbol in {value!r}")
        channels[keyword] = syms
    return channels


def add_emulator_arguments(
    parser: Any, *, url_help: str, emulator_help: str, speed: bool = True
) -> None:
    """``--url``, ``--emulator``, ``--emulator-rate`` and (``speed``) ``--emulator-speed``."""
    parser.add_argument("--url", help=url_help)
    parser.add_argument("--emulator", action="store_true", help=emulator_help)
    parser.add_argument(
        "--emulator-rate",
        type=float,
        default=20.0,
        metavar="R",
        help="embedded emulator: trades + quotes per symbol per second (20)",
    )
    if speed:
        parser.add_argument(
            "--emulator-speed",
            type=float,
            default=1.0,
            metavar="X",
            help="embedded emulator: market time runs X times faster (60: a bar a second)",
        )


def check_url_or_emulator(args: argparse.Namespace) -> None:
    """Refuse ``--url`` together with ``--emulator`` (:class:`CliUsage`)."""
    if args.url and args.emulator:
        raise CliUsage("--url and --emulator exclude each other")


@asynccontextmanager
async def embedded_emulator(
    args: argparse.Namespace,
    *,
    symbols: Sequence[str] = (),
    news_interval: float = 30.0,
    scripted_orders: float | None = None,
) -> AsyncIterator[Emulator]:
    """The ``--emulator`` of a command: an in-process emulator at ``--emulator-rate`` (and
    ``--emulator-speed`` when the command has it), on a free loopback port."""
    from trioalpaca.testing import open_emulator

    async with open_emulator(
        symbols=symbols,
        rate=args.emulator_rate,
        speed=getattr(args, "emulator_speed", 1.0),
        news_interval=news_interval,
        scripted_orders=scripted_orders,
    ) as emu:
        yield emu


# --------------------------------------------------------------------------- errors


def is_usage_or_auth(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (exit 2): a usage error, a refused key or scope."""
    from trioalpaca._errors import UsageError

    if isinstance(exc, (UsageError, CliUsage)) or type(exc).__name__ in _AUTH_ERRORS:
        return True
    return getattr(exc, "status_code", None) in (401, 403)  # upgrade refused


def error_exit(command: str, exc: BaseException, err: IO[str]) -> int | None:
    """Report ``exc`` as one ``error:`` line and return the exit code (2 usage or auth, 1 the
    rest; an exception group by its first error, or 0 when it holds no ``Exception``), or
    ``None`` for an exception a command does not report (the caller re-raises it)."""
    from trioalpaca._errors import TrioAlpacaError
    from trioalpaca._groups import exception_leaves

    if isinstance(exc, (CliUsage, TrioAlpacaError)):
        say(err, command, f"error: {exc}")
        return 2 if is_usage_or_auth(exc) else 1
    if isinstance(exc, OSError):
        say(err, command, f"error: {exc.strerror or exc}")
        return 1
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exception_leaves(exc) if isinstance(e, Exception)]
        if not leaves:
            return 0
        say(err, command, f"error: {leaves[0]}")
        return 1
    return None


def usage_or_runtime_exit(
    command: str, exc: BaseException, err: IO[str], *, runtime_type: bool = False
) -> int:
    """The long-running servers' (``hub``, ``relay``) error line and exit code: 2 for a
    :class:`~trioalpaca.UsageError`, a :class:`~trioalpaca.CredentialsError` or a
    :class:`~trioalpaca.BindError` (bad arguments or environment, as the emulator command), 1 for
    the rest, whose line starts with the error's type when ``runtime_type``."""
    from trioalpaca._errors import BindError, CredentialsError, UsageError

    if isinstance(exc, (UsageError, CredentialsError, BindError)):
        say(err, command, str(exc))
        return 2
    say(err, command, f"{type(exc).__name__}: {exc}" if runtime_type else str(exc))
    return 1


# --------------------------------------------------------------------------- status line


async def status_loop(
    interval: float, line: Callable[[], str], err: IO[str], command: str | None = None
) -> None:
    """Every ``interval`` seconds, ``line()`` on ``err`` (as ``trioalpaca COMMAND: ...`` when
    ``command`` is given, else as it is); runs until cancelled."""
    import trio

    while True:
        await trio.sleep(interval)
        if command is None:
            print(line(), file=err, flush=True)
        else:
            say(err, command, line())
