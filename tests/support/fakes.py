"""Frozen run data and a fake source for the TUI tests (no sockets, probes or processes)."""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from scalemon.core.config import RunStatus
from scalemon.core.launcherlog import rank_error_lines
from scalemon.core.records import CheckpointRecord, EndRecord, StartRecord, StepRecord
from scalemon.core.snapshots import GpuVendorStatus, SystemSnapshot
from scalemon.io.tail import read_tail
from scalemon.probes.system.gpu import GpuProcess, GpuSnapshot
from scalemon.probes.system.host import HostSnapshot, ProcessSnapshot
from scalemon.probes.system.net import NetSnapshot, NicSnapshot
from scalemon.sources.base import FoldedSource
from scalemon.sources.rundir import STDERR_LINES
from scalemon.state.fold import RECENT, RunState
from scalemon.state.observations import StatusSeen, StderrSeen, SystemSeen
from scalemon.state.summary import summarize
from scalemon.tui.view import ViewData, build_view
from support.builders import fed, run_config, start, step, sync

T0 = 1_795_000_000.0  # a fixed wall clock: Wed 18 Nov 2026 11:06:40 UTC
VOCAB = 65_536
STEP_S = 0.5
SLOWED = 0.02  # what the overlapped allreduces cost the backward
CUDA_TOKENS = 1_048_576  # 2 ranks x 16 x 2048 tokens x 16 micro-steps
NET_BYTES_PER_STEP = 73_400_320.0  # what the network probe says the run sends a step
SECTIONS = {
    "name": "frozen-d4", "command": "train",
    "model": {"depth": 4, "vocab": VOCAB, "seq_len": 512, "aspect_ratio": 64, "head_dim": 128},
    "train": {"device": "cpu", "backend": "gloo", "device_batch": 1, "accum": 1,
              "tokens_per_step": 1024, "steps": 1000, "checkpoint_every": 100},
    "launch": {"nproc_per_node": 2, "nnodes": 1, "world_size": 2, "master_addr": "127.0.0.1"},
    "hosts": ["node-a"], "pids": {"supervisor": 4000, "launcher": 4001},
}
META = {"n_params": 36_700_160, "vocab": VOCAB, "depth": 4, "seq_len": 512,
        "tokens_per_step": 1024, "steps": 1000, "device": "cpu", "backend": "gloo",
        "unigram_entropy": 7.25, "entropy_rate": 4.5}


def loss_at(step: int) -> float:
    """Falls from ln(vocab) toward 5 with a deterministic wiggle and one spike (step 80)."""
    loss = 5.0 + (math.log(VOCAB) - 5.0) * math.exp(-step / 40) + 0.08 * math.sin(step * 1.7)
    return loss + 2.5 if step == 80 else loss


def start_record(rank: int, t: float = T0) -> StartRecord:
    return start(rank, t=t, host="node-a", pid=4100 + rank, **META)


def step_record(rank: int, n: int, *, exposed: float = 0.05, t0: float = T0,
                loss: float | None = None, tokens: int = 1024) -> StepRecord:
    t = t0 + 2.0 + n * STEP_S + 0.002 * rank
    timing = sync(exposed, 0.12, nbytes=146_800_640, buckets=6, last_ready=t - 0.1 + 0.03 * rank)
    # 200 ms of backward compute, slowed by 20 ms while buckets reduce; every step has a
    # no_sync sample of it (as accumulation gives), so the split knows what sync costs.
    backward = 0.2 + SLOWED + exposed
    phases = {"data": 0.01, "forward": 0.12, "backward": backward, "optimizer": 0.06}
    return step(rank, n, t=t, dt=STEP_S - 0.01, phases=phases, tokens=tokens,
                loss=loss_at(n) if loss is None else loss, timing=timing, lr=3e-3,
                synced_backward=backward, nosync_backward=0.2)


