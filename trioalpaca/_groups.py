"""One rule for what leaves a public ``async with`` when the nursery behind it fails.

Every ``open_*`` context manager (stream, pool, message handler, stream manager, emulator) wraps
its nursery in :func:`single_error`: a group that stands for one real error leaves as that error
(its own ``__cause__`` kept, the group hidden); ``KeyboardInterrupt``/``SystemExit`` win; a group
of nothing but ``Cancelled`` leaves as its first ``Cancelled`` so cancellation keeps propagating.
When several real errors happened the group itself leaves, so no error is ever hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["exception_leaves", "single_error", "unwrap_exception_group"]


def exception_leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every non-group exception inside ``group``, depth first."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(exception_leaves(exc))
        else:
            out.append(exc)
    return out


def unwrap_exception_group(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception to raise instead of ``group``, or ``None`` when several real ones."""
    leaves = exception_leaves(group)
    for leaf in leaves:
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            return leaf
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real:
        return leaves[0]
    return None


@contextmanager
def single_error() -> Iterator[None]:
    """Apply the module's rule to an exception group raised inside the ``with`` block."""
    try:
        yield
    except BaseExceptionGroup as group:
        single = unwrap_exception_group(group)
        if single is None:
            raise
        raise single from single.__cause__
