"""Fakes at the hardware boundary: pynvml and amdsmi as the GPU probes call them, over
made-up GPUs (the probe tests and bench/probe_cost.py use them)."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml

GIB = 1024**3


class FakeNvml:
    """The part of pynvml the probe uses, over made-up GPUs.

    Constants and error classes are pynvml's own (importing pynvml needs no
    driver). `fail[function] = NVML_ERROR_*` makes that call raise; `lost`
    makes every call raise GPU_IS_LOST, nvmlInit included, like a GPU that
    fell off the bus.
    """

    def __init__(self, gpus: int = 1):
        self.gpus = [
            {
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": f"GPU-fake-{i}",
                "util": 87,
                "total": 80 * GIB,
                "used": 20 * GIB + i,
                "reserved": GIB // 2,
                "power_mw": 350_000,
                "limit_mw": 700_000,
                "temp_c": 61,
                "sm_mhz": 1980,
                "energy_mj": 5_000_000,
                "pcie_kib": {
                    pynvml.NVML_PCIE_UTIL_RX_BYTES: 1000,
                    pynvml.NVML_PCIE_UTIL_TX_BYTES: 500,
                },
                "procs": [(4242, 18 * GIB), (4243, 2 * GIB)],
                "sm": {4242: 71, 4243: 9},
            }
            for i in range(gpus)
        ]
        self.fail: dict[str, int] = {}
        self.lost = False
        self.initialised = False
        self.init_calls = 0
        self.shutdown_calls = 0
        self.clock_us = 1_000_000

    def __getattr__(self, name):
        if name.startswith(("NVML_", "NVMLError", "nvmlMemory_v")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def _check(self, function: str) -> None:
        if self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function != "nvmlInit" and not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if function in self.fail:
            raise pynvml.NVMLError(self.fail[function])

    def nvmlInit(self):
        self.init_calls += 1
        self._check("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self):
        self.shutdown_calls += 1
        self.initialised = False

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetName(self, h):
        self._check("nvmlDeviceGetName")
        return self.gpus[h]["name"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetUUID(self, h):
        self._check("nvmlDeviceGetUUID")
        return self.gpus[h]["uuid"]

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self.gpus[h]["util"], memory=30)

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        g = self.gpus[h]
        if version is None:
            self._check("nvmlDeviceGetMemoryInfo")
            used = g["used"] + g["reserved"]  # v1 counts the driver's reservation
            return SimpleNamespace(total=g["total"], used=used, free=g["total"] - used)
        self._check("nvmlDeviceGetMemoryInfo_v2")
        free = g["total"] - g["used"] - g["reserved"]
        return SimpleNamespace(total=g["total"], used=g["used"], reserved=g["reserved"], free=free)

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("nvmlDeviceGetPowerUsage")
        return self.gpus[h]["power_mw"]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        self._check("nvmlDeviceGetEnforcedPowerLimit")
        return self.gpus[h]["limit_mw"]

    def nvmlDeviceGetTemperature(self, h, sensor):
        self._check("nvmlDeviceGetTemperature")
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self.gpus[h]["temp_c"]

    def nvmlDeviceGetClockInfo(self, h, clock):
        self._check("nvmlDeviceGetClockInfo")
        assert clock == pynvml.NVML_CLOCK_SM
        return self.gpus[h]["sm_mhz"]

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        return self.gpus[h]["energy_mj"]

    def nvmlDeviceGetPcieThroughput(self, h, counter):
        self._check("nvmlDeviceGetPcieThroughput")
        return self.gpus[h]["pcie_kib"][counter]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in self.gpus[h]["procs"]]

    def nvmlDeviceGetProcessUtilization(self, h, since_us):
        self._check("nvmlDeviceGetProcessUtilization")
        self.clock_us += 1_000_000
        samples = [
            SimpleNamespace(pid=pid, timeStamp=self.clock_us, smUtil=sm, memUtil=0)
            for pid, sm in self.gpus[h]["sm"].items()
        ]
        samples = [s for s in samples if s.timeStamp > since_us]
        if not samples:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return samples


MIB = 1024 * 1024
NOT_SUPPORTED, DRM_ERROR = 2, 6  # amdsmi_status_t values


class AmdSmiLibraryException(Exception):
    """Like amdsmi's: an error code and a multi-line message."""

    def __init__(self, code: int):
        super().__init__(f"Error code:\n\t{code} | AMDSMI_STATUS_{code}")
        self.err_code = code

    def get_error_code(self):
        return self.err_code


