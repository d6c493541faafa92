"""The fold (scalemon.state): records and observations in; the summary every view reads out."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.builders import T0, fed, run_config, start, sync
from support.builders import step as base_step

from scalemon.core.activity import Activity
from scalemon.core.config import RunStatus
from scalemon.core.records import CheckpointRecord, EndRecord, StepRecord
from scalemon.state.analysis import WARMUP_STEPS
from scalemon.state.observations import ActivitySeen, ProcessSeen, StatusSeen, Tick
from scalemon.state.summary import summarize
from scalemon.views.text import records_text

CONFIG = run_config(name="r", model={"depth": 2, "vocab": 256}, train={"steps": 100},
                    launch={"world_size": 2})


def step(rank, n, *, exposed=0.2, comm=0.3, ready_offset=0.0, loss=5.0, **kw):
    timing = sync(exposed, comm, last_ready=T0 + n + 0.6 + ready_offset)
    return base_step(rank, n, loss=loss, timing=timing, lr=1e-3, **kw)


def run_of(steps, **kw):
    return [start(0, unigram_entropy=4.0), start(1, unigram_entropy=4.0)] + \
        [step(r, n, **kw) for n in range(steps) for r in (0, 1)]


def folded(records, now=None):
    return fed(records, CONFIG, now)


def summary(state):
    return summarize(state, T0 + 10_000)


def test_split_is_the_median_step_with_sync_taken_out_of_backward():
    state = folded(run_of(20))
    split = summary(state).split
    assert split.sync == pytest.approx(0.2)
    assert split.backward == pytest.approx(0.3)  # 0.5 backward phase - 0.2 exposed sync
    assert split.forward == pytest.approx(0.25) and split.data == pytest.approx(0.05)
    assert split.other == pytest.approx(1.0 - 0.05 - 0.25 - 0.3 - 0.2 - 0.1)
    assert split.share("sync") == pytest.approx(0.2)
    assert split.comm == pytest.approx(0.3) and split.overlap == pytest.approx(0.1)
    # 2 ranks: ring bus bandwidth = 2·1/2 · 1 MB · 8 / 0.3 s
    assert split.bus_bit_s == pytest.approx(8e6 / 0.3)
    assert split.steps == 2 * (20 - WARMUP_STEPS)


def test_duplicates_from_file_and_socket_count_once():
    records = run_of(5)
    state = folded(records + records)
    assert state.records == len(records) and state.duplicates == len(records)
    assert list(state.loss_steps) == [0, 1, 2, 3, 4]


def test_out_of_order_and_resume_replaces_redone_steps():
    records = run_of(10, loss=5.0)
    resumed = [start(0, start_step=6, t=T0 + 50), start(1, start_step=6, t=T0 + 50)] + [
        step(r, n, loss=4.0, t=T0 + 50 + n) for n in range(6, 12) for r in (0, 1)]
    state = folded(records + resumed)
    assert list(state.loss_steps) == list(range(12))
    assert state.loss_values[5] == 5.0 and state.loss_values[6] == 4.0
    assert state.step == 11


def test_eta_uses_a_robust_rate_and_skips_checkpoint_steps():
    records = run_of(30, dt=2.0)
    # A slow checkpoint after step 20: the interval 20 -> 21 is not a training rate.
    records.append(CheckpointRecord(rank=0, t=T0 + 42, step=20, path="x", seconds=30))
    records = [r if not (isinstance(r, StepRecord) and r.step > 20)
               else step(r.rank, r.step, dt=2.0, t=T0 + r.step * 2 + 1 + 30) for r in records]
    state = folded(records)
    eta = summary(state).eta
    assert eta.step_s == pytest.approx(2.0)
    assert eta.remaining_steps == 100 - 30
    assert eta.mid_s == pytest.approx(70 * 2.0)
    assert eta.low_s <= eta.mid_s <= eta.high_s
    assert eta.tok_s == pytest.approx(512)


def test_straggler_is_the_rank_whose_last_bucket_is_late():
    records = [start(0), start(1)] + [
        step(r, n, ready_offset=0.4 if r == 1 else 0.0) for n in range(10) for r in (0, 1)]
    straggler = summary(folded(records)).straggler
    assert straggler.rank == 1 and straggler.wait_s == pytest.approx(0.4)
    assert summary(folded(records)).regime == "straggler-bound"


def test_regimes():
    assert summary(folded(run_of(10, exposed=0.1))).regime == "compute-bound"
    sync_bound = summary(folded(run_of(10, exposed=0.45, comm=0.5)))
    name, advice = sync_bound.regime, sync_bound.advice
    assert name == "sync-bound" and "micro-steps per allreduce" in advice


def test_states_and_events():
    state = folded([start(0), start(1)])
    assert state.phase == "starting"
    for record in run_of(3)[2:]:
        state.apply(record)
    assert state.phase == "training"
    state.apply(Tick(T0 + 1000))  # nobody reported for ~1000 s
    assert state.phase == "stalled"
    assert any("has not reported" in e.text for e in state.events)
    state.apply(EndRecord(rank=0, t=T0 + 1001, reason="error", message="boom"))
    assert state.phase == "failed"
    assert any(e.level == "error" and "boom" in e.text for e in state.events)


def test_finished_stopped_and_status():
    records = run_of(3) + [EndRecord(rank=r, t=T0 + 9, reason="stopped") for r in (0, 1)]
    state = folded(records)
    assert state.phase == "stopped"
    state.apply(StatusSeen(RunStatus(exit_code=0, ended=T0 + 10, reason="stopped on request")))
    assert state.phase == "stopped"
    state = folded(run_of(3))
    state.apply(StatusSeen(RunStatus(exit_code=3, ended=T0 + 10, reason="failed")))
    assert state.phase == "failed"
    assert "code 3" in state.events[-1].text


def test_nan_and_high_loss_alerts():
    records = run_of(60, loss=6.0)  # above ln(256) = 5.55 after warm-up
    records.append(step(0, 60, loss=math.nan))
    state = folded(records)
    texts = [e.text for e in state.events]
    assert any("above ln(vocab)" in t for t in texts)
    assert any("loss is nan" in t for t in texts)
    assert math.isnan(state.loss)


def test_lost_records_are_reported_once_and_so_is_recording_again():
    def held(n, lost):
        return StepRecord(rank=1, t=T0 + n, step=n, dt=1.0, tokens=1, lost=lost)

    state = folded(run_of(3) + [held(3, 1), held(4, 2), held(5, 3)])
    texts = [e.text for e in state.events]
    assert texts[-1] == ("rank 1 cannot write records to the run dir (disk full?); "
                         "it holds them back")
    assert sum("cannot write" in t for t in texts) == 1 and state.ranks[1].losing
    state.apply(held(4, 2))  # the file's copy, late: nothing new
    assert state.ranks[1].losing
    state.apply(held(6, 3))  # step 5 went in, so the ones held back before it did too
    assert state.events[-1].text == "rank 1 records reach the run dir again (3 were held back)"
    assert not state.ranks[1].losing


def test_summary_is_plain_data():
    data = summary(folded(run_of(10))).to_dict()
    assert json.loads(json.dumps(data))["split"]["sync"] == pytest.approx(0.2)
    assert data["unigram_entropy"] == 4.0 and data["ln_vocab"] == pytest.approx(math.log(256))


def test_a_sync_jump_is_an_event_once():
    quiet = [step(r, n, exposed=0.1) for n in range(30) for r in (0, 1)]
    loud = [step(r, n, exposed=0.6, comm=0.7) for n in range(30, 45) for r in (0, 1)]
    state = folded([start(0), start(1)] + quiet + loud)
    jumps = [e.text for e in state.events if "sync share jumped" in e.text]
    assert len(jumps) == 1 and "from 10% to 60%" in jumps[0]
    assert not any("sync share jumped" in e.text for e in folded(run_of(45)).events)


# --- faults: lost records, a rank that is gone, a rank stuck in sync -------------------

@given(st.lists(st.integers(0, 60), max_size=80))
def test_step_ranges_cover_exactly_the_steps_seen_in_any_order(steps):
    state = folded([start(0)] + [step(0, n, t=T0 + i) for i, n in enumerate(steps)])
    if not steps:
        assert 0 not in state.ranks or state.ranks[0].steps == []
        return
    info = state.ranks[0]
    covered = {n for a, b in info.steps for n in range(a, b + 1)}
    assert covered == set(steps)
    assert all(b[0] > a[1] + 1 for a, b in zip(info.steps, info.steps[1:], strict=False))
    assert info.missing() == max(steps) - min(steps) + 1 - len(set(steps))


def test_records_text_names_the_gaps():
    state = folded(run_of(10))
    assert records_text(summary(state)) == "records: ranks 0-1 steps 0-9, none missing"
    state = folded([r for r in run_of(10)
                    if not (r.rank == 1 and getattr(r, "step", -1) in (3, 4))])
    assert records_text(summary(state)) == ("records: rank 0 steps 0-9; rank 1 steps 0-2, 5-9 "
                                   "(2 missing)")


def test_a_rank_gone_without_an_end_record_fails_the_run_and_names_who_waits():
    state = folded(run_of(10))
    now = T0 + 30
    state.apply(ActivitySeen(0, Activity(step=10, phase="backward", since=now - 8,
                                       waiting_since=now - 7)))
    state.apply(ActivitySeen(1, Activity(step=10, phase="forward", since=now - 8,
                                       waiting_since=None)))
    state.apply(Tick(now))
    assert state.phase == "stalled"
    assert state.events[-1].text == ("rank 0 has waited 7 s in gradient sync at step 10; "
                                     "waiting for rank 1 is in forward (for 8 s)")
    state.apply(ProcessSeen(1, None, now + 1))
    assert state.phase == "failed"
    assert state.events[-1].level == "error"
    assert state.events[-1].text == ("rank 1 (pid 101) is gone without an end record (killed?), "
                                     "in forward of step 10; rank 0 is stuck in sync waiting "
                                     "for it")
    count = state.events.count
    state.apply(ProcessSeen(1, None, now + 2))  # said once
    assert state.events.count == count
    # A rank that ended properly is never "gone".
    ended = folded(run_of(3) + [EndRecord(rank=1, t=T0 + 9, reason="finished", step=2)])
    ended.apply(ProcessSeen(1, None, T0 + 10))
    assert not ended.ranks[1].gone


def test_a_short_wait_is_not_stuck_and_a_stop_vote_is_named():
    state = folded(run_of(10))
    now = T0 + 30
    state.apply(ActivitySeen(0, Activity(step=9, phase="stop vote", since=now - 2,
                                       waiting_since=now - 2)))
    state.apply(Tick(now))
    assert state.phase == "training" and not state.ranks[0].stuck
    state.apply(Tick(now + 10))
    assert state.ranks[0].stuck and "in stop vote at step 9" in state.events[-1].text


def test_a_checkpoint_that_could_not_be_written_is_an_error_event():
    state = folded(run_of(5) + [CheckpointRecord(rank=0, t=T0 + 7, step=4, path="/c",
                                              seconds=0.1, error="checkpoint at step 4 not "
                                              "written: No space left on device")])
    assert state.events[-1].level == "error" and "No space left" in state.events[-1].text
    assert state.last_checkpoint is None and state.phase == "training"


def test_a_stopped_rank_is_named_as_the_one_its_peers_wait_for():
    state = folded(run_of(10))
    now = T0 + 30
    for rank in (0, 1):  # a rank frozen inside its own allreduce also looks like waiting
        state.apply(ActivitySeen(rank, Activity(step=10, phase="backward", since=now - 7,
                                                waiting_since=now - 6)))
    state.apply(ProcessSeen(1, "stopped", now - 5))
    assert "rank 1 (pid 101) is stopped" in state.events[-1].text
    state.apply(ProcessSeen(0, "sleeping", now))
    state.apply(Tick(now))
    assert state.events[-1].text == ("rank 0 has waited 6 s in gradient sync at step 10; "
                                     "waiting for rank 1 is stopped")
    assert not state.ranks[1].stuck and state.phase == "stalled"
    state.apply(ProcessSeen(1, "running", now + 1))
    assert state.events[-1].text == "rank 1 (pid 101) runs again"
    state.apply(ProcessSeen(1, None, now + 2))
    assert state.ranks[1].gone and state.phase == "failed"
