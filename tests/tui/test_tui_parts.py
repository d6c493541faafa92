"""The screen's pure parts: loss downsampling, braille, the chart, bars, MFU and what-if rows."""

from __future__ import annotations

import math
import time
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.style import Style

from scalemon.core import scaling
from scalemon.core.config import ModelConfig
from scalemon.state.series import Bucket, LossSeries, columns
from scalemon.state.summary import shape_of
from scalemon.tui.braille import BrailleCanvas
from scalemon.tui.chart import Baseline, loss_chart, value_range
from scalemon.tui.clock import finish_time
from scalemon.tui.glyphs import bar, segments, sparkline
from scalemon.tui.whatif import preset_for_gpu, run_mfu, what_if


def series_of(values, start=0, **kw) -> LossSeries:
    series = LossSeries(**kw)
    series.update(array("q", range(start, start + len(values))), array("d", values))
    return series


# --- the loss series -------------------------------------------------------------------

def test_buckets_double_in_width_and_keep_every_spike():
    values = [5.0] * 10_000
    values[7_777] = 42.0  # one step in ten thousand
    values[1_234] = 0.5
    series = series_of(values, capacity=64)
    buckets = series.all_buckets()
    assert len(buckets) <= 64 and series.width == 256
    assert max(b.high for b in buckets) == 42.0 and min(b.low for b in buckets) == 0.5
    assert buckets[0].first == 0 and buckets[-1].last == 9_999
    # Buckets tile the steps without gaps or overlaps.
    assert all(a.last + 1 == b.first for a, b in zip(buckets, buckets[1:], strict=False))


def test_incremental_updates_match_one_pass():
    values = [math.sin(i / 7) + 5 for i in range(3_000)]
    once = series_of(values, capacity=100)
    grown = LossSeries(capacity=100)
    steps, losses = array("q"), array("d")
    for i, value in enumerate(values):
        steps.append(i)
        losses.append(value)
        if i % 97 == 0:
            grown.update(steps, losses)
    grown.update(steps, losses)
    assert grown.all_buckets() == once.all_buckets()
    assert grown.recent_buckets() == once.recent_buckets()


def test_a_resume_that_rewinds_starts_the_series_over():
    series = series_of([5.0] * 50)
    steps, losses = array("q", range(40)), array("d", [4.0] * 40)  # steps 40.. redone
    steps.extend(range(40, 45))
    losses.extend([3.0] * 5)
    assert series.update(steps, losses)
    assert series.all_buckets()[-1].last == 44
    assert max(b.high for b in series.all_buckets()) == 4.0


def test_nan_losses_do_not_poison_buckets_or_the_smoothed_curve():
    series = series_of([5.0, math.nan, 4.0, math.inf, 3.0])
    recent = series.recent_buckets()
    assert math.isnan(recent[1].low) and recent[2].low == 4.0
    assert all(math.isfinite(b.smooth) for b in recent)
    assert series.all_buckets()[0].low == 5.0


def test_smoothed_curve_is_the_bias_corrected_ema():
    series = series_of([10.0, 0.0])
    # EMA 0.1: (0.9 * 1.0 + 0.1 * 0) / (1 - 0.81) after bias correction
    assert series.recent_buckets()[-1].smooth == pytest.approx(0.9 / 0.19 * 1.0)


def test_recent_keeps_the_last_steps_one_by_one():
    series = series_of([float(i) for i in range(2_000)], recent=1000)
    recent = series.recent_buckets(100)
    assert len(recent) == 100 and recent[0].first == 1_900 and recent[-1].last == 1_999


@given(st.lists(st.floats(0.1, 20.0), min_size=1, max_size=400), st.integers(1, 120))
def test_columns_preserve_the_extremes(values, width):
    buckets = series_of(values, capacity=32).all_buckets()
    picked = [c for c in columns(buckets, width) if c is not None]
    assert len(columns(buckets, width)) == width
    assert min(c.low for c in picked) == min(values)
    assert max(c.high for c in picked) == max(values)


# --- braille and the chart -------------------------------------------------------------

def test_braille_dots_land_in_the_right_cells():
    canvas = BrailleCanvas(2, 1)
    canvas.dot(0, 0, 1)
    canvas.dot(3, 3, 2)
    (runs,) = canvas.rows_of_runs()
    assert runs == [("⠁", 1), ("⢀", 2)]
    canvas.dot(99, 99, 5)  # outside: dropped
    canvas.line(0, 0, 3, 3, 0)
    assert canvas.layer_at(0, 0) == 1  # a lower layer never takes a cell over


