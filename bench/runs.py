"""Run dirs full of realistic step records, written fast, for the benchmarks.

Each record is encoded once (phases, sync, loss, lr) and then only its numbers
change, so a million steps take seconds to write instead of a minute.
"""

from __future__ import annotations

import time
from pathlib import Path

from scalemon.core import codec
from scalemon.core.config import RunConfig
from scalemon.core.records import StartRecord, StepRecord, SyncTiming
from scalemon.io.rundir import RunDir

# Marker values, each replaced by a format field after encoding once.
_T, _STEP, _LOSS, _READY = 1111111111.25, 987654321, 7.5, 1111111110.75


def step_template(rank: int) -> str:
    """A step record line with {t}, {step}, {loss} and {ready} fields."""
    sync = SyncTiming(exposed=0.05, comm=0.12, overlap=0.07, bytes=147_000_000, buckets=6,
                      last_ready=_READY)
    line = codec.encode(StepRecord(
        rank=rank, t=_T, step=_STEP, dt=0.5, tokens=1024, loss=_LOSS, lr=1e-3, sync=sync,
        phases={"data": 0.01, "forward": 0.15, "backward": 0.25, "optimizer": 0.04})).decode()
    line = line.replace("{", "{{").replace("}", "}}")
    for value, name in ((_T, "t"), (_STEP, "step"), (_LOSS, "loss"), (_READY, "ready")):
        assert line.count(repr(value)) == 1, name
        line = line.replace(repr(value), "{" + name + "!r}")
    return line


def step_lines(rank: int, first: int, count: int, t0: float, step_s: float = 0.5,
               horizon: int | None = None) -> bytes:
    """`count` step records of `rank` from step `first`, one every `step_s` from `t0`."""
    template = step_template(rank)
    horizon = horizon or first + count
    out = []
    for step in range(first, first + count):
        t = t0 + step_s * (step + 1)
        out.append(template.format(t=t, step=step, loss=11 - 10 * step / horizon, ready=t - 0.1))
    return "".join(out).encode()


def start_line(rank: int, world: int, t: float, steps: int, pid: int = 1, host: str = "h"
               ) -> bytes:
    return codec.encode(StartRecord(rank=rank, t=t, pid=pid, host=host, world=world,
                                      local_rank=rank, meta={"vocab": 65536, "steps": steps}))


def make_run(root: Path, steps: int, ranks: int = 2, name: str = "bench") -> RunDir:
    """A run dir with `ranks` rank files of `steps` step records each, the last one now."""
    run = RunDir.create(root / "runs" / name)
    t0 = time.time() - steps * 0.5
    for rank in range(ranks):
        with open(run.rank_file(rank), "wb") as f:
            f.write(start_line(rank, ranks, t0, 10 * steps))
            for first in range(0, steps, 100_000):
                f.write(step_lines(rank, first, min(100_000, steps - first), t0,
                                   horizon=10 * steps))
    return run


def write_config(run: RunDir, steps: int, ranks: int = 2, pids: dict | None = None) -> None:
    run.write_config(RunConfig.from_dict({
        "schema": 1, "name": run.path.name, "created": time.time(),
        "model": {"depth": 4, "vocab": 65536}, "train": {"steps": 10 * steps},
        "launch": {"world_size": ranks, "nnodes": 1}, "pids": pids or {}}))
