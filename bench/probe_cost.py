"""Cost of one sample of each system probe, as a ratio to its budget.

    .venv/bin/python bench/probe_cost.py [--samples N]

Host and network run for real against a 10-process tree of sleeping children
(a launcher and nine "ranks"); NVIDIA and AMD run against the fakes from the
tests, and NVIDIA also for real when a driver is present. Prints median and
90th-percentile microseconds per sample; no asserts (DESIGN.md: benchmarks
are ratios measured in one run, never timed assertions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.hardware import FakeAmdSmi, FakeNvml  # noqa: E402

from scalemon.probes.system import SystemProbe  # noqa: E402
from scalemon.probes.system.amd import AmdProbe  # noqa: E402
from scalemon.probes.system.host import HostProbe  # noqa: E402
from scalemon.probes.system.net import NetProbe, interface_toward  # noqa: E402
from scalemon.probes.system.nvidia import NvidiaProbe  # noqa: E402

LAUNCHER = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(9)]
print("ready", flush=True)
sys.stdin.read()
for k in kids:
    k.kill()
"""


def timed(fn, samples: int) -> tuple[float, float]:
    """Median and 90th percentile of fn()'s wall time, in microseconds."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    options = parser.parse_args()
    n = options.samples

    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    launcher.stdout.readline()
    time.sleep(2.5)  # past HostProbe's settle time: young processes are re-identified each sample
    rows: list[tuple[str, float, float, float]] = []  # name, median, p90, budget (µs)
    try:
        host = HostProbe([launcher.pid])
        tree = len(host.sample().processes)
        net = NetProbe(interface_toward("127.0.0.1"))

        def host_rescan():
            host.set_roots([launcher.pid])  # forces the walk over every pid on the machine
            host.sample()

        def host_and_net():
            host.sample()
            net.sample()

        rows.append((f"host, {tree}-process tree", *timed(host.sample, n), 2000))
        rows.append((f"host, {tree}-process tree, tree rescanned", *timed(host_rescan, n), 2000))
        rows.append(("network, all interfaces", *timed(net.sample, n), 2000))
        rows.append(("host + network", *timed(host_and_net, n), 2000))

        for gpus in (1, 8):
            fake = NvidiaProbe(FakeNvml(gpus=gpus), pcie_period_s=1.0)
            med, p90 = timed(fake.sample, n)
            rows.append((f"NVIDIA fake, per GPU of {gpus}", med / gpus, p90 / gpus, 5000))
            fake.close()
        amd = AmdProbe(FakeAmdSmi())
        rows.append(("AMD fake, 1 GPU", *timed(amd.sample, n), 5000))

        real = NvidiaProbe(pcie_period_s=1.0)
        if real.available and real.sample():
            count = len(real.sample())
            med, p90 = timed(real.sample, n)
            rows.append((f"NVIDIA real, per GPU of {count}", med / count, p90 / count, 5000))
            sync = NvidiaProbe(pcie_period_s=None)  # PCIe read inline: what the thread avoids
            med, p90 = timed(sync.sample, max(10, n // 20))
            rows.append(
                (f"NVIDIA real, PCIe inline, per GPU of {count}", med / count, p90 / count, 5000)
            )
            sync.close()
        else:
            print(f"(no real NVIDIA GPU: {real.reason})")
        real.close()

        system = SystemProbe([launcher.pid], master_addr="127.0.0.1")
        rows.append(("SystemProbe (host, net, GPUs present)", *timed(system.sample, n), 2000))
        system.close()
    finally:
        launcher.stdin.close()
        launcher.wait()

    print(f"probe cost, {n} samples each, {os.cpu_count()} CPUs, pid {os.getpid()}")
    print(f"{'probe':<46} {'median µs':>10} {'p90 µs':>10} {'budget µs':>10} {'ratio':>7}")
    for name, med, p90, budget in rows:
        print(f"{name:<46} {med:>10.0f} {p90:>10.0f} {budget:>10.0f} {med / budget:>7.2f}")
    if options.json:
        Path(options.json).write_text(json.dumps(
            {name: {"median_us": med, "p90_us": p90, "budget_us": budget}
             for name, med, p90, budget in rows}))


if __name__ == "__main__":
    main()
