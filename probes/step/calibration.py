"""Ground truth for the cost of sync: now and then, a backward under `no_sync` on the step's own
first micro-batch, its gradients thrown away.

Overlap is not free (DESIGN.md): while buckets reduce, the communication takes cores (or SMs)
from the backward pass, so the comm hook's tail after the last bucket is only a lower bound of
what sync costs. What sync adds to a step is the synced backward less the same backward without
sync. Gradient accumulation gives that for free (its micro-steps under `no_sync`); without it,
this module takes a sample itself, at an interval that keeps its cost at BUDGET of training time.

The sample does not change the training math: it runs before the step's first backward, while
the gradients are zero, and sets them back to zero; the step's own backward then accumulates
into zeros exactly as it would have (tests/e2e/test_calibration.py checks it bit for bit).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

BUDGET = 0.009  # share of training time the samples may take (the power-of-two interval: 1-2x less)
WARMUP_STEPS = 3  # the first sample comes right after these (allocator, caches, first allreduce)
MIN_INTERVAL, MAX_INTERVAL = 4, 4096  # steps between samples
ENV = "SCALEMON_CALIBRATE"  # "auto" (default), "off", or a number of steps between samples


def interval_from_env(value: str | None) -> int | None | bool:
    """SCALEMON_CALIBRATE: None for auto, False for off, N for every N steps."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    if value.strip().lower() in ("off", "0", "no", "false"):
        return False
    try:
        every = int(value)
    except ValueError:
        return None  # a typo must not stop training; the default applies
    return every if every > 0 else False


class CalibrationSchedule:
    """Which steps take a no_sync sample. A step is due when its number is a multiple of the
    interval, a power of two of steps chosen so that a sample's cost is at most BUDGET of the
    steps between two samples; every rank computes it from its own (near equal) timings, so the
    ranks sample at the same steps and none waits for another's sample."""

    def __init__(self, every: int | None | bool = None) -> None:
        self.every = every  # None: by budget; False: never; N: every N steps
        self.samples = 0
        self.free_samples = False  # the last step accumulated: its no_sync micro-steps suffice
        self._steps = 0
        self._step_s: deque[float] = deque(maxlen=8)
        self._cost_s: float | None = None  # what a sample costs: its forward and backward

    def due(self, step: int) -> bool:
        if self.every is False or self.free_samples:
            return False
        if isinstance(self.every, int) and not isinstance(self.every, bool):
            return step % self.every == 0
        if self._steps < WARMUP_STEPS:
            return False
        if self.samples == 0:
            return True  # the first, right after warm-up: the full figure within seconds
        return step % self.interval() == 0

    def interval(self) -> int:
        """Steps between samples, for the cost to stay under BUDGET."""
        if not self._step_s or self._cost_s is None:
            return MIN_INTERVAL
        step_s = statistics.median(self._step_s)
        if step_s <= 0:
            return MAX_INTERVAL
        needed = self._cost_s / (BUDGET * step_s)
        power = 2 ** max(0, math.ceil(math.log2(max(needed, 1.0))))
        return min(MAX_INTERVAL, max(MIN_INTERVAL, power))

    def observed(self, dt: float, compute_s: float, sample_s: float | None,
                 accumulated: bool) -> None:
        """A finished step: its time (less any sample's), its forward and backward time, the
        sample's cost if it took one, and whether it accumulated (had no_sync micro-steps)."""
        self._steps += 1
        self.free_samples = accumulated
        self._step_s.append(max(0.0, dt - (sample_s or 0.0)))
        if sample_s is not None:
            self.samples += 1
            self._cost_s = sample_s
        elif self._cost_s is None and compute_s > 0:
            self._cost_s = compute_s  # until the first sample: the step's own forward + backward


class Calibration:
    """`with s.calibration(model) as c:` ... `with c.backward(): loss.backward()`: a forward and
    a backward under `model.no_sync()`, the backward timed, the gradients zeroed afterwards."""

    def __init__(self, model: Any, synchronize: Callable[[], Any] | None,
                 record: Callable[[float, float], None]) -> None:
        self._model = model
        self._synchronize = synchronize
        self._record = record  # (backward seconds, whole sample seconds)
        self._backward_s: float | None = None
        self._context: Any = None
        self._t0 = 0.0

    def __enter__(self) -> Calibration:
        self._context = self._model.no_sync()
        self._context.__enter__()
        self._t0 = time.perf_counter()
        return self

    def backward(self) -> _TimedBackward:
        return _TimedBackward(self)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._context.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            return
        for param in self._model.parameters():
            if param.grad is not None:
                param.grad.zero_()  # the step's own backward starts from zero, as it would have
        if self._synchronize is not None:
            self._synchronize()
        if self._backward_s is not None:
            self._record(self._backward_s, time.perf_counter() - self._t0)


class _TimedBackward:
    __slots__ = ("_calibration", "_t0")

    def __init__(self, calibration: Calibration) -> None:
        self._calibration = calibration

    def __enter__(self) -> _TimedBackward:
        sync = self._calibration._synchronize
        if sync is not None:
            sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            return
        sync = self._calibration._synchronize
        if sync is not None:
            sync()
        self._calibration._backward_s = time.perf_counter() - self._t0


def schedule_from_env() -> CalibrationSchedule:
    return CalibrationSchedule(interval_from_env(os.environ.get(ENV)))
