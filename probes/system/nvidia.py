"""NVIDIA probe over NVML (nvidia-ml-py, imported as `pynvml`, lazily).

A field the device does not support (NVMLError_NotSupported, or any other
error that concerns one query) is NA with NVML's message as the reason. An
error that concerns the driver or the device as a whole (GPU lost, driver
unloaded, reset required, ...) turns every reading of that device NA with the
error kept, and a later sample shuts NVML down and initialises it again, at
most once every `retry_s`, until the device answers.

PCIe throughput is the exception to "read on the caller's poll": each
nvmlDeviceGetPcieThroughput call samples the bus for about 20 ms, so a
background thread reads it every `pcie_period_s` and `sample()` takes the
latest reading (pcie_period_s=None reads it inside `sample()` instead).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scalemon.core.na import NA, as_float
from scalemon.probes.system.gpu import (
    Device,
    DeviceLost,
    GpuProcess,
    GpuSnapshot,
    VendorProbe,
    quiet,
)

__all__ = ["NvidiaProbe"]

# Errors about the driver or the whole device, not one query: re-initialise.
_LOST_ERRORS = (
    "NVML_ERROR_UNINITIALIZED",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_RESET_REQUIRED",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    "NVML_ERROR_UNKNOWN",
)
_KIB = 1024  # NVML's PCIe "KB/s" are KiB/s (as nvidia-smi and nvitop read them)


@dataclass
class _Device(Device):
    memory_v2: bool = True  # nvmlDeviceGetMemoryInfo v2 works here (until it fails once)
    util_seen_us: int = 0  # newest per-process utilisation sample read so far


class NvidiaProbe(VendorProbe):
    """Samples every NVIDIA GPU. `nvml` replaces the pynvml module (tests pass a fake)."""

    vendor = "nvidia"

    def __init__(
        self, nvml: Any = None, *, pcie_period_s: float | None = 1.0, retry_s: float = 5.0
    ):
        super().__init__(retry_s)
        self._pcie: _PcieSampler | None = None
        try:
            if nvml is None:
                import pynvml

                nvml = pynvml
            self._nvml = nvml
            self._lost_codes = {getattr(nvml, name, None) for name in _LOST_ERRORS} - {None}
            self._start()
        except Exception as exc:  # no library, no driver, no permission: "no NVIDIA GPU"
            self.reason = _describe(exc)
            return
        self.available = True
        if not self._devices:
            self.reason = "NVML found no NVIDIA GPU"
        self._pcie = _PcieSampler(nvml, pcie_period_s, [d.handle for d in self._devices])
        self._pcie.start()

    def sample(self, rank_of: Mapping[int, int] | None = None) -> tuple[GpuSnapshot, ...]:
        if self._pcie is None:
            return ()
        if self._pcie.period_s is None and self._lost_since is None:
            self._pcie.refresh()
        return super().sample(rank_of)

    def close(self) -> None:
        if self._pcie is not None:
            self._pcie.stop()
            self._pcie = None
        super().close()

    def _shutdown(self) -> None:
        self._nvml.nvmlShutdown()

    def _describe(self, exc: BaseException) -> str:
        return _describe(exc)

    def _start(self) -> None:
        nvml = self._nvml
        nvml.nvmlInit()
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(quiet(nvml.nvmlDeviceGetName, handle) or "NVIDIA GPU")
            uuid = _text(quiet(nvml.nvmlDeviceGetUUID, handle) or "")
            devices.append(_Device(index, handle, name, uuid))
        self._devices = devices

    def _restart(self) -> None:
        assert self._pcie is not None  # sample() returns before this without a sampler
        with self._pcie.busy:  # not while the PCIe thread holds old handles
            super()._restart()
            self._pcie.set_handles([d.handle for d in self._devices])

    def _read(self, dev: _Device, rank_of: Mapping[int, int]) -> GpuSnapshot:
        nvml, h = self._nvml, dev.handle
        reasons: list[tuple[str, str]] = []

        def read(field: str, fn, *args):
            try:
                return fn(*args)
            except Exception as exc:
                if getattr(exc, "value", None) in self._lost_codes:
                    raise DeviceLost(str(exc)) from exc
                reasons.append((field, _describe(exc)))
                return None

        util = read("utilization_percent", nvml.nvmlDeviceGetUtilizationRates, h)
        memory = self._memory(dev, read)
        power_mw = read("power_w", nvml.nvmlDeviceGetPowerUsage, h)
        limit_mw = read("power_limit_w", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        temp = read("temperature_c", nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU)
        clock = read("sm_clock_mhz", nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)
        energy_mj = read("energy_j", nvml.nvmlDeviceGetTotalEnergyConsumption, h)
        assert self._pcie is not None  # sample() returns before this without a sampler
        rx, tx, why = self._pcie.reading(dev.index)
        if why:
            reasons += [("pcie_rx_bytes_per_s", why), ("pcie_tx_bytes_per_s", why)]
        return GpuSnapshot(
            vendor=self.vendor,
            index=dev.index,
            name=dev.name,
            uuid=dev.uuid,
            utilization_percent=as_float(util and util.gpu),
            memory_used_bytes=as_float(memory and memory.used),
            memory_total_bytes=as_float(memory and memory.total),
            power_w=as_float(power_mw) / 1000,
            power_limit_w=as_float(limit_mw) / 1000,
            temperature_c=as_float(temp),
            sm_clock_mhz=as_float(clock),
            pcie_rx_bytes_per_s=rx,
            pcie_tx_bytes_per_s=tx,
            energy_j=as_float(energy_mj) / 1000,
            processes=self._processes(dev, read, rank_of),
            reasons=tuple(reasons),
        )

    def _memory(self, dev: _Device, read):
        # v2 "used" leaves out what the driver reserves for itself, as
        # nvidia-smi does; v1's used (total - free) counts it (about 0.5 GiB
        # on an 80 GB H100), which matters for small workloads.
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if dev.memory_v2 and version is not None:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(dev.handle, version=version)
            except Exception as exc:
                if getattr(exc, "value", None) in self._lost_codes:
                    raise DeviceLost(str(exc)) from exc
                dev.memory_v2 = False  # an older driver: use v1 from now on
        return read("memory_used_bytes", nvml.nvmlDeviceGetMemoryInfo, dev.handle)

    def _processes(self, dev: _Device, read, rank_of: Mapping[int, int]) -> tuple:
        procs = read("processes", self._nvml.nvmlDeviceGetComputeRunningProcesses, dev.handle)
        if not procs:
            return ()
        sm_by_pid, sm_reason = self._sm_percent(dev)
        out = []
        for p in procs:
            reasons = []
            used = as_float(getattr(p, "usedGpuMemory", None))
            if used is NA:
                reasons.append(("used_memory_bytes", "the driver does not report it"))
            sm = sm_by_pid.get(p.pid, NA)
            if sm is NA:
                reasons.append(("sm_percent", sm_reason or "no utilisation sample for this pid"))
            out.append(GpuProcess(p.pid, rank_of.get(p.pid), used, sm, tuple(reasons)))
        return tuple(sorted(out, key=lambda g: g.pid))

    def _sm_percent(self, dev: _Device) -> tuple[dict[int, float], str | None]:
        """{pid: SM %} from the samples NVML took since the last call."""
        nvml = self._nvml
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(dev.handle, dev.util_seen_us)
        except Exception as exc:
            if getattr(exc, "value", None) in self._lost_codes:
                raise DeviceLost(str(exc)) from exc
            if getattr(exc, "value", None) == getattr(nvml, "NVML_ERROR_NOT_FOUND", object()):
                return {}, "no utilisation sample since the last poll"
            return {}, _describe(exc)
        newest: dict[int, tuple[int, float]] = {}
        for s in samples:
            if s.pid not in newest or s.timeStamp > newest[s.pid][0]:
                # NVML marks a missing value with all bits set.
                newest[s.pid] = (s.timeStamp, as_float(s.smUtil) if s.smUtil <= 100 else NA)
            dev.util_seen_us = max(dev.util_seen_us, s.timeStamp)
        return {pid: sm for pid, (_, sm) in newest.items()}, None


class _PcieSampler:
    """PCIe throughput per device, read away from the poll: each read blocks ~20 ms."""

    def __init__(self, nvml: Any, period_s: float | None, handles: list):
        self._nvml = nvml
        self.period_s = period_s
        self.busy = threading.Lock()  # held for one pass over the devices
        self._handles = handles
        self._readings: dict[int, tuple[float, float, float, str | None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.period_s is not None and self._handles:
            self._thread = threading.Thread(target=self._run, name="scalemon-pcie", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def set_handles(self, handles: list) -> None:
        """New handles after a restart; the caller holds `busy`."""
        self._handles = handles
        self._readings = {}

    def refresh(self) -> None:
        with self.busy:
            readings = dict(self._readings)
            for index, handle in enumerate(self._handles):
                readings[index] = self._read(handle)
            self._readings = readings  # one assignment: the poll thread sees old or new

    def reading(self, index: int) -> tuple[float, float, str | None]:
        """(rx, tx) bytes/s and why they are NA, if they are."""
        entry = self._readings.get(index)
        if entry is None:
            return NA, NA, "no PCIe reading yet"
        t, rx, tx, why = entry
        if self.period_s is not None and time.monotonic() - t > max(3 * self.period_s, 3.0):
            return NA, NA, "PCIe reading is stale"
        return rx, tx, why

    def _read(self, handle) -> tuple[float, float, float, str | None]:
        nvml = self._nvml
        try:
            rx = nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES)
            tx = nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES)
        except Exception as exc:
            return time.monotonic(), NA, NA, _describe(exc)
        return time.monotonic(), as_float(rx) * _KIB, as_float(tx) * _KIB, None

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.period_s):
                return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return f"nvidia-ml-py is not installed ({exc})"
    text = str(exc)
    return text if type(exc).__name__.startswith("NVMLError") else f"{type(exc).__name__}: {text}"


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
