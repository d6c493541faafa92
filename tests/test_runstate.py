"""RunState: the pure fold of records into what every view shows."""

import math

import pytest

from scalemon.records import CheckpointRecord, EndRecord, StartRecord, StepRecord, SyncTiming
from scalemon.runstate import WARMUP_STEPS, RunState

T0 = 1_800_000_000.0
CONFIG = {"name": "r", "model": {"depth": 2, "vocab": 256}, "train": {"steps": 100},
          "launch": {"world_size": 2}}


def start(rank, start_step=0, t=T0):
    return StartRecord(rank=rank, t=t, pid=100 + rank, host="h", world=2, local_rank=rank,
                       meta={"start_step": start_step, "unigram_entropy": 4.0})


def step(rank, n, *, dt=1.0, loss=5.0, exposed=0.2, comm=0.3, ready_offset=0.0, t=None):
    phases = {"data": 0.05, "forward": 0.25, "backward": 0.5, "optimizer": 0.1}
    sync = SyncTiming(exposed=exposed, comm=comm, overlap=comm - exposed, bytes=1_000_000,
                      buckets=2, last_ready=T0 + n + 0.6 + ready_offset)
    return StepRecord(rank=rank, t=T0 + n * dt + 1 if t is None else t, step=n, dt=dt,
                      phases=phases, tokens=1024, loss=loss, lr=1e-3, sync=sync)


def fed(records, config=CONFIG):
    state = RunState(config)
    for record in records:
        state.apply(record)
    return state


def run_of(steps, **kw):
    return [start(0), start(1)] + [step(r, n, **kw) for n in range(steps) for r in (0, 1)]


def test_split_is_the_median_step_with_sync_taken_out_of_backward():
    state = fed(run_of(20))
    split = state.split()
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
    state = fed(records + records)
    assert state.records == len(records) and state.duplicates == len(records)
    assert list(state.loss_steps) == [0, 1, 2, 3, 4]


def test_out_of_order_and_resume_replaces_redone_steps():
    records = run_of(10, loss=5.0)
    resumed = [start(0, start_step=6, t=T0 + 50), start(1, start_step=6, t=T0 + 50)] + [
        step(r, n, loss=4.0, t=T0 + 50 + n) for n in range(6, 12) for r in (0, 1)]
    state = fed(records + resumed)
    assert list(state.loss_steps) == list(range(12))
    assert state.loss_values[5] == 5.0 and state.loss_values[6] == 4.0
    assert state.step == 11


def test_eta_uses_a_robust_rate_and_skips_checkpoint_steps():
    records = run_of(30, dt=2.0)
    # A slow checkpoint after step 20: the interval 20 -> 21 is not a training rate.
    records.append(CheckpointRecord(rank=0, t=T0 + 42, step=20, path="x", seconds=30))
    records = [r if not (isinstance(r, StepRecord) and r.step > 20)
               else step(r.rank, r.step, dt=2.0, t=T0 + r.step * 2 + 1 + 30) for r in records]
    state = fed(records)
    eta = state.eta()
    assert eta.step_s == pytest.approx(2.0)
    assert eta.remaining_steps == 100 - 30
    assert eta.mid_s == pytest.approx(70 * 2.0)
    assert eta.low_s <= eta.mid_s <= eta.high_s
    assert eta.tok_s == pytest.approx(512)


def test_straggler_is_the_rank_whose_last_bucket_is_late():
    records = [start(0), start(1)] + [
        step(r, n, ready_offset=0.4 if r == 1 else 0.0) for n in range(10) for r in (0, 1)]
    straggler = fed(records).straggler()
    assert straggler.rank == 1 and straggler.wait_s == pytest.approx(0.4)
    assert fed(records).regime()[0] == "straggler-bound"


def test_regimes():
    assert fed(run_of(10, exposed=0.1)).regime()[0] == "compute-bound"
    name, advice = fed(run_of(10, exposed=0.45, comm=0.5)).regime()
    assert name == "sync-bound" and "micro-steps per allreduce" in advice


def test_states_and_events():
    state = fed([start(0), start(1)])
    assert state.state() == "starting"
    for record in run_of(3)[2:]:
        state.apply(record)
    assert state.state() == "training"
    state.tick(T0 + 1000)  # nobody reported for ~1000 s
    assert state.state() == "stalled"
    assert any("has not reported" in e.text for e in state.events)
    state.apply(EndRecord(rank=0, t=T0 + 1001, reason="error", message="boom"))
    assert state.state() == "failed"
    assert any(e.level == "error" and "boom" in e.text for e in state.events)


def test_finished_stopped_and_status():
    records = run_of(3) + [EndRecord(rank=r, t=T0 + 9, reason="stopped") for r in (0, 1)]
    state = fed(records)
    assert state.state() == "stopped"
    state.apply_status({"exit_code": 0, "ended": T0 + 10, "reason": "stopped on request"})
    assert state.state() == "stopped"
    state = fed(run_of(3))
    state.apply_status({"exit_code": 3, "ended": T0 + 10, "reason": "failed"})
    assert state.state() == "failed"
    assert "code 3" in state.events[-1].text


def test_nan_and_high_loss_alerts():
    records = run_of(60, loss=6.0)  # above ln(256) = 5.55 after warm-up
    records.append(step(0, 60, loss=math.nan))
    state = fed(records)
    texts = [e.text for e in state.events]
    assert any("above ln(vocab)" in t for t in texts)
    assert any("loss is nan" in t for t in texts)
    assert math.isnan(state.loss)


def test_lost_records_are_reported():
    lost = StepRecord(rank=1, t=T0 + 5, step=4, dt=1.0, tokens=1, lost=7)
    state = fed(run_of(3) + [lost])
    assert any("could not write 7 records" in e.text for e in state.events)


def test_summary_is_plain_data():
    import json

    summary = fed(run_of(10)).summary()
    assert json.loads(json.dumps(summary))["split"]["sync"] == pytest.approx(0.2)
    assert summary["unigram_entropy"] == 4.0 and summary["ln_vocab"] == pytest.approx(
        math.log(256))


def test_a_sync_jump_is_an_event_once():
    quiet = [step(r, n, exposed=0.1) for n in range(30) for r in (0, 1)]
    loud = [step(r, n, exposed=0.6, comm=0.7) for n in range(30, 45) for r in (0, 1)]
    state = fed([start(0), start(1)] + quiet + loud)
    jumps = [e.text for e in state.events if "sync share jumped" in e.text]
    assert len(jumps) == 1 and "from 10% to 60%" in jumps[0]
    assert not any("sync share jumped" in e.text for e in fed(run_of(45)).events)
