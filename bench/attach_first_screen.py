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
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalemon import records
from scalemon.records import StartRecord, StepRecord, SyncTiming
from scalemon.rundir import RunDir

TARGET_S = 1.5
STATUS = re.compile(rb"^\d\d:\d\d:\d\d \w+\s+step ")
SLEEP = "import time; time.sleep(3600)"


def make_run(root: Path, steps: int) -> RunDir:
    run = RunDir.create(root / "runs" / "bench")
    t0 = time.time() - steps * 0.5
    for rank in (0, 1):
        lines = [records.encode(StartRecord(rank=rank, t=t0, pid=1, host="h", world=2,
                                            local_rank=rank, meta={"vocab": 65536, "steps":
                                                                   10 * steps}))]
        for step in range(steps):
            t = t0 + 0.5 * (step + 1)
            sync = SyncTiming(exposed=0.05, comm=0.12, overlap=0.07, bytes=147_000_000,
                              buckets=6, last_ready=t - 0.1)
            lines.append(records.encode(StepRecord(
                rank=rank, t=t, step=step, dt=0.5, tokens=1024, loss=11 - step / steps,
                lr=1e-3, sync=sync, phases={"data": 0.01, "forward": 0.15, "backward": 0.25,
                                            "optimizer": 0.04})))
        run.rank_file(rank).write_bytes(b"".join(lines))
    return run


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


def report(label: str, times: list[float]) -> None:
    median = statistics.median(times)
    print(f"{label:<44} median {median * 1000:5.0f} ms, worst {max(times) * 1000:5.0f} ms "
          f"= {median / TARGET_S:.2f} of the {TARGET_S} s target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps of history")
    parser.add_argument("--runs", type=int, default=5, help="attaches per target")
    options = parser.parse_args()
    helpers = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "SCALEMON_HOME": str(root)}
        run = make_run(root, options.steps)
        supervisor = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", "scalemon.supervise",
                                       str(run.path)])
        rank = subprocess.Popen([sys.executable, "-c", SLEEP],
                                env={**env, "SCALEMON_RUN_DIR": str(run.path), "RANK": "0"})
        log = root / "train.log"
        nanochat_log(log, options.steps)
        with open(log, "ab") as out:
            plain = subprocess.Popen([sys.executable, "-c", SLEEP], stdout=out)
        helpers += [supervisor, rank, plain]
        run.write_config({"schema": 1, "name": "bench", "created": time.time(),
                          "model": {"depth": 4, "vocab": 65536}, "train": {"steps":
                                                                           10 * options.steps},
                          "launch": {"world_size": 2, "nnodes": 1},
                          "pids": {"supervisor": supervisor.pid}})
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
            print(f"{'python + CLI start (scalemon --version)':<44} median "
                  f"{statistics.median(startup) * 1000:5.0f} ms")
            report("scalemon run (attach RANK_PID --no-tui)",
                   [first_status_s(["attach", str(rank.pid), "--no-tui"], env)
                    for _ in range(options.runs)])
            report("plain process (attach PID --no-tui, its log)",
                   [first_status_s(["attach", str(plain.pid), "--no-tui"], env)
                    for _ in range(options.runs)])
        finally:
            for helper in helpers:
                helper.kill()
                helper.wait()


if __name__ == "__main__":
    main()
