"""What the system probes saw, as immutable snapshots: the host, the network and the GPUs.

The probes (scalemon.probes.system) make these; the state, the summary and the views read
them. A reading the hardware does not give is `NA` with a reason (`Explained.reason`), never 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from scalemon.core.na import NA, Explained, ratio

__all__ = ["GpuProcess", "GpuSnapshot", "GpuVendorStatus", "HostSnapshot", "NetSnapshot",
           "NicSnapshot", "ProcessSnapshot", "SystemSnapshot"]


@dataclass(frozen=True, slots=True)
class ProcessSnapshot(Explained):
    """One process of the run's tree."""

    pid: int
    ppid: int
    name: str
    rank: int | None  # global rank (RANK in its environment, or the caller's map); None: launcher
    cpu_percent: float  # since the previous sample; 100 = one core busy, can exceed 100
    rss_bytes: int | float  # resident memory, or NA
    threads: int | float  # number of threads, or NA
    state: str  # psutil's status: running, sleeping, disk-sleep, zombie, ...
    reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HostSnapshot(Explained):
    """The machine and the run's processes at one instant."""

    t_monotonic: float  # time.monotonic() when sampled
    cpu_count: int  # logical cores
    cpu_percent_total: float  # busy share of all cores since the previous sample, 0-100
    cpu_percent_per_core: tuple[float, ...]  # same, per logical core
    load_1: float  # run-queue load averages over 1, 5 and 15 minutes
    load_5: float
    load_15: float
    mem_total_bytes: float
    mem_used_bytes: float  # psutil's "used": total - free - buffers - cache
    mem_available_bytes: float  # what can be given to programs without swapping
    swap_total_bytes: float
    swap_used_bytes: float
    processes: tuple[ProcessSnapshot, ...]  # launcher (rank None) first, then by rank and pid
    error: str | None = None  # why the whole probe failed; every reading is then N/A
    reasons: tuple[tuple[str, str], ...] = ()

    def rank_by_pid(self) -> dict[int, int]:
        """{pid: rank} for the processes whose rank is known."""
        return {p.pid: p.rank for p in self.processes if p.rank is not None}

    @classmethod
    def unavailable(cls, reason: str, t_monotonic: float | None = None) -> HostSnapshot:
        """A snapshot for a probe that failed as a whole: every reading N/A."""
        return cls(
            t_monotonic=time.monotonic() if t_monotonic is None else t_monotonic,
            cpu_count=0, cpu_percent_total=NA, cpu_percent_per_core=(),
            load_1=NA, load_5=NA, load_15=NA,
            mem_total_bytes=NA, mem_used_bytes=NA, mem_available_bytes=NA,
            swap_total_bytes=NA, swap_used_bytes=NA,
            processes=(), error=reason,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NicSnapshot(Explained):
    """One network interface. Rates are per second since the previous sample."""

    name: str
    is_up: bool | None  # None when the kernel did not say
    is_loopback: bool
    speed_mbps: float  # link speed in Mbit/s; NA when unknown (loopback, most virtual links)
    rx_bytes_per_s: float
    tx_bytes_per_s: float
    rx_packets_per_s: float
    tx_packets_per_s: float
    rx_errors_per_s: float
    tx_errors_per_s: float
    rx_drops_per_s: float
    tx_drops_per_s: float
    rx_bytes_total: float  # the kernel's counters (they can wrap or reset)
    tx_bytes_total: float
    utilisation_percent: float  # busier direction / link speed (full duplex); NA without a speed
    reasons: tuple[tuple[str, str], ...] = ()

    @classmethod
    def missing(cls, name: str, reason: str) -> NicSnapshot:
        """The run's interface when the machine does not have it (now)."""
        readings = [f.name for f in fields(cls)][3:-1]  # speed_mbps .. utilisation_percent
        return cls(
            name, None, False, **dict.fromkeys(readings, NA),
            reasons=tuple((field, reason) for field in ["name", *readings]),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class NetSnapshot(Explained):
    """All interfaces at one instant, and the one the run's traffic uses."""

    t_monotonic: float
    t_wall: float
    interval_s: float  # since the previous sample; NA on the first
    interfaces: tuple[NicSnapshot, ...]  # sorted by name
    run_interface: str | None  # None when not known
    run: NicSnapshot | None  # the run interface's readings (a `missing` one if it is gone)
    error: str | None = None  # why the whole probe failed; every reading is then N/A
    reasons: tuple[tuple[str, str], ...] = ()

    def interface(self, name: str) -> NicSnapshot | None:
        return next((nic for nic in self.interfaces if nic.name == name), None)

    @classmethod
    def unavailable(cls, reason: str, run_interface: str | None = None) -> NetSnapshot:
        run = NicSnapshot.missing(run_interface, reason) if run_interface else None
        return cls(time.monotonic(), time.time(), NA, (), run_interface, run, error=reason)


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
            vendor, index, name, uuid, **dict.fromkeys(readings, NA), processes=(),
            error=error, reasons=tuple((field, error) for field in readings),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class GpuVendorStatus:
    """Whether a vendor's library is there, and why not (shown as "no AMD GPU: ...")."""

    vendor: str
    available: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class SystemSnapshot(Explained):
    """Everything the probes saw in one poll."""

    host: HostSnapshot
    net: NetSnapshot
    gpus: tuple[GpuSnapshot, ...]  # every available vendor's GPUs, NVIDIA first
    t_monotonic: float  # when the poll began
    t_wall: float
    gpu_vendors: tuple[GpuVendorStatus, ...] = ()
    reasons: tuple[tuple[str, str], ...] = ()  # ("host" | "net" | "gpus:<vendor>", why it failed)
