"""Steps out of the events of a script scalemon was injected into (no probe code in it).

The patches (scalemon.probes.inject.patches) report what the script does: a forward of its
model, a backward, an optimizer step, a DataLoader batch, its own collectives. The driver
turns them into the step probe's steps:

- A step opens at the first forward (or backward, or optimizer step) with gradients on, and
  ends with its optimizer steps. How many optimizer steps make one training step (one per
  optimizer a script builds) is learned from the first: that step ends when the next forward
  begins, later ones as soon as their last optimizer step returns.
- A DataLoader batch fetched just before the step's forward is the step's data phase.
- Time blocked in the script's own collectives is taken out of the phase it happened in and
  counted as the step's collective time (core.records.CollectiveTiming).

Everything runs on the script's threads, inside its step: each handler is a few dict and
float operations. A handler that fails turns the driver off (one line on stderr); it never
raises into the script.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from scalemon.probes.step.probe import StepProbe
from scalemon.probes.step.steps import CollectiveTally, Phase, Step

DATA_GAP_S = 0.5  # a batch fetched longer before the forward is not that step's data


class Driver:
    """One per rank. `world` is the launcher's (tokens are counted on this rank)."""

    def __init__(self, probe: StepProbe, world: int) -> None:
        self.probe = probe
        self.world = world
        self.on = probe.active
        self.steps = 0  # optimizer steps made into step records so far
        self._saved_step = -1  # the last step a checkpoint was recorded at
        self.step: Step | None = None
        self.stepped = 0  # optimizer steps in the open step
        self.per_step: int | None = None  # optimizer steps a training step makes, once learned
        self._optimizers = 0  # optimizer steps in progress (one optimizer may step another)
        self._stepped_at = 0.0  # perf_counter when the last optimizer step returned
        self._phase: Phase | None = None
        self._phase_name = ""
        self._blocked_in_phase = 0.0
        self._data: tuple[float, float] | None = None  # (perf_counter start, seconds) unused yet
        self._between = CollectiveTally()  # collectives launched outside any step
        self._losses: list[Any] = []
        self._tokens = 0
        self._lock = threading.Lock()  # a collective may be waited on from another thread
        self.describe: Callable[[], dict[str, Any]] | None = None  # facts, said once
        self.synced: Callable[[], bool | None] = lambda: None  # DDP syncs this backward?
        self.closed: Callable[[int], None] | None = None  # after each step record

    # --- events from the patches --------------------------------------------------------

    def forward_started(self, ids: Any) -> None:
        """A counted forward began on `ids`, its input of token ids (None: not token ids)."""
        self._guarded(self._forward_started, ids)

    def saved(self, path: Any, seconds: float) -> None:
        """torch.save wrote `path` (a checkpoint, once a step is done)."""
        self._guarded(self._saved, path, seconds)

    def forward_ended(self, loss: Any) -> None:
        self._guarded(self._forward_ended, loss)

    def backward_started(self) -> None:
        self._guarded(self._backward_started)

    def backward_ended(self) -> None:
        self._guarded(self._end_phase)

    def optimizer_started(self) -> None:
        self._guarded(self._optimizer_started)

    def optimizer_ended(self) -> None:
        self._guarded(self._optimizer_ended)

    def batch_fetched(self, start: float, seconds: float) -> None:
        self._guarded(self._batch_fetched, start, seconds)

    def collective_launched(self, wall: float, nbytes: int) -> None:
        self._guarded(self._collective_launched, wall, nbytes)

    def collective_blocked(self, seconds: float) -> None:
        self._guarded(self._collective_blocked, seconds)

    def waiting(self, name: str) -> Any:
        """A context for a wait on a collective: the rank shows as waiting for its peers."""
        return self.probe.collective(name)

    def finish(self, reason: str = "finished", message: str | None = None) -> None:
        """The script ended: its last step, then the end record."""
        if self.on:
            self._guarded(self._close_step)
        self.on = False
        try:
            self.probe.close(reason, message)
        except Exception as error:  # noqa: BLE001 - the script's exit must not fail for it
            say(f"could not write the end record: {error}")

    # --- the state machine --------------------------------------------------------------

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        if not self.on:
            return
        try:
            handler(*args)
        except Exception as error:  # noqa: BLE001 - the script trains on without the probe
            self.on = False
            say(f"probe off after an internal error ({type(error).__name__}: {error}); "
                 "training goes on unmonitored")

    def _open(self, start: float | None = None) -> Step:
        """The step in progress, opening one (closing a finished one first) when needed."""
        if self.step is not None and self.stepped:
            self._close_step()
        if self.step is None:
            step = self.probe.step(self.steps)
            assert isinstance(step, Step)  # the driver runs only with an active probe
            step.__enter__()
            data = self._data
            if data is not None and start is not None and start - (data[0] + data[1]) \
                    < DATA_GAP_S:
                step.started_at = data[0]  # the batch it trains on was fetched for it
                step.phases["data"] = data[1]
            self._data = None
            step.own.add(self._between)
            self._between = CollectiveTally()
            self.step = step
        return self.step

    def _begin_phase(self, step: Step, name: str, synced: bool | None = None) -> None:
        self._end_phase()
        phase = step.phase(name, synced)
        phase.__enter__()
        self._phase, self._phase_name, self._blocked_in_phase = phase, name, 0.0

    def _end_phase(self) -> None:
        phase, step = self._phase, self.step
        if phase is None or step is None:
            return
        self._phase = None
        phase.__exit__(None, None, None)
        if self._blocked_in_phase:  # that time is the collectives', not this phase's
            name = self._phase_name
            step.phases[name] = max(0.0, step.phases[name] - self._blocked_in_phase)

    def _forward_started(self, ids: Any) -> None:
        step = self._open(time.perf_counter())
        if ids is not None:
            self._tokens += ids.numel()
            step.data_from(ids)
        self._begin_phase(step, "forward")

    def _forward_ended(self, loss: Any) -> None:
        if self._phase_name == "forward":
            self._end_phase()
        if loss is not None:
            self._losses.append(loss)

    def _saved(self, path: Any, seconds: float) -> None:
        # A checkpoint is several files (model, optimizer, per rank): one record a step.
        step = self.steps - 1
        if step < 0 or step == self._saved_step:
            return
        self._saved_step = step
        where = os.fspath(path) if isinstance(path, str | os.PathLike) else type(path).__name__
        self.probe.checkpoint(step, str(where), seconds)

    def _backward_started(self) -> None:
        step = self._open()
        self._begin_phase(step, "backward", self.synced())

    def _optimizer_started(self) -> None:
        self._optimizers += 1
        if self._optimizers == 1:  # a second optimizer of the same step goes on in it
            self._begin_phase(self.step or self._open(), "optimizer")

    def _optimizer_ended(self) -> None:
        self._optimizers = max(0, self._optimizers - 1)
        if self._optimizers:
            return
        self._end_phase()
        self.stepped += 1
        self._stepped_at = time.perf_counter()
        if self.per_step is not None and self.stepped >= self.per_step:
            self._close_step()

    def _batch_fetched(self, start: float, seconds: float) -> None:
        step = self.step
        if step is not None and not self.stepped:
            step.phases["data"] = step.phases.get("data", 0.0) + seconds
        else:
            self._data = (start, seconds)

    def _collective_launched(self, wall: float, nbytes: int) -> None:
        with self._lock:
            tally = self.step.own if self.step is not None and not self.stepped_out() \
                else self._between
            tally.launched(wall, nbytes)

    def stepped_out(self) -> bool:
        """The open step's optimizer steps are done (what comes now is between steps)."""
        return self.stepped > 0 and not self._optimizers

    def _collective_blocked(self, seconds: float) -> None:
        with self._lock:
            if self.step is None or self.stepped_out():
                return  # outside a step: not in any step's time
            self.step.own.blocked += seconds
            if self._phase is not None:
                self._blocked_in_phase += seconds

    def _close_step(self) -> None:
        step = self.step
        if step is None:
            return
        self._end_phase()
        if self.per_step is None and self.stepped:
            self.per_step = self.stepped  # learned from the first step
        step.micro_steps = max(step.micro_steps, 1)
        step.tokens = self._tokens * self.world
        step.loss = _mean(self._losses)
        if self.stepped:
            step.ended_at = self._stepped_at  # what follows its optimizer steps is not the step's
        self.step, self.stepped, self._losses, self._tokens = None, 0, [], 0
        self._phase_name = ""
        step.__exit__(None, None, None)
        self.steps += 1
        if self.closed is not None:
            self.closed(self.steps)
        # The model's facts once a step has run its forward through the hooks (the first
        # step's, before the model was found, did not) or after a few steps without.
        if self.describe is not None and ("forward" in step.phases or self.steps >= 3):
            facts, self.describe = self.describe(), None
            self.probe.describe(facts)


def _mean(losses: list[Any]) -> float | None:
    """The mean of the step's micro-step losses (tensors: read once, at the step's end)."""
    values = []
    for loss in losses:
        try:
            values.append(float(loss))
        except (TypeError, ValueError, RuntimeError):
            return None
    return sum(values) / len(values) if values else None


def say(text: str) -> None:
    """One line on stderr, marked as scalemon's (the script's own output is beside it)."""
    print(f"scalemon: {text}", file=sys.stderr, flush=True)
