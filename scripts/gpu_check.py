"""Check the NVIDIA probe against nvidia-smi while a CUDA workload runs (GPU machine).

    python3 scripts/gpu_check.py [--workload trainer|matmul] [--samples 3] [--timeout 300]

Starts the scalemon trainer on CUDA (one rank under torch.distributed.run), or
with --workload matmul a loop of matrix products holding a few GB; waits until
the workload's process holds GPU memory; then samples the NVIDIA probe, reads
nvidia-smi right after each sample, and prints both side by side.

Exit status: 0 when memory used agrees within 5% on every GPU and sample and
the workload's pid is among the probe's GPU processes with its memory; 1 when
not; 2 when there is no NVIDIA GPU or the workload does not start.

Needs torch (in the workload only), psutil, nvidia-ml-py and this repository.
scalemon need not be installed: without it the repository is laid out as the
installed package in a temporary directory (probes/ as scalemon/probes, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05
MIB = 1024 * 1024
MATMUL = """
import torch
x = torch.randn(8192, 8192, device="cuda")
hold = torch.empty(3 << 30, dtype=torch.uint8, device="cuda")  # a few GB in all
while True:
    y = x @ x
    torch.cuda.synchronize()
"""


def importable_scalemon(tmp: Path) -> str | None:
    """Make `scalemon.probes` importable; returns a directory children need on PYTHONPATH."""
    try:
        importlib.import_module("scalemon.probes.system.nvidia")
        return None
    except ImportError:
        pass
    # Mirror pyproject's package-dir: scalemon/* plus probes/ and tui/ inside it.
    package = tmp / "site" / "scalemon"
    package.mkdir(parents=True)
    for entry in (REPO / "scalemon").iterdir():
        (package / entry.name).symlink_to(entry)
    (package / "probes").symlink_to(REPO / "probes")
    (package / "tui").symlink_to(REPO / "tui")
    sys.path.insert(0, str(package.parent))
    return str(package.parent)


def write_trainer_config(run_dir: Path) -> None:
    """config.json (schema 1, docs/internals.md) for a d8 run that never ends on its own."""
    device_batch, seq_len = 8, 2048
    config = {
        "schema": 1,
        "name": "gpu-check",
        "created": time.time(),
        "command": "train",
        "script": None,
        "model": {"depth": 8, "vocab": 65536, "seq_len": seq_len, "aspect_ratio": 64,
                  "head_dim": 128},
        "train": {"device": "cuda", "backend": "nccl", "device_batch": device_batch, "accum": 1,
                  "tokens_per_step": device_batch * seq_len, "steps": 1_000_000, "lr": 0.003,
                  "warmup_steps": 20, "seed": 1337, "checkpoint_every": 0, "data": None},
        "launch": {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0,
                   "master_addr": "127.0.0.1", "master_port": 29500, "world_size": 1,
                   "threads_per_rank": 1},
        "hosts": [os.uname().nodename],
        "pids": {"supervisor": os.getpid()},
    }  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))


def start_workload(kind: str, tmp: Path, pythonpath: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    if kind == "trainer":
        run_dir = tmp / "run"
        write_trainer_config(run_dir)
        env.update(SCALEMON_RUN_DIR=str(run_dir), OMP_NUM_THREADS="1")
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        trainer = ["-m", "scalemon.trainer.train", "--run-dir", str(run_dir)]
        cmd = [sys.executable, *launcher, *trainer]
    else:
        cmd = [sys.executable, "-c", MATMUL]
    print("starting:", " ".join(cmd))
    with open(tmp / "workload.log", "wb") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill_tree(proc: subprocess.Popen) -> None:
    """The launcher and every rank (torchrun starts each rank in a session of its own)."""
    import psutil

    try:
        procs = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    except psutil.Error:
        procs = []
    for process in procs:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(procs, timeout=10)
    proc.wait()


def workload_pid(proc: subprocess.Popen, kind: str) -> tuple[int | None, dict[int, int]]:
    """The pid that holds the GPU (rank 0 under torchrun) and the run's {pid: rank}."""
    from scalemon.probes.system.host import HostProbe

    if kind != "trainer":
        return proc.pid, {}
    ranks = HostProbe([proc.pid]).sample().rank_by_pid()
    rank0 = next((pid for pid, rank in ranks.items() if rank == 0), None)
    return rank0, ranks


