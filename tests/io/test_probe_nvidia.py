"""The NVIDIA probe against a fake pynvml that raises pynvml's real error classes."""

import pickle
import sys
import time

import pynvml
import pytest
from support.hardware import GIB, FakeNvml

from scalemon.core.na import NA
from scalemon.probes.system.gpu import GpuProbe, GpuSnapshot, probe_gpus
from scalemon.probes.system.nvidia import NvidiaProbe


@pytest.fixture
def fake():
    return FakeNvml()


@pytest.fixture
def probe(fake):
    p = NvidiaProbe(fake, pcie_period_s=None, retry_s=0.0)
    yield p
    p.close()


def test_reads_every_field_in_si_units(probe):
    assert probe.available and probe.reason is None
    assert isinstance(probe, GpuProbe)
    (gpu,) = probe.sample({4242: 0})
    assert (gpu.vendor, gpu.index, gpu.name, gpu.uuid) == (
        "nvidia",
        0,
        "NVIDIA H100 80GB HBM3",
        "GPU-fake-0",
    )
    assert gpu.utilization_percent == 87
    assert gpu.memory_used_bytes == 20 * GIB  # v2: without the driver's reservation
    assert gpu.memory_total_bytes == 80 * GIB
    assert gpu.memory_used_percent == pytest.approx(25)
    assert gpu.power_w == 350 and gpu.power_limit_w == 700
    assert gpu.temperature_c == 61 and gpu.sm_clock_mhz == 1980
    assert gpu.pcie_rx_bytes_per_s == 1000 * 1024 and gpu.pcie_tx_bytes_per_s == 500 * 1024
    assert gpu.energy_j == 5000
    assert gpu.error is None and gpu.reasons == ()
    by_pid = {p.pid: p for p in gpu.processes}
    assert by_pid[4242].rank == 0 and by_pid[4242].used_memory_bytes == 18 * GIB
    assert by_pid[4242].sm_percent == 71
    assert by_pid[4243].rank is None  # on the GPU but not one of the run's ranks


def test_not_supported_fields_are_na_with_the_reason(fake, probe):
    for function in (
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetPcieThroughput",
        "nvmlDeviceGetClockInfo",
    ):
        fake.fail[function] = pynvml.NVML_ERROR_NOT_SUPPORTED
    (gpu,) = probe.sample()
    for field in ("power_w", "energy_j", "pcie_rx_bytes_per_s", "pcie_tx_bytes_per_s"):
        assert getattr(gpu, field) is NA
        assert gpu.reason(field) == "Not Supported"
    assert gpu.sm_clock_mhz is NA
    assert f"{gpu.power_w:.1f} W" == "N/A W"
    assert gpu.utilization_percent == 87 and gpu.power_limit_w == 700  # the rest still reads
    assert gpu.error is None and probe.reason is None


