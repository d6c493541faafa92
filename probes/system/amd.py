"""AMD probe over amdsmi (imported lazily), with the fields amdsmi offers.

`import amdsmi` fails in more ways than ImportError when ROCm is missing
(KeyError or OSError from loading libamd_smi.so, AttributeError from a
mismatched install): any exception there means "no AMD GPU", with the reason
kept for the screen.

Units, per amdsmi's documentation: activity in %, VRAM in MB (MiB), power and
its limit in W, temperature in degrees C, clock in MHz, energy as a counter
times its resolution in microjoules; per-process memory in bytes and engine
time in ns (cumulative, so the probe turns it into a share of wall time).
Values amdsmi cannot give come back as the string "N/A" or an all-ones
integer; both become NA here. PCIe throughput is not read: amdsmi's counter
sleeps a second in the driver.

When every reading of a device fails (and not all for "not supported"), the
device is treated as lost: its readings are NA with the error, and a later
sample shuts amdsmi down and initialises it again, at most once every
`retry_s`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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

__all__ = ["AmdProbe"]

_MIB = 1024 * 1024
_SENTINELS = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}  # amdsmi's "no value" integers
_NO_PCIE = "not read: amdsmi's PCIe counter blocks for a second"


@dataclass
class _Device(Device):
    gfx_ns: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (t, ns)


class AmdProbe(VendorProbe):
    """Samples every AMD GPU. `amdsmi` replaces the amdsmi module (tests pass a fake)."""

    vendor = "amd"

    def __init__(self, amdsmi: Any = None, *, retry_s: float = 5.0):
        super().__init__(retry_s)
        try:
            if amdsmi is None:
                import amdsmi as amdsmi_module

                amdsmi = amdsmi_module
            self._smi = amdsmi
            self._start()
        except Exception as exc:  # see the module docstring: not only ImportError
            self.reason = f"amdsmi unavailable: {_describe(exc)}"
            return
        self.available = True
        if not self._devices:
            self.reason = "amdsmi found no AMD GPU"

    def _start(self) -> None:
        smi = self._smi
        smi.amdsmi_init()
        devices = []
        for index, handle in enumerate(smi.amdsmi_get_processor_handles()):
            asic = quiet(smi.amdsmi_get_gpu_asic_info, handle) or {}
            name = asic.get("market_name") or "AMD GPU"
            uuid = quiet(smi.amdsmi_get_gpu_device_uuid, handle) or ""
            devices.append(_Device(index, handle, str(name), str(uuid)))
        self._devices = devices

    def _shutdown(self) -> None:
        self._smi.amdsmi_shut_down()

    def _describe(self, exc: BaseException) -> str:
        return _describe(exc)

    def _read(self, dev: _Device, rank_of: Mapping[int, int]) -> GpuSnapshot:
        smi, h = self._smi, dev.handle
        reasons: list[tuple[str, str]] = []
        failures: list[Exception] = []
        attempts = 0

        def read(fields: tuple[str, ...], fn, *args):
            nonlocal attempts
            attempts += 1
            try:
                return fn(*args)
            except Exception as exc:
                failures.append(exc)
                reasons.extend((f, _describe(exc)) for f in fields)
                return None

        activity = read(("utilization_percent",), smi.amdsmi_get_gpu_activity, h) or {}
        vram_fields = ("memory_used_bytes", "memory_total_bytes")
        vram = read(vram_fields, smi.amdsmi_get_gpu_vram_usage, h) or {}
        power = read(("power_w", "power_limit_w"), smi.amdsmi_get_power_info, h) or {}
        temp = read(("temperature_c",), self._temperature, h)
        clock = read(("sm_clock_mhz",), smi.amdsmi_get_clock_info, h, smi.AmdSmiClkType.GFX)
        energy = read(("energy_j",), smi.amdsmi_get_energy_count, h) or {}
        procs = read(("processes",), smi.amdsmi_get_gpu_process_list, h)
        if len(failures) == attempts and not all(_unsupported(smi, e) for e in failures):
            dev.gfx_ns.clear()
            raise DeviceLost(_describe(failures[0]))
        reasons += [("pcie_rx_bytes_per_s", _NO_PCIE), ("pcie_tx_bytes_per_s", _NO_PCIE)]
        energy_uj = _key(energy, "energy_accumulator", "power") * _value(
            energy.get("counter_resolution")
        )
        return GpuSnapshot(
            vendor=self.vendor,
            index=dev.index,
            name=dev.name,
            uuid=dev.uuid,
            utilization_percent=_value(activity.get("gfx_activity")),
            memory_used_bytes=_value(vram.get("vram_used")) * _MIB,
            memory_total_bytes=_value(vram.get("vram_total")) * _MIB,
            # 0 W is how a card says "not this field" (current vs average by generation).
            power_w=_first(power, "socket_power", "current_socket_power", "average_socket_power"),
            power_limit_w=_watts(_value(power.get("power_limit"))),
            temperature_c=_value(temp),
            sm_clock_mhz=_key(clock or {}, "clk", "cur_clk"),
            pcie_rx_bytes_per_s=NA,
            pcie_tx_bytes_per_s=NA,
            energy_j=energy_uj / 1e6,
            processes=self._processes(dev, procs or [], rank_of),
            reasons=tuple(reasons),
        )

    def _temperature(self, handle) -> float:
        # Instinct cards have no edge sensor; their hotspot is the junction.
        smi, kinds = self._smi, self._smi.AmdSmiTemperatureType
        current = smi.AmdSmiTemperatureMetric.CURRENT
        sensors = [getattr(kinds, n) for n in ("EDGE", "HOTSPOT", "JUNCTION") if hasattr(kinds, n)]
        for sensor in sensors[:-1]:
            try:
                return smi.amdsmi_get_temp_metric(handle, sensor, current)
            except Exception:
                continue
        return smi.amdsmi_get_temp_metric(handle, sensors[-1], current)

    def _processes(self, dev: _Device, procs: list, rank_of: Mapping[int, int]) -> tuple:
        now = time.monotonic()
        seen: dict[int, tuple[float, float]] = {}
        out = []
        for item in procs:
            info = item
            if not isinstance(item, Mapping):  # amdsmi before 6.x: handles, info asked apart
                info = quiet(self._smi.amdsmi_get_gpu_process_info, dev.handle, item) or {}
            pid = info.get("pid")
            if not isinstance(pid, int):
                continue
            reasons = []
            memory = info.get("memory_usage") or {}
            used = _value(memory.get("vram_mem", info.get("mem")))
            if used is NA:
                reasons.append(("used_memory_bytes", "amdsmi does not report it"))
            gfx_ns = _value((info.get("engine_usage") or {}).get("gfx"))
            sm: float = NA
            prev = dev.gfx_ns.get(pid)
            if gfx_ns is NA:
                reasons.append(("sm_percent", "amdsmi does not report engine time"))
            elif prev is None or now <= prev[0] or gfx_ns < prev[1]:
                reasons.append(("sm_percent", "first sample: a rate needs two"))
            else:
                sm = min(100.0, 100.0 * (gfx_ns - prev[1]) / ((now - prev[0]) * 1e9))
            if gfx_ns is not NA:
                seen[pid] = (now, gfx_ns)
            out.append(GpuProcess(pid, rank_of.get(pid), used, sm, tuple(reasons)))
        dev.gfx_ns = seen  # processes that left are forgotten
        return tuple(sorted(out, key=lambda g: g.pid))


def _value(raw) -> float:
    """A reading as a float; amdsmi's "N/A" strings and all-ones integers are NA."""
    if isinstance(raw, int) and raw in _SENTINELS:
        return NA
    return as_float(raw)


def _key(reading: Mapping, *keys: str) -> float:
    """The value of the first key present (names differ across amdsmi versions)."""
    for key in keys:
        value = _value(reading.get(key))
        if value is not NA:
            return value
    return NA


def _first(reading: Mapping, *keys: str) -> float:
    """The first key with a non-zero value."""
    for key in keys:
        value = _value(reading.get(key))
        if value is not NA and value != 0:
            return value
    return NA


def _watts(limit: float) -> float:
    # One amdsmi release documents power_limit in microwatts; no GPU is capped above 10 kW.
    return limit / 1e6 if limit is not NA and limit > 10_000 else limit


def _unsupported(smi: Any, exc: Exception) -> bool:
    status = getattr(getattr(smi, "AmdSmiStatus", None), "NOT_SUPPORTED", None)
    code = getattr(exc, "err_code", None)
    if code is None and hasattr(exc, "get_error_code"):
        code = quiet(exc.get_error_code)
    if status is not None and code is not None:
        return code == status
    return "NOT_SUPPORTED" in str(exc).upper().replace(" ", "_")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if type(exc).__name__.startswith("AmdSmi") else f"{type(exc).__name__}: {text}"