def test_chart_labels_baselines_and_steps():
    buckets = series_of([11.0 - i / 20 for i in range(100)]).all_buckets()
    styles = {0: Style(color="red"), 10: Style(color="blue"), 11: Style(color="yellow")}
    lines = loss_chart(buckets, 40, 8, [Baseline("lnV", 11.09, 0)], styles, Style())
    assert len(lines) == 8 and all(line.cell_len <= 40 for line in lines)
    assert "lnV 11.09" in lines[0].plain
    assert lines[-1].plain.split() == ["1", "100"]
    assert lines[0].plain.startswith("11.")  # the top of the range


def test_chart_clips_spikes_far_above_ln_vocab():
    buckets = (Bucket(0, 0, 1e6, 1e6, 9.0), Bucket(1, 1, 8.0, 8.0, 8.9))
    bottom, top = value_range(list(buckets), [Baseline("lnV", 9.0, 0)], cap=13.5)
    assert top < 14.5 and bottom < 8.0


def test_chart_too_small_to_draw_says_so_in_one_line():
    assert loss_chart((), 40, 8, [], {}, Style())[0].plain == "no loss yet"
    assert len(loss_chart((Bucket(0, 0, 1.0, 1.0, 1.0),), 5, 1, [], {}, Style())) == 1


# --- bars ------------------------------------------------------------------------------

@given(st.lists(st.floats(0, 10), min_size=1, max_size=6), st.integers(0, 200))
def test_segments_fill_the_bar_exactly(shares, width):
    parts = [(str(i), s) for i, s in enumerate(shares)]
    cells = segments(parts, width)
    if sum(shares) > 0:
        assert sum(n for _, n in cells) == width
    assert all(n >= 0 for _, n in cells)


def test_bar_and_sparkline():
    assert bar(0.5, 4) == "██░░" and bar(1.5, 2) == "██" and bar(math.nan, 2) == "░░"
    assert bar(0.5, 1) == "▌" and bar(0.25, 2) == "▌░"
    assert sparkline([0.0, 0.5, 1.0, math.nan], top=1.0) == "▁▅█ "


# --- MFU and what-if -------------------------------------------------------------------

@pytest.mark.parametrize("name,key", [("NVIDIA H100 80GB HBM3", "h100"),
                                      ("NVIDIA H100 PCIe", "h100"), ("NVIDIA H200", "h200"),
                                      ("NVIDIA A100-SXM4-40GB", "a100"),
                                      ("NVIDIA GeForce RTX 4090", "rtx4090"),
                                      ("AMD Instinct MI300X", "mi300x")])
def test_gpu_names_map_to_presets(name, key):
    assert preset_for_gpu(name) is scaling.DEVICES[key]


def test_mfu_is_na_with_a_reason_when_no_peak_is_known():
    shape = shape_of(4, 65_536, ModelConfig())
    assert run_mfu(1000.0, shape, 512, "cpu", [], 2).note == "CPU run"
    unknown = run_mfu(1000.0, shape, 512, "cuda:0", ["Tesla T4"], 1)
    assert unknown.value is None and "Tesla T4" in unknown.note
    mixed = run_mfu(1000.0, shape, 512, "cuda:0", ["NVIDIA H100", "NVIDIA A100"], 2)
    assert mixed.value is None


def test_what_if_rows_use_the_scaling_model():
    shape = shape_of(12, 65_536, ModelConfig())
    rows = what_if(shape, 2048, 65_536, 200_000, price=2.0)
    h100 = rows[0]
    expected = scaling.tok_s_from_device(scaling.DEVICES["h100"].peak_bf16, 0.4, shape)
    assert h100.label == "1x H100 SXM" and h100.tok_s == pytest.approx(expected)
    # DESIGN.md: d12 on one H100 at 40% MFU, 200,000 steps of 65,536 tokens: 9.6 h, $19.10
    assert h100.seconds / 3600 == pytest.approx(9.55, abs=0.05)
    assert h100.cost == pytest.approx(19.10, abs=0.05)
    assert what_if(None, 2048, 65_536, 10, None) == ()


def test_finish_time_reads_like_a_clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        now = 1_795_000_000.0  # Wed 18 Nov 2026 11:06:40 UTC
        assert finish_time(now, 3600) == "today 12:06"
        assert finish_time(now, 86400 * 2) == "Fri 20 Nov 11:06"
        assert finish_time(now, 86400 * 400) == "23 Dec 2027"
        assert finish_time(now, math.inf) == "never"
    finally:
        monkeypatch.undo()
        time.tzset()
