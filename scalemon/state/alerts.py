"""The alert rules a step record can trip, each with its own rate limit: a NaN or infinite
loss, a loss above ln(vocab) once warm, a jump in the sync share, and records a rank cannot
write to the run dir (and when they reach it again)."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from scalemon.core.records import StepRecord
from scalemon.state.events import Level
from scalemon.state.ranks import RankInfo

if TYPE_CHECKING:
    from scalemon.state.fold import RunState

REPEAT_STEPS = 100  # an alert says the same thing again at most this many steps later
WARM_STEPS = 50  # a loss above ln(vocab) before this is the first steps', not a problem
SYNC_JUMP_WINDOW = 20
SYNC_JUMP_EVERY = 5  # checked every 5th step: the fold of a long history stays fast
RECENT_SHARES = 100  # steps the jump is measured against (the fold's RECENT)


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
        if record.step - self._high_at < REPEAT_STEPS:  # the cheap test first: every step
            return
        baseline = state.ln_vocab
        warm = record.step >= state.ranks[record.rank].start_step + WARM_STEPS
        if warm and baseline and loss > baseline:
            self._high_at = record.step
            state.log(record.t, Level.WARN, f"loss {loss:.3f} is above ln(vocab) = "
                                            f"{baseline:.2f} at step {record.step}")

    def sync_jump(self, state: RunState, record: StepRecord) -> None:
        """On the loss rank's shares of exposed sync (state.sync_history): the last 5 steps'
        median against the window's before them."""
        history = state.sync_history
        if len(history) < SYNC_JUMP_WINDOW or record.step % SYNC_JUMP_EVERY:
            return
        shares = list(history)[-RECENT_SHARES:]  # never NaN: a share is exposed / dt, dt > 0
        before, now = statistics.median(shares[:-5]), statistics.median(shares[-5:])
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
