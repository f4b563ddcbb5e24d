"""Optional C versions of trioalpaca's hot helpers (built from ``_speedups.c`` when a C
compiler is present; see :mod:`trioalpaca._codec`)."""

from typing import Any

def raw_check(everywhere: tuple[str, ...], sometimes: tuple[str, ...], items: Any, /) -> bool:
    """The raw decoder's fast shape check (the C twin of ``_codec._make_raw_check``'s loop)."""
