"""What a source sees besides records, as typed values for `RunState.apply`: the run's end
(status.json, or a supervisor seen gone), the relay's state, the system probes, where a rank
is and whether its process lives, a failed trainer's last stderr lines, the monitor's own
notes, and the passing of time (`Tick`)."""

from __future__ import annotations

from dataclasses import dataclass

from scalemon.core.activity import Activity
from scalemon.core.config import RelayStatus, RunStatus
from scalemon.core.logparse import EvalLine, StepLine
from scalemon.core.snapshots import SystemSnapshot
from scalemon.state.events import Level


@dataclass(frozen=True)
class StatusSeen:
    """How the launcher ended (status.json), or that nothing will ever record it."""

    status: RunStatus
    level: Level | None = None  # the event it logs; None: by the exit code
    text: str | None = None  # None: "trainer exited with code N (reason)"


@dataclass(frozen=True)
class RelaySeen:
    relay: RelayStatus | None


@dataclass(frozen=True)
class SystemSeen:
    """One poll of the system probes, and what they tell of the run's network use."""

    snapshot: SystemSnapshot | None
    net_bytes_per_step: float | None  # sent on the run interface per step
    nic_bit_s: float | None  # the run interface's speed, when the kernel reports one


@dataclass(frozen=True)
class ActivitySeen:
    rank: int
    activity: Activity | None  # None: its activity file could not be read


@dataclass(frozen=True)
class ProcessSeen:
    """A rank's process as psutil names its status ("running", "stopped" ...); None: gone."""

    rank: int
    status: str | None
    t: float


@dataclass(frozen=True)
class StderrSeen:
    """The trainer's last stderr lines, read once it failed."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Note:
    """An event from outside the records (a monitor's own observation)."""

    t: float
    level: Level
    text: str


@dataclass(frozen=True)
class ScriptPrinted:
    """A step or evaluation line a probed script printed (its own figures, beside the
    probe's), read at `t`."""

    line: StepLine | EvalLine
    t: float


@dataclass(frozen=True)
class LogRestarted:
    """A followed log was truncated or replaced: perhaps a new run, with its own horizon."""

    horizon: int | None


@dataclass(frozen=True)
class Tick:
    """Time passed: ranks that stopped reporting or wait too long are marked (liveness)."""

    now: float


Observation = (StatusSeen | RelaySeen | SystemSeen | ActivitySeen | ProcessSeen | StderrSeen
               | Note | ScriptPrinted | LogRestarted | Tick)
