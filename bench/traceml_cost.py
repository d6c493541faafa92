"""What TraceML's step tracing costs the DDP step scalemon's probe is measured on, in one run.

probe_overhead.py's loop (one process, DDP over a 1-rank gloo group, identical replicas of a
tiny d2 GPT on the same batches), in interleaved blocks of three arms:
  bare     plain DDP, inactive scalemon probe
  probe    DDP with scalemon's StepProbe active (comm hook, run dir, live monitor socket
           drained after each step, untimed), as probe_overhead.py's probe arm
  traceml  plain DDP inside TraceML's `trace_step(model.module)`, inactive scalemon probe
under DDP's gradient_as_bucket_view=True (the trainer's setting). Every round runs one block
of each arm, the order reversing each round.

TraceML runs for real: this script relaunches itself under `traceml run --mode summary`
(headless: the end-of-run card is not shown), which starts TraceML's aggregator process and
this process through torchrun with TraceML's runtime (a sampler thread ticking every 2 s and
an exporter thread sending to the aggregator over TCP); the loop then calls
`traceml.init(mode="auto")`. TraceML's patches are process-wide: nn.Module.__call__,
Tensor.backward and global optimizer-step hooks, each a pass-through outside trace_step, so
the bare and probe arms pay their checks too, and its threads and aggregator run beside every
arm. traceml/bare is therefore trace_step's own per-step work; the __call__ patch's
pass-through is timed apart, and the background reported as the CPU its threads and
aggregator used over the timed rounds. Prints a table; asserts
nothing. Without traceml-ai installed it says so and exits 0.

    .venv/bin/python bench/traceml_cost.py [--rounds 20] [--block 10] [--depth 4 --vocab 65536]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KINDS = ("bare", "probe", "traceml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], args: argparse.Namespace) -> int:
    """Run this script under `traceml run`; the child leaves its table and figures in out/."""
    out = Path(tempfile.mkdtemp(prefix="traceml-cost-"))
    # Free ports: TraceML's defaults (29765, torchrun's 29500) may be taken on a shared host.
    cmd = [sys.executable, "-c", "from traceml_ai.launcher.cli import main; main()", "run",
           str(Path(__file__).resolve()), "--mode", "summary", "--logs-dir", str(out / "logs"),
           "--aggregator-port", str(free_port()), "--master-port", str(free_port()),
           "--args", *argv, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    table = out / "table.txt"
    if table.exists():
        print(table.read_text(), end="")
        figures = json.loads((out / "figures.json").read_text())
        # TraceML's own end-of-run summary: proof its per-step work reached the aggregator.
        summaries = list((out / "logs").glob("*/final_summary.json"))
        if summaries:
            meta = json.loads(summaries[0].read_text())["step_time"]
            figures["traceml_steps_recorded"] = meta["metadata"].get("training_total_steps")
            figures["traceml_own_median_ms"] = (
                meta["global"]["median"]["traced_step_time_ms"]["value"])
            print(f"TraceML's final summary: {figures['traceml_steps_recorded']} steps recorded "
                  f"(of {(args.rounds + 1) * args.block} traced), its own median step "
                  f"{figures['traceml_own_median_ms']:.2f} ms")
        else:
            print("TraceML wrote no final summary")
        if args.json:
            Path(args.json).write_text(json.dumps(figures))
    if proc.returncode or not table.exists():
        print(f"traceml run exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return proc.returncode or (0 if table.exists() else 1)


def thread_cpu(prefix: str) -> float:
    """CPU seconds so far of this process's Python threads named prefix*."""
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident))
               for t in threading.enumerate() if t.name.startswith(prefix) and t.ident)


def aggregator():
    """TraceML's aggregator: a child of the `traceml run` launcher, torchrun's parent."""
    import psutil

    for parent in psutil.Process().parents():
        for child in parent.children():
            if any("aggregator_main.py" in part for part in child.cmdline()):
                return child
    return None


def passthrough(module, batch) -> tuple[int, float]:
    """TraceML's nn.Module.__call__ patch outside trace_step, which every arm pays: module
    calls in one forward, and microseconds each call adds (best of 5, against the original)."""
    import torch
    from traceml_ai.instrumentation.patches.forward_auto_timer_patch import _ORIG_MODULE_CALL

    calls = 0

    def count(*_):
        nonlocal calls
        calls += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    with torch.no_grad():
        module(batch[:, :-1], batch[:, 1:])
    handle.remove()
    tiny, x, n = torch.nn.Identity(), torch.zeros(1), 20000
    best = {"patched": float("inf"), "original": float("inf")}
    for _ in range(5):
        for name, call in (("patched", tiny), ("original", lambda t: _ORIG_MODULE_CALL(tiny, t))):
            t0 = time.perf_counter()
            for _ in range(n):
                call(x)
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    # the lambda's own call is on the original's side, so this slightly understates the patch
    return calls + 1, (best["patched"] - best["original"]) * 1e6  # + 1: the DDP wrapper


def measure(args: argparse.Namespace) -> None:
    """The benchmark itself, in the process `traceml run` started."""
    import torch
    import torch.distributed as dist
    import traceml_ai as traceml
    from one_rank import OneRank  # bench/, beside this script

    config = traceml.init(mode="auto")
    if config.disabled:  # TraceML fails open: figures without its runtime would mean nothing
        raise SystemExit("TraceML initialised disabled (no aggregator?): nothing to measure")
    torch.set_num_threads(1)
    group = OneRank("traceml-cost-")
    lines, figures = run_arms(args, group, traceml)
    out = Path(args.out)
    (out / "figures.json").write_text(json.dumps(figures))
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    # The DDPs are freed (run_arms returned) and gloo's worker drained before the group goes:
    # scalemon's tests saw gloo abort or deadlock otherwise.
    dist.barrier()
    dist.destroy_process_group()
    shutil.rmtree(group.work, ignore_errors=True)


