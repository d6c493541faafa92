"""How well `scalemon plan --from-run` predicts: from a measured run, another run's step time.

    .venv/bin/python bench/forecast.py [--steps 24] [--json FILE]

Runs scalemon's trainer (two gloo ranks on this machine) at a small depth, asks
`plan --from-run` for the step time at a larger depth and at twice the tokens a step
(twice the accumulation), then runs both and compares: measured / predicted, for the
matmul-exact FLOPs and for 6N. One process per run, the same machine, one after another.
Prints ratios; asserts nothing (DESIGN.md: benchmarks report, tests do not time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = ["--backend", "gloo", "--nproc-per-node", "2", "--checkpoint-every", "0", "--no-tui",
          "--interval", "30"]


def scalemon(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "scalemon", *args], capture_output=True,
                          text=True, env={**os.environ, "SCALEMON_HOME": str(home)}, timeout=1800)
    if proc.returncode:
        sys.exit(f"scalemon {' '.join(args)} failed ({proc.returncode}):\n"
                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def train(home: Path, name: str, depth: int, tokens: int, options) -> float:
    """The run's median step (the split's total), as replay folds it."""
    scalemon(home, "run", "--name", name, "--depth", str(depth), "--vocab", str(options.vocab),
             "--seq-len", str(options.seq_len), "--tokens-per-step", str(tokens),
             "--steps", str(options.steps), *COMMON)
    summary = json.loads(scalemon(home, "replay", name, "--json"))
    return summary["split"]["total"]


def predicted(home: Path, run: str, depth: int, tokens: int) -> dict:
    plan = json.loads(scalemon(home, "plan", "--from-run", run, "--depth", str(depth),
                               "--tokens-per-step", str(tokens), "--json"))
    return next(p for p in plan["predictions"] if p["setup"] == "here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--from-depth", type=int, default=2)
    parser.add_argument("--to-depth", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=65_536)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args()
    tokens = 2 * options.seq_len  # one sequence a rank a micro-step
    figures: dict = {"steps": options.steps, "vocab": options.vocab, "seq_len": options.seq_len}
    with tempfile.TemporaryDirectory(prefix="scalemon-forecast-") as tmp:
        home = Path(tmp)
        small, large = options.from_depth, options.to_depth
        base = train(home, "base", small, tokens, options)
        cases = {"depth": (f"d{small} -> d{large}", large, tokens),
                 "accumulation": (f"d{small}, 1 -> 2 micro-steps", small, 2 * tokens)}
        for key, (label, depth, want) in cases.items():
            guess = predicted(home, "base", depth, want)
            measured = train(home, key, depth, want, options)
            figures[key] = {"label": label, "measured_s": measured,
                            "predicted_s": guess["step_s"], "predicted_6n_s": guess["step_6n_s"],
                            "ratio": measured / guess["step_s"],
                            "ratio_6n": measured / guess["step_6n_s"]}
        figures["base_step_s"] = base
    for key in ("depth", "accumulation"):
        f = figures[key]
        print(f"{f['label']}: measured {f['measured_s'] * 1000:.0f} ms, predicted "
              f"{f['predicted_s'] * 1000:.0f} ms (6N {f['predicted_6n_s'] * 1000:.0f} ms): "
              f"measured/predicted {f['ratio']:.2f} (6N {f['ratio_6n']:.2f})")
    if options.json:
        options.json.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
