"""What the injected probe costs a script with no probe code in it, paired.

Default: in one process, interleaved. The project's nanochat-shaped loop (the model and the
optimizer of tests/support/field_loop.py: no DDP; the optimizer reduce-scatters and
all-gathers the gradients itself, async, and waits, as nanochat's does) trains on a 1-rank
gloo group, so every collective runs for real. Rounds alternate a block of steps bare and a
block with the probe injected (scalemon.probes.inject's patches installed, an active probe
writing a run dir and sending to a live monitor socket, drained untimed after each step);
the patches come off after their block, so the bare block is torch as the script sees it.
The order reverses each round, so drift hits both alike; a block's first step is left out
(the injected one looks for the model then, once a run). A round's ratio is the injected
block's median step over the bare one's; the figure is the median over rounds. On a shared
2-core VM one round swings by about 30%, so 60 rounds pin the ratio to a few percent; a tiny
model (`--vocab 512 --embd 64 --seq-len 32`, a few-ms step) shows the fixed cost per step.

--nanochat DIR: upstream nanochat's scripts.base_train at depth 4 (../shared/nanochat/ sets
it up), in pairs of whole runs, back to back, alternating which goes first: bare
(`torchrun ... -m scripts.base_train`) and injected (`torchrun ... -m scalemon.probes.inject
-m scripts.base_train`, as `scalemon run` starts it, with a live monitor socket); a run's
figure is the median of nanochat's own printed `dt:` after warm-up (read by
scalemon.core.logparse). Whole runs differ from each other by several percent on a shared
machine, so many pairs are needed to see 1%. Asserts nothing.

    .venv/bin/python bench/inject_cost.py [--rounds 12] [--block 8]
    .venv/bin/python bench/inject_cost.py --nanochat DIR --python PY [--pairs 6] [--steps 80]
        PY: nanochat's venv (torch, no scalemon needed); --nproc 2 needs the gloo patch
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
import time
from pathlib import Path

from one_rank import OneRank  # bench/, beside this script

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


def in_process(args: argparse.Namespace) -> dict[str, float]:
    """Interleaved blocks, bare and injected, in this process (see the docstring)."""
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(FIELD_LOOP.parent))
    from field_loop import Config, ShardedSGD, TinyGPT  # the loop the e2e tests train

    from scalemon.probes.inject.driver import Driver
    from scalemon.probes.inject.patches import Patches
    from scalemon.probes.step.probe import StepProbe

    torch.set_num_threads(1)
    group = OneRank("inject-cost-")

    torch.manual_seed(0)
    model = TinyGPT(Config(args.vocab, args.layers, args.embd))
    optimizer = ShardedSGD(list(model.parameters()), 0.01, [])
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, args.vocab, (1, args.seq_len), generator=gen) for _ in range(8)]
    driver = Driver(StepProbe(group.run, rank=0, world=1), world=1)

    def block(injected: bool) -> float:
        patches = Patches(driver) if injected else None
        if patches is not None:
            patches.install()
        times = []
        for i in range(args.block + 1):
            x = batches[i % len(batches)]
            t0 = time.perf_counter()
            loss = model(x, x)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            times.append(time.perf_counter() - t0)
            group.drain()
        if patches is not None:
            patches.uninstall()
        return statistics.median(times[1:])

    block(False)
    block(True)  # warm-up, and the model found
    ratios, bare = [], []
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        seen = {injected: block(injected) for injected in order}
        ratios.append(seen[True] / seen[False])
        bare.append(seen[False])
    steps = driver.steps
    driver.probe.close("finished")
    dist.destroy_process_group()
    print(f"nanochat-shaped loop in one process ({sum(p.numel() for p in model.parameters()):,}"
          f" parameters, vocab {args.vocab}, seq {args.seq_len}; {steps} injected steps "
          f"recorded): median step {statistics.median(bare) * 1e3:.1f} ms bare; injected / "
          f"bare {statistics.median(ratios):.4f} (rounds {min(ratios):.4f}-"
          f"{max(ratios):.4f}, {args.rounds} rounds of {args.block} steps)")
    return figures(ratios, bare)


def nanochat_pairs(args: argparse.Namespace) -> dict[str, float]:
    """Pairs of whole nanochat runs, bare and injected (see the docstring)."""
    cwd, nproc = Path(args.nanochat).expanduser(), args.nproc
    target = ["-m", "scripts.base_train", *NANOCHAT_ARGS, f"--num-iterations={args.steps}",
              f"--total-batch-size={512 * nproc}"]
    ratios, bare = [], []
    with tempfile.TemporaryDirectory(prefix="inject-cost-") as tmp:
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            seen = {injected: step_time(args.python, nproc, target, cwd, injected,
                                        args.warmup, Path(tmp)) for injected in order}
            ratios.append(seen[True] / seen[False])
            bare.append(seen[False])
            print(f"pair {pair + 1}: bare {seen[False] * 1e3:7.1f} ms  injected "
                  f"{seen[True] * 1e3:7.1f} ms  ratio {ratios[-1]:.4f}", flush=True)
    print(f"nanochat d4, {nproc} rank(s): median step {statistics.median(bare) * 1e3:.1f} ms "
          f"bare; injected / bare {statistics.median(ratios):.4f} (pairs {min(ratios):.4f}-"
          f"{max(ratios):.4f}, {args.pairs} pairs)")
    return figures(ratios, bare)


def figures(ratios: list[float], bare: list[float]) -> dict[str, float]:
    return {"inject_cost_ratio": statistics.median(ratios), "inject_cost_min": min(ratios),
            "inject_cost_max": max(ratios), "bare_step_s": statistics.median(bare)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=8, help="steps per block")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--nanochat", metavar="DIR", help="pairs of nanochat runs instead")
    ap.add_argument("--python", default=sys.executable, help="nanochat's interpreter")
    ap.add_argument("--nproc", type=int, default=1, help="nanochat's ranks")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=80, help="steps of each nanochat run")
    ap.add_argument("--warmup", type=int, default=10, help="nanochat steps left out")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    result = nanochat_pairs(args) if args.nanochat else in_process(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
