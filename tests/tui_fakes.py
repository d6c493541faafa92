"""Frozen run data and a fake collector for the TUI tests (no sockets, probes or processes)."""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from scalemon.core.records import CheckpointRecord, EndRecord, StartRecord, StepRecord, SyncTiming
from scalemon.probes.gpu import GpuProcess, GpuSnapshot
from scalemon.probes.host import HostSnapshot, ProcessSnapshot
from scalemon.probes.net import NetSnapshot, NicSnapshot
from scalemon.probes.system import GpuVendorStatus, SystemSnapshot
from scalemon.runstate import RunState
from scalemon.tui.series import LossSeries
from scalemon.tui.view import build_view

T0 = 1_795_000_000.0  # a fixed wall clock: Wed 18 Nov 2026 11:06:40 UTC
VOCAB = 65_536
STEP_S = 0.5
CUDA_TOKENS = 1_048_576  # 2 ranks x 16 x 2048 tokens x 16 micro-steps
CONFIG = {
    "schema": 1, "name": "frozen-d4", "command": "train",
    "model": {"depth": 4, "vocab": VOCAB, "seq_len": 512, "aspect_ratio": 64, "head_dim": 128},
    "train": {"device": "cpu", "backend": "gloo", "device_batch": 1, "accum": 1,
              "tokens_per_step": 1024, "steps": 1000, "checkpoint_every": 100},
    "launch": {"nproc_per_node": 2, "nnodes": 1, "world_size": 2, "master_addr": "127.0.0.1"},
    "hosts": ["node-a"], "pids": {"supervisor": 4000, "launcher": 4001},
}
META = {"n_params": 36_700_160, "vocab": VOCAB, "depth": 4, "seq_len": 512,
        "tokens_per_step": 1024, "steps": 1000, "device": "cpu", "backend": "gloo",
        "unigram_entropy": 7.25, "entropy_rate": 4.5, "start_step": 0}


def loss_at(step: int) -> float:
    """Falls from ln(vocab) toward 5 with a deterministic wiggle and one spike (step 80)."""
    loss = 5.0 + (math.log(VOCAB) - 5.0) * math.exp(-step / 40) + 0.08 * math.sin(step * 1.7)
    return loss + 2.5 if step == 80 else loss


def start_record(rank: int, t: float = T0) -> StartRecord:
    return StartRecord(rank=rank, t=t, pid=4100 + rank, host="node-a", world=2,
                       local_rank=rank, meta=dict(META))


def step_record(rank: int, step: int, *, exposed: float = 0.05, t0: float = T0,
                loss: float | None = None, tokens: int = 1024) -> StepRecord:
    t = t0 + 2.0 + step * STEP_S + 0.002 * rank
    sync = SyncTiming(exposed=exposed, comm=0.12, overlap=0.12 - exposed, bytes=146_800_640,
                      buckets=6, last_ready=t - 0.1 + 0.03 * rank)
    phases = {"data": 0.01, "forward": 0.12, "backward": 0.2 + exposed, "optimizer": 0.06}
    return StepRecord(rank=rank, t=t, step=step, dt=STEP_S - 0.01, phases=phases, tokens=tokens,
                      loss=loss_at(step) if loss is None else loss, lr=3e-3, sync=sync)


def run_records(steps: int = 120, *, t0: float = T0, tokens: int = 1024) -> list:
    records = [start_record(0, t0), start_record(1, t0)]
    for step in range(steps):
        records += [step_record(0, step, t0=t0, tokens=tokens),
                    step_record(1, step, t0=t0, tokens=tokens)]
        if step == 99:
            records.append(CheckpointRecord(rank=0, t=t0 + 2.0 + step * STEP_S + 0.3,
                                            step=99, path="checkpoints/step-00000099.pt",
                                            seconds=0.3))
    return records


def frozen_state(steps: int = 120, *, cuda: bool = False) -> RunState:
    """Two ranks; on CPU with 1,024 tokens a step, or as if on two H100s with 1M."""
    config = CONFIG
    if cuda:
        config = {**CONFIG, "train": {**CONFIG["train"], "device": "cuda", "backend": "nccl",
                                      "tokens_per_step": CUDA_TOKENS}}
    state = RunState(config)
    for record in run_records(steps, tokens=CUDA_TOKENS if cuda else 1024):
        state.apply(record)
    if cuda:
        state.meta.update(device="cuda:0", backend="nccl", tokens_per_step=CUDA_TOKENS)
    return state


def finished_state(steps: int = 120) -> RunState:
    state = frozen_state(steps)
    t = T0 + 2.0 + steps * STEP_S
    for rank in (0, 1):
        state.apply(EndRecord(rank=rank, t=t, reason="finished", step=steps - 1))
    state.apply_status({"exit_code": 0, "ended": t + 1, "reason": "finished"})
    return state