class FakeAmdSmi:
    """amdsmi's functions the probe uses; values follow amdsmi's documented units.

    `fail[function] = status` makes that call raise AmdSmiLibraryException.
    """

    AmdSmiStatus = SimpleNamespace(NOT_SUPPORTED=NOT_SUPPORTED, DRM_ERROR=DRM_ERROR)
    AmdSmiTemperatureType = SimpleNamespace(EDGE=0, HOTSPOT=1, JUNCTION=1)
    AmdSmiTemperatureMetric = SimpleNamespace(CURRENT=0)
    AmdSmiClkType = SimpleNamespace(SYS=0, GFX=0x1)

    def __init__(self, gpus: int = 1):
        self.gpus = [
            {
                "activity": {"gfx_activity": 93, "umc_activity": 40, "mm_activity": "N/A"},
                "vram": {"vram_total": 196_592, "vram_used": 50_000},  # MB
                "power": {
                    "socket_power": 640,
                    "current_socket_power": 640,
                    "average_socket_power": "N/A",
                    "power_limit": 750,
                },
                "temps": {0: 55, 1: 71},
                "clock": {"clk": 2100, "min_clk": 500, "max_clk": 2100},
                "energy": {"energy_accumulator": 1_000_000, "counter_resolution": 15.3},
                "procs": [
                    {
                        "name": "python3",
                        "pid": 5151,
                        "mem": 9 * 1024 * MIB,
                        "engine_usage": {"gfx": 0, "enc": 0},
                        "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": 8 * 1024 * MIB},
                        "cu_occupancy": "N/A",
                    }
                ],
            }
            for _ in range(gpus)
        ]
        self.fail: dict[str, int] = {}
        self.init_calls = 0
        self.shutdown_calls = 0

    def _check(self, function):
        if function in self.fail:
            raise AmdSmiLibraryException(self.fail[function])

    def amdsmi_init(self):
        self.init_calls += 1
        self._check("amdsmi_init")

    def amdsmi_shut_down(self):
        self.shutdown_calls += 1

    def amdsmi_get_processor_handles(self):
        self._check("amdsmi_get_processor_handles")
        return [f"handle{i}" for i in range(len(self.gpus))]

    def _gpu(self, handle, function):
        self._check(function)
        return self.gpus[int(handle.removeprefix("handle"))]

    def amdsmi_get_gpu_asic_info(self, h):
        self._gpu(h, "amdsmi_get_gpu_asic_info")
        return {"market_name": "AMD Instinct MI300X", "vendor_id": "0x1002"}

    def amdsmi_get_gpu_device_uuid(self, h):
        self._gpu(h, "amdsmi_get_gpu_device_uuid")
        return f"uuid-{h}"

    def amdsmi_get_gpu_activity(self, h):
        return dict(self._gpu(h, "amdsmi_get_gpu_activity")["activity"])

    def amdsmi_get_gpu_vram_usage(self, h):
        return dict(self._gpu(h, "amdsmi_get_gpu_vram_usage")["vram"])

    def amdsmi_get_power_info(self, h):
        return dict(self._gpu(h, "amdsmi_get_power_info")["power"])

    def amdsmi_get_temp_metric(self, h, sensor, metric):
        temps = self._gpu(h, "amdsmi_get_temp_metric")["temps"]
        if sensor not in temps:
            raise AmdSmiLibraryException(NOT_SUPPORTED)
        return temps[sensor]

    def amdsmi_get_clock_info(self, h, clock):
        assert clock == self.AmdSmiClkType.GFX
        return dict(self._gpu(h, "amdsmi_get_clock_info")["clock"])

    def amdsmi_get_energy_count(self, h):
        return dict(self._gpu(h, "amdsmi_get_energy_count")["energy"])

    def amdsmi_get_gpu_process_list(self, h):
        return [dict(p) for p in self._gpu(h, "amdsmi_get_gpu_process_list")["procs"]]