def run_records(steps: int = 120, *, t0: float = T0, tokens: int = 1024) -> list:
    records: list = [start_record(0, t0), start_record(1, t0)]
    for n in range(steps):
        records += [step_record(0, n, t0=t0, tokens=tokens),
                    step_record(1, n, t0=t0, tokens=tokens)]
        if n == 99:
            records.append(CheckpointRecord(rank=0, t=t0 + 2.0 + n * STEP_S + 0.3,
                                            step=99, path="checkpoints/step-00000099.pt",
                                            seconds=0.3))
    return records


def frozen_state(steps: int = 120, *, cuda: bool = False) -> RunState:
    """Two ranks; on CPU with 1,024 tokens a step, or as if on two H100s with 1M."""
    train = SECTIONS["train"]
    if cuda:
        train = {**train, "device": "cuda", "backend": "nccl", "tokens_per_step": CUDA_TOKENS}
    state = fed(run_records(steps, tokens=CUDA_TOKENS if cuda else 1024),
                run_config(**{**SECTIONS, "train": train}))
    if cuda:
        state.meta.update(device="cuda:0", backend="nccl", tokens_per_step=CUDA_TOKENS)
    return state


def finished_state(steps: int = 120) -> RunState:
    state = frozen_state(steps)
    t = T0 + 2.0 + steps * STEP_S
    for rank in (0, 1):
        state.apply(EndRecord(rank=rank, t=t, reason="finished", step=steps - 1))
    state.apply(StatusSeen(RunStatus(exit_code=0, reason="finished", ended=t + 1)))
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


def frozen_view(state: RunState | None = None, *, now: float | None = None,
                price: float | None = 2.0, system: SystemSnapshot | None = None,
                stderr_tail: tuple[str, ...] = ()) -> ViewData:
    """The screen's view of `state` (frozen_state()) just after its last step, with what a
    source's system probes would have told the fold."""
    state = state or frozen_state()
    state.apply(SystemSeen(system or system_snapshot(), NET_BYTES_PER_STEP, 1e9))
    if stderr_tail:
        state.apply(StderrSeen(stderr_tail))
    now = now if now is not None else state.step_times[-1][1] + 0.4
    summary = summarize(state, now)
    # The sync share of the last RECENT steps only (the fold keeps SYNC_HISTORY): what the
    # snapshots were recorded with, a sparkline shorter than the widest split panel.
    summary = replace(summary, sync_history=summary.sync_history[-RECENT:])
    return build_view(summary, price)


class FakeSource(FoldedSource):
    """A Source for the feed: poll() folds queued records into a real RunState, and once the
    state holds a failed status reads the trainer's stderr as a run dir's source does."""

    def __init__(self, state: RunState | None = None, stderr_log: Path | None = None) -> None:
        super().__init__(state or frozen_state())
        self.state.apply(SystemSeen(system_snapshot(), NET_BYTES_PER_STEP, None))
        self.stderr_log = stderr_log
        self.queued: deque = deque()  # deque append/popleft are atomic: tests feed it
        self.poll_threads: set[int] = set()
        self.firehose = False  # a new step of both ranks on every poll
        self.closed = False
        self._status_read: RunStatus | None = None

    def poll(self, timeout: float) -> int:
        self.poll_threads.add(threading.get_ident())
        if self.firehose:
            n = self.state.step + 1
            self.queued.extend([step_record(0, n), step_record(1, n)])
        count = self._fold_queued()
        if not count:
            time.sleep(min(timeout, 0.02))
        return count

    def catch_up(self) -> None:
        self._fold_queued()

    def close(self) -> None:
        self.closed = True
        super().close()

    def _fold_queued(self) -> int:
        count = 0
        while self.queued:
            count += self.state.apply(self.queued.popleft())
        status = self.state.status
        if status is not None and status != self._status_read and status.exit_code != 0:
            self._status_read = status
            lines = rank_error_lines(read_tail(self.stderr_log), STDERR_LINES)
            self.state.apply(StderrSeen(tuple(lines)))
        return count


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
