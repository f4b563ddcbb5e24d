"""The rule for what leaves a public ``async with`` (client, pool) when a nursery fails."""

from __future__ import annotations

import sys

import pytest
import trio

from trioalpaca import (
    AlpacaServerError,
    AuthFailedError,
    ConnectionLimitError,
    open_message_handler,
    open_pool,
    open_stream,
    open_stream_manager,
)
from trioalpaca._groups import collapse_exception_group, expected_error, unwrap_exception_group
from trioalpaca.testing import open_emulator

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


async def _cancelled() -> trio.Cancelled:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


async def test_one_real_error_leaves_alone_even_beside_cancellations() -> None:
    err = AuthFailedError(402, "auth failed")
    group = BaseExceptionGroup("x", [await _cancelled(), BaseExceptionGroup("y", [err])])
    assert unwrap_exception_group(group) is err


def test_several_real_errors_are_not_hidden() -> None:
    user = KeyError("user code")
    group = ExceptionGroup("x", [user, ConnectionLimitError(406, "limit")])
    assert unwrap_exception_group(group) is None
    # Inside a session the connection layer still picks one, preferring our own errors.
    assert isinstance(collapse_exception_group(group), ConnectionLimitError)


async def test_expected_error_only_when_every_leaf_is_expected() -> None:
    limit = ConnectionLimitError(406, "limit")
    auth = AuthFailedError(402, "auth failed")
    assert expected_error(ExceptionGroup("x", [limit, auth]), ConnectionLimitError) is None
    nested = BaseExceptionGroup("x", [ExceptionGroup("y", [limit]), auth])
    assert expected_error(nested, AlpacaServerError) is limit  # the first leaf, depth first
    # A bug or a cancellation beside an expected error is never swallowed.
    assert (
        expected_error(ExceptionGroup("x", [limit, KeyError("bug")]), ConnectionLimitError) is None
    )
    group = BaseExceptionGroup("x", [limit, await _cancelled()])
    assert expected_error(group, ConnectionLimitError) is None


async def test_only_cancellations_keep_propagating_as_cancelled() -> None:
    c1, c2 = await _cancelled(), await _cancelled()
    assert unwrap_exception_group(BaseExceptionGroup("x", [c1, c2])) is c1


def test_keyboard_interrupt_wins() -> None:
    ki = KeyboardInterrupt()
    group = BaseExceptionGroup("x", [KeyError("a"), ki, ValueError("b")])
    assert unwrap_exception_group(group) is ki


async def test_user_error_inside_every_public_block_leaves_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with (
            open_emulator(rate=0) as emu,
            open_stream(
                api_key="k", api_secret="s", url=emu.url_for("iex"), trades=["AAPL"]
            ) as stream,
            open_stream_manager(stream),
            open_message_handler(),
        ):
            raise KeyError("mine")


async def test_user_error_inside_a_pool_leaves_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with (
            open_emulator(rate=0) as emu,
            open_pool(api_key="k", api_secret="s", url=emu.url_for("iex"), pool_size=1),
        ):
            raise KeyError("mine")
