"""Time from `scalemon attach PID --no-tui` to its first status line, against the 1.5 s target.

    .venv/bin/python bench/attach_first_screen.py [--steps N] [--runs R]

Two targets, each with N steps of history: a scalemon run dir (two ranks of
step records with phases and sync, a sleeping "rank" with SCALEMON_RUN_DIR in
its environment and a fake supervisor), and a plain process whose stdout is a
nanochat log of N step lines. Each is attached R times; prints the median and
worst time to the first status line on stdout and the ratio of the median to
the target, beside `scalemon --version` (Python start-up and the CLI import)
for scale. No asserts (DESIGN.md: benchmarks are ratios measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runs import (  # bench/runs.py: run dirs of realistic records, written fast
    make_run,
    write_config,
)

TARGET_S = 1.5
STATUS = re.compile(rb"^\d\d:\d\d:\d\d \w+\s+step ")
SLEEP = "import time; time.sleep(3600)"


def nanochat_log(path: Path, steps: int) -> None:
    with open(path, "w") as f:
        for step in range(steps):
            f.write(f"step {step:05d}/{10 * steps:05d} ({step / steps * 10:.2f}%) | loss: "
                    f"{11 - step / steps:.6f} | lrm: 1.00 | dt: 350.12ms | tok/sec: 46,795 | "
                    f"bf16_mfu: 0.00 | epoch: 1 pq: 0 rg: 12 | total time: 0.64m | eta: 28.5m\n")


def first_status_s(args: list[str], env: dict) -> float:
    """Seconds from starting `scalemon ARGS` to its first status line on stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "scalemon", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        for line in proc.stdout:
            if STATUS.match(line):
                return time.perf_counter() - t0
        raise RuntimeError(f"scalemon {' '.join(args)} printed no status line")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def report(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"{label:<44} median {median * 1000:5.0f} ms, worst {max(times) * 1000:5.0f} ms "
          f"= {median / TARGET_S:.2f} of the {TARGET_S} s target")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps of history")
    parser.add_argument("--runs", type=int, default=5, help="attaches per target")
    parser.add_argument("--no-log", action="store_true", help="skip the plain-process target")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    options = parser.parse_args()
    figures = {"steps": options.steps}
    helpers = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "SCALEMON_HOME": str(root)}
        run = make_run(root, options.steps)
        supervisor = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", "scalemon.run.supervise",
                                       str(run.path)])
        rank = subprocess.Popen([sys.executable, "-c", SLEEP],
                                env={**env, "SCALEMON_RUN_DIR": str(run.path), "RANK": "0"})
        log = root / "train.log"
        if not options.no_log:
            nanochat_log(log, options.steps)
        with open(log, "ab") as out:
            plain = subprocess.Popen([sys.executable, "-c", SLEEP], stdout=out)
        helpers += [supervisor, rank, plain]
        write_config(run, options.steps, pids={"supervisor": supervisor.pid})
        try:
            time.sleep(0.5)  # the helpers have started
            startup = []
            for _ in range(options.runs):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "scalemon", "--version"], env=env,
                               capture_output=True, check=True)
                startup.append(time.perf_counter() - t0)
            print(f"scalemon attach: first status line, {options.steps:,} steps of history, "
                  f"{options.runs} attaches each")
            figures["startup_s"] = statistics.median(startup)
            print(f"{'python + CLI start (scalemon --version)':<44} median "
                  f"{figures['startup_s'] * 1000:5.0f} ms")
            figures["run_s"] = report("scalemon run (attach RANK_PID --no-tui)",
                                      [first_status_s(["attach", str(rank.pid), "--no-tui"], env)
                                       for _ in range(options.runs)])
            if not options.no_log:
                figures["log_s"] = report("plain process (attach PID --no-tui, its log)",
                                          [first_status_s(["attach", str(plain.pid), "--no-tui"],
                                                          env) for _ in range(options.runs)])
            if options.json:
                Path(options.json).write_text(json.dumps(figures))
        finally:
            for helper in helpers:
                helper.kill()
                helper.wait()


if __name__ == "__main__":
    main()
