"""The trainer's no_sync calibration (probes/step/calibration.py) changes nothing it trains:
the same run with a sample every step and with none ends with the same weights and optimizer
state, bit for bit, and the samples are in the records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.runs import TINY, rank_records

from scalemon.core.records import StepRecord

STEPS = 6
# One micro-step per allreduce (1 x 64 tokens x 4 sequences x 2 ranks): no accumulation, so
# the probe takes its own samples rather than the accumulation's free ones.
NO_ACCUMULATION = ["--tokens-per-step", "512"]


def train(home: Path, name: str, calibrate: str) -> Path:
    args = [arg for arg in TINY if arg not in ("--tokens-per-step", "1024")]
    env = {**os.environ, "SCALEMON_HOME": str(home), "SCALEMON_CALIBRATE": calibrate}
    result = subprocess.run([sys.executable, "-m", "scalemon", "run", *args, *NO_ACCUMULATION,
                             "--checkpoint-every", "0", "--steps", str(STEPS), "--name", name],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return home / "runs" / name


def final_state(run: Path) -> dict:
    (path,) = sorted((run / "checkpoints").glob("step-*.pt"))[-1:]
    return torch.load(path, weights_only=True)


def flat(state, prefix=""):
    """(name, tensor) of every tensor in a nested state dict."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from flat(value, f"{prefix}/{key}")
    elif isinstance(state, list | tuple):
        for i, value in enumerate(state):
            yield from flat(value, f"{prefix}/{i}")


@pytest.mark.slow
def test_calibration_leaves_the_training_bit_for_bit_the_same(tmp_path):
    plain = final_state(train(tmp_path, "plain", "off"))
    calibrated_run = train(tmp_path, "calibrated", "1")
    calibrated = final_state(calibrated_run)
    assert plain["step"] == calibrated["step"] == STEPS - 1
    tensors = dict(flat({"model": plain["model"], "optimizer": plain["optimizer"]}))
    other = dict(flat({"model": calibrated["model"], "optimizer": calibrated["optimizer"]}))
    assert tensors.keys() == other.keys() and len(tensors) > 10
    for name, tensor in tensors.items():
        assert torch.equal(tensor, other[name]), name

    for rank in (0, 1):
        steps = [r for r in rank_records(calibrated_run, rank) if isinstance(r, StepRecord)]
        assert len(steps) == STEPS
        assert all(r.nosync_backward is not None and r.phases["calibration"] > 0
                   and r.micro_steps == 1 for r in steps)
    plain_steps = [r for r in rank_records(tmp_path / "runs" / "plain", 0)
                   if isinstance(r, StepRecord)]
    assert all(r.nosync_backward is None and "calibration" not in r.phases
               for r in plain_steps)
