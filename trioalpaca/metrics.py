"""Cheap, clock-free metrics primitives: sliding-window rates and latency histograms.

Everything here is synchronous and allocation-free on the hot path:

* :class:`RateMeter` counts events in a sliding time window made of fixed-width buckets. The
  caller passes ``now`` (use :func:`trio.current_time`, never wall-clock time); this module
  never reads a clock itself, which keeps it deterministic under ``autojump_clock`` and in
  property tests.
* :class:`LatencyHistogram` records durations in logarithmic buckets (O(1) per
  :meth:`~LatencyHistogram.record`) and answers percentiles with a bounded *relative* error.

Nothing here runs callbacks or allocates per event. Reading (``rate()``, ``percentile()``,
``snapshot()``) costs more and is meant for dashboards and ``get_metrics()`` calls, not the hot
path. Snapshots are frozen ``attrs`` values that can be kept, compared and serialised with
:meth:`LatencySnapshot.as_dict` / :meth:`RateSnapshot.as_dict`.

The library is single-threaded (trio); these classes are not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "LatencyHistogram",
    "LatencySnapshot",
    "RateMeter",
    "RateSnapshot",
]


@attrs.frozen
class RateSnapshot:
    """A frozen reading of a :class:`RateMeter` at one instant."""

    total: int
    """Events ever added to the meter."""
    rate: float
    """Events per second over the sliding window ending at the reading time."""
    window_s: float
    """Length of the sliding window in seconds."""

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as a plain ``dict`` (JSON-friendly)."""
        return {"total": self.total, "rate": self.rate, "window_s": self.window_s}


class RateMeter:
    """Events per second over a sliding window, with amortised O(1) :meth:`add`.

    The window of ``window_s`` seconds is split into ``resolution`` buckets of width
    ``w = window_s / resolution``. An event added at time ``t`` lands in bucket ``floor(t / w)``.
    :meth:`rate` at time ``now`` sums the ``resolution`` most recent buckets (the one holding
    ``now`` and the ``resolution - 1`` before it) and divides by ``window_s``. Consequently:

    * an event younger than ``window_s - w`` is always counted;
    * an event aged ``window_s`` or more is never counted;
    * in between, bucket boundaries decide (granularity ``w``).

    Before a full window has elapsed the divisor is still ``window_s``, so the rate ramps up from
    zero (like a load average) instead of spiking on the first event.

    ``now`` must come from one monotonic clock (``trio.current_time()``). Times that go
    backwards are accepted: the event is put in its own bucket if that bucket is still inside
    the window, otherwise it only counts towards :attr:`total`.

    Args:
        window_s: Length of the sliding window in seconds (> 0).
        resolution: Number of buckets the window is divided into (>= 1). More buckets give a
            smoother, more precise window at the cost of memory and of ``rate()`` time.
    """

    __slots__ = ("_counts", "_head", "_n", "_sum", "_width", "total", "window_s")

    window_s: float
    """Length of the sliding window in seconds."""
    total: int
    """Events ever added (not windowed)."""

    def __init__(self, window_s: float = 10.0, *, resolution: int = 20) -> None:
        if not window_s > 0 or math.isinf(window_s):
            raise ValueError(f"window_s must be a positive finite number, got {window_s!r}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution!r}")
        self.window_s = float(window_s)
        self._n = int(resolution)
        self._width = self.window_s / self._n
        self._counts = [0] * self._n
        self._head: int | None = None
        self._sum = 0
        self.total = 0

    def _advance(self, idx: int) -> None:
        head = self._head
        if head is None:
            self._head = idx
            return
        if idx <= head:
            return
        n = self._n
        counts = self._counts
        if idx - head >= n:
            for j in range(n):
                counts[j] = 0
            self._sum = 0
        else:
            for i in range(head + 1, idx + 1):
                j = i % n
                self._sum -= counts[j]
                counts[j] = 0
        self._head = idx

    def add(self, n: int = 1, now: float = 0.0) -> None:
        """Record ``n`` events that happened at time ``now`` (seconds, monotonic)."""
        self.total += n
        idx = math.floor(now / self._width)
        if idx == self._head:  # the common case: still in the newest bucket
            self._counts[idx % self._n] += n
            self._sum += n
            return
        self._advance(idx)
        head = self._head
        assert head is not None
        if idx > head - self._n:
            self._counts[idx % self._n] += n
            self._sum += n

    def count(self, now: float) -> int:
        """Return the number of events in the window ending at ``now``."""
        idx = math.floor(now / self._width)
        self._advance(idx)
        return self._sum

    def rate(self, now: float) -> float:
        """Return events per second in the window ending at ``now``."""
        return self.count(now) / self.window_s

    def snapshot(self, now: float) -> RateSnapshot:
        """Return a frozen :class:`RateSnapshot` taken at ``now``."""
        return RateSnapshot(total=self.total, rate=self.rate(now), window_s=self.window_s)

    def __repr__(self) -> str:
        return f"RateMeter(window_s={self.window_s!r}, total={self.total})"


