"""The host probe, run for real against child processes; and SystemProbe over it."""

import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import time

import psutil
import pytest

from scalemon.core.na import NA
from scalemon.core.snapshots import GpuVendorStatus
from scalemon.probes.system import SystemProbe, host
from scalemon.probes.system.gpu import GpuSnapshot
from scalemon.probes.system.host import HostProbe, HostSnapshot

PY = sys.executable
SLEEPER = "import time; time.sleep(60)"
# Starts two "ranks" with RANK in their environment, prints their pids, waits.
LAUNCHER = """
import os, subprocess, sys, time
ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                          env={**os.environ, "RANK": str(r)}) for r in (0, 1)]
print(" ".join(str(p.pid) for p in ranks), flush=True)
while True:  # reap like torchrun does, so a dead rank leaves no zombie
    [p.poll() for p in ranks]
    time.sleep(0.05)
"""


@pytest.fixture
def spawn():
    procs = []

    def start(code, **kwargs):
        proc = subprocess.Popen([PY, "-c", code], **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        for p in _tree(proc.pid):
            p.kill()
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


def _tree(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _run_ns(pid):
    """Time the scheduler has run `pid` (/proc/PID/schedstat), the truth to compare to."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _by_pid(snap: HostSnapshot):
    return {p.pid: p for p in snap.processes}


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_busy_child_shows_about_one_core(spawn):
    child = spawn("while True: pass")
    # A spare core is not guaranteed on a shared machine; priority helps get one.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, child.pid, -20)
    probe = HostProbe([child.pid])
    time.sleep(0.2)
    probe.sample()
    ran0, t0 = _run_ns(child.pid), time.monotonic()
    time.sleep(1.0)
    snap = probe.sample()
    ran1, t1 = _run_ns(child.pid), time.monotonic()
    got = _by_pid(snap)[child.pid].cpu_percent
    truth = 100 * (ran1 - ran0) / 1e9 / (t1 - t0)
    # The child gets a whole core unless the machine is saturated by others;
    # either way the probe must agree with the scheduler's own accounting.
    assert got == pytest.approx(truth, abs=20), (got, truth)
    if truth > 90:
        assert got == pytest.approx(100, abs=20)


def test_sleeping_child_shows_near_zero(spawn):
    child = spawn(SLEEPER)
    probe = HostProbe([child.pid])
    time.sleep(0.3)
    probe.sample()
    time.sleep(0.5)
    proc = _by_pid(probe.sample())[child.pid]
    assert 0 <= proc.cpu_percent < 5
    assert proc.state == psutil.STATUS_SLEEPING
    assert proc.rss_bytes > 1_000_000 and proc.threads >= 1 and proc.name.startswith("python")


def test_tree_finds_launcher_and_ranks_and_follows_changes(spawn):
    launcher = spawn(LAUNCHER, stdout=subprocess.PIPE, text=True)
    rank0, rank1 = map(int, launcher.stdout.readline().split())
    probe = HostProbe([launcher.pid])
    # Between fork and exec a rank still shows the launcher's environment (no RANK).
    _wait_for(lambda: probe.sample().rank_by_pid() == {rank0: 0, rank1: 1})
    snap = probe.sample()
    assert [(p.pid, p.rank) for p in snap.processes] == [
        (launcher.pid, None),
        (rank0, 0),
        (rank1, 1),
    ]
    assert _by_pid(snap)[rank0].ppid == launcher.pid
    assert snap.rank_by_pid() == {rank0: 0, rank1: 1}

    psutil.Process(rank1).kill()
    _wait_for(lambda: rank1 not in _by_pid(probe.sample()))
    assert set(_by_pid(probe.sample())) == {launcher.pid, rank0}


def test_new_grandchild_appears_without_set_roots(spawn):
    # The launcher starts its second child only after a delay.
    code = """
import subprocess, sys, time
a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(a.pid, flush=True)
sys.stdin.readline()
b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(b.pid, flush=True)
time.sleep(60)
"""
    launcher = spawn(code, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = int(launcher.stdout.readline())
    probe = HostProbe([launcher.pid])
    assert set(_by_pid(probe.sample())) == {launcher.pid, first}
    launcher.stdin.write("\n")
    launcher.stdin.flush()
    second = int(launcher.stdout.readline())
    assert set(_by_pid(probe.sample())) == {launcher.pid, first, second}


def test_rank_map_wins_over_environment(spawn):
    child = spawn(SLEEPER, env={**os.environ, "RANK": "3"})
    probe = HostProbe([child.pid], rank_of={child.pid: 5})
    assert _by_pid(probe.sample())[child.pid].rank == 5
    probe.set_rank_map({})
    _wait_for(lambda: _by_pid(probe.sample())[child.pid].rank == 3)  # once it has exec'd


def test_zombie_is_reported_not_dropped(spawn):
    child = spawn("pass")
    _wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
    proc = _by_pid(HostProbe([child.pid]).sample())[child.pid]
    assert proc.state == psutil.STATUS_ZOMBIE  # a dead, unreaped rank is worth seeing


def test_missing_root_gives_no_processes():
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    assert HostProbe([dead.pid]).sample().processes == ()


def test_machine_readings():
    probe = HostProbe()
    first = probe.sample()
    assert first.cpu_percent_total is NA
    assert first.reason("cpu_percent_total").startswith("first sample")
    assert first.cpu_count == psutil.cpu_count()
    time.sleep(0.2)
    snap = probe.sample()
    assert 0 <= snap.cpu_percent_total <= 100
    assert len(snap.cpu_percent_per_core) == psutil.cpu_count()
    assert all(0 <= c <= 100 for c in snap.cpu_percent_per_core)
    assert 0 < snap.mem_used_bytes < snap.mem_total_bytes
    assert 0 < snap.mem_available_bytes <= snap.mem_total_bytes
    assert 0 <= snap.swap_used_bytes <= snap.swap_total_bytes
    assert snap.load_1 >= 0 and snap.load_15 >= 0
    assert snap.reasons == ()


def test_snapshot_is_immutable_and_picklable(spawn):
    child = spawn(SLEEPER)
    snap = HostProbe([child.pid]).sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.mem_used_bytes = 0
    back = pickle.loads(pickle.dumps(snap))
    assert back.processes[0].pid == child.pid
    assert back.mem_total_bytes == snap.mem_total_bytes
    assert back.cpu_percent_total is NA  # the singleton survives pickling


def test_a_failing_reading_is_na_with_a_reason(monkeypatch):
    def broken():
        raise OSError("no /proc/meminfo")

    monkeypatch.setattr(host.psutil, "virtual_memory", broken)
    snap = HostProbe().sample()
    assert snap.mem_used_bytes is NA and snap.mem_total_bytes is NA
    assert "no /proc/meminfo" in snap.reason("mem_used_bytes")
    assert snap.swap_total_bytes is not NA  # the rest still reads


def test_unavailable_snapshot():
    snap = HostSnapshot.unavailable("psutil broke")
    assert snap.error == "psutil broke" and snap.cpu_percent_total is NA
    assert f"{snap.mem_used_bytes:.1f}" == "N/A"


# SystemProbe: the one interface the views use, over the real host and net
# probes and stand-in GPU probes.
class _GpuStandIn:
    vendor = "nvidia"
    available = True
    reason = None

    def __init__(self, fail=False):
        self.fail = fail
        self.rank_of = None

    def sample(self, rank_of=None):
        if self.fail:
            raise RuntimeError("driver exploded")
        self.rank_of = rank_of
        return (GpuSnapshot.lost("nvidia", 0, "GPU", "uuid", "stand-in"),)

    def close(self):
        pass


def test_system_probe_samples_every_part(spawn):
    child = spawn(SLEEPER, env={**os.environ, "RANK": "2"})
    gpu = _GpuStandIn()
    probe = SystemProbe([child.pid], master_addr="127.0.0.1", gpu_probes=[gpu])

    def rank_seen():
        proc = _by_pid(probe.sample().host).get(child.pid)
        return proc is not None and proc.rank == 2

    _wait_for(rank_seen)  # between fork and exec the child still has our environment
    snap = probe.sample()
    assert probe.run_interface == snap.net.run_interface
    assert snap.net.run is not None and snap.net.run.is_loopback
    assert _by_pid(snap.host)[child.pid].rank == 2
    assert gpu.rank_of == {child.pid: 2}  # GPU processes are matched to ranks by pid
    assert len(snap.gpus) == 1 and snap.reasons == ()
    assert snap.gpu_vendors == (GpuVendorStatus("nvidia", True, None),)
    assert snap.t_monotonic <= snap.host.t_monotonic
    pickle.loads(pickle.dumps(snap))
    assert probe.bytes_between(snap.t_monotonic + 10, snap.t_monotonic + 11) == (NA, NA)
    probe.close()


def test_system_probe_parts_fail_independently(monkeypatch):
    probe = SystemProbe(gpu_probes=[_GpuStandIn(fail=True)])

    def broken():
        raise OSError("/proc is gone")

    monkeypatch.setattr(probe._host, "sample", broken)
    snap = probe.sample()
    assert snap.host.error == "OSError: /proc is gone" and snap.host.cpu_percent_total is NA
    assert snap.net.error is None and snap.net.interfaces  # the network still reads
    assert snap.gpus == ()
    assert dict(snap.reasons) == {
        "host": "OSError: /proc is gone",
        "gpus:nvidia": "RuntimeError: driver exploded",
    }


def test_system_probe_without_a_route_to_the_master():
    probe = SystemProbe(master_addr="no-such-host.invalid", gpu_probes=())
    snap = probe.sample()
    assert snap.net.run is None
    assert "no-such-host.invalid" in snap.reason("net")


def test_a_failing_process_walk_is_an_unavailable_snapshot_not_an_exception(monkeypatch, spawn):
    child = spawn(SLEEPER)

    def broken():
        raise PermissionError("/proc is hidden")

    monkeypatch.setattr(host, "_ppid_map", broken)
    snap = HostProbe([child.pid]).sample()
    assert snap.error == "PermissionError: /proc is hidden" and snap.processes == ()


def test_ranks_outlive_their_launcher_with_the_new_parent(spawn):
    launcher = spawn(LAUNCHER, stdout=subprocess.PIPE, text=True)
    rank0, rank1 = map(int, launcher.stdout.readline().split())
    probe = HostProbe([launcher.pid])
    assert _by_pid(probe.sample())[rank0].ppid == launcher.pid
    launcher.kill()
    launcher.wait()
    try:
        _wait_for(lambda: _by_pid(probe.sample()).get(rank0, None) is not None
                  and _by_pid(probe.sample())[rank0].ppid != launcher.pid)  # fmt: skip
        snap = probe.sample()
        assert launcher.pid not in _by_pid(snap)
        assert _by_pid(snap)[rank0].ppid == psutil.Process(rank0).ppid()  # re-parented
        assert {rank0, rank1} <= set(_by_pid(snap))  # stray ranks are still shown
    finally:
        for pid in (rank0, rank1):
            psutil.Process(pid).kill()
