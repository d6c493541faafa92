"""The AMD probe against a fake amdsmi shaped like amdsmi's Python interface."""

import pickle
import sys

import pytest
from support.hardware import DRM_ERROR, MIB, NOT_SUPPORTED, FakeAmdSmi

from scalemon.core.na import NA
from scalemon.probes.system.amd import AmdProbe


@pytest.fixture
def fake():
    return FakeAmdSmi()


@pytest.fixture
def probe(fake):
    p = AmdProbe(fake, retry_s=0.0)
    yield p
    p.close()


def test_reads_the_fields_amdsmi_offers_in_si_units(probe):
    assert probe.available and probe.reason is None
    (gpu,) = probe.sample({5151: 0})
    assert (gpu.vendor, gpu.index, gpu.name, gpu.uuid) == (
        "amd",
        0,
        "AMD Instinct MI300X",
        "uuid-handle0",
    )
    assert gpu.utilization_percent == 93
    assert gpu.memory_used_bytes == 50_000 * MIB and gpu.memory_total_bytes == 196_592 * MIB
    assert gpu.power_w == 640 and gpu.power_limit_w == 750
    assert gpu.temperature_c == 55  # edge sensor
    assert gpu.sm_clock_mhz == 2100
    assert gpu.energy_j == pytest.approx(1_000_000 * 15.3 / 1e6)
    assert gpu.pcie_rx_bytes_per_s is NA and "blocks" in gpu.reason("pcie_rx_bytes_per_s")
    (proc,) = gpu.processes
    assert proc.pid == 5151 and proc.rank == 0 and proc.used_memory_bytes == 8 * 1024 * MIB
    assert gpu.error is None


def test_engine_time_becomes_a_busy_share(fake, probe):
    (gpu,) = probe.sample()
    assert gpu.processes[0].sm_percent is NA  # a rate needs two samples
    assert gpu.processes[0].reason("sm_percent").startswith("first sample")
    fake.gpus[0]["procs"][0]["engine_usage"] = {"gfx": 10**12, "enc": 0}  # far more than 100%
    (gpu,) = probe.sample()
    assert gpu.processes[0].sm_percent == 100.0
    fake.gpus[0]["procs"][0]["engine_usage"] = {"gfx": 10**12, "enc": 0}
    (gpu,) = probe.sample()
    assert gpu.processes[0].sm_percent == 0.0  # idle since: a real zero


def test_mi300_without_edge_sensor_or_average_power(fake, probe):
    g = fake.gpus[0]
    g["temps"] = {1: 71}
    g["power"] = {"current_socket_power": 700, "average_socket_power": 0, "power_limit": 750}
    (gpu,) = probe.sample()
    assert gpu.temperature_c == 71  # hotspot
    assert gpu.power_w == 700


def test_older_amdsmi_keys(fake, probe):
    g = fake.gpus[0]
    g["power"] = {"average_socket_power": 120, "power_limit": 200}
    g["clock"] = {"cur_clk": 1700, "max_clk": 2000}
    g["energy"] = {"power": 2_000_000, "counter_resolution": 15.3, "timestamp": 1}
    (gpu,) = probe.sample()
    assert gpu.power_w == 120 and gpu.sm_clock_mhz == 1700
    assert gpu.energy_j == pytest.approx(30.6)


def test_power_limit_in_microwatts_is_converted(fake, probe):
    fake.gpus[0]["power"]["power_limit"] = 750_000_000
    assert probe.sample()[0].power_limit_w == 750


def test_na_strings_and_all_ones_integers_are_na(fake, probe):
    g = fake.gpus[0]
    g["activity"] = {"gfx_activity": "N/A"}
    g["vram"] = {"vram_total": 0xFFFFFFFF, "vram_used": 0xFFFFFFFF}
    g["clock"] = {"clk": 0xFFFFFFFF}
    g["power"] = {"socket_power": 0xFFFF, "power_limit": "N/A"}
    (gpu,) = probe.sample()
    for field in ("utilization_percent", "memory_used_bytes", "sm_clock_mhz", "power_w"):
        assert getattr(gpu, field) is NA, field
    assert gpu.power_limit_w is NA
    assert gpu.error is None


