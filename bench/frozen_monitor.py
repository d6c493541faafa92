"""A frozen monitor costs the training nothing: step time with the monitor stopped vs running.

    .venv/bin/python bench/frozen_monitor.py [--freeze 30] [--window 15]

Starts a tiny two-rank gloo run (depth 1, vocab 256, as the end-to-end tests)
and `scalemon attach --run NAME --no-tui` watching it. After WINDOW seconds the
monitor gets SIGSTOP for FREEZE seconds (its socket fills, the ranks' sends
fail and count drops), then SIGCONT, then WINDOW more seconds. Prints the
median step time of rank 0 while frozen against the windows before and after,
as a ratio (target within 5%), and checks that every step of every rank is in
its rank file and that the monitor's last word counts them all. No asserts
(DESIGN.md: benchmarks are ratios measured in one run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.05


def rank_steps(run, rank: int) -> list[tuple[int, float, float, int]]:
    """(step, end time, dt, drops) of each step record of a rank."""
    from scalemon.core import codec, records

    out = []
    for line in run.rank_file(rank).read_bytes().splitlines():
        try:
            record = codec.decode(line)
        except codec.RecordError:
            continue
        if isinstance(record, records.StepRecord):
            out.append((record.step, record.t, record.dt, record.drops))
    return out


def missing(steps: list[int]) -> int:
    """Steps between the first and the last with no record."""
    return (max(steps) - min(steps) + 1 - len(set(steps))) if steps else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", type=float, default=30.0, help="seconds the monitor is stopped")
    parser.add_argument("--window", type=float, default=15.0,
                        help="seconds measured before and after the freeze")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scalemon-frozen-") as tmp:
        home = Path(tmp)
        os.environ["SCALEMON_HOME"] = str(home)
        from scalemon.run import launch

        run = launch.create_run(launch.RunOptions(
            name="frozen", depth=1, vocab=256, seq_len=64, device_batch=4, tokens_per_step=1024,
            backend="gloo", nproc_per_node=2, threads_per_rank=1, steps=1_000_000,
            checkpoint_every=0))
        launch.start_supervisor(run)
        monitor = None
        out = home / "monitor.out"
        try:
            while len(rank_steps(run, 0) if run.rank_file(0).exists() else []) < 10:
                time.sleep(0.5)
            with open(out, "w") as sink:
                monitor = subprocess.Popen([sys.executable, "-m", "scalemon", "attach", "--run",
                                            "frozen", "--no-tui", "--interval", "1"],
                                           stdout=sink, stderr=subprocess.STDOUT)
            time.sleep(3)  # the monitor is up and the ranks have found its socket
            marks = [time.time()]
            time.sleep(options.window)
            marks.append(time.time())
            monitor.send_signal(signal.SIGSTOP)
            time.sleep(options.freeze)
            monitor.send_signal(signal.SIGCONT)
            marks.append(time.time())
            time.sleep(options.window)
            marks.append(time.time())
        finally:
            if monitor is not None:
                monitor.send_signal(signal.SIGCONT)
            launch.stop_and_wait(run)
        if monitor is not None:
            try:
                monitor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()
        steps = {rank: rank_steps(run, rank) for rank in (0, 1)}
        said = out.read_text().strip().splitlines()
    before, frozen_from, frozen_to, after = marks
    rank0 = steps[0]
    running = [dt for _, t, dt, _ in rank0 if before <= t < frozen_from or frozen_to <= t < after]
    frozen = [dt for _, t, dt, _ in rank0 if frozen_from <= t < frozen_to]
    ratio = statistics.median(frozen) / statistics.median(running)
    drops = max(d for _, t, _, d in rank0 if t < frozen_to) - \
        max((d for _, t, _, d in rank0 if t < frozen_from), default=0)
    gaps = {rank: missing([s for s, _, _, _ in records]) for rank, records in steps.items()}
    last_word = next((line for line in reversed(said) if line.startswith("records:")), "")
    figures = {"ratio": ratio, "frozen_ms": statistics.median(frozen) * 1000,
               "running_ms": statistics.median(running) * 1000, "frozen_steps": len(frozen),
               "running_steps": len(running), "drops": drops, "missing": gaps,
               "steps": {rank: len(records) for rank, records in steps.items()},
               "monitor_last_word": last_word, "freeze_s": options.freeze}
    print(f"frozen monitor: two gloo ranks, depth 1; monitor stopped for {options.freeze:g} s "
          f"between two {options.window:g} s windows")
    print(f"  rank 0 median step: {figures['frozen_ms']:.1f} ms frozen ({len(frozen)} steps) vs "
          f"{figures['running_ms']:.1f} ms running ({len(running)} steps) = {ratio:.3f}x "
          f"(target within {TARGET:.0%})")
    print(f"  datagrams the ranks dropped while it was stopped: {drops}; steps missing from the "
          f"rank files: {gaps} of {figures['steps']}")
    print(f"  the monitor's last word: {last_word or '(none)'}")
    if options.json:
        Path(options.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
