"""What the trainer's no_sync calibration costs: its samples' time as a share of training time.

    .venv/bin/python bench/calibration_cost.py [--steps 800] [--depth 2 --vocab 8192]

Runs `scalemon run` (two gloo ranks, one micro-step per allreduce, so the probe takes its own
no_sync samples: probes/step/calibration.py) with the default schedule, and reads every step
record of both ranks: the `calibration` phase's seconds against the steps' seconds, how many
samples, and the interval between them. The target is under 1%; the schedule spends 0.45-0.9%,
its first sample (right after warm-up) aside. No asserts (DESIGN.md: benchmarks are ratios
measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args()

    from scalemon.core import codec
    from scalemon.core.records import StepRecord

    with tempfile.TemporaryDirectory(prefix="scalemon-calibration-") as home:
        env = {**os.environ, "SCALEMON_HOME": home}
        env.pop("SCALEMON_CALIBRATE", None)  # the default schedule
        tokens = 2 * options.seq_len  # two ranks, one sequence each: no accumulation
        args = ["--depth", str(options.depth), "--vocab", str(options.vocab), "--seq-len",
                str(options.seq_len), "--device-batch", "1", "--tokens-per-step", str(tokens),
                "--backend", "gloo", "--threads-per-rank", "1", "--checkpoint-every", "0",
                "--steps", str(options.steps), "--name", "bench", "--no-tui"]
        result = subprocess.run([sys.executable, "-m", "scalemon", "run", *args],
                                capture_output=True, text=True, env=env)
        if result.returncode:
            sys.exit(f"the run failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        ranks = Path(home) / "runs" / "bench" / "ranks"
        steps = [record for path in sorted(ranks.glob("rank-*.jsonl"))
                 for record in map(codec.decode, path.read_bytes().splitlines())
                 if isinstance(record, StepRecord)]

    spent = sum(r.phases.get("calibration", 0.0) for r in steps)
    total = sum(r.dt for r in steps)
    sampled = sorted({r.step for r in steps if "calibration" in r.phases})
    gaps = [b - a for a, b in zip(sampled[1:], sampled[2:], strict=False)]  # after the first
    share = spent / total
    step_s = statistics.median(r.dt for r in steps)
    print(f"calibration: {len(sampled)} samples in {options.steps} steps of d{options.depth} "
          f"(vocab {options.vocab}, T={options.seq_len}, {step_s * 1e3:.0f} ms steps), "
          f"at steps {sampled[:6]}{' ...' if len(sampled) > 6 else ''}")
    print(f"  {spent:.2f} s of {total:.1f} s of training: {share:.3%} "
          f"({share / TARGET:.2f}x the {TARGET:.0%} target)")
    if options.json:
        options.json.write_text(json.dumps({
            "share": share, "samples": len(sampled), "steps": options.steps,
            "interval": statistics.median(gaps) if gaps else None, "step_ms": step_s * 1e3,
            "depth": options.depth}))


if __name__ == "__main__":
    main()
