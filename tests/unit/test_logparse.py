"""The log line parser: nanochat's step lines (every form), evaluation lines, the fallback."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalemon.core.logparse import EvalLine, LogParser, StepLine, mentions_step, parse_line

BASE_NEW = ("step 00120/05000 (2.40%) | loss: 5.123456 | lrm: 1.00 | dt: 350.12ms | "
            "tok/sec: 46,795 | bf16_mfu: 0.00 | epoch: 1 pq: 0 rg: 12 | total time: 0.64m | "
            "eta: 28.5m")
BASE_OLD = ("step 00120/05000 (2.40%) | loss: 5.123456 | lrm: 1.00 | dt: 350.12ms | "
            "tok/sec: 46,795 | mfu: 38.21 | total time: 0.64m")
SFT = ("step 00120 (2.40%) | loss: 1.234567 | lrm: 1.00 | dt: 95.50ms | tok/sec: 512,000 | "
       "mfu: 12.50 | epoch: 1 | total time: 0.10m")


def test_nanochat_base_training_line_current_form():
    line = parse_line(BASE_NEW)
    assert line == StepLine(step=120, dt=pytest.approx(0.35012), loss=5.123456, horizon=5000,
                            tok_s=46_795, mfu=0.0, form="nanochat", eta_s=pytest.approx(1710.0))


def test_nanochat_base_training_line_older_form_with_mfu_and_no_epoch_or_eta():
    line = parse_line(BASE_OLD)
    assert (line.step, line.horizon, line.mfu, line.form) == (120, 5000, 38.21, "nanochat")
    assert line.dt == pytest.approx(0.35012) and line.tok_s == 46_795


def test_nanochat_sft_and_midtraining_line_has_no_horizon():
    line = parse_line(SFT)
    assert (line.step, line.horizon, line.loss, line.tok_s, line.form) == (
        120, None, 1.234567, 512_000, "nanochat-sft")
    assert line.dt == pytest.approx(0.0955)


def test_nanochat_forks_with_extra_fields_and_no_percent():
    fork = ("step 00007/00100 | loss: 3.5 | lrm: 1.00 | dt: 12.00ms | data_wait: 1.00ms | "
            "tok/sec: 1,000 | bf16_mfu: 1.00 | grad norm: 0.5 | epoch: 1 | total time: 0.00m")
    line = parse_line(fork)
    assert (line.step, line.horizon, line.loss, line.dt) == (7, 100, 3.5, pytest.approx(0.012))


def test_nan_loss_is_read_not_dropped():
    line = parse_line(BASE_OLD.replace("5.123456", "nan"))
    assert math.isnan(line.loss)


@pytest.mark.parametrize("text, step, metrics", [
    ("Step 00250 | Validation bpb: 0.812345", 250, (("Validation bpb", 0.812345),)),
    ("Step 00250 | Validation loss: 2.5", 250, (("Validation loss", 2.5),)),
    ("Step 01000 | CORE metric: 0.2150", 1000, (("CORE metric", 0.215),)),
    ("Step 00200 | ChatCORE: 0.1234 | ChatCORE_cat: 0.2000", 200,
     (("ChatCORE", 0.1234), ("ChatCORE_cat", 0.2))),
])
def test_evaluation_lines(text, step, metrics):
    line = parse_line(text)
    assert line == EvalLine(step=step, metrics=metrics)
    assert line.text().startswith(f"step {step}: {metrics[0][0]} ")


@pytest.mark.parametrize("text, step, horizon, loss, dt, tok_s", [
    ("step 1/200 | loss 9.0109 | dt 0.33s | tok/s 3119", 1, 200, 9.0109, 0.33, 3119),  # scalemon
    ("iter 100: loss 4.2345, time 350.12ms, mfu 12.34%", 100, None, 4.2345, 0.35012, None),
    ("2024-05-01 12:00:00 INFO step=5 train_loss=2.5 step_time_ms=40 tokens_per_sec=1,234",
     5, None, 2.5, 0.04, 1234),
    ("Step 3/10, loss: 1.5e+00, dt: 250", 3, 10, 1.5, 250.0, None),  # dt without a unit: seconds
])
def test_generic_fallback_needs_step_loss_and_a_time_per_step(text, step, horizon, loss, dt,
                                                              tok_s):
    line = parse_line(text)
    assert line.form == "generic"
    assert (line.step, line.horizon, line.loss, line.tok_s) == (step, horizon, loss, tok_s)
    assert line.dt == pytest.approx(dt)


@pytest.mark.parametrize("text", [
    "",
    "Model config: {'n_layer': 12, 'n_embd': 768}",
    "step 5 | loss 3.0",  # no time per step
    "total time: 0.64m | step 5 | loss 3.0",  # total time is not a step time
    "step 5 | loss 3.0 | time 12",  # a bare "time 12" could be anything
    "Step 00005/00010 | Training loss: 1.23| lrm: 1.0| num_tokens: 1,000",  # no dt
    "steps: 100, losses: 3",
])
def test_other_lines_are_not_steps(text):
    assert not isinstance(parse_line(text), StepLine)


def test_parser_counts_unreadable_lines_and_tracebacks():
    parser = LogParser()
    lines = ["loading...", BASE_NEW, "step 00121/05000 (2.42%) | loss: ??? | garbled",
             "Step 00250 | Validation bpb: 0.8", "Traceback (most recent call last):",
             "RuntimeError: CUDA out of memory"]
    parsed = [parser.feed(line) for line in lines]
    assert [type(p).__name__ for p in parsed] == [
        "NoneType", "StepLine", "NoneType", "EvalLine", "NoneType", "NoneType"]
    assert (parser.lines, parser.steps, parser.evals, parser.unreadable) == (6, 1, 1, 1)
    assert parser.last_unreadable.startswith("step 00121") and parser.traceback
    parser.feed(BASE_OLD)
    assert not parser.traceback  # training went on after it


def test_mentions_step():
    assert mentions_step("step 5 something") and mentions_step("iter: 7")
    assert not mentions_step("the next step is 5") and not mentions_step("stepping")


@given(st.text(max_size=300))
def test_any_text_parses_without_raising(text):
    result = LogParser().feed(text)
    assert result is None or isinstance(result, StepLine | EvalLine)
    if isinstance(result, StepLine):
        assert result.step >= 0 and result.dt >= 0


@pytest.mark.parametrize("text", [
    "step 1/10 | loss: 2 | dt: infms",
    "step 1/10 | loss: 2 | dt: -5ms",
    "step 99999999999999999999999/10 | loss: 2 | dt: 5ms",
    "iter 3 loss 2 dt inf",
])
def test_impossible_step_times_and_numbers_are_not_steps(text):
    assert parse_line(text) is None


def test_the_flops_a_script_prints_for_its_model_are_read():
    from scalemon.core.logparse import printed_flops_per_token

    lines = ["total                   : 7,340,162", "Estimated FLOPs per token: 3.145800e+07",
             "Estimated FLOPs per token: 9e9"]
    assert printed_flops_per_token(lines) == 3.1458e7  # the first, as printed at the start
    assert printed_flops_per_token(["step 1/2 | loss 1.0 | dt 1s"]) is None
    assert printed_flops_per_token(["Estimated FLOPs per token: nan"]) is None
