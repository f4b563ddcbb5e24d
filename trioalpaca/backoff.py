"""Reconnect delay schedules: exponential growth, a cap, jitter and a floor for error 406.

Pure and seedable: nothing here sleeps or reads a clock. The reconnect loop asks a
:class:`BackoffSchedule` for the next delay and sleeps itself::

    schedule = Backoff(initial=1.0, cap=30.0, jitter="equal").schedule()
    delay = schedule.next_delay()                        # 0.5 .. 1.0 s
    delay = schedule.next_delay(connection_limit=True)   # after a 406: at least 90 s
    schedule.reset()                                     # market data flowed again

Rules, with ``base(n) = min(cap, initial * multiplier ** n)`` for the ``n``-th consecutive attempt
(``n`` starts at 0 and resets with :meth:`BackoffSchedule.reset`):

* ``jitter="none"``: the delay is ``base(n)``;
* ``jitter="full"``: uniform in ``[0, base(n)]``;
* ``jitter="equal"``: uniform in ``[base(n) / 2, base(n)]`` (the default; what alpaca-py 0.44 uses);
* after error 406 ("connection limit exceeded", pass ``connection_limit=True``) the delay is
  ``max(connection_limit_floor, jittered delay)``: Alpaca needs about 90 s to reap a dropped socket,
  and reconnecting earlier is certain to be refused again.

**The floor wins over the cap.** The cap bounds the exponential part only; a delay after a 406 is
never below the floor even when the floor is larger than the cap (a 90 s floor with the default
30 s cap gives 90 s). Every other delay is at most ``cap``.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import attrs

from ._errors import UsageError

__all__ = ["Backoff", "BackoffSchedule", "Jitter"]

#: Jitter modes understood by :class:`Backoff`.
Jitter = Literal["none", "full", "equal"]


@attrs.frozen
class Backoff:
    """Configuration of a reconnect delay schedule (immutable; :meth:`schedule` makes schedules).

    Args:
        initial: base delay of the first attempt, seconds (``>= 0``).
        multiplier: growth factor per consecutive attempt (``>= 1``).
        cap: largest delay, seconds (finite, ``>= 0``); does not limit the 406 floor.
        jitter: ``"none"``, ``"full"`` or ``"equal"`` (see the module documentation).
        connection_limit_floor: minimum delay after error 406, seconds (default 90, the time Alpaca
            takes to reap a dropped connection). ``0`` disables the floor.
        seed: seed for the jitter's random generator; ``None`` seeds from the OS. Two schedules made
            from the same seeded :class:`Backoff` produce the same delays.

    Raises:
        UsageError: for out-of-range values or an unknown jitter mode.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: Jitter = "equal"
    connection_limit_floor: float = 90.0
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0):
            raise UsageError(f"Backoff.initial must be a finite number >= 0, got {self.initial!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise UsageError(f"Backoff.multiplier must be finite and >= 1, got {self.multiplier!r}")
        if not (math.isfinite(self.cap) and self.cap >= 0):
            raise UsageError(f"Backoff.cap must be a finite number >= 0, got {self.cap!r}")
        floor = self.connection_limit_floor
        if not (math.isfinite(floor) and floor >= 0):
            raise UsageError(
                f"Backoff.connection_limit_floor must be a finite number >= 0, got {floor!r}"
            )
        if self.jitter not in ("none", "full", "equal"):
            raise UsageError(
                f"Backoff.jitter must be 'none', 'full' or 'equal', got {self.jitter!r}"
            )

    def schedule(self) -> BackoffSchedule:
        """Return a fresh schedule (attempt counter at 0) following this configuration."""
        return BackoffSchedule(self)


class BackoffSchedule:
    """The stateful side of a :class:`Backoff`: counts consecutive attempts and yields delays.

    Pure: it never sleeps and never reads a clock. Not thread-safe (one per reconnect loop).
    """

    __slots__ = ("_attempts", "_base", "_random", "config")

    def __init__(self, config: Backoff) -> None:
        #: The configuration this schedule follows.
        self.config = config
        self._random = random.Random(config.seed)
        self._attempts = 0
        self._base = min(config.initial, config.cap)

    @property
    def attempts(self) -> int:
        """Number of delays handed out since creation or the last :meth:`reset`."""
        return self._attempts

    def next_delay(self, *, connection_limit: bool = False) -> float:
        """Return the delay in seconds before the next attempt, and count the attempt.

        Args:
            connection_limit: the previous attempt failed with error 406; the delay is then at least
                ``connection_limit_floor`` (even when that exceeds ``cap``).
        """
        cfg = self.config
        base = self._base
        if cfg.jitter == "none":
            delay = base
        elif cfg.jitter == "full":
            delay = self._random.uniform(0.0, base)
        else:
            half = base / 2.0
            delay = half + self._random.uniform(0.0, half)
        # uniform() may round a hair past its upper end; keep the documented band exact.
        delay = min(delay, base)
        if connection_limit and delay < cfg.connection_limit_floor:
            delay = cfg.connection_limit_floor
        self._attempts += 1
        self._base = min(base * cfg.multiplier, cfg.cap)
        return delay

    def reset(self) -> None:
        """Start over from ``initial`` (call once the connection proved healthy: data flowed)."""
        self._attempts = 0
        self._base = min(self.config.initial, self.config.cap)

    def __repr__(self) -> str:
        return f"BackoffSchedule(attempts={self._attempts}, config={self.config!r})"
