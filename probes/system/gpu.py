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
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from scalemon.core.snapshots import GpuProcess, GpuSnapshot

__all__ = [
    "Device", "DeviceLost", "GpuProbe", "GpuProcess", "GpuSnapshot", "VendorProbe", "probe_gpus",
]


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
        assert self._lost_since is not None  # sample() calls this only after a failure
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