@attrs.frozen
class LatencySnapshot:
    """A frozen summary of a :class:`LatencyHistogram` (all durations in seconds)."""

    count: int
    """Number of recorded durations."""
    mean: float
    """Exact arithmetic mean (0.0 when empty)."""
    min: float
    """Smallest recorded duration (0.0 when empty)."""
    max: float
    """Largest recorded duration (0.0 when empty)."""
    p50: float
    """Median, within the histogram's relative accuracy."""
    p90: float
    """90th percentile."""
    p99: float
    """99th percentile."""
    p999: float
    """99.9th percentile."""

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as a plain ``dict`` (JSON-friendly)."""
        return attrs.asdict(self)


class LatencyHistogram:
    """Log-bucketed histogram of durations with O(1) :meth:`record`.

    Values are placed in geometric buckets ``(gamma**(i-1), gamma**i]`` with
    ``gamma = (1 + accuracy) / (1 - accuracy)`` (the DDSketch layout). Each bucket is reported by
    a representative value that is within ``accuracy`` (relative) of every value in it, so
    :meth:`percentile` is within ``accuracy`` of the exact nearest-rank percentile for any value
    in ``[min_value, max_value]``. Values at or below ``min_value`` (including zero and negative
    durations, e.g. from clock skew) are counted in an underflow bucket reported as their exact
    minimum; values above ``max_value`` are counted in an overflow bucket reported as the exact
    maximum. :attr:`mean`, :attr:`min` and :attr:`max` are exact.

    Args:
        accuracy: Relative accuracy of percentiles, ``0 < accuracy < 1`` (default 1 %).
        min_value: Smallest duration resolved, in seconds (default 1 ns).
        max_value: Largest duration resolved, in seconds (default 1 day).
    """

    __slots__ = (
        "_counts",
        "_gamma",
        "_inv_log_gamma",
        "_offset",
        "_over",
        "_under",
        "accuracy",
        "count",
        "max",
        "max_value",
        "min",
        "min_value",
        "total",
    )

    accuracy: float
    """Relative accuracy of percentiles."""
    min_value: float
    """Smallest value resolved by the log buckets."""
    max_value: float
    """Largest value resolved by the log buckets."""
    count: int
    """Number of recorded values."""
    total: float
    """Sum of recorded values (seconds)."""
    min: float
    """Smallest recorded value (``inf`` while empty)."""
    max: float
    """Largest recorded value (``-inf`` while empty)."""

    def __init__(
        self, *, accuracy: float = 0.01, min_value: float = 1e-9, max_value: float = 86_400.0
    ) -> None:
        if not 0.0 < accuracy < 1.0:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
        if not 0.0 < min_value < max_value or math.isinf(max_value):
            raise ValueError("need 0 < min_value < max_value < inf")
        self.accuracy = float(accuracy)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self._gamma = (1.0 + accuracy) / (1.0 - accuracy)
        self._inv_log_gamma = 1.0 / math.log(self._gamma)
        lo = math.ceil(math.log(min_value) * self._inv_log_gamma)
        hi = math.ceil(math.log(max_value) * self._inv_log_gamma)
        self._offset = lo
        self._counts = [0] * (hi - lo + 1)
        self._under = 0
        self._over = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        """Record one duration in seconds. O(1), no allocation."""
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds
        if seconds <= self.min_value:
            self._under += 1
        elif seconds > self.max_value:
            self._over += 1
        else:
            i = math.ceil(math.log(seconds) * self._inv_log_gamma) - self._offset
            # Guard floating-point edge cases at the range limits.
            if i < 0:
                i = 0
            elif i >= len(self._counts):
                i = len(self._counts) - 1
            self._counts[i] += 1

    @property
    def mean(self) -> float:
        """Exact arithmetic mean of the recorded values (0.0 when empty)."""
        return self.total / self.count if self.count else 0.0

    def _bucket_value(self, i: int) -> float:
        g = self._gamma
        return 2.0 * g ** (i + self._offset) / (g + 1.0)

    def percentile(self, p: float) -> float:
        """Return the ``p``-th percentile (``0 <= p <= 100``) in seconds, 0.0 when empty.

        Uses the nearest-rank definition: the value of rank ``max(1, ceil(p / 100 * count))`` in
        sorted order, approximated within :attr:`accuracy` (relative). The result is clamped to
        the exact ``[min, max]`` of the recorded values.
        """
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within [0, 100], got {p!r}")
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(p / 100.0 * self.count))
        if rank <= self._under:
            return self.min
        seen = self._under
        value = self.max
        if rank <= self.count - self._over:
            for i, c in enumerate(self._counts):
                if c:
                    seen += c
                    if seen >= rank:
                        value = self._bucket_value(i)
                        break
        return min(max(value, self.min), self.max)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every value recorded in ``other`` (same bucket layout required) into this one."""
        if (other.accuracy, other.min_value, other.max_value) != (
            self.accuracy,
            self.min_value,
            self.max_value,
        ):
            raise ValueError("cannot merge histograms with different bucket layouts")
        for i, c in enumerate(other._counts):
            if c:
                self._counts[i] += c
        self._under += other._under
        self._over += other._over
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        """Return a new histogram holding the values of all ``histograms`` (same layout)."""
        hs = list(histograms)
        if not hs:
            return cls()
        first = hs[0]
        out = cls(accuracy=first.accuracy, min_value=first.min_value, max_value=first.max_value)
        for h in hs:
            out.merge(h)
        return out

    def snapshot(self) -> LatencySnapshot:
        """Return a frozen :class:`LatencySnapshot` of the current contents."""
        empty = self.count == 0
        return LatencySnapshot(
            count=self.count,
            mean=self.mean,
            min=0.0 if empty else self.min,
            max=0.0 if empty else self.max,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p99=self.percentile(99),
            p999=self.percentile(99.9),
        )

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, mean={self.mean!r})"
