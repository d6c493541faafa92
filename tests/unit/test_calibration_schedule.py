"""When the probe takes a no_sync sample: right after warm-up, then at an interval that keeps
the samples' cost at BUDGET of training time, aligned so that every rank samples the same
steps; never while the steps accumulate (their no_sync micro-steps are free samples)."""

import pytest

from scalemon.probes.step.calibration import (
    BUDGET,
    MAX_INTERVAL,
    MIN_INTERVAL,
    WARMUP_STEPS,
    CalibrationSchedule,
    interval_from_env,
)


def run(schedule: CalibrationSchedule, steps: int, dt: float, compute: float,
        accumulated: bool = False) -> list[int]:
    """The steps that took a sample, each step `dt` long and a sample `compute` long."""
    sampled = []
    for step in range(steps):
        due = schedule.due(step)
        if due:
            sampled.append(step)
        schedule.observed(dt + (compute if due else 0.0), compute, compute if due else None,
                          accumulated)
    return sampled


def test_first_sample_right_after_warm_up_then_within_the_budget():
    schedule = CalibrationSchedule()
    sampled = run(schedule, 5000, dt=1.0, compute=0.8)
    assert sampled[0] == WARMUP_STEPS
    interval = schedule.interval()
    assert interval == 128  # 0.8 s / (0.9% x 1 s) = 89 steps, rounded up to a power of two
    assert all(step % interval == 0 for step in sampled[1:])
    assert len(sampled) * 0.8 <= BUDGET * 5000 * 1.0 + 0.8  # the first sample aside


@pytest.mark.parametrize("dt, compute, interval", [
    (1.0, 0.05, 8),  # sync-bound: a sample is cheap next to the step
    (0.03, 0.028, 128),
    (100.0, 0.0001, MIN_INTERVAL),
    (1.0, 1000.0, MAX_INTERVAL),
])
def test_the_interval_adapts_to_what_a_sample_costs_against_a_step(dt, compute, interval):
    schedule = CalibrationSchedule()
    run(schedule, 10, dt=dt, compute=compute)
    assert schedule.interval() == interval


def test_accumulating_steps_need_no_samples():
    assert run(CalibrationSchedule(), 500, dt=1.0, compute=0.8, accumulated=True) == []


def test_the_environment_forces_an_interval_or_turns_it_off():
    assert interval_from_env(None) is None and interval_from_env("auto") is None
    assert interval_from_env("off") is False and interval_from_env("0") is False
    assert interval_from_env("3") == 3 and interval_from_env("nonsense") is None
    assert run(CalibrationSchedule(3), 10, dt=1.0, compute=0.5) == [0, 3, 6, 9]
    assert run(CalibrationSchedule(False), 10, dt=1.0, compute=0.5) == []
