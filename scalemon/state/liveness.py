"""Whether the ranks live and move: ranks that stopped reporting (stale), wait in a collective
for far longer than a step (stuck), are stopped (frozen) or gone without an end record, and
the run's phase that follows from all that and its end status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalemon.core.activity import Activity
from scalemon.core.config import RunPhase
from scalemon.state.analysis import step_seconds
from scalemon.state.events import Level
from scalemon.state.ranks import RankInfo

if TYPE_CHECKING:
    from scalemon.state.fold import RunState

STALE_AFTER_S = 30.0  # a rank silent this long (or 10 median steps) has stopped reporting
STUCK_AFTER_S = 5.0  # waiting this long in a collective (or 5 median steps) is stuck
FROZEN = ("stopped", "tracing-stop")  # psutil's names for a stopped process


def phase(state: RunState) -> RunPhase:
    ends = {info.ended for info in state.ranks.values()}
    if state.status is not None:
        return state.status.end_phase(ends)
    if "error" in ends or any(info.gone for info in state.ranks.values()):
        return RunPhase.FAILED
    if state.ranks and None not in ends:
        return RunPhase.STOPPED if "stopped" in ends else RunPhase.FINISHED
    if state.step < 0:
        return RunPhase.STARTING
    # A remote node's silence is its relay's (shown as behind): DDP steps in lockstep,
    # so while this node's ranks step, the run is not stalled.
    local = state.config.launch.node_rank
    single = state.config.launch.nnodes == 1
    if any(info.stuck or info.stale and (info.node == local or single)
           for info in state.ranks.values()):
        return RunPhase.STALLED
    return RunPhase.TRAINING


def tick(state: RunState, now: float) -> None:
    """Mark ranks that stopped reporting or are stuck waiting (the time-driven part)."""
    state.now = now
    step_s = _step_s(state, now)
    limit = max(STALE_AFTER_S, 10 * step_s)
    for info in state.ranks.values():
        silent = info.last_t is not None and info.ended is None and now - info.last_t > limit
        if silent and not info.stale and state.status is None and info.last_t is not None:
            state.log(now, Level.WARN, f"rank {info.rank} has not reported a step for "
                                       f"{now - info.last_t:.0f} s (last step {info.last_step})")
        info.stale = silent
    for info in state.ranks.values():
        waited = _waiting_s(info, now)
        stuck = waited is not None and waited > max(STUCK_AFTER_S, 5 * step_s)
        if stuck and not info.stuck and state.status is None and info.activity is not None:
            state.log(now, Level.WARN, f"rank {info.rank} has waited {waited:.0f} s in "
                                       f"{_sync_name(info.activity)} at step "
                                       f"{info.activity.step}{_waited_for(state, info, now)}")
        info.stuck = stuck


def _step_s(state: RunState, now: float) -> float:
    """The median step, as of at most a second ago: a monitor ticks every poll (10 a second),
    the median over the window was most of a tick, and the limits it sets are 5 and 10 steps."""
    at, step_s = state.tick_step_s
    if not at <= now < at + 1.0:
        state.tick_step_s = (now, step_s := step_seconds(state) or 0.0)
    return step_s


def _sync_name(activity: Activity) -> str:
    """'gradient sync' for DDP's allreduce, else the collective's own name (a stop vote)."""
    return "gradient sync" if activity.phase in ("backward", "step") else activity.phase


def _waiting_s(info: RankInfo, now: float) -> float | None:
    activity = info.activity
    if activity is None or activity.waiting_since is None or info.ended or info.gone \
            or info.frozen:
        return None
    return now - activity.waiting_since


def _waited_for(state: RunState, waiter: RankInfo, now: float) -> str:
    """'; waiting for rank 1 is in forward (for 6 s)': the ranks it waits for, as seen here."""
    parts = []
    for info in sorted(state.ranks.values(), key=lambda i: i.rank):
        if info is waiter or _waiting_s(info, now) is not None:
            continue
        if info.gone:
            parts.append(f"rank {info.rank} is gone")
        elif info.frozen:
            parts.append(f"rank {info.rank} is stopped")
        elif info.ended:
            parts.append(f"rank {info.rank} has ended ({info.ended})")
        elif info.activity is not None:
            parts.append(f"rank {info.rank} is in {info.activity.phase} "
                         f"(for {now - info.activity.since:.0f} s)")
    if not parts and state.config.launch.nnodes > 1:
        parts.append("a rank on another node")
    return "; waiting for " + ", ".join(parts) if parts else ""


def observe_activity(state: RunState, rank: int, activity: Activity | None) -> None:
    """Where a rank is now, read from its activity file."""
    info = state.ranks.get(rank)
    if info is not None and activity is not None:
        info.activity = activity


def observe_process(state: RunState, rank: int, status: str | None, now: float) -> None:
    """A rank's process status as psutil names it ("running", "stopped" ...); None: gone."""
    info = state.ranks.get(rank)
    if info is None or info.ended or info.gone:
        return
    if status is None:
        rank_gone(state, info, now)
        return
    frozen = status in FROZEN
    if frozen != info.frozen:
        state.log(now, Level.WARN if frozen else Level.INFO,
                  f"rank {rank} (pid {info.pid}) is stopped (SIGSTOP, Ctrl-Z or a "
                  "debugger); its peers wait for it" if frozen else
                  f"rank {rank} (pid {info.pid}) runs again")
    info.frozen = frozen


def rank_gone(state: RunState, info: RankInfo, now: float) -> None:
    """A rank's process is gone without an end record: killed or crashed hard."""
    info.gone = True
    text = f"rank {info.rank} (pid {info.pid}) is gone without an end record (killed?)"
    if info.activity is not None and info.activity.phase not in ("ended", ""):
        text += f", in {info.activity.phase} of step {info.activity.step}"
    # Its peers can finish no collective without it: those seen waiting are stuck.
    waiting = [i.rank for i in state.ranks.values() if i is not info and not i.gone and (
        i.stuck or i.activity is not None and i.activity.waiting_since is not None)]
    if waiting:
        names = ", ".join(str(r) for r in sorted(waiting))
        text += (f"; rank{'s' if len(waiting) > 1 else ''} {names} "
                 f"{'are' if len(waiting) > 1 else 'is'} stuck in sync waiting for it")
    state.log(now, Level.ERROR, text)