def test_any_other_query_error_is_na_not_an_exception(fake, probe):
    fake.fail["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_NO_PERMISSION
    fake.nvmlDeviceGetClockInfo = lambda h, c: 1 / 0
    (gpu,) = probe.sample()
    assert gpu.temperature_c is NA and gpu.reason("temperature_c") == "Insufficient Permissions"
    assert gpu.sm_clock_mhz is NA and "ZeroDivisionError" in gpu.reason("sm_clock_mhz")


def test_memory_falls_back_to_v1_on_an_older_driver(fake, probe):
    fake.fail["nvmlDeviceGetMemoryInfo_v2"] = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    (gpu,) = probe.sample()
    assert gpu.memory_used_bytes == 20 * GIB + GIB // 2
    assert gpu.reason("memory_used_bytes") is None
    del fake.fail["nvmlDeviceGetMemoryInfo_v2"]
    (gpu,) = probe.sample()
    assert gpu.memory_used_bytes == 20 * GIB + GIB // 2  # remembered: v1 from now on


def test_process_memory_unknown_and_no_utilisation_sample(fake, probe):
    fake.gpus[0]["procs"] = [(4242, None)]
    fake.fail["nvmlDeviceGetProcessUtilization"] = pynvml.NVML_ERROR_NOT_FOUND
    (gpu,) = probe.sample({4242: 1})
    (proc,) = gpu.processes
    assert proc.rank == 1 and proc.used_memory_bytes is NA and proc.sm_percent is NA
    assert proc.reason("sm_percent") == "no utilisation sample since the last poll"
    assert proc.reason("used_memory_bytes")


def test_process_gone_between_list_and_utilisation(fake, probe):
    fake.gpus[0]["sm"] = {4243: 9}  # 4242 exited after the process list was taken
    (gpu,) = probe.sample({4242: 0, 4243: 1})
    by_pid = {p.pid: p for p in gpu.processes}
    assert by_pid[4242].sm_percent is NA and by_pid[4242].reason("sm_percent")
    assert by_pid[4243].sm_percent == 9
    fake.gpus[0]["procs"] = [(4243, GIB)]
    (gpu,) = probe.sample({4242: 0, 4243: 1})
    assert [p.pid for p in gpu.processes] == [4243]


def test_utilisation_asks_only_for_new_samples(fake, probe):
    seen = []
    original = fake.nvmlDeviceGetProcessUtilization
    fake.nvmlDeviceGetProcessUtilization = lambda h, since: seen.append(since) or original(h, since)
    probe.sample()
    probe.sample()
    assert seen[0] == 0 and seen[1] == fake.clock_us - 1_000_000


def test_missing_sm_value_sentinel_is_na(fake, probe):
    fake.gpus[0]["sm"] = {4242: 0xFFFFFFFF, 4243: 0}
    (gpu,) = probe.sample()
    by_pid = {p.pid: p for p in gpu.processes}
    assert by_pid[4242].sm_percent is NA
    assert by_pid[4243].sm_percent == 0.0  # a real zero stays zero


def test_driver_error_then_recovery(fake):
    probe = NvidiaProbe(fake, pcie_period_s=None, retry_s=0.0)
    fake.lost = True
    (gpu,) = probe.sample()
    assert gpu.error == "GPU is lost" and probe.reason == "GPU is lost"
    assert gpu.utilization_percent is NA and gpu.memory_used_bytes is NA
    assert gpu.name == "NVIDIA H100 80GB HBM3"  # still known, for the screen

    (gpu,) = probe.sample()  # the restart fails while the driver is down
    assert gpu.error.startswith("restart failed") and gpu.memory_used_bytes is NA

    fake.lost = False
    inits = fake.init_calls
    (gpu,) = probe.sample()
    assert fake.init_calls == inits + 1 and fake.shutdown_calls >= 1
    assert gpu.error is None and probe.reason is None
    assert gpu.memory_used_bytes == 20 * GIB
    probe.close()


def test_restart_waits_retry_s(fake):
    probe = NvidiaProbe(fake, pcie_period_s=None, retry_s=60.0)
    fake.fail["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_UNKNOWN
    assert probe.sample()[0].error == "Unknown Error"
    del fake.fail["nvmlDeviceGetUtilizationRates"]
    inits = fake.init_calls
    assert probe.sample()[0].error == "Unknown Error"  # too soon to try again
    assert fake.init_calls == inits
    probe.close()


def test_library_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    probe = NvidiaProbe()
    assert not probe.available
    assert "nvidia-ml-py is not installed" in probe.reason
    assert probe.sample() == ()
    probe.close()


@pytest.mark.parametrize(
    "code,text",
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"),
    ],
)
def test_nvml_init_failing_means_no_gpu(fake, code, text):
    fake.fail["nvmlInit"] = code
    probe = NvidiaProbe(fake)
    assert not probe.available and probe.reason == text
    assert probe.sample() == ()


def test_no_gpus(fake):
    fake.gpus = []
    probe = NvidiaProbe(fake)
    assert probe.available and probe.reason == "NVML found no NVIDIA GPU"
    assert probe.sample() == ()
    probe.close()


def test_pcie_is_read_in_the_background(fake):
    probe = NvidiaProbe(fake, pcie_period_s=0.02)
    deadline = time.monotonic() + 5
    while probe.sample()[0].pcie_rx_bytes_per_s is NA:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert probe.sample()[0].pcie_tx_bytes_per_s == 500 * 1024
    probe.close()
    assert fake.shutdown_calls == 1


def test_two_gpus_and_snapshot_pickles():
    fake = FakeNvml(gpus=2)
    probe = NvidiaProbe(fake, pcie_period_s=None)
    snaps = probe.sample()
    assert [g.index for g in snaps] == [0, 1]
    back = pickle.loads(pickle.dumps(snaps))
    assert back[1].memory_used_bytes == 20 * GIB + 1 and back[1].processes == snaps[1].processes
    probe.close()


def test_real_pynvml_without_a_driver_is_unavailable_not_a_crash():
    probe = NvidiaProbe()
    if probe.available:
        probe.close()
        pytest.skip("this machine has an NVIDIA driver")
    assert probe.reason and probe.sample() == ()


def test_probe_gpus_returns_every_vendor_with_its_status():
    probes = probe_gpus(pcie_period_s=None)
    try:
        assert [p.vendor for p in probes] == ["nvidia", "amd"]
        for p in probes:
            assert isinstance(p.available, bool)
            assert p.available or p.reason
            assert all(isinstance(s, GpuSnapshot) for s in p.sample())
    finally:
        for p in probes:
            p.close()


def test_lost_snapshot_explains_every_reading():
    snap = GpuSnapshot.lost("nvidia", 0, "GPU", "uuid", "GPU is lost")
    assert snap.energy_j is NA and snap.reason("energy_j") == "GPU is lost"
    assert snap.processes == () and snap.memory_used_percent is NA


def test_an_answer_of_an_unexpected_shape_is_an_error_not_an_exception(fake, probe):
    fake.nvmlDeviceGetUtilizationRates = lambda h: object()  # no .gpu
    (gpu,) = probe.sample()
    assert gpu.error.startswith("AttributeError") and gpu.memory_used_bytes is NA
    assert probe.reason is None  # not a lost GPU: nothing to restart
