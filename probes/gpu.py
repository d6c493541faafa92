"""GPU snapshots shared by the vendor probes, the probe protocol, and `probe_gpus()`.

Each vendor probe (`nvidia.NvidiaProbe`, `amd.AmdProbe`) imports its library
lazily. A probe whose library is missing or fails to start is still returned,
with ``available`` False and ``reason`` saying why, so the screen can tell
"no NVIDIA GPU: NVML Shared Library Not Found" from a broken one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from .na import NA, Explained, ratio

__all__ = ["GpuProbe", "GpuProcess", "GpuSnapshot", "probe_gpus"]


@dataclass(frozen=True, slots=True)
class GpuProcess(Explained):
    """A compute process on one GPU."""

    pid: int  # as the driver reports it (the host pid namespace)
    rank: int | None  # the run's rank with this pid, None when not one of the run's
    used_memory_bytes: float  # GPU memory this process holds
    sm_percent: float  # share of the GPU's time running this process's kernels, 0-100
    reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GpuSnapshot(Explained):
    """One GPU at one instant. Readings the device does not give are NA."""

    vendor: str  # "nvidia" or "amd"
    index: int  # the vendor library's device index
    name: str
    uuid: str
    utilization_percent: float  # time a kernel was running (NVIDIA) / graphics engine busy (AMD)
    memory_used_bytes: float
    memory_total_bytes: float
    power_w: float  # current draw
    power_limit_w: float  # enforced limit
    temperature_c: float  # GPU core (NVIDIA) / edge or hotspot (AMD)
    sm_clock_mhz: float  # SM (NVIDIA) / graphics (AMD) clock
    pcie_rx_bytes_per_s: float  # host -> GPU
    pcie_tx_bytes_per_s: float  # GPU -> host
    energy_j: float  # consumed since the driver loaded
    processes: tuple[GpuProcess, ...] = ()
    error: str | None = None  # why the whole device has no readings (e.g. "GPU is lost")
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def memory_used_percent(self) -> float:
        return ratio(self.memory_used_bytes * 100, self.memory_total_bytes)

    @classmethod
    def lost(cls, vendor: str, index: int, name: str, uuid: str, error: str) -> GpuSnapshot:
        """A device the probe knows but cannot read now: every reading NA."""
        readings = [f.name for f in fields(cls)][4:-3]  # utilization_percent .. energy_j
        return cls(
            vendor, index, name, uuid, *(NA,) * len(readings),
            error=error, reasons=tuple((field, error) for field in readings),
        )  # fmt: skip


@runtime_checkable
class GpuProbe(Protocol):
    """What the monitor needs of a vendor probe."""

    vendor: str
    available: bool  # the library loaded and initialised (it may still have no GPUs)
    reason: str | None  # why not available, or what is wrong now; None when all is well

    def sample(self, rank_of: Mapping[int, int] | None = None) -> tuple[GpuSnapshot, ...]:
        """One snapshot per GPU; `rank_of` maps pid -> rank to label processes. Never raises."""
        ...

    def close(self) -> None: ...


def probe_gpus(*, pcie_period_s: float | None = 1.0) -> tuple[GpuProbe, ...]:
    """One probe per vendor, NVIDIA then AMD, each saying whether it is available and why not."""
    from .amd import AmdProbe
    from .nvidia import NvidiaProbe

    return NvidiaProbe(pcie_period_s=pcie_period_s), AmdProbe()
