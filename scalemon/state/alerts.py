"""The alert rules a step record can trip, each with its own rate limit: a NaN or infinite
loss, a loss above ln(vocab) once warm, a jump in the sync share, and records a rank cannot
write to the run dir (and when they reach it again)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from scalemon.core.records import StepRecord
from scalemon.state.analysis import median
from scalemon.state.events import Level
from scalemon.state.ranks import RankInfo

if TYPE_CHECKING:
    from scalemon.state.fold import RunState

REPEAT_STEPS = 100  # an alert says the same thing again at most this many steps later
WARM_STEPS = 50  # a loss above ln(vocab) before this is the first steps', not a problem
SYNC_JUMP_WINDOW = 20
SYNC_JUMP_EVERY = 5  # checked every 5th step: the fold of a long history stays fast


class Alerts:
    """The rules' memory: the step each last spoke at."""

    def __init__(self) -> None:
        self._nan_at = -math.inf
        self._high_at = -math.inf
        self._sync_at = -math.inf

    def loss(self, state: RunState, record: StepRecord) -> None:
        loss = record.loss
        if loss is None:
            return
        if not math.isfinite(loss):
            if record.step - self._nan_at >= REPEAT_STEPS:
                self._nan_at = record.step
                state.log(record.t, Level.ERROR, f"loss is {loss} at step {record.step}")
            return
        baseline = state.ln_vocab
        warm = record.step >= state.ranks[record.rank].start_step + WARM_STEPS
        if warm and baseline and loss > baseline and record.step - self._high_at >= REPEAT_STEPS:
            self._high_at = record.step
            state.log(record.t, Level.WARN, f"loss {loss:.3f} is above ln(vocab) = "
                                            f"{baseline:.2f} at step {record.step}")

    def sync_jump(self, state: RunState, recent: Sequence[StepRecord], record: StepRecord
                  ) -> None:
        if len(recent) < SYNC_JUMP_WINDOW or record.step % SYNC_JUMP_EVERY:
            return
        shares = [r.sync.exposed / r.dt if r.sync and r.dt > 0 else 0.0 for r in recent]
        before, now = median(shares[:-5]), median(shares[-5:])
        jumped = now - before > 0.15 and now > 1.5 * before
        if jumped and record.step - self._sync_at >= REPEAT_STEPS:
            self._sync_at = record.step
            state.log(record.t, Level.WARN, f"sync share jumped from {before:.0%} to {now:.0%} "
                                            f"at step {record.step}")

    @staticmethod
    def recording(state: RunState, info: RankInfo, record: StepRecord, newest: bool) -> None:
        """`lost` counts the records a rank could not write when made (held back, written
        later): it grows while the run dir's disk refuses and stops growing once one went in."""
        if record.lost > info.lost:
            if not info.losing:
                state.log(record.t, Level.WARN, f"rank {record.rank} cannot write records to "
                                                "the run dir (disk full?); it holds them back")
            info.lost, info.losing = record.lost, True
        elif info.losing and newest and record.lost == info.lost:
            info.losing = False
            state.log(record.t, Level.INFO, f"rank {record.rank} records reach the run dir "
                                            f"again ({info.lost} were held back)")
