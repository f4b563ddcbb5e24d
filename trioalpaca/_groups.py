"""Every rule for collapsing exception groups, in one place.

* **Public blocks** (:func:`single_error`, :func:`unwrap_exception_group`): every ``open_*``
  context manager (stream, pool, message handler, stream manager, emulator) wraps its nursery in
  :func:`single_error`: a group that stands for one real error leaves as that error (its own
  ``__cause__`` kept, the group hidden); ``KeyboardInterrupt``/``SystemExit`` win; a group of
  nothing but ``Cancelled`` leaves as its first ``Cancelled`` so cancellation keeps propagating.
  When several real errors happened the group itself leaves, so no error is ever hidden.
* **Internal nurseries that must end with one error** (:func:`collapse_exception_group`: one
  connection's reader/writer/heartbeat tasks): the same, except that of several real errors the
  first ``TrioAlpacaError`` (else the first) stands for the group.
* **Expected failures** (:func:`expected_error`: a pooled session that ended): the group stands
  for its first error only when *every* leaf is of the expected kind; anything else (a bug, a
  cancellation) propagates as the group.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "collapse_exception_group",
    "exception_leaves",
    "expected_error",
    "single_error",
    "unwrap_exception_group",
]

E = TypeVar("E", bound=BaseException)


def exception_leaves(group: BaseException) -> list[BaseException]:
    """Every non-group exception inside ``group``, depth first (``[group]`` itself when it is
    not a group)."""
    if not isinstance(group, BaseExceptionGroup):
        return [group]
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(exception_leaves(exc))
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


def collapse_exception_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Pick the one exception a nursery's group stands for.

    ``KeyboardInterrupt``/``SystemExit`` win; then the first non-``Cancelled`` exception
    (preferring a :class:`~trioalpaca.TrioAlpacaError`, then anything else); a group of nothing
    but ``Cancelled`` collapses to its first ``Cancelled`` so cancellation keeps propagating.
    """
    from trioalpaca._errors import TrioAlpacaError

    leaves = exception_leaves(group)
    for leaf in leaves:
        if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
            return leaf
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    for leaf in real:
        if isinstance(leaf, TrioAlpacaError):
            return leaf
    if real:
        return real[0]
    return leaves[0]


def expected_error(group: BaseExceptionGroup[BaseException], expected: type[E]) -> E | None:
    """The first leaf of ``group`` if every leaf is an ``expected`` error, else ``None``."""
    leaves = exception_leaves(group)
    if not leaves or not all(isinstance(leaf, expected) for leaf in leaves):
        return None
    first = leaves[0]
    assert isinstance(first, expected)
    return first


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
