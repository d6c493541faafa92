"""What the injected probe costs a script with no probe code in it, from paired runs.

Each pair runs one script twice, back to back: bare (`torchrun ... SCRIPT ARGS`) and with the
probe injected (`torchrun ... -m scalemon.probes.inject SCRIPT ARGS`, SCALEMON_RUN_DIR set to
a fresh run dir with a live monitor socket that a thread drains, as `scalemon run` does). The
order alternates from pair to pair (ABBA), so drift hits both arms alike. A run's figure is
the script's own printed time per step (nanochat's `dt:`, read by scalemon.core.logparse),
the median over the steps after warm-up; a pair's ratio is injected / bare. Prints the
median ratio and its range over pairs; asserts nothing.

    .venv/bin/python bench/inject_cost.py [--pairs 6] [--steps 80]
        the project's nanochat-shaped loop (tests/support/field_loop.py --shape zero: an
        optimizer that reduce-scatters and all-gathers itself), 2 gloo ranks
    .venv/bin/python bench/inject_cost.py --nanochat DIR --python DIR/.venv/bin/python
        upstream nanochat's scripts.base_train at depth 4 (../shared/nanochat/ sets it up);
        --nproc 2 with the gloo patch applied, --nproc 1 (the default there) without
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from scalemon.core.logparse import StepLine, parse_line

HERE = Path(__file__).resolve().parent
FIELD_LOOP = HERE.parent / "tests" / "support" / "field_loop.py"
NANOCHAT_ARGS = ["--depth=4", "--head-dim=64", "--window-pattern=L", "--max-seq-len=512",
                 "--device-batch-size=1", "--eval-every=-1", "--core-metric-every=-1",
                 "--sample-every=-1"]


def drain(sock: socket.socket, stop: threading.Event) -> None:
    """Take the probe's datagrams as a monitor would, so sending is part of the cost."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return


def step_time(python: str, nproc: int, target: list[str], cwd: Path, injected: bool,
              warmup: int, work: Path) -> float:
    """The median of the script's printed per-step times past warm-up, for one run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", LOOP_OUT=str(work))
    env.pop("SCALEMON_RUN_DIR", None)
    cmd = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    stop = threading.Event()
    monitor = None
    if injected:
        run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        (run / "monitors").mkdir()
        monitor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        monitor.bind(str(run / "monitors" / "bench.sock"))
        threading.Thread(target=drain, args=(monitor, stop), daemon=True).start()
        env["SCALEMON_RUN_DIR"] = str(run)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                          env.get("PYTHONPATH")]))
        cmd += ["-m", "scalemon.probes.inject"]
    try:
        out = subprocess.run(cmd + target, cwd=cwd, env=env, capture_output=True, text=True,
                             check=False)
    finally:
        stop.set()
        if monitor is not None:
            monitor.close()
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"inject_cost: {' '.join(cmd[-2:])} failed: {' | '.join(tail)}")
    times = [p.dt for p in map(parse_line, out.stdout.splitlines())
             if isinstance(p, StepLine) and p.step >= warmup]
    if len(times) < 3:
        raise SystemExit(f"inject_cost: only {len(times)} step lines past warm-up")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out at the start")
    ap.add_argument("--nanochat", metavar="DIR", help="a nanochat checkout to train instead")
    ap.add_argument("--python", default=sys.executable, help="the script's interpreter")
    ap.add_argument("--nproc", type=int, help="ranks (default 2; 1 for --nanochat)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()

    if args.nanochat:
        cwd, nproc = Path(args.nanochat).expanduser(), args.nproc or 1
        target = ["-m", "scripts.base_train", *NANOCHAT_ARGS, f"--num-iterations={args.steps}",
                  f"--total-batch-size={512 * nproc}"]
        name = f"nanochat d4, {nproc} rank{'s' if nproc > 1 else ''}"
    else:
        cwd, nproc = HERE.parent, args.nproc or 2
        target = [str(FIELD_LOOP), "--shape", "zero", "--steps", str(args.steps),
                  "--vocab", "4096", "--layers", "4", "--embd", "256", "--seq-len", "256"]
        name = f"field loop (zero shape), {nproc} gloo ranks"

    ratios, bare_times = [], []
    with tempfile.TemporaryDirectory(prefix="inject-cost-") as tmp:
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            seen = {injected: step_time(args.python, nproc, target, cwd, injected,
                                        args.warmup, Path(tmp)) for injected in order}
            ratios.append(seen[True] / seen[False])
            bare_times.append(seen[False])
            print(f"pair {pair + 1}: bare {seen[False] * 1e3:7.1f} ms  injected "
                  f"{seen[True] * 1e3:7.1f} ms  ratio {ratios[-1]:.4f}", flush=True)

    median = statistics.median(ratios)
    print(f"{name}: median step {statistics.median(bare_times) * 1e3:.1f} ms bare; "
          f"injected / bare {median:.4f} (range {min(ratios):.4f}-{max(ratios):.4f}, "
          f"{args.pairs} pairs)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "inject_cost_ratio": median, "inject_cost_min": min(ratios),
            "inject_cost_max": max(ratios), "bare_step_s": statistics.median(bare_times)}))


if __name__ == "__main__":
    main()
