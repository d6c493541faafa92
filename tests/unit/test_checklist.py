"""The plumbing checklist from folded records: each check fails, waits and passes on the
evidence it names, and the verdict says when the run has done its job."""

from __future__ import annotations

import math

import pytest
from support.builders import T0, fed, run_config, start, step, sync

from scalemon.core.records import CheckpointRecord, EndRecord
from scalemon.state.checklist import FAIL, PASS, PENDING, UNKNOWN
from scalemon.state.fold import RECENT
from scalemon.state.summary import summarize
from scalemon.views.text import checklist_strip, verdict_text

VOCAB = 512
N_PARAMS = 250_000
TRAINER = run_config(command="train", model={"depth": 2, "vocab": VOCAB, "seq_len": 64},
                     train={"steps": 100, "checkpoint_every": 10, "tokens_per_step": 1024,
                            "backend": "gloo"},
                     launch={"world_size": 2})


def starts(**meta):
    meta = {"n_params": N_PARAMS, "param_bytes": 4 * N_PARAMS, "unigram_entropy": 5.0, **meta}
    return [start(r, **meta) for r in (0, 1)]


def synced_steps(first: int, last: int, loss=lambda i: 6.0 - 0.05 * i, later: float = 0.0):
    """Both ranks' DDP steps moving the fp32 parameters' bytes, with distinct batches (`later`
    seconds on: a resumed run's steps again)."""
    return [step(r, i, t=T0 + i + 1 + later, loss=loss(i), timing=sync(nbytes=4 * N_PARAMS),
                 data=1000 * i + r)
            for i in range(first, last) for r in (0, 1)]


def checks(records, config=TRAINER, now=T0 + 1000):
    summary = summarize(fed(records, config, now=now), now)
    assert summary.checklist is not None
    return {c.key: c for c in summary.checklist.checks}, summary


def test_a_fresh_run_waits_on_every_check_it_can_make():
    got, summary = checks(starts())
    assert {k: c.state for k, c in got.items()} == {
        "group": PENDING, "synced": PENDING, "ranks": PENDING, "data": PENDING,
        "distinct": UNKNOWN, "checkpoint": PENDING, "resume": PENDING, "learning": PENDING}
    assert verdict_text(summary) == ("plumbing: 0 of 7 proved; to prove: group, synced, ranks, "
                                     "data, checkpoint, resume, unigram")


def test_a_run_that_checkpointed_resumed_and_learned_is_validated():
    records = [*starts(), *synced_steps(0, 40),
               CheckpointRecord(rank=0, t=T0 + 40, step=29, path="ck/29.pt", seconds=0.1),
               start(0, t=T0 + 50, start_step=30, n_params=N_PARAMS, unigram_entropy=5.0),
               start(1, t=T0 + 50, start_step=30), *synced_steps(30, 60, later=50)]
    got, summary = checks(records)
    assert all(c.state == PASS for c in got.values()), {k: c.detail for k, c in got.items()}
    assert got["synced"].detail == "every recent step, 1.00 MB a step = 1.0x the parameters' bytes"
    assert got["checkpoint"].detail == "written at step 29 (ck/29.pt)"
    assert got["resume"].detail == "resumed at step 30: loss 4.650 before, 4.400 after"
    assert got["distinct"].detail == "a different batch on every rank, 70 steps compared"
    assert got["learning"].state == PASS and got["learning"].step is not None
    assert summary.checklist.validated_step == max(c.step for c in got.values())
    assert verdict_text(summary).startswith(
        f"plumbing validated at step {summary.checklist.validated_step:,}: this run has done "
        "its job. d12 here: ")
    assert "; on one H100 SXM at 40% MFU: " in verdict_text(summary)
    assert checklist_strip(summary) == ("plumbing ✓group ✓synced ✓ranks ✓data ✓distinct "
                                        "✓checkpoint ✓resume ✓unigram")


def test_a_resume_whose_loss_starts_over_fails():
    records = [*starts(), *synced_steps(0, 40),
               start(0, t=T0 + 50, start_step=30), start(1, t=T0 + 50, start_step=30),
               *synced_steps(30, 40, loss=lambda i: math.log(VOCAB), later=50)]
    got, _ = checks(records)
    assert got["resume"].state == FAIL
    assert got["resume"].detail.endswith(f"{math.log(VOCAB):.3f} after: the loss started over")


def test_same_batches_on_every_rank_fail_and_say_so_once():
    same = [step(r, i, timing=sync(nbytes=4 * N_PARAMS), data=7 * i)
            for i in range(10) for r in (0, 1)]
    got, summary = checks([*starts(), *same])
    assert got["distinct"].state == FAIL
    assert got["distinct"].detail == "ranks got the same batch at 10 of 10 steps (first step 0)"
    assert [e.text for e in summary.events if "same batch" in e.text] == [
        "ranks trained on the same batch at step 0: is the data sharded by rank?"]


