"""Forecasts from a measured step: each part scaled by what drives it, each figure labelled."""

from __future__ import annotations

import dataclasses

import pytest

from scalemon.core import scaling
from scalemon.core.forecast import (
    MEASURED,
    MODELLED,
    SCALED,
    Measured,
    Target,
    predict_device,
    predict_here,
)
from scalemon.core.plan import build_run_plan, render_run_plan

SHAPE = scaling.ModelShape(depth=4, vocab=65_536)
D4_PARAMS = scaling.param_count(SHAPE).total


def measured(**changes) -> Measured:
    """Two gloo ranks of d4, 512 tokens a rank in one micro-step (the README's demo)."""
    base = Measured(
        name="d4", shape=SHAPE, seq_len=512, n_params=D4_PARAMS, params_counted=True, world=2,
        nodes=1, micro_steps=1, tokens_per_step=1024, samples=20, step_s=2.504, compute_s=1.9,
        head_s=None, data_s=0.004, optimizer_s=0.2, other_s=0.15, sync_s=0.2,
        sync_lower_bound=False, wait_s=0.05, sync_bytes=4 * D4_PARAMS, bus_bit_s=16e9,
        muon=False, sharded=False, optimizer_name="AdamW", device="cpu", link_bit_s=None)
    return dataclasses.replace(base, **changes)


def parts(prediction) -> dict[str, float]:
    return {p.name: p.seconds for p in prediction.parts}


def test_the_runs_own_setup_is_its_measurement():
    m = measured()
    got = predict_here(m, Target(4, 512, 1024, 1))
    assert got.measured and {p.basis for p in got.parts} == {MEASURED}
    assert parts(got) == pytest.approx({"compute": 1.9, "data": 0.004, "wait": 0.05,
                                        "optimizer": 0.2, "sync": 0.2, "other": 0.15})
    assert got.step_s == pytest.approx(2.504) and got.step_6n_s == pytest.approx(2.504)
    assert got.tok_s == pytest.approx(1024 / 2.504)


def test_parts_whose_medians_add_past_the_median_step_are_scaled_to_it():
    m = measured(step_s=2.0)  # the parts' medians add up to 2.504 s
    own = predict_here(m, Target(4, 512, 1024, 1))
    assert own.step_s == pytest.approx(2.0) and parts(own)["compute"] == pytest.approx(
        1.9 * 2.0 / 2.504)
    deeper = predict_here(m, Target(12, 512, 1024, 1))
    assert deeper.step_s == pytest.approx(predict_here(measured(), Target(12, 512, 1024, 1))
                                          .step_s * 2.0 / 2.504)


def test_another_depth_scales_each_part_by_its_own_work():
    m = measured()
    got = predict_here(m, Target(12, 512, 1024, 1))
    d12 = scaling.ModelShape(depth=12, vocab=65_536)
    flops = scaling.flops_per_token_exact(d12, 512) / scaling.flops_per_token_exact(SHAPE, 512)
    params = scaling.param_count(d12).total / D4_PARAMS
    optimizer = scaling.optimizer_flops(d12, False) / scaling.optimizer_flops(SHAPE, False)
    assert parts(got) == pytest.approx({
        "compute": 1.9 * flops, "data": 0.004, "wait": 0.05 * flops,
        "optimizer": 0.2 * optimizer, "sync": 0.2 * params, "other": 0.15})
    compute_6n = 1.9 * params  # 6N: FLOPs in proportion to the parameters
    assert got.step_6n_s == pytest.approx(got.step_s - 1.9 * flops + compute_6n)
    basis = {p.name: p.basis for p in got.parts}
    assert basis == {"compute": SCALED, "data": SCALED, "wait": SCALED, "optimizer": SCALED,
                     "sync": SCALED, "other": MEASURED}


def test_the_loss_head_scales_with_the_logits_and_the_rest_with_the_flops():
    m = measured(head_s=0.6)
    got = predict_here(m, Target(12, 1024, 2048, 1))
    d12 = scaling.ModelShape(depth=12, vocab=65_536)
    flops = scaling.flops_per_token_exact(d12, 1024) / scaling.flops_per_token_exact(SHAPE, 512)
    # a micro-step of 1,024 tokens a rank: twice the logits, each as dear; the matmuls by FLOPs
    assert parts(got)["compute"] == pytest.approx(1.3 * 2 * flops + 0.6 * 2)
    assert "the loss head 17.9 ns a logit, measured" in got.parts[0].source


def test_doubling_the_tokens_a_step_doubles_the_micro_steps_not_the_sync():
    got = predict_here(measured(), Target(4, 512, 2048, 1))
    assert got.micro_steps == 2 and got.tokens_per_step == 2048
    assert parts(got) == pytest.approx({"compute": 3.8, "data": 0.008, "wait": 0.1,
                                        "optimizer": 0.2, "sync": 0.2, "other": 0.15})


def test_a_longer_sequence_adds_attention_flops():
    got = predict_here(measured(), Target(4, 1024, 2048, 1))
    ratio = scaling.flops_per_token_exact(SHAPE, 1024) / scaling.flops_per_token_exact(SHAPE, 512)
    assert got.micro_steps == 1  # a micro-step now holds 1,024 tokens a rank
    assert parts(got)["compute"] == pytest.approx(1.9 * 2 * ratio)


