"""Fault injection for the emulator: rules consulted by the server, and named scenarios.

A rule targets one feed (``"iex"``, ``"crypto/us"``, ``"trading"``, ...) or every endpoint
(``feed=None``) and applies to a number of connections (``count``; ``None`` = every one until
:meth:`Faults.clear`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs

from .._protocol.server import DEFAULT_CLOSE_ON

if TYPE_CHECKING:
    from ._server import Emulator

__all__ = [
    "SCENARIOS",
    "DropHow",
    "DropRule",
    "Faults",
    "MuteRule",
    "Scenario",
]

DropHow = Literal["reset", "abort"] | int
"""How to drop a connection: ``"reset"`` (TCP RST, no close frame), ``"abort"`` (TCP FIN without a
close frame; the client reports close code 1006) or a close code sent in a proper close frame (1000,
1011, ...). The integer 1006 means ``"abort"`` (1006 is never sent on the wire)."""


def _matches(rule_feed: str | None, feed: str) -> bool:
    return rule_feed is None or rule_feed == feed


@attrs.define
class _Counted:
    feed: str | None
    remaining: int | None

    def take(self) -> bool:
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@attrs.define
class _StatusRule(_Counted):
    status: int = 429


@attrs.define
class DropRule(_Counted):
    """Drop matching connections after ``after_messages`` data messages and/or ``after_seconds``."""

    how: DropHow = "reset"
    after_messages: int | None = None
    after_seconds: float | None = None


@attrs.define
class MuteRule(_Counted):
    """Make matching connections mute (no data) after ``after_seconds``; ``pings`` False also stops
    answering pings."""

    pings: bool = True
    after_seconds: float = 0.0


@attrs.define
class Faults:
    """Fault plan of one emulator (mutated through the :class:`~trioalpaca.testing.Emulator`
    handle)."""

    upgrade_rejections: list[_StatusRule] = attrs.Factory(list)
    auth_errors: list[_StatusRule] = attrs.Factory(list)
    drops: list[DropRule] = attrs.Factory(list)
    mutes: list[MuteRule] = attrs.Factory(list)
    #: Seconds between injected malformed / unknown-type frames on every data connection (None:
    #: off).
    garbage_interval: float | None = None
    #: Seconds a connection slot stays taken after an abnormal disconnect (reaping period; 406
    #: meanwhile).
    reap_period: float = 0.0
    #: Error codes after which the socket is closed (404 and 407 always; never 400, 401, 403, 405,
    #: 410, 413). Default: 402, 404, 406, 407, 409, 412.
    close_on: frozenset[int] = DEFAULT_CLOSE_ON

    def clear(self) -> None:
        """Remove every rule (reaping period and garbage injection too)."""
        self.upgrade_rejections.clear()
        self.auth_errors.clear()
        self.drops.clear()
        self.mutes.clear()
        self.garbage_interval = None
        self.reap_period = 0.0
        self.close_on = DEFAULT_CLOSE_ON

    def add_upgrade_rejection(self, status: int, feed: str | None, count: int | None) -> None:
        """Reject the next ``count`` upgrades of ``feed`` with HTTP ``status``."""
        self.upgrade_rejections.append(_StatusRule(feed, count, status))

    def add_auth_error(self, code: int, feed: str | None, count: int | None) -> None:
        """Answer the next ``count`` auth requests on ``feed`` with error ``code``."""
        self.auth_errors.append(_StatusRule(feed, count, code))

    def _take(self, rules: list[_StatusRule], feed: str) -> int | None:
        for rule in rules:
            if _matches(rule.feed, feed) and rule.take():
                return rule.status
        return None

    def take_upgrade_rejection(self, feed: str) -> int | None:
        """HTTP status to reject this upgrade with, if a rule says so (consumes one use)."""
        return self._take(self.upgrade_rejections, feed)

    def take_auth_error(self, feed: str) -> int | None:
        """Error code to answer this auth with, if a rule says so (consumes one use)."""
        return self._take(self.auth_errors, feed)

    def take_drop(self, feed: str) -> DropRule | None:
        """The drop rule for a new connection on ``feed`` (consumes one use)."""
        for rule in self.drops:
            if _matches(rule.feed, feed) and rule.take():
                return rule
        return None

    def take_mute(self, feed: str) -> MuteRule | None:
        """The mute rule for a new connection on ``feed`` (consumes one use)."""
        for rule in self.mutes:
            if _matches(rule.feed, feed) and rule.take():
                return rule
        return None


@attrs.frozen
class Scenario:
    """A named fault scenario: a description and how to apply it to an emulator."""

    name: str
    description: str
    apply: Callable[[Emulator], None]


def _flaky(emu: Emulator) -> None:
    emu.drop(after_seconds=5.0, how="reset", count=None)


def _close_1011(emu: Emulator) -> None:
    emu.drop(after_seconds=3.0, how=1011, count=None)


def _close_1000(emu: Emulator) -> None:
    emu.drop(after_messages=500, how=1000, count=None)


def _mute(emu: Emulator) -> None:
    emu.mute(after_seconds=2.0, pings=True, count=None)


def _mute_no_pong(emu: Emulator) -> None:
    emu.mute(after_seconds=2.0, pings=False, count=None)


def _slow(emu: Emulator) -> None:
    emu.set_send_buffer_limit(64 * 1024)


def _reaping(emu: Emulator) -> None:
    emu.set_reap_period(90.0)
    emu.drop(after_seconds=3.0, how="reset", count=1)


def _rate_limited(emu: Emulator) -> None:
    emu.reject_upgrades(429, count=3)


def _not_found(emu: Emulator) -> None:
    emu.reject_upgrades(404, count=None)


def _auth_failed(emu: Emulator) -> None:
    emu.fail_auth(402, count=None)


def _not_in_plan(emu: Emulator) -> None:
    emu.fail_auth(409, count=None)


def _connection_limit(emu: Emulator) -> None:
    emu.fail_auth(406, count=2)


def _garbage(emu: Emulator) -> None:
    emu.set_garbage_interval(1.0)


def _burst(emu: Emulator) -> None:
    emu.set_burst(100)


#: Named scenarios (``trioalpaca emulator --scenario NAME`` or ``Emulator.apply_scenario(NAME)``).
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("flaky", "every connection is reset (TCP RST) 5 s after it opens", _flaky),
        Scenario("close-1011", "every connection is closed with code 1011 after 3 s", _close_1011),
        Scenario(
            "close-1000", "every connection is closed with 1000 after 500 messages", _close_1000
        ),
        Scenario("mute", "connections go silent after 2 s; pings are still answered", _mute),
        Scenario(
            "mute-no-pong",
            "connections go silent after 2 s and stop answering pings",
            _mute_no_pong,
        ),
        Scenario(
            "slow-client", "64 KiB server send buffer: slow readers get 407 and a close", _slow
        ),
        Scenario(
            "reaping",
            "the first connection is reset after 3 s and its slot is held for 90 s (406 meanwhile)",
            _reaping,
        ),
        Scenario("rate-limited", "the first 3 upgrades are rejected with HTTP 429", _rate_limited),
        Scenario("not-found", "every upgrade is rejected with HTTP 404", _not_found),
        Scenario("auth-failed", "every auth is answered with 402 auth failed", _auth_failed),
        Scenario(
            "insufficient-subscription", "every auth gets 409 (feed not in plan)", _not_in_plan
        ),
        Scenario(
            "connection-limit",
            "the first 2 auths get 406 connection limit exceeded",
            _connection_limit,
        ),
        Scenario("garbage", "a malformed and an unknown-type frame every second", _garbage),
        Scenario(
            "burst", "pre-encoded frames of 100 messages as fast as the socket takes them", _burst
        ),
    )
}
