"""MFU of this run and what the same run would take on other GPUs (scalemon.core.scaling).

Pure arithmetic over the run's shape and measured speed, so the ETA panel and
`scalemon plan` agree on every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalemon.core import scaling

WHAT_IF_DEVICES = ("h100", "a100", "rtx4090")
WHAT_IF_MFU = 0.4  # the same assumption as `scalemon plan --mfu`

# Substrings of a driver's device name that pick a preset ("NVIDIA H100 80GB HBM3" -> h100).
_NAME_KEYS = (("h200", "h200"), ("h100", "h100"), ("a100", "a100"), ("mi300x", "mi300x"),
              ("4090", "rtx4090"), ("4070", "rtx4070"))


@dataclass(frozen=True)
class Mfu:
    value: float | None  # share of peak, None when it cannot be known
    note: str  # which peak it is against, or why it is N/A


@dataclass(frozen=True)
class WhatIf:
    label: str  # "1x H100 SXM"
    tok_s: float
    step_s: float
    seconds: float  # for the steps in question (the rest of the run, or all of it)
    cost: float | None  # at --price per GPU-hour; None without a price


def preset_for_gpu(name: str) -> scaling.DevicePreset | None:
    """The preset whose peak applies to a GPU the driver names, if scalemon knows one."""
    lowered = name.lower().replace(" ", "")
    for needle, key in _NAME_KEYS:
        if needle in lowered:
            return scaling.DEVICES[key]
    return None


def run_mfu(tok_s: float | None, shape: scaling.ModelShape | None, seq_len: int,
            device: str | None, gpu_names: list[str], gpus_used: int) -> Mfu:
    """Measured tok/s against the bf16 peak of the GPUs the ranks use (matmul-exact FLOPs)."""
    if device is None or not device.startswith("cuda"):
        return Mfu(None, "CPU run")
    if shape is None:
        return Mfu(None, "model shape unknown")
    presets = {preset_for_gpu(name) for name in gpu_names}
    if not gpu_names or None in presets or len(presets) != 1:
        what = ", ".join(sorted(set(gpu_names)))
        return Mfu(None, f"no peak known for {what}" if what else "no GPU seen")
    if tok_s is None or not math.isfinite(tok_s):
        return Mfu(None, "waiting for steps")
    preset = presets.pop()
    assert preset is not None  # a None in presets returned above
    peak = preset.peak_bf16 * max(1, gpus_used)
    return Mfu(scaling.mfu(tok_s, shape, peak, seq_len), f"of {gpus_used}x {preset.label} bf16")


def what_if(shape: scaling.ModelShape | None, seq_len: int, tokens_per_step: int | None,
            steps: int, price: float | None) -> tuple[WhatIf, ...]:
    """One GPU of each kind in WHAT_IF_DEVICES at WHAT_IF_MFU, for `steps` steps."""
    if shape is None or not tokens_per_step or steps <= 0:
        return ()
    rows = []
    for key in WHAT_IF_DEVICES:
        preset = scaling.DEVICES[key]
        tok_s = scaling.tok_s_from_device(preset.peak_bf16, WHAT_IF_MFU, shape, seq_len=seq_len)
        step_s = tokens_per_step / tok_s
        seconds = scaling.horizon_seconds(step_s, steps)
        cost = None if price is None else scaling.cost(seconds, price)
        rows.append(WhatIf(f"1x {preset.label}", tok_s, step_s, seconds, cost))
    return tuple(rows)
