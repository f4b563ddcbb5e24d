"""Message handlers and error handlers.

* One error-handler shape for every component: the client, the stream manager, the pipeline and
  the pool all accept an error handler through ``set_error_handler(fn)``. ``fn`` is a plain
  function or an ``async`` one and receives one :class:`ErrorReport` that carries the exception
  and its context: which component, which handler, which message (or batch), and what happens
  next.
* :class:`HandlerTable`: the client's registry of message handlers by kind (wire code, channel,
  ``"control"`` or ``"*"``) and symbols, and the dispatch of one message to them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from trioalpaca._errors import UsageError
from trioalpaca.endpoints import channel_to_wire, check_symbol
from trioalpaca.models import CHANNEL_BY_WIRE_TYPE

if TYPE_CHECKING:
    from trioalpaca._buffer import MessageBuffer

__all__ = [
    "Component",
    "ErrorAction",
    "ErrorHandler",
    "ErrorReport",
    "Handle",
    "Handler",
    "HandlerTable",
    "call_maybe_async",
    "handler_name",
]

logger = logging.getLogger("trioalpaca.client")

Handler = Callable[[Any], Awaitable[None] | None]
"""A callable taking one message (typed or raw dict): ``async def`` (awaited) or plain ``def``
(called directly, in the dispatcher task; keep it quick)."""

#: Wire ``T`` code -> channel, as a plain dict looked up per message (client, handler table,
#: pipeline): the one copy of ``models.CHANNEL_BY_WIRE_TYPE`` on the hot paths.
_T_TO_CHANNEL: dict[str, str] = dict(CHANNEL_BY_WIRE_TYPE)

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


#: A failing handler logs its traceback at most once per this many seconds; the next log line
#: says how many failures were not logged in between.
HANDLER_LOG_INTERVAL = 60.0


class _Entry:
    __slots__ = ("fn", "is_async", "kind", "last_logged", "suppressed", "symbols")

    def __init__(self, kind: str, fn: Handler, symbols: frozenset[str] | None) -> None:
        self.kind = kind
        self.fn = fn
        self.symbols = symbols
        # Known coroutine functions are awaited directly; anything else is called and its result
        # awaited only when it is awaitable (plain ``def`` handlers, callables returning
        # coroutines).
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async __call__ of a callable object
        )
        self.last_logged: float | None = None
        self.suppressed = 0


class Handle:
    """What :meth:`AlpacaWebSocketClient.register_handler
    <trioalpaca.client.AlpacaWebSocketClient.register_handler>` returns; :meth:`remove`
    unregisters."""

    __slots__ = ("_entry", "_table")

    def __init__(self, table: HandlerTable, entry: _Entry) -> None:
        self._table = table
        self._entry = entry

    @property
    def kind(self) -> str:
        """The normalised kind the handler listens to (wire code, channel or ``"*"``)."""
        return self._entry.kind

    @property
    def symbols(self) -> frozenset[str] | None:
        """The symbols the handler is limited to, ``None`` for all."""
        return self._entry.symbols

    def remove(self) -> None:
        """Unregister the handler (idempotent)."""
        self._table.remove(self._entry)

    def __repr__(self) -> str:
        return f"Handle(kind={self.kind!r}, symbols={self.symbols!r})"


def _symbols_of(msg: Any) -> tuple[str, ...]:
    if type(msg) is dict:
        s = msg.get("S")
        if s is not None:
            return (s,)
        syms = msg.get("symbols")
        return tuple(syms) if syms else ()
    s = getattr(msg, "symbol", None)
    if s is not None:
        return (s,)
    syms = getattr(msg, "symbols", None)
    return tuple(syms) if syms else ()


def normalise_kind(kind: str) -> str:
    """A handler kind as the table keys it: wire code, wire channel, ``"control"`` or ``"*"``.

    Raises:
        UsageError: not a wire code, channel, ``"control"`` or ``"*"``.
    """
    if kind == "*" or kind in _T_TO_CHANNEL or kind == "control":
        return kind
    try:
        return channel_to_wire(kind)
    except UsageError:
        raise UsageError(
            f"unknown handler kind {kind!r}; use a wire code such as 't', a channel name "
            "such as 'trades', 'control' or '*'"
        ) from None


class HandlerTable:
    """Message handlers by kind and symbols, and the dispatch of one message to them.

    Args:
        handler_errors: ``"continue"`` (report or log handler exceptions) or ``"raise"`` (let
            them out of :meth:`dispatch` when no error handler is set).
        on_failure: called once per handler exception (the client counts them).
    """

    __slots__ = ("_by_kind", "_on_failure", "count", "error_handler", "handler_errors")

    def __init__(
        self, handler_errors: Literal["continue", "raise"], on_failure: Callable[[], None]
    ) -> None:
        self._by_kind: dict[str, list[_Entry]] = {}
        self._on_failure = on_failure
        self.handler_errors = handler_errors
        #: registered handlers
        self.count = 0
        #: called with an :class:`ErrorReport` when a handler raises
        self.error_handler: ErrorHandler | None = None

    def add(self, kind: str, fn: Handler, symbols: Iterable[str] | str | None) -> Handle:
        """Register ``fn`` for ``kind`` (see :func:`normalise_kind`) and ``symbols``."""
        key = normalise_kind(kind)
        if isinstance(symbols, str):
            symbols = (symbols,)
        symset = None if symbols is None else frozenset(check_symbol(s) for s in symbols)
        if symset is not None and "*" in symset:
            symset = None
        entry = _Entry(key, fn, symset)
        self._by_kind.setdefault(key, []).append(entry)
        self.count += 1
        return Handle(self, entry)

    def remove(self, entry: _Entry) -> None:
        """Unregister one handler (idempotent)."""
        entries = self._by_kind.get(entry.kind)
        if entries and entry in entries:
            entries.remove(entry)
            self.count -= 1
            if not entries:
                del self._by_kind[entry.kind]

    async def drain(self, buffer: MessageBuffer) -> None:
        """Take messages from ``buffer`` and :meth:`dispatch` them while handlers are registered
        (the client's dispatcher task). A message taken after the last handler was removed goes
        back to the front of the buffer; returns when the buffer is closed and empty."""
        while self.count:
            try:
                msg = await buffer.get()
            except trio.EndOfChannel:
                return
            if not self.count:
                buffer.push_front(msg)
                return
            await self.dispatch(msg)

    async def dispatch(self, msg: Any) -> None:
        """Await every handler that matches ``msg``, in registration order per kind."""
        handlers = self._by_kind
        if type(msg) is dict:
            code = msg.get("T", "")
            channel = _T_TO_CHANNEL.get(code, "")
        else:
            code = type(msg).wire_type
            channel = type(msg).channel
        entries: list[_Entry] = []
        for key in (code, channel, "*"):
            found = handlers.get(key)
            if found:
                entries.extend(found)
        if not entries:
            return
        symbols: tuple[str, ...] | None = None
        for entry in entries:
            if entry.symbols is not None:
                if symbols is None:
                    symbols = _symbols_of(msg)
                if entry.symbols.isdisjoint(symbols):
                    continue
            try:
                result: Any = entry.fn(msg)
                if entry.is_async or inspect.isawaitable(result):
                    await result
            except Exception as exc:
                await self._failed(exc, msg, entry)

    async def _failed(self, exc: Exception, msg: Any, entry: _Entry) -> None:
        self._on_failure()
        if self.error_handler is not None:
            report = ErrorReport(
                exception=exc,
                component="client",
                handler=handler_name(entry.fn),
                message=msg,
                batch=(msg,),
                kind=entry.kind,
            )
            await call_maybe_async(self.error_handler, report)
            return
        if self.handler_errors == "raise":
            raise exc
        now = trio.current_time()
        last = entry.last_logged
        if last is not None and now - last < HANDLER_LOG_INTERVAL:
            entry.suppressed += 1
            return
        entry.last_logged = now
        suppressed, entry.suppressed = entry.suppressed, 0
        tail = (
            f"; {suppressed} more failure(s) of this handler were not logged in the last "
            f"{HANDLER_LOG_INTERVAL:g} s"
            if suppressed
            else f"; further failures of this handler are logged at most once per "
            f"{HANDLER_LOG_INTERVAL:g} s and counted in get_metrics()['errors']"
        )
        logger.error(
            "message handler raised; the stream continues (handler %s%s)",
            handler_name(entry.fn),
            tail,
            exc_info=exc,
        )