def wait_on_gpu(probe, proc, kind: str, timeout: float) -> tuple[int, dict[int, int]]:
    """Wait until the workload's pid holds GPU memory that has stopped growing."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the workload exited with status {proc.returncode}")
        pid, ranks = workload_pid(proc, kind)
        held = [
            p.used_memory_bytes
            for gpu in probe.sample(ranks)
            for p in gpu.processes
            if p.pid == pid and p.used_memory_bytes > 0
        ]
        if held and last is not None and abs(held[0] - last) <= 0.01 * last:
            return pid, ranks
        last = held[0] if held else None
        time.sleep(2.0)
    raise RuntimeError(f"the workload held no steady GPU memory within {timeout:.0f} s")


def nvidia_smi(*query: str) -> list[list[float | None]]:
    out = subprocess.run(
        ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [[_number(v) for v in line.split(",")] for line in out.splitlines() if line.strip()]


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def _fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def compare(gpus, smi_gpus, smi_apps, pid: int) -> list[str]:
    """Print one sample beside nvidia-smi's readings; returns the failures."""
    failures = []
    for gpu, smi in zip(gpus, smi_gpus, strict=False):
        used, total, util, power, temp, clock = smi
        probe_used = gpu.memory_used_bytes / MIB
        print(f"\nGPU {gpu.index}  {gpu.name}  {gpu.uuid}")
        print(f"  {'field':<22}{'probe':>14}{'nvidia-smi':>14}")
        rows = [
            ("memory.used MiB", probe_used, used),
            ("memory.total MiB", gpu.memory_total_bytes / MIB, total),
            ("utilization %", gpu.utilization_percent, util),
            ("power W", gpu.power_w, power),
            ("temperature C", gpu.temperature_c, temp),
            ("SM clock MHz", gpu.sm_clock_mhz, clock),
            ("PCIe rx MiB/s", gpu.pcie_rx_bytes_per_s / MIB, None),
            ("PCIe tx MiB/s", gpu.pcie_tx_bytes_per_s / MIB, None),
            ("energy J", gpu.energy_j, None),
        ]
        for name, mine, theirs in rows:
            print(f"  {name:<22}{mine:>14.1f}{_fmt(theirs, '.1f'):>14}")
        if used is None or not used or abs(probe_used - used) > TOLERANCE * used:
            failures.append(f"GPU {gpu.index}: memory used {probe_used:.0f} vs {used} MiB")
        if gpu.error:
            failures.append(f"GPU {gpu.index}: {gpu.error}")
    smi_mem = {int(row[0]): row[1] for row in smi_apps if row[0] is not None}
    print(f"\n  {'pid':>8} {'rank':>5} {'probe MiB':>10} {'smi MiB':>10} {'SM %':>6}")
    found = False
    for gpu in gpus:
        for p in gpu.processes:
            mark = "  <- workload" if p.pid == pid else ""
            print(
                f"  {p.pid:>8} {_fmt(p.rank, 'd'):>5} {p.used_memory_bytes / MIB:>10.0f} "
                f"{_fmt(smi_mem.get(p.pid)):>10} {p.sm_percent:>6.0f}{mark}"
            )
            found = found or (p.pid == pid and p.used_memory_bytes > 0)
    if not found:
        failures.append(f"workload pid {pid} not among the probe's GPU processes with memory")
    if pid not in smi_mem:
        print(f"  (nvidia-smi does not list pid {pid}: another pid namespace?)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("trainer", "matmul"), default="trainer")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="scalemon-gpu-check-"))
    pythonpath = importable_scalemon(tmp)
    from scalemon.probes.system.nvidia import NvidiaProbe

    probe = NvidiaProbe(pcie_period_s=1.0)
    if not probe.available or not probe.sample():
        print(f"no NVIDIA GPU: {probe.reason}")
        return 2
    if shutil.which("nvidia-smi") is None:
        print("nvidia-smi is not on PATH")
        return 2
    kind = args.workload
    if kind == "trainer" and not (REPO / "scalemon" / "trainer" / "train.py").is_file():
        kind = "matmul"
    proc = start_workload(kind, tmp, pythonpath)
    try:
        try:
            pid, ranks = wait_on_gpu(probe, proc, kind, args.timeout)
        except RuntimeError as exc:
            print(f"{exc}; its output ends:\n{(tmp / 'workload.log').read_text()[-3000:]}")
            return 2
        print(f"workload ({kind}) pid {pid} holds GPU memory; ranks {ranks}")
        failures = []
        for i in range(args.samples):
            time.sleep(1.0)
            gpus = probe.sample(ranks)
            smi_gpus = nvidia_smi(
                "--query-gpu=memory.used,memory.total,utilization.gpu,power.draw,"
                "temperature.gpu,clocks.sm"
            )
            smi_apps = nvidia_smi("--query-compute-apps=pid,used_memory")
            print(f"\n=== sample {i + 1}/{args.samples} ===")
            failures += compare(gpus, smi_gpus, smi_apps, pid)
    finally:
        kill_tree(proc)
        probe.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for failure in failures:
        print("FAIL:", failure)
    if failures:
        return 1
    print("OK: the probe agrees with nvidia-smi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
