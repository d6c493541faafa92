"""What the fold knows of each rank: where it started, its last step, how it ended, and what
the monitor observed of its process."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from scalemon.core.activity import Activity


@dataclass
class RankInfo:
    rank: int
    pid: int | None = None
    host: str | None = None
    start_step: int = 0
    last_step: int = -1
    last_t: float | None = None
    ended: str | None = None  # finished | stopped | error
    message: str | None = None
    drops: int = 0
    lost: int = 0
    stale: bool = False
    node: int = 0  # node_rank of its machine: torchrun numbers ranks node by node
    started: float | None = None  # wall time of its start record
    gone: bool = False  # its process vanished without an end record (killed, crashed hard)
    frozen: bool = False  # its process is stopped (SIGSTOP, Ctrl-Z, a debugger)
    losing: bool = False  # its records cannot be written to the run dir right now
    activity: Activity | None = None  # where it is now, when its activity file is readable
    stuck: bool = False  # waiting in a collective for far longer than a step
    steps: list[list[int]] = field(default_factory=list)  # [first, last] ranges recorded

    def missing(self) -> int:
        """Steps inside the recorded range with no record (lost or never written)."""
        return sum(b[0] - a[1] - 1 for a, b in zip(self.steps, self.steps[1:], strict=False))


# What a monitor observes of a rank besides its records (liveness, RunDirSource.watch_ranks):
# a state folded again from the files has not observed it, and takes it from the shown one.
OBSERVED_FIELDS = ("stale", "gone", "frozen", "activity", "stuck")


def add_step(ranges: list[list[int]], step: int) -> None:
    """Add a step to sorted, disjoint [first, last] ranges (in order, this only extends)."""
    if ranges and ranges[-1][0] <= step <= ranges[-1][1] + 1:
        ranges[-1][1] = max(ranges[-1][1], step)
        return
    i = bisect.bisect_right(ranges, [step, math.inf])  # first range starting after step
    if i and ranges[i - 1][1] >= step - 1:
        ranges[i - 1][1] = max(ranges[i - 1][1], step)
        i -= 1
    else:
        ranges.insert(i, [step, step])
    while i + 1 < len(ranges) and ranges[i + 1][0] <= ranges[i][1] + 1:
        ranges[i][1] = max(ranges[i][1], ranges.pop(i + 1)[1])
