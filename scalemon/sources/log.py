"""A run known only by its log (and perhaps its process) as a source: `scalemon attach PID` on
a run scalemon did not start, `attach --log` and `replay --log`.

Every parsed step becomes a rank-0 `StepRecord` with `dt`, `loss` and `tokens` (tok/sec x dt)
but no phases and no sync, after one made-up `StartRecord` whose meta says `source: log`;
evaluation lines become events. The log is followed by scalemon.io.logtail (truncation and
rotation are events).

Log lines carry no time. A batch of lines read at once ends at the file's modification time,
and each earlier step ends earlier by the `dt` of the steps after it, so a history read in
one go keeps its real pace, and a log nobody writes to any more shows as stalled.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from scalemon.core.config import LaunchConfig, ModelConfig, RunConfig, TrainConfig
from scalemon.core.logparse import EvalLine, LogParser, StepLine
from scalemon.core.records import EndRecord, JSONScalar, StartRecord, StepRecord
from scalemon.io.logtail import LogTail
from scalemon.io.processes import process_alive
from scalemon.sources.base import FoldedSource
from scalemon.sources.system import SystemWatch
from scalemon.state.events import Level
from scalemon.state.fold import RunState
from scalemon.state.observations import LogRestarted, Note, Tick


def end_record(state: RunState, parser: LogParser, t: float, why: str) -> EndRecord:
    """How a log-only run ended, from what the log shows: a traceback, the horizon, or neither."""
    step = state.step
    if parser.traceback:
        reason, message = "error", f"{why}; the log ends with a Python traceback"
    elif step < 0:
        reason, message = "stopped", f"{why}; no steps were read"
    elif state.horizon and step + 1 < state.horizon:
        reason, message = "stopped", f"{why} at step {step + 1:,} of {state.horizon:,}"
    else:
        reason, message = "finished", why
    return EndRecord(rank=0, t=t, reason=reason, step=max(step, 0), message=message)


class LogSource(FoldedSource):
    """`pid` is the process to watch: when it exits the run ends (see `end_record`). Without
    a pid the run ends when the log reaches its horizon. `root` is the top of the process tree
    the system view follows (a launcher); `steps` overrides the log's `/N` horizon; `vocab`
    gives the ln(vocab) baseline."""

    def __init__(self, log: Path | None, *, pid: int | None = None, root: int | None = None,
                 name: str | None = None, steps: int | None = None, vocab: int | None = None,
                 world: int | None = None, system: bool = True,
                 master_addr: str | None = None, relaunch: str | None = None) -> None:
        self.log = Path(log) if log else None
        self.pid = pid
        self.root = root or pid
        self.steps, self.vocab, self.world = steps, vocab, world
        self.relaunch = relaunch  # the `scalemon run` command that would give the full view
        config = RunConfig(name=name or (self.log.name if self.log else f"pid {pid}"),
                           model=ModelConfig(vocab=vocab), train=TrainConfig(steps=steps),
                           launch=LaunchConfig(world_size=world))
        watch = SystemWatch([self.root] if self.root else [], master_addr) if system else None
        super().__init__(RunState(config, source="log"), watch)
        self.parser = LogParser()
        self.tail = LogTail(self.log) if self.log else None
        self.evals: list[EvalLine] = []
        self.ended = False
        self._host = socket.gethostname()
        self._started = False
        self._clock = -float("inf")  # time given to the last step line
        self._last_step: int | None = None
        self._polled = False
        self.read_log()

    def read_log(self) -> int:
        """Fold the log's new lines in; returns how many new steps were folded."""
        if self.tail is None:
            return 0
        restarts = self.tail.truncations + self.tail.rotations
        lines, notes = self.tail.read()
        now = time.time()
        for text in notes:
            self.state.apply(Note(now, Level.WARN, text))
        if self.tail.truncations + self.tail.rotations != restarts:
            # A new log: perhaps a new run, from its own first step and with its own /N.
            self._started, self._last_step = False, None
            self.state.apply(LogRestarted(self.steps))
        end_t = min(self.tail.mtime or now, now)
        return self._fold([self.parser.feed(line) for line in lines], end_t)

    def catch_up(self) -> None:
        """Fold everything written so far (the run has ended)."""
        self.read_log()

    def _fold(self, parsed: list[StepLine | EvalLine | None], end_t: float) -> int:
        steps = [p for p in parsed if isinstance(p, StepLine)]
        times = iter(self._times(steps, end_t))
        count = 0
        last_t = self._clock if self._clock > -float("inf") else end_t
        for item in parsed:
            if isinstance(item, StepLine):
                last_t = next(times)
                count += self._apply_step(item, last_t)
            elif isinstance(item, EvalLine):
                self.evals.append(item)
                self.state.apply(Note(last_t, Level.INFO, item.text()))
        return count

    def _times(self, steps: list[StepLine], end_t: float) -> list[float]:
        """When each step of a batch ended: the last at end_t, each earlier one by its
        successors' dt sooner, never before the previous batch's last step."""
        times, t = [], end_t
        for i in range(len(steps) - 1, -1, -1):
            times.append(t)
            before = steps[i - 1].step if i else self._last_step
            gap = steps[i].step - before if before is not None and steps[i].step > before else 1
            t -= steps[i].dt * gap
        times.reverse()
        floor = self._clock
        for i, value in enumerate(times):
            floor = times[i] = max(value, floor + 1e-6)
        return times

    def _apply_step(self, line: StepLine, t: float) -> int:
        if not self._started:
            self._started = True
            meta: dict[str, JSONScalar] = {
                "source": "log", "form": line.form, "start_step": line.step,
                "steps": self.steps or line.horizon, "vocab": self.vocab, "log": str(self.log),
                "relaunch": self.relaunch}
            self.state.apply(StartRecord(rank=0, t=t - line.dt, pid=self.pid or 0,
                                         host=self._host, world=self.world or 1, local_rank=0,
                                         meta=meta))
        self._clock, self._last_step = t, line.step
        tokens = round(line.tok_s * line.dt) if line.tok_s and line.tok_s > 0 else 0
        return self.state.apply(StepRecord(rank=0, t=t, step=line.step, dt=line.dt,
                                           tokens=tokens, loss=line.loss))

    def end(self, why: str) -> None:
        """The run is over (its process exited, or the log reached its horizon)."""
        if not self.ended:
            self.ended = True
            self.state.apply(end_record(self.state, self.parser, time.time(), why))

    def poll(self, timeout: float) -> int:
        """Wait `timeout` (not the first time), then read the log, check the process and
        sample the system."""
        if self._polled:
            time.sleep(timeout)
        self._polled = True
        count = self.read_log()
        horizon = self.state.horizon
        if self.pid is not None and not self.ended and not process_alive(self.pid):
            count += self.read_log()
            self.end(f"process {self.pid} exited")
        elif self.pid is None and horizon and self.state.step + 1 >= horizon:
            self.end("the log reached its horizon")
        self.poll_system()
        self.state.apply(Tick(time.time()))
        return count

    def close(self) -> None:
        if self.tail is not None:
            self.tail.close()
        super().close()