def test_a_rank_that_never_steps_fails_once_the_others_have():
    ahead = [step(0, i, timing=sync(nbytes=4 * N_PARAMS)) for i in range(3)]
    got, _ = checks([*starts(), *ahead])
    assert got["ranks"].state == PENDING
    assert got["ranks"].detail == "waiting for rank 1's first step"
    ahead = [step(0, i, timing=sync(nbytes=4 * N_PARAMS)) for i in range(8)]
    got, _ = checks([*starts(), *ahead])
    assert got["ranks"].state == FAIL
    assert got["ranks"].detail == "rank 1 has not stepped (the others are at step 7)"
    ended = EndRecord(rank=1, t=T0 + 2, reason="finished")
    got, _ = checks([*starts(), step(0, 0), ended])
    assert got["ranks"].detail == "rank 1 ended without a step (finished)"


@pytest.mark.parametrize("moved, state", [(4 * N_PARAMS, PASS), (N_PARAMS, FAIL)])
def test_gradients_synced_is_judged_by_bytes_against_the_parameters(moved, state):
    records = [step(r, i, timing=sync(nbytes=moved)) for i in range(6) for r in (0, 1)]
    got, _ = checks([*starts(param_bytes=4 * N_PARAMS), *records])
    assert got["synced"].state == state


def test_steps_with_no_sync_fail_the_sync_check():
    records = [step(r, i) for i in range(6) for r in (0, 1)]
    got, _ = checks([*starts(), *records])
    assert got["synced"].state == FAIL
    assert got["synced"].detail.startswith("12 of 12 recent rank-steps moved no gradients")


def test_checkpoints_fail_when_off_or_unwritten():
    off = run_config(command="train", model={"depth": 2, "vocab": VOCAB},
                     train={"checkpoint_every": 0})
    got, _ = checks([*starts(), *synced_steps(0, 5)], off)
    assert (got["checkpoint"].state, got["checkpoint"].detail) == (
        FAIL, "checkpoints are off (--checkpoint-every 0)")
    failed = CheckpointRecord(rank=0, t=T0 + 6, step=4, path="ck", seconds=0.0,
                              error="checkpoint at step 4 not written: No space left on device")
    got, _ = checks([*starts(), *synced_steps(0, 5), failed])
    assert got["checkpoint"].state == FAIL and "at step 4, failed" in got["checkpoint"].detail


def test_data_that_starves_the_step_fails():
    slow = {"data": 0.6, "forward": 0.1, "backward": 0.2, "optimizer": 0.05}
    records = [step(r, i, phases=slow, timing=sync(nbytes=4 * N_PARAMS))
               for i in range(8) for r in (0, 1)]
    got, _ = checks([*starts(), *records])
    assert got["data"].state == FAIL and got["data"].detail.endswith("the loader starves the step")


def test_one_process_and_a_script_skip_what_they_cannot_show():
    single = run_config(model={"depth": 2, "vocab": VOCAB}, launch={"world_size": 1},
                        command="script", script=["t.py"])
    records = [start(0, world=1), *(step(0, i) for i in range(5))]
    got, summary = checks(records, single)
    assert {k for k, c in got.items() if c.state == UNKNOWN} == {
        "group", "synced", "distinct", "resume", "learning"}
    assert got["resume"].detail == ("a script resumes by its own flags, which the probe does "
                                    "not see")
    assert verdict_text(summary) == "plumbing: 2 of 3 proved; to prove: checkpoint"


def test_the_status_line_says_how_far_the_checklist_got():
    from scalemon.views.headless import status_line

    _, waiting = checks(starts())
    assert status_line(waiting).endswith(" | plumbing 0/8")
    records = [*starts(), *synced_steps(0, 40),
               CheckpointRecord(rank=0, t=T0 + 40, step=29, path="ck/29.pt", seconds=0.1),
               start(0, t=T0 + 50, start_step=30), start(1, t=T0 + 50, start_step=30),
               *synced_steps(30, 60, later=50)]
    _, done = checks(records)
    assert f"plumbing validated at step {done.checklist.validated_step:,}" in status_line(done)


def test_a_replay_folding_one_rank_file_after_the_other_still_compares_batches():
    # 300 steps, more than the fold keeps open (RECENT, to a quarter more): the last of rank
    # 0's wait for rank 1's
    by_rank = sorted(synced_steps(0, 300), key=lambda r: r.rank)
    got, _ = checks([*starts(), *by_rank])
    assert got["distinct"].state == PASS
    compared = int(got["distinct"].detail.split(", ")[1].split()[0])
    assert got["distinct"].detail.startswith("a different batch on every rank")
    assert RECENT <= compared <= RECENT * 5 // 4