def test_not_supported_fields_are_na_with_the_reason(fake, probe):
    fake.fail["amdsmi_get_energy_count"] = NOT_SUPPORTED
    fake.fail["amdsmi_get_gpu_process_list"] = NOT_SUPPORTED
    (gpu,) = probe.sample()
    assert gpu.energy_j is NA and "AMDSMI_STATUS_2" in gpu.reason("energy_j")
    assert gpu.processes == () and gpu.reason("processes")
    assert gpu.utilization_percent == 93 and probe.reason is None


def test_everything_not_supported_is_not_a_lost_device(fake, probe):
    for name in dir(fake):
        if name.startswith("amdsmi_get_") and name != "amdsmi_get_processor_handles":
            fake.fail[name] = NOT_SUPPORTED
    (gpu,) = probe.sample()
    assert gpu.error is None and probe.reason is None and gpu.memory_used_bytes is NA


def test_old_process_handles_are_resolved(fake, probe):
    info = fake.gpus[0]["procs"][0]
    fake.amdsmi_get_gpu_process_list = lambda h: ["proc-handle"]
    fake.amdsmi_get_gpu_process_info = lambda h, p: dict(info) if p == "proc-handle" else {}
    (gpu,) = probe.sample()
    assert [p.pid for p in gpu.processes] == [5151]


def test_process_gone_leaves_the_list(fake, probe):
    probe.sample()
    fake.gpus[0]["procs"] = []
    (gpu,) = probe.sample()
    assert gpu.processes == ()


def test_device_lost_then_recovery(fake):
    probe = AmdProbe(fake, retry_s=0.0)
    for name in dir(fake):
        if name.startswith("amdsmi_get_gpu_") or name in (
            "amdsmi_get_power_info",
            "amdsmi_get_temp_metric",
            "amdsmi_get_clock_info",
            "amdsmi_get_energy_count",
        ):
            fake.fail[name] = DRM_ERROR
    (gpu,) = probe.sample()
    assert gpu.error and "AMDSMI_STATUS_6" in gpu.error and probe.reason == gpu.error
    assert gpu.utilization_percent is NA and gpu.name == "AMD Instinct MI300X"
    fake.fail = {"amdsmi_init": DRM_ERROR}
    (gpu,) = probe.sample()
    assert gpu.error.startswith("restart failed")
    fake.fail = {}
    (gpu,) = probe.sample()
    assert gpu.error is None and probe.reason is None and gpu.utilization_percent == 93
    assert fake.shutdown_calls >= 2
    probe.close()


def test_library_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    probe = AmdProbe()
    assert not probe.available and "amdsmi unavailable" in probe.reason
    assert probe.sample() == ()


@pytest.mark.parametrize(
    "error",
    ["KeyError('libamd_smi.so')", "OSError('libamd_smi.so: cannot open shared object file')"],
)
def test_import_failing_without_importerror_means_no_gpu(tmp_path, monkeypatch, error):
    # amdsmi without ROCm raises from its import, and not always ImportError.
    (tmp_path / "amdsmi.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    probe = AmdProbe()
    assert not probe.available
    assert "libamd_smi.so" in probe.reason and probe.sample() == ()


def test_init_failing_means_no_gpu(fake):
    fake.fail["amdsmi_init"] = DRM_ERROR
    probe = AmdProbe(fake)
    assert not probe.available and "AMDSMI_STATUS_6" in probe.reason


def test_two_gpus_and_snapshot_pickles():
    probe = AmdProbe(FakeAmdSmi(gpus=2))
    snaps = probe.sample()
    assert [g.index for g in snaps] == [0, 1]
    back = pickle.loads(pickle.dumps(snaps))
    assert (
        back[1].memory_used_bytes == snaps[1].memory_used_bytes
        and back[0].pcie_rx_bytes_per_s is NA
    )
    probe.close()
