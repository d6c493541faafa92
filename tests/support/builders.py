"""Builders the tests share: run configs and run dirs, records, and a fold fed with records."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from scalemon.core.config import RunConfig
from scalemon.core.records import StartRecord, StepRecord, SyncTiming
from scalemon.io.rundir import RunDir
from scalemon.state.fold import RunState
from scalemon.state.observations import Tick

T0 = 1_800_000_000.0  # a fixed wall clock: Fri 15 Jan 2027
PHASES = {"data": 0.05, "forward": 0.25, "backward": 0.5, "optimizer": 0.1}
BASE_CONFIG: dict[str, Any] = {
    "schema": 1, "name": "r", "created": 0.0, "model": {}, "train": {"steps": 10},
    "launch": {"world_size": 2}, "pids": {},
}


def config_dict(**sections: Any) -> dict[str, Any]:
    """config.json's content: BASE_CONFIG with each given section merged in (a dict merges
    key by key, anything else replaces)."""
    data = copy.deepcopy(BASE_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def run_config(**sections: Any) -> RunConfig:
    return RunConfig.from_dict(config_dict(**sections))


def make_run(root: Path, name: str = "r", **sections: Any) -> RunDir:
    """An empty run dir under `root` with a config (no records yet)."""
    run = RunDir.create(root / name)
    run.write_config(run_config(name=name, **sections))
    return run


def start(rank: int, *, t: float = T0, host: str = "h", world: int = 2, pid: int | None = None,
          start_step: int = 0, **meta: Any) -> StartRecord:
    return StartRecord(rank=rank, t=t, pid=100 + rank if pid is None else pid, host=host,
                       world=world, local_rank=rank, meta={"start_step": start_step, **meta})


def sync(exposed: float = 0.2, comm: float = 0.3, *, overlap: float | None = None,
         nbytes: int = 1_000_000, buckets: int = 2, last_ready: float = T0) -> SyncTiming:
    return SyncTiming(exposed=exposed, comm=comm,
                      overlap=comm - exposed if overlap is None else overlap,
                      bytes=nbytes, buckets=buckets, last_ready=last_ready)


def step(rank: int, n: int, *, t: float | None = None, dt: float = 1.0, loss: float | None = 5.0,
         tokens: int = 1024, phases: dict[str, float] | None = None,
         timing: SyncTiming | None = None, **fields: Any) -> StepRecord:
    """Step `n` of `rank`, ending at T0 + n * dt + 1 unless `t` is given."""
    return StepRecord(rank=rank, t=T0 + n * dt + 1 if t is None else t, step=n, dt=dt,
                      phases=dict(PHASES if phases is None else phases), tokens=tokens,
                      loss=loss, sync=timing, **fields)


def fed(records: list[Any], config: RunConfig | None = None, now: float | None = None,
        source: str = "probe") -> RunState:
    """A fold that has applied `records` (and a tick at `now`)."""
    state = RunState(config or run_config(), source=source)
    for record in records:
        state.apply(record)
    if now is not None:
        state.apply(Tick(now))
    return state
