"""Optional C versions of trioalpaca's hot helpers (built from ``_speedups.c`` when a C
compiler is present; see :mod:`trioalpaca._codec` and :mod:`trioalpaca.record.replay`)."""

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

def raw_check(everywhere: tuple[str, ...], sometimes: tuple[str, ...], items: Any, /) -> bool:
    """The raw decoder's fast shape check (the C twin of ``_codec._make_raw_check``'s loop)."""

class Items:
    """Async iteration over blocks of ready items: ``it`` is the current block's iterator;
    once it is exhausted, ``__anext__`` returns ``refill()``."""

    it: Iterator[Any] | None
    def __init__(self, refill: Callable[[], Awaitable[Any]]) -> None: ...
    def __aiter__(self) -> Items: ...
    def __anext__(self) -> Awaitable[Any]: ...