def _nic(name: str, rx: float, tx: float) -> NicSnapshot:
    return NicSnapshot(name=name, is_up=True, is_loopback=name == "lo", speed_mbps=1000.0,
                       rx_bytes_per_s=rx, tx_bytes_per_s=tx, rx_packets_per_s=100.0,
                       tx_packets_per_s=100.0, rx_errors_per_s=0.0, tx_errors_per_s=0.0,
                       rx_drops_per_s=0.0, tx_drops_per_s=0.0, rx_bytes_total=1e9,
                       tx_bytes_total=1e9, utilisation_percent=rx * 8 / 1e9 * 100)


def system_snapshot(*, gpus: bool = False) -> SystemSnapshot:
    procs = (ProcessSnapshot(4000, 1, "python", None, 0.4, 30e6, 2, "sleeping"),
             ProcessSnapshot(4100, 4001, "python", 0, 97.0, 1.2e9, 8, "running"),
             ProcessSnapshot(4101, 4001, "python", 1, 95.5, 1.1e9, 8, "running"))
    host = HostSnapshot(t_monotonic=100.0, cpu_count=2, cpu_percent_total=96.0,
                        cpu_percent_per_core=(97.0, 95.0), load_1=2.1, load_5=2.0, load_15=1.5,
                        mem_total_bytes=25.3e9, mem_used_bytes=2.8e9, mem_available_bytes=22e9,
                        swap_total_bytes=0.0, swap_used_bytes=0.0, processes=procs)
    run = _nic("eth0", 23.5e6, 24.1e6)
    net = NetSnapshot(t_monotonic=100.0, t_wall=T0, interval_s=1.0,
                      interfaces=(run, _nic("lo", 1e3, 1e3)), run_interface="eth0", run=run)
    devices: tuple = ()
    vendors = (GpuVendorStatus("nvidia", False, "NVML Shared Library Not Found"),)
    if gpus:
        devices = tuple(GpuSnapshot(
            vendor="nvidia", index=i, name="NVIDIA H100 80GB HBM3", uuid=f"GPU-{i}",
            utilization_percent=97.0, memory_used_bytes=61e9, memory_total_bytes=80e9,
            power_w=612.0, power_limit_w=700.0, temperature_c=64.0, sm_clock_mhz=1980.0,
            pcie_rx_bytes_per_s=1e9, pcie_tx_bytes_per_s=1e9, energy_j=1e6,
            processes=(GpuProcess(4100 + i, i, 60e9, 95.0),)) for i in range(2))
        vendors = (GpuVendorStatus("nvidia", True, None),)
    return SystemSnapshot(host, net, devices, 100.0, T0, vendors)


def frozen_view(state: RunState | None = None, *, now: float | None = None, price=2.0,
                system: SystemSnapshot | None = None, **kw):
    state = state or frozen_state()
    state.observe_network(73_400_320.0, 1e9)  # what the collector's network probe tells it
    series = LossSeries()
    series.update(state.loss_steps, state.loss_values)
    history = tuple(r.sync.exposed / r.dt for r in state.recent[0])
    now = now if now is not None else state.step_times[-1][1] + 0.4
    return build_view(state, series, now=now, system=system or system_snapshot(),
                      net_bytes_per_step=73_400_320, sync_history=history, price=price, **kw)


class FakeCollector:
    """Collector's surface for the feed: poll() folds queued records into a real RunState."""

    def __init__(self, state: RunState | None = None, logs_dir: Path | None = None) -> None:
        self.state = state or frozen_state()
        self.last_system = system_snapshot()
        self.run = SimpleNamespace(logs_dir=logs_dir or Path("/nonexistent"))
        self.queued: deque = deque()  # deque append/popleft are atomic: tests feed it
        self.poll_threads: set[int] = set()
        self.firehose = False  # a new step of both ranks on every poll

    def poll(self, timeout: float) -> int:
        self.poll_threads.add(threading.get_ident())
        if self.firehose:
            step = self.state.step + 1
            self.queued.extend([step_record(0, step), step_record(1, step)])
        count = 0
        while self.queued:
            count += self.state.apply(self.queued.popleft())
        if not count:
            time.sleep(min(timeout, 0.02))
        return count

    def net_bytes_per_step(self) -> float:
        return 73_400_320.0


def screen_text(app) -> str:
    """The screen as plain text (what `tmux capture-pane` would show)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


def panel_text(app, selector: str) -> str:
    return app.query_one(selector).render().plain


def header_text(app) -> str:
    return panel_text(app, "#title") + "\n" + panel_text(app, "#progress")
