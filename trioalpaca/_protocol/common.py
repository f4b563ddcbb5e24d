"""Pieces shared by the client and server state machines: channel tables, request building and
parsing, subscription state arithmetic. Pure functions; no I/O, no clocks, no logging.

Subscription state is a ``dict`` mapping a wire channel name to an insertion-ordered "set" of
symbols (a ``dict[str, None]``), so that symbol order is stable and deterministic.

``"*"`` semantics (the real server's behaviour is undocumented; this is trioalpaca's choice, used by
both the client bookkeeping and the emulator): ``"*"`` is an ordinary member of a channel's
symbol set that additionally matches every symbol. Unsubscribing ``"AAPL"`` while ``"*"`` is
subscribed only removes an explicit ``"AAPL"`` entry (the wildcard keeps delivering AAPL);
unsubscribing ``"*"`` removes the wildcard and leaves explicitly listed symbols subscribed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .._errors import MalformedStreamError, ProtocolError, UsageError
from ..endpoints import (
    MIRRORED_CHANNELS,
    Endpoint,
    channel_to_python,
    channel_to_wire,
)

__all__ = [
    "SYMBOL_RE",
    "Action",
    "ChannelSpec",
    "State",
    "any_symbol",
    "apply_change",
    "build_request",
    "freeze_state",
    "normalize_channels",
    "thaw_state",
    "too_many_undecodable",
]

#: Subscription actions.
Action = Literal["subscribe", "unsubscribe"]

#: What callers may pass per channel: an iterable of symbols, one symbol as a string, or ``None``.
ChannelSpec = Iterable[str] | str | None

#: Mutable subscription state: wire channel -> ordered set of symbols.
State = dict[str, dict[str, None]]

#: Valid symbol format (stocks ``BRK.B``, crypto ``BTC/USD``, perps ``BTC-PERP``, OCC option
#: symbols) or the wildcard. Anything else is "invalid syntax" (400) on the server.
SYMBOL_RE = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9./:_-]{0,39}")


def any_symbol(symbol: object) -> str:
    """The protocol's own symbol rule: any non-empty string (the server judges the syntax)."""
    if not isinstance(symbol, str) or not symbol:
        raise UsageError(f"symbols must be non-empty strings, got {symbol!r:.60}")
    return symbol


def normalize_channels(
    endpoint: Endpoint,
    channels: Mapping[str, ChannelSpec],
    *,
    symbol: Callable[[object], str] = any_symbol,
) -> dict[str, tuple[str, ...]]:
    """Validate and normalise a channel mapping for ``endpoint``.

    The one validation of subscriptions: the client calls it for its constructor arguments and
    every ``subscribe`` / ``unsubscribe`` with ``symbol=check_symbol`` (upper case, no blanks:
    see :func:`~trioalpaca.endpoints.check_symbol`); the sans-IO protocol for its own requests
    with the default :func:`any_symbol` (so that it can still carry what the server would refuse
    with 400). Channel names may use either spelling (``daily_bars`` / ``dailyBars``); the result
    uses wire names, drops channels with no symbols, removes duplicate symbols (keeping the
    first occurrence) and treats a bare string as one symbol.

    Raises:
        UsageError: unknown channel, a channel this endpoint does not offer, a server-maintained
            channel (``corrections``, ``cancelErrors``), or a symbol ``symbol`` refuses.
    """
    out: dict[str, tuple[str, ...]] = {}
    for name, value in channels.items():
        wire = channel_to_wire(name)
        if value is None:
            continue
        syms = tuple(
            dict.fromkeys(symbol(s) for s in ((value,) if isinstance(value, str) else value))
        )
        if not syms:
            continue  # a channel with no symbols asks for nothing, whatever the feed
        if wire not in endpoint.channels:
            if wire in MIRRORED_CHANNELS:
                raise UsageError(
                    f"{name!r} cannot be subscribed directly: the server adds corrections and "
                    "cancel errors for every symbol subscribed on 'trades'"
                )
            offered = ", ".join(sorted(channel_to_python(c) for c in endpoint.channels))
            raise UsageError(
                f"feed {endpoint.feed!r} has no channel {channel_to_python(wire)!r}; "
                f"it offers {offered}"
            )
        if wire in out:
            syms = tuple(dict.fromkeys(out[wire] + syms))
        out[wire] = syms
    return out


def build_request(action: Action, channels: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """Return the request map ``{"action": action, "<channel>": [symbols], ...}``.

    Only non-empty channels are included (``channels`` is expected to be normalised).
    """
    req: dict[str, Any] = {"action": action}
    for ch, syms in channels.items():
        if syms:
            req[ch] = list(syms)
    return req


def apply_change(state: State, action: Action, channels: Mapping[str, Iterable[str]]) -> None:
    """Apply a subscribe (set union) or unsubscribe (set difference) to ``state`` in place.

    Channels emptied by an unsubscribe keep an empty entry (callers decide whether to show it).
    """
    if action == "subscribe":
        for ch, syms in channels.items():
            target = state.get(ch)
            if target is None:
                target = state[ch] = {}
            for s in syms:
                target[s] = None
    else:
        for ch, syms in channels.items():
            target = state.get(ch)
            if target:
                for s in syms:
                    target.pop(s, None)


def freeze_state(state: State) -> dict[str, tuple[str, ...]]:
    """Immutable copy of a subscription state (``dict`` of ``tuple``), keeping empty channels."""
    return {ch: tuple(syms) for ch, syms in state.items()}


def thaw_state(state: Mapping[str, Iterable[str]]) -> State:
    """Mutable copy of a frozen subscription state."""
    return {ch: dict.fromkeys(syms) for ch, syms in state.items()}


def too_many_undecodable(
    in_a_row: int, limit: int, last: ProtocolError
) -> MalformedStreamError | None:
    """The error that ends a stream once ``in_a_row`` undecodable frames reached ``limit``
    (``None`` below it), with the last frame's error as its cause; data and trading protocols
    share this rule."""
    if in_a_row < limit:
        return None
    err = MalformedStreamError(f"{in_a_row} frames in a row did not decode (last: {last})")
    err.__cause__ = last
    return err
