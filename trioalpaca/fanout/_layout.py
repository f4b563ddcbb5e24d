"""The Redis Streams layout: key names, entry fields and entry kinds (pure code, no I/O).

Keys (``{...}`` is a Redis Cluster hash tag, so every key of one feed lands in one slot)::

    ta:{iex}:t            trades of feed iex (with corrections "c" and cancels "x")
    ta:{iex}:q            quotes
    ta:{iex}:t:AAPL       trades of AAPL, when the per-symbol layout is chosen
    ta:{iex}:epoch        the publisher epoch (INCR at every acquisition)
    ta:{iex}:lease        the hot-standby lease (SET NX PX)
    ta:{iex}:keys         a set of every stream key written (for markers and tools)
    ta:{iex}:n            a hash: stream key -> entries written (the entries' ``n``)
    ta:{iex}:status       the publishers' status entries (started, stopped, upstream events)
    ta:{acct:PK123}:trade_updates   the trading stream of API key id PK123

Entry fields (all values are bytes):

``d``  msgpack of the list of canonical wire dicts (``Message.to_wire()`` form)
``rx`` receive time at the publisher, int nanoseconds since the epoch (decimal text)
``k``  ``data`` | ``gap`` | ``dropped`` | ``status``
``e``  publisher epoch (decimal text)
``s``  publisher sequence number of the batch (decimal text; increases within an epoch and is the
       same for the entries one batch wrote into several streams)
``n``  the entry's number in its stream (1, 2, 3, ... across epochs); a hole in the numbers
       means entries were trimmed before the consumer read them
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from trioalpaca._errors import UsageError
from trioalpaca.endpoints import FEEDS, Endpoint, StreamKind, channel_to_wire, resolve_feed

__all__ = [
    "CHANNEL_CODES",
    "KIND_DATA",
    "KIND_DROPPED",
    "KIND_GAP",
    "KIND_STATUS",
    "STATUS_CODE",
    "STREAM_CODE_BY_T",
    "StreamLayout",
]

#: Entry kind: market data (or trade updates).
KIND_DATA: Final = b"data"
#: Entry kind: a ``Reconnected`` gap marker (``d`` holds its wire dict).
KIND_GAP: Final = b"gap"
#: Entry kind: a ``Dropped`` marker (``d`` holds its wire dict).
KIND_DROPPED: Final = b"dropped"
#: Entry kind: a publisher status event (``d`` holds one ``{"T": "status", "event": ...}`` dict);
#: written into the layout's :attr:`StreamLayout.status_key` stream.
KIND_STATUS: Final = b"status"

#: Stream code of the status stream (``ta:{iex}:status``).
STATUS_CODE: Final = "status"

#: Wire channel -> stream code (the last key segment). Corrections and cancel errors travel in the
#: trades stream, as they do on the wire, so their order relative to the trades is kept.
CHANNEL_CODES: Final[dict[str, str]] = {
    "trades": "t",
    "corrections": "t",
    "cancelErrors": "t",
    "quotes": "q",
    "bars": "b",
    "dailyBars": "d",
    "updatedBars": "u",
    "statuses": "s",
    "lulds": "l",
    "imbalances": "i",
    "orderbooks": "o",
    "pricing": "p",
    "news": "n",
    "trade_updates": "trade_updates",
}

#: Wire ``T`` code -> stream code.
STREAM_CODE_BY_T: Final[dict[str, str]] = {
    "t": "t",
    "c": "t",
    "x": "t",
    "q": "q",
    "b": "b",
    "d": "d",
    "u": "u",
    "s": "s",
    "l": "l",
    "i": "i",
    "o": "o",
    "p": "p",
    "n": "n",
}

# The fixed order in which a consumer merges the entries one batch wrote into several streams.
_CODE_ORDER: Final[dict[str, int]] = {
    code: i for i, code in enumerate(("t", "q", "b", "d", "u", "s", "l", "i", "o", "p", "n"))
}
_CODE_ORDER["trade_updates"] = 0


def _check_part(name: str, value: str) -> str:
    if not value or any(c in value for c in "{}: \r\n\t"):
        raise UsageError(
            f"{name} {value!r} cannot be used in a Redis key (no braces, colons, spaces)"
        )
    return value


@attrs.frozen
class StreamLayout:
    """Where one feed (or one account's trade updates) lives in Redis.

    Build one with :meth:`for_feed` or :meth:`for_account`.

    Attributes:
        tag: the hash tag between the braces (the feed name, or ``acct:<key id>``).
        kind: the stream kind of the feed (decides how consumers build typed models).
        prefix: first key segment (``"ta"``).
        per_symbol: one stream per channel *and symbol* (``ta:{iex}:t:AAPL``) instead of one per
            channel. Consumers of a per-symbol layout must name their symbols (no ``"*"``).
    """

    tag: str
    kind: StreamKind
    prefix: str = "ta"
    per_symbol: bool = False

    @classmethod
    def for_feed(cls, feed: str, *, prefix: str = "ta", per_symbol: bool = False) -> StreamLayout:
        """The layout of a market data feed (``"iex"``, ``"crypto/us"``, ``"opra"``, ...)."""
        endpoint: Endpoint = resolve_feed(feed)
        if endpoint.kind is StreamKind.TRADING:
            raise UsageError("the trading stream is per account: use StreamLayout.for_account")
        return cls(endpoint.feed, endpoint.kind, _check_part("prefix", prefix), per_symbol)

    @classmethod
    def for_account(cls, key_id: str, *, prefix: str = "ta") -> StreamLayout:
        """The layout of the trading stream (``trade_updates``) of API key id ``key_id``."""
        return cls(f"acct:{_check_part('key id', key_id)}", StreamKind.TRADING, prefix, False)

    @property
    def trading(self) -> bool:
        """Whether this is an account's trading stream."""
        return self.kind is StreamKind.TRADING

    def _base(self) -> str:
        return f"{self.prefix}:{{{self.tag}}}"

    @property
    def epoch_key(self) -> str:
        """The key holding the current publisher epoch."""
        return f"{self._base()}:epoch"

    @property
    def registry_key(self) -> str:
        """A set of every stream key publishers of this layout have written to."""
        return f"{self._base()}:keys"

    @property
    def numbers_key(self) -> str:
        """The hash of stream key -> number of entries ever written (the entries' ``n``)."""
        return f"{self._base()}:n"

    @property
    def lease_key(self) -> str:
        """The key of the hot-standby lease."""
        return f"{self._base()}:lease"

    @property
    def status_key(self) -> str:
        """The stream of the publishers' status entries (kind ``status``): ``ta:{iex}:status``."""
        return f"{self._base()}:{STATUS_CODE}"

    def key(self, code: str, symbol: str | None = None) -> str:
        """The stream key for stream code ``code`` (and ``symbol`` in the per-symbol layout)."""
        if self.per_symbol and symbol is not None and not self.trading:
            return f"{self._base()}:{code}:{symbol}"
        return f"{self._base()}:{code}"

    def channel_keys(self, channels: dict[str, Iterable[str]]) -> dict[str, str]:
        """Stream key -> stream code for a subscription ``{channel: symbols}``.

        In the per-symbol layout every symbol gets its own key and ``"*"`` is refused.

        Raises:
            UsageError: unknown channel, a channel the feed does not carry, or ``"*"`` with the
                per-symbol layout.
        """
        out: dict[str, str] = {}
        offered = FEEDS["trading" if self.trading else self.tag].channels
        for name, symbols in channels.items():
            wire = "trade_updates" if self.trading else channel_to_wire(name)
            mirrored = wire in ("corrections", "cancelErrors") and "trades" in offered
            if wire not in offered and not (mirrored and self.kind is StreamKind.STOCKS):
                raise UsageError(f"feed {self.tag!r} has no channel {name!r}")
            code = CHANNEL_CODES[wire]
            syms = list(symbols)
            if self.per_symbol and not self.trading:
                if "*" in syms:
                    raise UsageError(
                        "the per-symbol layout has no stream for '*': name the symbols"
                    )
                for sym in syms:
                    out[self.key(code, sym)] = code
            else:
                out[self.key(code)] = code
        return out

    @staticmethod
    def merge_rank(code: str) -> int:
        """Position of stream code ``code`` when one batch's entries are merged again."""
        return _CODE_ORDER.get(code, len(_CODE_ORDER))
