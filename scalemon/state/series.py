"""The loss series, downsampled as it grows, so a run of days draws as fast as a run of minutes.

`LossSeries` follows the fold's loss arrays incrementally and keeps at most
`capacity` buckets over the whole run (a bucket's width in steps doubles when
they fill up) plus the last `recent` steps one by one. Each bucket keeps the
min and max loss, so a one-step spike stays visible however wide the bucket,
and the smoothed (EMA) loss at its last step. `columns()` regroups buckets to
a chart's pixel width with the same min/max rule.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

EMA_ALPHA = 0.1  # nanochat smooths its printed loss the same way


class Ema:
    """Bias-corrected exponential moving average of the finite values added (nanochat's)."""

    __slots__ = ("alpha", "_ema", "_n")

    def __init__(self, alpha: float = EMA_ALPHA) -> None:
        self.alpha, self._ema, self._n = alpha, 0.0, 0

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self._ema = (1 - self.alpha) * self._ema + self.alpha * value
            self._n += 1

    @property
    def value(self) -> float:
        """NaN before the first finite value."""
        return self._ema / (1 - (1 - self.alpha) ** self._n) if self._n else math.nan


@dataclass(frozen=True, slots=True)
class Bucket:
    first: int  # first and last step it covers
    last: int
    low: float  # min and max finite loss; NaN when none was finite
    high: float
    smooth: float  # bias-corrected EMA of the loss at `last`


class _Open:
    """A bucket being filled (mutable; frozen into a Bucket when read)."""

    __slots__ = ("first", "last", "low", "high", "smooth")

    def __init__(self, step: int, loss: float, smooth: float) -> None:
        self.first = self.last = step
        self.low = self.high = loss
        self.smooth = smooth

    def add(self, step: int, loss: float, smooth: float) -> None:
        self.last, self.smooth = step, smooth
        if math.isfinite(loss):
            self.low = loss if not self.low <= loss else self.low  # NaN-safe min
            self.high = loss if not self.high >= loss else self.high

    def merge(self, other: _Open) -> None:
        self.last, self.smooth = other.last, other.smooth
        self.low = _nanmin(self.low, other.low)
        self.high = _nanmax(self.high, other.high)

    def frozen(self) -> Bucket:
        return Bucket(self.first, self.last, self.low, self.high, self.smooth)


def _nanmin(a: float, b: float) -> float:
    return b if not a <= b else a


def _nanmax(a: float, b: float) -> float:
    return b if not a >= b else a


class LossSeries:
    """Follows `RunState.loss_steps` / `loss_values` (append-only, except a resume that
    rewinds: then it starts over, which costs one pass)."""

    def __init__(self, capacity: int = 1024, recent: int = 1000) -> None:
        self.capacity = capacity
        self.recent: deque[Bucket] = deque(maxlen=recent)
        self._reset()

    def _reset(self) -> None:
        self.width = 1  # steps per bucket, a power of two
        self.origin = 0  # step of the first bucket's start
        self.buckets: list[_Open] = []
        self.recent.clear()
        self._seen = 0  # how many (step, loss) pairs have been folded in
        self._last_step = -1
        self._ema = Ema()

    def update(self, steps: Sequence[int], values: Sequence[float]) -> bool:
        """Fold in the pairs added since the last call; True when anything changed."""
        n = len(steps)
        if n < self._seen or (self._seen and steps[self._seen - 1] != self._last_step):
            self._reset()  # a resume replaced steps already drawn
        if n == self._seen:
            return False
        for i in range(self._seen, n):
            self._add(steps[i], values[i])
        self._seen = n
        self._last_step = steps[n - 1]
        return True

    def _add(self, step: int, loss: float) -> None:
        self._ema.add(loss)
        smooth = self._ema.value
        low = loss if math.isfinite(loss) else math.nan
        self.recent.append(Bucket(step, step, low, low, smooth))
        if not self.buckets:
            self.origin = step
        index = (step - self.origin) // self.width
        while index >= self.capacity:
            self._halve()
            index = (step - self.origin) // self.width
        last = self.buckets[-1] if self.buckets else None
        if last is not None and (last.first - self.origin) // self.width == index:
            last.add(step, loss, smooth)
        else:
            self.buckets.append(_Open(step, low, smooth))

    def _halve(self) -> None:
        """Double the bucket width: neighbours that now share a bucket merge."""
        self.width *= 2
        merged: list[_Open] = []
        for bucket in self.buckets:
            same = merged and (merged[-1].first - self.origin) // self.width == \
                (bucket.first - self.origin) // self.width
            if same:
                merged[-1].merge(bucket)
            else:
                merged.append(bucket)
        self.buckets = merged

    def all_buckets(self) -> tuple[Bucket, ...]:
        return tuple(b.frozen() for b in self.buckets)

    def recent_buckets(self, count: int | None = None) -> tuple[Bucket, ...]:
        items = tuple(self.recent)
        return items if count is None else items[-count:]


def columns(buckets: tuple[Bucket, ...] | list[Bucket], width: int) -> list[Bucket | None]:
    """Regroup buckets into `width` columns by step (min of lows, max of highs, last EMA).

    A column no bucket falls in is None (a gap in the steps, e.g. before a resume).
    """
    if not buckets or width <= 0:
        return []
    first, last = buckets[0].first, buckets[-1].last
    span = last - first + 1
    out: list[Bucket | None] = [None] * width
    for bucket in buckets:
        column = min(width - 1, (bucket.last - first) * width // span)
        seen = out[column]
        if seen is None:
            out[column] = bucket
        else:
            out[column] = Bucket(seen.first, bucket.last, _nanmin(seen.low, bucket.low),
                                 _nanmax(seen.high, bucket.high), bucket.smooth)
    return out
