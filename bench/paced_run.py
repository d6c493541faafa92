"""A synthetic two-rank run at a set step rate: what the step probe writes, without training.

    .venv/bin/python bench/paced_run.py RUN_DIR STEPS_PER_S SECONDS

Appends a start record per rank, then one step record per rank each 1/STEPS_PER_S seconds
(phases, sync, loss falling from ln(vocab)) to the rank files, flushed as the probe flushes
them, and sends each as a datagram to every monitor socket of the run dir, as the probe does
(never waiting). The run dir must have a config.json naming this process's pid for both
ranks (bench/runs.py write_config), so a monitor sees the ranks alive. Lets the monitor's
cost be measured at 1, 10 or 50 steps a second, which no real run on two cores can give.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from pathlib import Path

from runs import start_line, step_template

from scalemon.io.rundir import RunDir
from scalemon.io.transport import MonitorSender

RANKS = 2


def main() -> None:
    run = RunDir(Path(sys.argv[1]))
    rate, seconds = float(sys.argv[2]), float(sys.argv[3])
    steps = max(1, round(rate * seconds))
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(run.rank_file(rank), "ab")) for rank in range(RANKS)]
        write(run, files, rate, steps)


def write(run: RunDir, files: list, rate: float, steps: int) -> None:
    horizon = 10 * steps
    templates = [step_template(rank) for rank in range(RANKS)]
    sender = MonitorSender(run.monitors_dir)
    start = time.time()
    for rank, f in enumerate(files):
        f.write(start_line(rank, RANKS, start, horizon, os.getpid(), socket.gethostname()))
        f.flush()
    begin = time.monotonic()
    for step in range(steps):
        due = begin + (step + 1) / rate
        time.sleep(max(0.0, due - time.monotonic()))
        now = time.time()
        loss = math.log(65536) * (1 - 0.5 * step / steps)
        for rank, f in enumerate(files):
            line = templates[rank].format(t=now, step=step, loss=loss, ready=now - 0.1).encode()
            f.write(line)
            f.flush()
            sender.send(line)


if __name__ == "__main__":
    main()
