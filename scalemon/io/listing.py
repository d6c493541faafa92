"""What `scalemon ls` and `scalemon attach` know of a run without folding it: its state from
status.json and its supervisor, and its last step from the tail of rank 0's file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scalemon.core.errors import RunDirError
from scalemon.io.processes import is_supervisor
from scalemon.io.rundir import RunDir, list_runs
from scalemon.io.tail import last_step_record

STARTING_S = 10.0  # a run dir this young whose supervisor is not recorded yet is starting
LIVE_STATES = ("running", "starting")


@dataclass(frozen=True)
class RunListing:
    """What `scalemon ls` shows for a run, read cheaply (tails, not whole files)."""

    run: RunDir
    state: str  # starting | running | finished | stopped | failed
    step: int  # last step reported by rank 0 (-1 before the first)
    horizon: int | None
    loss: float | None
    updated: float  # unix time of the newest record
    world: int | None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def describe(run: RunDir) -> RunListing:
    config = run.read_config()
    status = run.read_status()
    if status is not None:
        state = status.end_phase().value
    elif is_supervisor(config.pids.get("supervisor")):
        state = "running"
    else:
        state = "starting" if time.time() - config.created < STARTING_S else "failed"
    last = last_step_record(run.rank_file(0))
    return RunListing(
        run=run, state=state, step=last.step if last else -1, horizon=config.train.steps,
        loss=last.loss if last else None, updated=last.t if last else config.created,
        world=config.launch.world_size)


def running_runs(root: Path | None = None) -> list[RunListing]:
    """Runs whose supervisor is alive (or that are just starting), newest first."""
    out = []
    for run in list_runs(root):
        try:
            listing = describe(run)
        except RunDirError:
            continue
        if listing.live:
            out.append(listing)
    return out
