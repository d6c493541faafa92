"""A step in progress: its phases, summed over micro-steps, its backward samples and its
gradient sync, and the loop's own collectives. The probe (probe.py) makes these; they use its
package-internal parts (the bucket timer, the activity file, the calibration schedule).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Self

from scalemon.core.records import CollectiveTiming, SyncTiming
from scalemon.probes.step.calibration import Calibration
from scalemon.probes.step.fingerprint import batch_fingerprint

if TYPE_CHECKING:
    from scalemon.probes.step.probe import StepProbe

CALIBRATION_PHASE = "calibration"  # a no_sync sample's time: in the step's dt, not a part


class Step:
    """One step in progress: phase sums over micro-steps, backward samples, sync timing."""

    __slots__ = (
        "probe",
        "step",
        "tokens",
        "lr",
        "loss",
        "phases",
        "micro_steps",
        "nosync_backward",
        "synced_backward",
        "sync",
        "own",
        "ended_at",
        "started_at",
        "data",
    )

    def __init__(self, probe: StepProbe, step: int, tokens: int, lr: float | None) -> None:
        self.probe = probe
        self.step = step
        self.tokens = tokens
        self.lr = lr
        self.loss: float | None = None
        self.phases: dict[str, float] = {}
        self.micro_steps = 0
        self.nosync_backward: list[float] = []
        self.synced_backward: float | None = None
        self.sync: SyncTiming | None = None
        self.own = CollectiveTally()
        self.ended_at: float | None = None  # perf_counter; None: the step ends on exit
        self.data: int | None = None  # the first batch's fingerprint (see data_from)

    def part(self, name: str, seconds: float) -> None:
        """Time the loop took itself for a part of its phases (the trainer's loss head, inside
        forward and backward): kept beside the phases, never added to the step's split."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def data_from(self, batch: Any) -> None:
        """Fingerprint the step's first batch of token ids, so the monitor can tell whether
        the ranks see different data (a CPU batch only: see probes/step/fingerprint.py)."""
        if self.data is None:
            self.data = batch_fingerprint(batch)

    def phase(self, name: str, synced: bool | None = None) -> Phase:
        """Time a named phase; for backward, synced says whether DDP syncs gradients in it."""
        return Phase(self, name, synced)

    @property
    def calibrate(self) -> bool:
        """Whether to take a no_sync sample now (`calibration`): asked at the step's start."""
        probe = self.probe
        return probe._synced_ddp and self.micro_steps == 0 and \
            CALIBRATION_PHASE not in self.phases and probe._calibration.due(self.step)

    def calibration(self, model: Any) -> Calibration:
        """A forward and a backward of the step's first micro-batch under `model.no_sync()`,
        its gradients thrown away: ground truth for what sync costs (probes/step/calibration.py).
        Call it before the step's first backward, while the gradients are zero."""
        if self.micro_steps:
            raise RuntimeError("calibrate before the step's first backward: its gradients "
                               "are thrown away")
        self.probe._activity.phase(self.step, CALIBRATION_PHASE, time.time())
        return Calibration(model, self.probe._synchronize, self._calibrated)

    def _calibrated(self, backward_s: float, total_s: float) -> None:
        self.nosync_backward.append(backward_s)
        self.phases[CALIBRATION_PHASE] = self.phases.get(CALIBRATION_PHASE, 0.0) + total_s
        self.probe._activity.phase(self.step, "step", time.time())

    def __enter__(self) -> Step:
        self.probe._buckets.reset()
        self.probe._activity.phase(self.step, "step", time.time())
        self.started_at = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return  # an unfinished step has no meaningful timing
        if self.probe._synchronize is not None:
            self.probe._synchronize()
        end = time.perf_counter() if self.ended_at is None else self.ended_at
        self.probe._emit_step(self, end - self.started_at)
        self.probe._activity.phase(self.step, "between steps", time.time())


class Phase:
    __slots__ = ("_step", "_name", "_synced", "_backward", "_t0")

    def __init__(self, step: Step, name: str, synced: bool | None) -> None:
        self._step = step
        self._name = name
        self._synced = synced
        self._backward = name == "backward"

    def __enter__(self) -> Phase:
        probe = self._step.probe
        if self._backward or self._synced:
            probe._buckets.reset()  # buckets from here on belong to this backward
        probe._activity.phase(self._step.step, self._name, time.time())
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        s = self._step
        probe = s.probe
        probe._activity.phase(s.step, "step", time.time())
        if probe._synchronize is not None:
            probe._synchronize()
        end = time.perf_counter()
        seconds = end - self._t0
        s.phases[self._name] = s.phases.get(self._name, 0.0) + seconds
        if self._backward:
            s.micro_steps += 1
        if self._synced is False:
            s.nosync_backward.append(seconds)  # no allreduce in it: ground-truth compute
        elif self._backward or self._synced:
            sync = probe._buckets.summary(end, probe._wall_offset)
            # An unflagged backward counts as synced only if DDP actually synced in it.
            if self._synced or sync is not None:
                s.synced_backward = seconds
                s.sync = sync


class CollectiveTally:
    """The collectives a script called itself in one step (scalemon.probes.inject counts them):
    launched, their bytes, the host's time blocked on them, the first launch (unix time)."""

    __slots__ = ("count", "bytes", "blocked", "first_launch")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.blocked = 0.0
        self.first_launch = float("inf")

    def launched(self, wall: float, nbytes: int) -> None:
        self.count += 1
        self.bytes += nbytes
        self.first_launch = min(self.first_launch, wall)

    def add(self, other: CollectiveTally) -> None:
        self.count += other.count
        self.bytes += other.bytes
        self.blocked += other.blocked
        self.first_launch = min(self.first_launch, other.first_launch)

    def timing(self) -> CollectiveTiming | None:
        if not self.count:
            return None
        return CollectiveTiming(count=self.count, bytes=self.bytes, blocked=self.blocked,
                                first_launch=self.first_launch)


class Collective:
    __slots__ = ("_probe", "_name")

    def __init__(self, probe: StepProbe, name: str) -> None:
        self._probe = probe
        self._name = name

    def __enter__(self) -> Collective:
        now = time.time()
        step = -1 if self._probe._last_step is None else self._probe._last_step
        self._probe._activity.phase(step, self._name, now)
        self._probe._buckets.begin_wait(now)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._probe._buckets.end_wait()


class NullContext:
    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None


class NullStep(NullContext):
    __slots__ = ("loss",)
    loss: float | None
    calibrate = False  # an inactive probe never asks for a sample

    def phase(self, name: str, synced: bool | None = None) -> NullContext:
        return NULL_PHASE

    def data_from(self, batch: Any) -> None:
        return None

    def part(self, name: str, seconds: float) -> None:
        return None


NULL_PHASE = NullContext()
NULL_STEP = NullStep()
