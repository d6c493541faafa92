"""GPU snapshots shared by the vendor probes, the probe protocol, and `probe_gpus()`.

Each vendor probe (`nvidia.NvidiaProbe`, `amd.AmdProbe`) imports its library
lazily. A probe whose library is missing or fails to start is still returned,
with ``available`` False and ``reason`` saying why, so the screen can tell
"no NVIDIA GPU: NVML Shared Library Not Found" from a broken one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from scalemon.core.na import NA, Explained, ratio

__all__ = [
    "Device", "DeviceLost", "GpuProbe", "GpuProcess", "GpuSnapshot", "VendorProbe", "probe_gpus",
]


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


@dataclass
class Device:
    """One GPU as a vendor library knows it; vendors add what they track per device."""

    index: int
    handle: Any
    name: str
    uuid: str


class DeviceLost(Exception):
    """A reading failed for the whole device or driver: the library is restarted later."""


class VendorProbe:
    """What NVIDIA and AMD probes share: per-device reads that never raise, and recovery.

    A subclass sets `vendor` and implements `_start` (initialise the library and
    fill `_devices`, each with index, name and uuid), `_shutdown`, `_read` (one
    device's snapshot; raises DeviceLost when the device or driver is gone) and
    `_describe` (an exception in the library's words). After a DeviceLost every
    reading is NA with the error, and a later sample restarts the library, at
    most once every `retry_s`.
    """

    vendor = ""

    def __init__(self, retry_s: float) -> None:
        self.available = False
        self.reason: str | None = None
        self._retry_s = retry_s
        self._devices: list[Any] = []
        self._lost_since: float | None = None  # monotonic time of the last failure

    def sample(self, rank_of: Mapping[int, int] | None = None) -> tuple[GpuSnapshot, ...]:
        if not self.available:
            return ()
        if self._lost_since is not None and not self._recover():
            return tuple(self._lost(d) for d in self._devices)
        snaps = []
        for dev in self._devices:
            try:
                snaps.append(self._read(dev, rank_of or {}))
            except DeviceLost as exc:
                self.reason, self._lost_since = str(exc), time.monotonic()
                snaps.append(self._lost(dev))
            except Exception as exc:  # an answer of a shape we did not expect: never raise
                error = f"{type(exc).__name__}: {exc}"
                snaps.append(GpuSnapshot.lost(self.vendor, dev.index, dev.name, dev.uuid, error))
        return tuple(snaps)

    def close(self) -> None:
        if self.available:
            self.available = False
            # Closing a broken library: nothing left to release.
            with contextlib.suppress(Exception):
                self._shutdown()

    def _recover(self) -> bool:
        if time.monotonic() - self._lost_since < self._retry_s:
            return False
        try:
            self._restart()
        except Exception as exc:
            self.reason = f"restart failed: {self._describe(exc)}"
            self._lost_since = time.monotonic()
            return False
        self.reason, self._lost_since = None, None
        return True

    def _restart(self) -> None:
        # The library may already consider itself shut down.
        with contextlib.suppress(Exception):
            self._shutdown()
        self._start()

    def _lost(self, dev: Any) -> GpuSnapshot:
        return GpuSnapshot.lost(self.vendor, dev.index, dev.name, dev.uuid, self.reason or "lost")

    def _start(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def _read(self, dev: Any, rank_of: Mapping[int, int]) -> GpuSnapshot:
        raise NotImplementedError

    def _describe(self, exc: BaseException) -> str:
        raise NotImplementedError


def quiet(fn, *args):
    """fn(*args), or None when the library raises (optional labels such as names)."""
    try:
        return fn(*args)
    except Exception:
        return None


def probe_gpus(*, pcie_period_s: float | None = 1.0) -> tuple[GpuProbe, ...]:
    """One probe per vendor, NVIDIA then AMD, each saying whether it is available and why not."""
    from .amd import AmdProbe
    from .nvidia import NvidiaProbe

    return NvidiaProbe(pcie_period_s=pcie_period_s), AmdProbe()