def run_arms(args: argparse.Namespace, group, traceml) -> tuple[list[str], dict]:
    import torch
    from probe_overhead import gpt_and_batches, train_step
    from torch.nn.parallel import DistributedDataParallel as DDP

    from scalemon.probes import StepProbe

    cfg, base, batches, tokens = gpt_and_batches(args.depth, args.vocab, args.seq_len)
    arms = {}  # kind -> (model, optimizer, probe, step times)
    for kind in KINDS:
        probe = StepProbe(group.run if kind == "probe" else None, rank=0, world=1)
        model = DDP(copy.deepcopy(base), gradient_as_bucket_view=True)
        probe.attach_ddp(model)
        arms[kind] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), probe, [])

    def run_block(kind: str, first_step: int, record: bool) -> None:
        model, opt, probe, times = arms[kind]
        for step in range(first_step, first_step + args.block):
            t0 = time.perf_counter()
            if kind == "traceml":
                with traceml.trace_step(model.module):
                    train_step(model, opt, probe, batches, step, tokens)
            else:
                train_step(model, opt, probe, batches, step, tokens)
            if record:
                times.append(time.perf_counter() - t0)
            group.drain()

    for kind in KINDS:  # warm-up: allocator, DDP bucket rebuild, TraceML's first step
        run_block(kind, 0, record=False)

    agg = aggregator()
    agg_cpu0 = sum(agg.cpu_times()[:2]) if agg else 0.0
    threads0, wall0 = thread_cpu("TraceML"), time.perf_counter()
    paired: dict[str, list[float]] = {"probe/bare": [], "traceml/bare": []}
    for r in range(args.rounds):
        for kind in KINDS if r % 2 == 0 else reversed(KINDS):
            run_block(kind, (r + 1) * args.block, record=True)
        last = {k: statistics.median(arms[k][3][-args.block:]) for k in KINDS}
        for name in paired:
            a, b = name.split("/")
            paired[name].append(last[a] / last[b])
    wall = time.perf_counter() - wall0
    threads = (thread_cpu("TraceML") - threads0) / wall
    agg_share = (sum(agg.cpu_times()[:2]) - agg_cpu0) / wall if agg else None

    medians = {k: statistics.median(arms[k][3]) for k in KINDS}
    ratios = {name: statistics.median(v) for name, v in paired.items()}
    lo_hi = {name: (min(v), max(v)) for name, v in paired.items()}
    lines = [
        f"TraceML {traceml.__version__} vs scalemon's step probe: 1 process under `traceml run`, "
        f"DDP over a 1-rank gloo group, GPT depth {cfg.depth} vocab {cfg.vocab}, "
        f"{tokens} tokens/step, {args.rounds} rounds x {args.block} steps",
        f"{'':10}{'median step':>13}{'/ bare':>9}{'rounds min-max':>18}",
        f"{'bare':10}{medians['bare'] * 1e3:>10.2f} ms{'':>9}",
    ]
    for kind in ("probe", "traceml"):
        name = f"{kind}/bare"
        lines.append(f"{kind:10}{medians[kind] * 1e3:>10.2f} ms{ratios[name]:>9.4f}"
                     f"{lo_hi[name][0]:>10.3f}-{lo_hi[name][1]:.3f}")
    lines.append("  (ratios: median over rounds of the ratio of block medians)")
    agg_text = f"{agg_share:.1%} of one core" if agg_share is not None else "not found"
    lines.append(f"TraceML background over the timed rounds (all arms): its threads in this "
                 f"process {threads:.2%} of one core, its aggregator process {agg_text}")
    lines.append(f"scalemon monitor drops {arms['probe'][2].drops}, "
                 f"records lost {arms['probe'][2].lost}")
    calls, us = passthrough(arms["bare"][0].module, batches[0])
    lines.append(f"TraceML's nn.Module.__call__ patch outside trace_step (all arms): {calls} "
                 f"calls a step x {us:.2f} us = {calls * us:.0f} us a step "
                 f"({calls * us * 1e-6 / medians['bare']:.2%} of a bare step)")
    for _, _, probe, _ in arms.values():
        probe.close()
    return lines, {"passthrough_us_per_step": calls * us,
        "installed": True, "traceml_version": traceml.__version__, "depth": cfg.depth,
        "vocab": cfg.vocab, "rounds": args.rounds, "block": args.block,
        "step_ms": {k: v * 1000 for k, v in medians.items()}, "ratios": ratios,
        "ratio_ranges": lo_hi, "traceml_threads_share": threads,
        "traceml_aggregator_share": agg_share}


def main() -> None:
    from probe_overhead import loop_arguments  # bench/, beside this script

    ap = loop_arguments(__doc__.splitlines()[0])
    ap.add_argument("--out", help=argparse.SUPPRESS)  # set by the parent for the child
    args = ap.parse_args()

    if importlib.util.find_spec("traceml_ai") is None:
        print("traceml_cost: traceml-ai is not installed (pip install -e '.[bench]'); skipped")
        if args.json:
            Path(args.json).write_text(json.dumps({"installed": False}))
        return
    if os.environ.get("TRACEML_SCRIPT_PATH"):  # set by `traceml run` for its executor
        measure(args)
    else:
        argv = ["--rounds", str(args.rounds), "--block", str(args.block), "--depth",
                str(args.depth), "--vocab", str(args.vocab), "--seq-len", str(args.seq_len)]
        sys.exit(launch(argv, args))


if __name__ == "__main__":
    main()
