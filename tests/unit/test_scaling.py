"""The scaling model against DESIGN.md's checked numbers."""

import math

import pytest

from scalemon.core import scaling
from scalemon.core.scaling import ModelShape
from scalemon.core.units import format_params

CHECKED = {  # depth: (dim, params, embedding share, 6N, exact at T=2048, fp32 grad bytes)
    4: (256, "36.7M", 0.91, 220e6, 145e6, 147e6),
    8: (512, "92.3M", 0.73, 554e6, 453e6, 369e6),
    12: (768, "185.6M", 0.54, 1.11e9, 1.04e9, 742e6),
    20: (1280, "561.0M", 0.30, 3.37e9, 3.49e9, 2.24e9),
}


def close(value, checked, digits):
    """Equal to the checked figure as printed (to `digits` significant digits)."""
    return float(f"{value:.{digits}g}") == pytest.approx(checked)


@pytest.mark.parametrize("depth", CHECKED)
def test_checked_table(depth):
    dim, params, share, six_n, exact, grads = CHECKED[depth]
    shape = ModelShape(depth)
    count = scaling.param_count(shape)
    assert shape.dim == dim
    assert count.total == 12 * dim**2 * depth + 2 * 65_536 * dim
    assert format_params(count.total) == params
    assert round(count.embedding_share, 2) == share
    assert close(scaling.flops_per_token_6n(shape), six_n, 3)
    assert close(scaling.flops_per_token_exact(shape, 2048), exact, 3)
    assert close(scaling.grad_bytes(shape, "fp32"), grads, 3)
    assert scaling.grad_bytes(shape, "bf16") * 2 == scaling.grad_bytes(shape, "fp32")


def test_exact_counts():
    assert scaling.param_count(ModelShape(4)).total == 36_700_160
    assert scaling.param_count(ModelShape(20)).total == 560_988_160
    assert ModelShape(4).n_head == 2 and ModelShape(1).n_head == 1


def test_d4_to_d12_extrapolation():
    d4, d12 = ModelShape(4), ModelShape(12)
    by_6n = scaling.tok_s_from_reference(115, d4, d12, "6N")
    by_exact = scaling.tok_s_from_reference(115, d4, d12, "exact", 2048)
    assert round(by_6n, 1) == 22.7
    assert round(by_exact, 1) == 16.0
    assert round(65_536 / by_6n / 60) == 48
    assert round(65_536 / by_exact / 60) == 68
    years = 200_000 * 65_536 / scaling.SECONDS_PER_YEAR
    assert round(years / by_6n) == 18
    assert round(years / by_exact) == 26


def test_ring_allreduce_d12_gigabit_two_nodes():
    nbytes = scaling.grad_bytes(ModelShape(12))
    seconds = scaling.ring_allreduce_seconds(nbytes, 2, 1e9)
    assert seconds == pytest.approx(5.94, abs=0.01)  # "about 6 s a step, not 12 s"
    assert scaling.ring_allreduce_seconds(nbytes, 1, 1e9) == 0.0
    # 4 nodes move 2·3/4 = 1.5x the bytes; latency adds 2(n−1) hops.
    assert scaling.ring_allreduce_seconds(1e9, 4, 1e9, 0.001) == pytest.approx(12 + 0.006)


def test_measured_gloo_allreduce_is_near_the_model():
    # DESIGN.md: 100 MB over 1 Gbit/s between two namespaces took 0.84 s.
    assert scaling.ring_allreduce_seconds(100e6, 2, 1e9) == pytest.approx(0.84, rel=0.05)


def test_sync_share_and_accumulation():
    assert scaling.sync_share(9.0, 1.0) == pytest.approx(0.1)
    assert scaling.sync_share(0, 0) == 0.0
    # one allreduce of 6 s against 1 s compute per micro-step: k >= 6·0.9/0.1 = 54
    k = scaling.accumulation_for_sync_share(1.0, 6.0, 0.10)
    assert k == 54
    assert scaling.sync_share(k * 1.0, 6.0) <= 0.10
    assert scaling.sync_share((k - 1) * 1.0, 6.0) > 0.10
    assert scaling.accumulation_for_sync_share(1.0, 0.0, 0.1) == 1
    with pytest.raises(ValueError):
        scaling.accumulation_for_sync_share(1.0, 1.0, 1.5)


def test_device_presets_and_mfu():
    h100 = scaling.device_preset("H100")
    assert h100.peak_bf16 == pytest.approx(989.4e12)
    for key in ("h100", "h200", "a100", "mi300x", "rtx4090", "rtx4070"):
        preset = scaling.device_preset(key)
        assert preset.peak_bf16 > preset.peak_fp32 > 0 and preset.source
    with pytest.raises(ValueError, match="unknown device"):
        scaling.device_preset("h900")
    shape = ModelShape(12)
    tok_s = scaling.tok_s_from_device(h100.peak_bf16, 0.4, shape)
    assert scaling.mfu(tok_s, shape, h100.peak_bf16) == pytest.approx(0.4)
    # DESIGN.md's measured d12 on one H100 (243k tok/s) is about 25% MFU.
    assert scaling.mfu(243e3, shape, h100.peak_bf16) == pytest.approx(0.255, abs=0.005)


def test_horizon_cost_and_chinchilla():
    assert scaling.cost(3600 * 10, 2.0, machines=2) == 40.0
    shape = ModelShape(4)
    steps = scaling.steps_for_tokens_per_param(shape, 20, 65_536)
    assert steps == math.ceil(20 * 36_700_160 / 65_536)


@pytest.mark.parametrize("bad", [dict(depth=0), dict(depth=4, vocab=0), dict(depth=2.5)])
def test_bad_shapes(bad):
    with pytest.raises(ValueError):
        ModelShape(**bad)