def test_more_nodes_price_sync_by_the_ring_model_over_the_link():
    got = predict_here(measured(), Target(4, 512, 4096, 2, link_bit_s=1e9))
    sync = next(p for p in got.parts if p.name == "sync")
    assert got.world == 4 and sync.basis == MODELLED
    assert sync.seconds == pytest.approx(
        scaling.ring_allreduce_seconds(4 * D4_PARAMS, 2, 1e9))
    assert "ring allreduce over 2 nodes at 1 Gbit/s (--link), none of it overlapped" in \
        sync.source


def test_one_rank_has_no_sync_and_a_sharded_optimizer_splits_its_work():
    single = predict_here(measured(world=1, sync_s=0.0, wait_s=0.0), Target(4, 512, 512, 1))
    assert parts(single)["sync"] == 0.0
    sharded = measured(sharded=True, muon=True, sync_bytes=8 * D4_PARAMS)
    got = predict_here(sharded, Target(4, 512, 1024, 1))
    assert parts(got)["optimizer"] == pytest.approx(0.2)  # same setup: as measured
    more = predict_here(sharded, Target(4, 512, 2048, 2, link_bit_s=1e9))
    assert parts(more)["optimizer"] == pytest.approx(0.1)  # twice the ranks share the work
    sync = next(p for p in more.parts if p.name == "sync")
    # reduce_scatter + all_gather move the parameters twice: one allreduce's worth
    assert sync.seconds == pytest.approx(scaling.ring_allreduce_seconds(4 * D4_PARAMS, 2, 1e9))


def test_muon_work_is_newton_schulz_on_the_matrices():
    shape = scaling.ModelShape(depth=1, vocab=2, aspect_ratio=64)
    d = 64
    per_iteration = 4 * (4 * d**3 + 2 * d**3) + 2 * (4 * d * d * 4 * d + 2 * d**3)
    elementwise = scaling.ADAMW_FLOPS_PER_PARAM * scaling.param_count(shape).total
    assert scaling.optimizer_flops(shape, True) == 5 * per_iteration + elementwise
    assert scaling.optimizer_flops(shape, False) == elementwise


def test_nanochat_value_embeddings_count_as_parameters_not_matmuls():
    plain = scaling.ModelShape(depth=4, vocab=4096)
    nanochat = dataclasses.replace(plain, value_embeddings=True)
    assert nanochat.value_embedding_layers == 2  # layers 3 and 1
    assert scaling.param_count(nanochat).total - scaling.param_count(plain).total == \
        2 * 4096 * 256
    assert scaling.flops_per_token_exact(nanochat, 512) == \
        scaling.flops_per_token_exact(plain, 512)


def test_a_gpu_is_modelled_at_its_mfu_and_priced():
    got = predict_device(measured(), "h100", 12, 2048, 524_288, mfu=0.4, price=2.0)
    d12 = scaling.ModelShape(depth=12, vocab=65_536)
    step = 524_288 * scaling.flops_per_token_exact(d12, 2048) / (989.4e12 * 0.4)
    assert got.step_s == pytest.approx(step) and got.parts[0].basis == MODELLED
    assert got.steps == -(-20 * scaling.param_count(d12).total // 524_288)
    assert got.cost == pytest.approx(step * got.steps / 3600 * 2.0)


def test_the_rendered_plan_labels_every_figure():
    plan = build_run_plan(measured(), (4, 12), 512, 1024, 1, None, ("h100",), 0.4, "bf16",
                          None, 20.0, None)
    text = render_run_plan(plan)
    assert "measured in d4: d4 (dim 256, vocab 65,536, 36.7M parameters counted on the module)" \
        in text
    rows = [line for line in text.splitlines() if line.startswith(("here", "one H100"))]
    assert [row.split()[-1] for row in rows] == ["measured", "modelled", "scaled", "modelled"]
    assert "here: sync: scaled, 200 ms measured, scaled by the gradients' bytes" in text
    assert "one H100 SXM at 40% MFU: compute: modelled, 40% MFU of the H100 SXM's bf16 peak" \
        in text


def test_a_nanochat_run_is_measured_with_its_own_shape_optimizer_and_sharding():
    from support.builders import T0, fed, run_config, start, step

    from scalemon.core.records import CollectiveTiming, MetaRecord
    from scalemon.state.summary import summarize

    shape = scaling.ModelShape(depth=4, vocab=4096, head_dim=64, value_embeddings=True)
    n_params = scaling.param_count(shape).total
    found = {"n_params": n_params, "param_bytes": 4 * n_params, "vocab": 4096, "depth": 4,
             "dim": 256, "n_head": 4, "embedding_tables": 3, "optimizer": "MuonAdamW",
             "process_group": "gloo", "ddp": False, "seq_len": 512}
    moved = CollectiveTiming(count=21, bytes=8 * n_params, blocked=0.04, first_launch=T0)
    records = [start(0), start(1), MetaRecord(rank=0, t=T0, meta=found),
               *(step(r, i, tokens=1024, collectives=moved) for i in range(8) for r in (0, 1))]
    config = run_config(command="script", script=["-m", "scripts.base_train"])
    m = summarize(fed(records, config), T0 + 100).measured
    assert m is not None
    assert m.shape == shape and m.n_params == n_params and m.params_counted
    assert (m.seq_len, m.world, m.tokens_per_step, m.tokens_per_micro) == (512, 2, 1024, 512)
    assert m.muon and m.sharded and m.optimizer_name == "MuonAdamW"
    assert m.sync_bytes == 8 * n_params and m.bytes_per_param() == 4.0
    assert m.compute_s == pytest.approx(0.75) and m.sync_s == pytest.approx(0.04)
