"""One error-handler shape for every component: ``set_error_handler(fn)``, ``fn(report)``.

The client, the stream manager, the pipeline and the pool all accept an error handler through
``set_error_handler(fn)``. ``fn`` is a plain function or an ``async`` one and receives one
:class:`ErrorReport` that carries the exception and its context: which component, which
handler, which message (or batch), and what happens next.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import attrs

__all__ = [
    "Component",
    "ErrorAction",
    "ErrorHandler",
    "ErrorReport",
    "call_maybe_async",
    "handler_name",
]

ErrorAction = Literal["continue", "retry", "skip", "stop", "reconnect"]
"""What the component does after the error: ``"continue"`` (go on with the next message),
``"retry"`` / ``"skip"`` / ``"stop"`` (the pipeline's error policies; ``"stop"`` is also a pool
connection that failed for good) or ``"reconnect"`` (the pool replaces the connection that
failed)."""

Component = Literal["client", "manager", "pipeline", "pool"]
"""The component that reports an error."""


@attrs.frozen(kw_only=True)
class ErrorReport:
    """What every error handler receives: one exception and its context.

    Only ``exception`` and ``component`` are always meaningful; the other fields are filled in
    by the components they apply to (the defaults mean "not applicable").
    """

    exception: BaseException
    """The exception raised."""
    component: Component
    """Who reports it: ``"client"``, ``"manager"``, ``"pipeline"`` or ``"pool"``."""
    handler: str = ""
    """Qualified name of the user function that raised (``""`` for a pool connection error)."""
    message: Any = None
    """The message being handled (the first of ``batch`` in the pipeline), or ``None``."""
    batch: tuple[Any, ...] = ()
    """The messages the function was called with (the pipeline calls processors with batches;
    elsewhere the single message)."""
    kind: str = ""
    """The channel or handler kind involved (``"trades"``, ``"t"``, ``"control"``, ...)."""
    subscription: Any = None
    """The :class:`~trioalpaca.manager.Subscription` whose handler raised (manager only)."""
    connection: int | None = None
    """Index of the pooled connection that failed (pool only)."""
    attempt: int = 1
    """1 for the first call, 2 for the first retry, ... (pipeline ``"retry"`` policy)."""
    action: ErrorAction = "continue"
    """What the component does next (see :data:`ErrorAction`)."""

    @property
    def error(self) -> BaseException:
        """The exception (the name used by ``ProcessingFailure`` / ``HandlerFailure``)."""
        return self.exception


ErrorHandler = Callable[[ErrorReport], Any]
"""An error handler: called with one :class:`ErrorReport`; plain or ``async`` (awaited)."""


def handler_name(fn: object) -> str:
    """A readable name of a callable for :attr:`ErrorReport.handler`."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str):
        return name
    return type(fn).__qualname__


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` and await the result if it is awaitable (plain or async functions)."""
    result = fn(*args)
    if inspect.isawaitable(result):
        await result
