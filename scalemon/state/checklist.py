"""The plumbing checklist: what a run has proved about its distributed setup, item by item.

A small run (d4 on CPU) is worth running until it has shown that the plumbing works: the
process group is up, gradients are synced every step, every rank steps, the data keeps up and
differs by rank, a checkpoint is written and a resume continues the loss, and the model learns
past unigram statistics. Each check passes, fails, waits (pending) or cannot be told for this
run (n/a), with the evidence in words and the step it was proved at. Pure over the fold.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scalemon.core.units import format_bytes
from scalemon.state.analysis import Plumbing, Split
from scalemon.state.fold import RESUME_LOSSES

if TYPE_CHECKING:
    from scalemon.state.fold import RunState
    from scalemon.state.series import Bucket

PASS, FAIL, PENDING, UNKNOWN = "pass", "fail", "pending", "n/a"
DATA_BOUND = 0.2  # data wait above this share of a step starves it (as the regime says)
SYNCED_SHARE = 0.9  # bytes moved a step over the parameters' below which some are not synced
NEVER_STEPPED_AFTER = 5  # steps of rank 0 after which a rank with none has failed to step
RESUME_SLACK = 0.5  # a resumed loss continues if within this share of the way back to ln V


TITLES = {"group": "process group up", "synced": "gradients synced every step",
          "ranks": "every rank stepping", "data": "data keeps up", "distinct": "distinct data "
          "per rank", "checkpoint": "a checkpoint written", "resume": "a resume continues the "
          "loss", "learning": "loss below unigram entropy"}


@dataclass(frozen=True)
class Check:
    key: str
    label: str  # a word for the one-line strip
    state: str  # pass | fail | pending | n/a
    detail: str  # the evidence, or what is still missing
    step: int | None = None  # the step it was proved at

    @property
    def title(self) -> str:
        return TITLES[self.key]


@dataclass(frozen=True)
class Checklist:
    checks: tuple[Check, ...]

    def of(self, state: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.state == state)

    @property
    def validated_step(self) -> int | None:
        """The step the last check was proved at, once none fails or waits."""
        if self.of(FAIL) or self.of(PENDING) or not self.of(PASS):
            return None
        return max((c.step for c in self.of(PASS) if c.step is not None), default=None)

    @property
    def validated(self) -> bool:
        return self.validated_step is not None


def checklist(state: RunState, split: Split | None, plumbing: Plumbing | None,
              buckets: Iterable[Bucket], unigram_entropy: float | None) -> Checklist:
    first = state.loss_steps[0] if state.loss_steps else None
    return Checklist((
        _group(state, plumbing, first),
        _synced(state, plumbing),
        _ranks(state),
        _data(state, split, first),
        _distinct(state),
        _checkpoint(state),
        _resume(state),
        _learning(state, buckets, unigram_entropy),
    ))


def _group(state: RunState, plumbing: Plumbing | None, first: int | None) -> Check:
    label = "group"
    world = state.world or 1
    if world < 2:
        return Check("group", label, UNKNOWN, "one rank: no process group needed")
    if plumbing is None or plumbing.backend == "":
        return Check("group", label, PENDING, "waiting for a step to say")
    if plumbing.isolated:
        return Check("group", label, FAIL, f"{world} ranks, no process group: each trains "
                                           "its own copy")
    if first is None:
        return Check("group", label, PENDING, f"{plumbing.backend}, waiting for a step")
    return Check("group", label, PASS, f"{plumbing.backend} up, {world} ranks", first)


def _synced(state: RunState, plumbing: Plumbing | None) -> Check:
    label = "synced"
    steps = [r for recent in state.recent.values() for r in recent]
    if (state.world or 1) < 2:
        return Check("synced", label, UNKNOWN, "one rank: nothing to sync")
    if plumbing is None or not steps:
        return Check("synced", label, PENDING, "waiting for steps")
    if plumbing.isolated:
        return Check("synced", label, FAIL, "no process group: nothing is synced")
    unsynced = [r for r in steps if r.sync is None and not (r.collectives and
                                                            r.collectives.count)]
    if unsynced:
        return Check("synced", label, FAIL, f"{len(unsynced)} of {len(steps)} recent "
                                            f"rank-steps moved no gradients "
                                            f"(first: rank {unsynced[0].rank} step "
                                            f"{unsynced[0].step})")
    moved = f"{format_bytes(plumbing.bytes_per_step)} a step"
    share = plumbing.synced_share
    if share is None:
        return Check("synced", label, PASS, f"every recent step synced, {moved} (the "
                                            "parameters' bytes are not known)",
                     min(r.step for r in steps))
    if share < SYNCED_SHARE:
        return Check("synced", label, FAIL, f"{moved} is {share:.2f}x the parameters' bytes: "
                                            "some gradients are not synced")
    return Check("synced", label, PASS, f"every recent step, {moved} = {share:.1f}x the "
                                        "parameters' bytes", min(r.step for r in steps))


def _ranks(state: RunState) -> Check:
    label = "ranks"
    world = state.world or len(state.ranks) or 1
    infos = [state.ranks.get(rank) for rank in range(world)]
    stepped = [i for i in infos if i is not None and i.steps]
    lead = max((i.last_step for i in stepped), default=-1)
    over = state.phase.ended
    # Of the ranks that stepped and then stopped short, the first to stop is the one to name;
    # at the same step, one that never said why (killed) before those its end took down.
    stopped = [(info.last_step, info.ended is not None, rank) for rank, info in enumerate(infos)
               if info is not None and info.steps and
               (info.ended == "error" or info.ended is None and (info.gone or over))]
    if stopped:
        last, said, rank = min(stopped)
        why = "it ended in an error" if said else "no end record (killed or lost)"
        return Check("ranks", label, FAIL, f"rank {rank} stopped at step {last}: {why}")
    for rank, info in enumerate(infos):
        if info is not None and info.steps:
            continue
        if info is not None and (info.ended or info.gone):
            return Check("ranks", label, FAIL, f"rank {rank} ended without a step"
                                               + (f" ({info.ended})" if info.ended else ""))
        if lead >= NEVER_STEPPED_AFTER:
            return Check("ranks", label, FAIL, f"rank {rank} has not stepped (the others are "
                                               f"at step {lead})")
        return Check("ranks", label, PENDING, f"waiting for rank {rank}'s first step")
    proved = max(i.steps[0][0] for i in stepped)
    return Check("ranks", label, PASS, f"all {world} stepping" if world > 1 else
                 "the rank is stepping", proved)


def _data(state: RunState, split: Split | None, first: int | None) -> Check:
    label = "data"
    if split is None or not split.total > 0 or first is None:
        return Check("data", label, PENDING, "waiting for steps past warm-up")
    timed = any("data" in r.phases for recent in state.recent.values() for r in recent)
    if not timed and state.config.command == "script":
        return Check("data", label, UNKNOWN, "the script's loader is not a torch DataLoader: "
                                             "its time is in the split's other")
    share = split.share("data")
    said = f"data wait {share:.0%} of a step"
    if share > DATA_BOUND:
        return Check("data", label, FAIL, f"{said}: the loader starves the step")
    return Check("data", label, PASS, said, first)


def _distinct(state: RunState) -> Check:
    label = "distinct"
    check = state.data_check
    if (state.world or 1) < 2:
        return Check("distinct", label, UNKNOWN, "one rank")
    if check.same:
        return Check("distinct", label, FAIL, f"ranks got the same batch at {check.same} of "
                                              f"{check.checked} steps (first step "
                                              f"{check.first_same})")
    if check.checked:
        return Check("distinct", label, PASS, f"a different batch on every rank, {check.checked}"
                                              " steps compared", check.first_step)
    return Check("distinct", label, UNKNOWN, "the probe cannot tell (no batches of token ids "
                                             "on the CPU)")


def _checkpoint(state: RunState) -> Check:
    label = "checkpoint"
    written = state.first_checkpoint
    if written is not None:
        return Check("checkpoint", label, PASS, f"written at step {written.step} "
                                                f"({written.path})", written.step)
    if state.checkpoint_steps:
        return Check("checkpoint", label, FAIL, f"none written: the last try, at step "
                                                f"{max(state.checkpoint_steps)}, failed")
    every = state.config.train.checkpoint_every if state.config.command == "train" else None
    if every == 0:
        return Check("checkpoint", label, FAIL, "checkpoints are off (--checkpoint-every 0)")
    return Check("checkpoint", label, PENDING, "no checkpoint yet" +
                 (f" (every {every} steps)" if every else ""))


def _resume(state: RunState) -> Check:
    label = "resume"
    if not state.resumes and state.config.command != "train":
        return Check("resume", label, UNKNOWN, "a script resumes by its own flags, which the "
                                               "probe does not see")
    if not state.resumes:
        how = f"`scalemon run --resume {state.config.name}"
        how = f"{how} [--steps N]` continues it" if state.phase.ended else \
            f"stop it (s, or Ctrl-C), then {how}`"
        return Check("resume", label, PENDING, f"no resume yet: {how}")
    resume = state.resumes[-1]
    after = [v for step, v in zip(state.loss_steps, state.loss_values, strict=True)
             if step >= resume.step and math.isfinite(v)][:RESUME_LOSSES]
    if resume.loss_before is None:
        return Check("resume", label, UNKNOWN, f"resumed at step {resume.step}: no loss "
                                               "from before it to compare")
    if len(after) < RESUME_LOSSES:
        return Check("resume", label, PENDING, f"resumed at step {resume.step}: waiting for "
                                               f"{RESUME_LOSSES} steps")
    now = statistics.median(after)
    said = f"resumed at step {resume.step}: loss {resume.loss_before:.3f} before, {now:.3f} after"
    baseline = state.ln_vocab
    slack = RESUME_SLACK * (baseline - resume.loss_before) if baseline else 0.5
    if now > resume.loss_before + max(slack, 0.05):
        return Check("resume", label, FAIL, f"{said}: the loss started over")
    return Check("resume", label, PASS, said, resume.step + RESUME_LOSSES - 1)


def _learning(state: RunState, buckets: Iterable[Bucket], entropy: float | None) -> Check:
    label = "unigram"
    if entropy is None:
        return Check("learning", label, UNKNOWN, "the data's unigram entropy is not known")
    below = next((b for b in buckets if math.isfinite(b.smooth) and b.smooth < entropy), None)
    if below is None:
        loss = state.smoothed_loss()
        now = f"loss {loss:.3f}" if loss is not None else "no loss yet"
        return Check("learning", label, PENDING, f"{now}, unigram entropy {entropy:.3f}")
    return Check("learning", label, PASS, f"loss {below.smooth:.3f} under the unigram "
                                          f"entropy {entropy:.3f}", below.last)
