"""The monitor's memory (peak RSS) and time over a run of 1,000,000 recorded steps.

    .venv/bin/python bench/monitor_memory.py [--steps 500000 --ranks 2]

Writes a run dir of RANKS rank files with STEPS step records each (phases and
sync, as the probe writes them; 2 x 500,000 = 1,000,000 records, about 370 MB),
then runs each monitor on it in a child process and reads the child's peak
resident memory (ru_maxrss, from wait4) against the 150 MB target:

- `scalemon replay RUN --json`: the whole history folded before anything shows;
- a live monitor (RunDirSource, as `scalemon attach` and the screen use it): its
  first state from the files' tails, then the rest folded in its polls.

No asserts (DESIGN.md: benchmarks are ratios measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runs import make_run, write_config

TARGET_MB = 150

# The children report their own peak (VmHWM): a child's ru_maxrss starts from its parent's
# resident size at the fork, which is this process with its buffers of records.
PEAK = "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)"
CLI = f"""
import sys
from scalemon.cli import main
try:
    main(sys.argv[1:])
finally:
    {PEAK}
"""
LIVE = f"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from scalemon.sources.rundir import RunDirSource
from scalemon.io.rundir import RunDir
source = RunDirSource(RunDir(Path(sys.argv[1])))
first = time.perf_counter() - t0
while source.history_pending:
    source.poll(0.25)
print(json.dumps({{"first_s": first, "full_s": time.perf_counter() - t0,
                  "steps": len(source.state.loss_steps)}}))
{PEAK}
"""


def run_child(code: str, args: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of `python -c code args`."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{args} exited with {proc.returncode}: {proc.stderr[-500:]}")
    return wall, int(proc.stderr.split()[-1]) / 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500_000, help="step records per rank")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scalemon-memory-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        run = make_run(root, options.steps, ranks=options.ranks)
        write_config(run, options.steps, ranks=options.ranks)
        write_s = time.perf_counter() - t0
        size = sum(path.stat().st_size for path in run.rank_files())
        env = {**os.environ, "SCALEMON_HOME": str(root)}
        _, python_mb, _ = run_child(f"import sys, scalemon.sources.rundir\n{PEAK}", [], env)
        replay_s, replay_mb, _ = run_child(CLI, ["replay", str(run.path), "--json"], env)
        _, live_mb, text = run_child(LIVE, [str(run.path)], env)
    live = json.loads(text)
    records = options.steps * options.ranks
    figures = {"records": records, "ranks": options.ranks, "bytes": size,
               "replay_s": replay_s, "replay_mb": replay_mb, "live_mb": live_mb,
               "live_first_s": live["first_s"], "live_full_s": live["full_s"],
               "python_mb": python_mb}
    print(f"monitor memory: {options.ranks} ranks x {options.steps:,} step records = "
          f"{records:,} ({size / 1e6:.0f} MB of rank files, written in {write_s:.1f} s)")
    print(f"  python + the collector's imports alone: {python_mb:.0f} MB")
    print(f"  scalemon replay --json: peak RSS {replay_mb:.0f} MB "
          f"({replay_mb / TARGET_MB:.2f}x the {TARGET_MB} MB target), {replay_s:.1f} s, "
          f"{records / replay_s:,.0f} records/s")
    print(f"  live collector: peak RSS {live_mb:.0f} MB ({live_mb / TARGET_MB:.2f}x the target); "
          f"first state in {live['first_s']:.2f} s, whole history ({live['steps']:,} loss "
          f"points) in {live['full_s']:.1f} s")
    if options.json:
        Path(options.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
