"""What the step probe costs a training step, as ratios measured in one run.

One process (honest for the probe's own work, simpler than two ranks on two cores): a
1-rank gloo process group, so DDP and with it the probe's comm hook run for real. Identical
replicas of a GPT train on the same batches in interleaved blocks of steps:
  builtin  plain DDP (its built-in C++ allreduce), inactive probe
  hook     DDP with a Python comm hook doing what the probe's does to a bucket (the
           allreduce, averaged by world size: skipped at 1), untimed; inactive probe
  probe    DDP with the probe's comm hook, active probe writing a run dir and sending
           every record to a live monitor socket (drained after each step, untimed)
under two DDP settings: the defaults (gradients copied into buckets) and
gradient_as_bucket_view=True (the trainer's). Every round runs one block of each arm, in an
order that reverses each round so drift hits all alike. probe/builtin is what a user pays;
probe/hook is the probe's timing and records; hook/builtin is what any Python comm hook
costs. One rank cannot show the allreduce itself, to which the probe adds two clock reads
per bucket. The default model is a tiny d2, whose ~30 ms steps magnify any fixed cost;
`--depth 4 --vocab 65536` is the trainer's default shape. Prints a table; asserts nothing.

    .venv/bin/python bench/probe_overhead.py [--rounds 20] [--block 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from one_rank import OneRank  # bench/, beside this script
from torch.nn.parallel import DistributedDataParallel as DDP

from scalemon.probes import StepProbe
from scalemon.trainer.model import GPT, GPTConfig

SETTINGS = {"DDP defaults": False, "gradient_as_bucket_view": True}
KINDS = ("builtin", "hook", "probe")


def same_work_hook(group, bucket):
    """The probe's comm hook without its clocks, lock and activity file (world size 1)."""
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def gpt_and_batches(depth: int, vocab: int, seq_len: int):
    """The benchmark's GPT (seeded: every replica is a deepcopy of it) and its 8 batches."""
    torch.manual_seed(0)
    cfg = GPTConfig(depth=depth, vocab=vocab, seq_len=seq_len)
    base = GPT(cfg)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, cfg.vocab, (2, cfg.seq_len + 1), generator=gen) for _ in range(8)]
    return cfg, base, batches, 2 * cfg.seq_len


def train_step(model, opt, probe, batches, step: int, tokens: int) -> None:
    """One DDP step inside the probe's step and phases (no-ops for an inactive probe)."""
    with probe.step(step, tokens=tokens, lr=1e-3) as s:
        with s.phase("data"):
            batch = batches[step % len(batches)]
            x, y = batch[:, :-1], batch[:, 1:]
        with s.phase("forward"):
            loss = model(x, y)
        with s.phase("backward", synced=True):
            loss.backward()
        with s.phase("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        s.loss = loss.item()


def loop_arguments(description: str) -> argparse.ArgumentParser:
    """The loop's options (rounds, block, shape, --json), for this bench and the peers run
    on the same loop (traceml_cost.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=10, help="steps per block")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    return ap


def main() -> None:
    args = loop_arguments(__doc__.splitlines()[0]).parse_args()

    torch.set_num_threads(1)
    group = OneRank("probe-overhead-")
    work, drain = group.work, group.drain

    cfg, base, batches, tokens = gpt_and_batches(args.depth, args.vocab, args.seq_len)

    arms = {}  # (setting, kind) -> (model, optimizer, probe, step times)
    for rank, (setting, view) in enumerate(SETTINGS.items()):
        for kind in KINDS:
            # each active probe writes its own rank file in one run dir, beside one monitor
            probe = StepProbe(work / "run" if kind == "probe" else None, rank=rank, world=3)
            model = DDP(copy.deepcopy(base), gradient_as_bucket_view=view)
            if kind == "hook":
                model.register_comm_hook(dist.group.WORLD, same_work_hook)
            probe.attach_ddp(model)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            arms[setting, kind] = (model, opt, probe, [])

    def run_block(arm: tuple[str, bool], first_step: int, record: bool) -> None:
        model, opt, probe, times = arms[arm]
        for step in range(first_step, first_step + args.block):
            t0 = time.perf_counter()
            train_step(model, opt, probe, batches, step, tokens)
            if record:
                times.append(time.perf_counter() - t0)
            drain()

    for arm in arms:  # warm-up: allocator, DDP bucket rebuild, first file and socket use
        run_block(arm, 0, record=False)
    def last_block(setting: str, kind: str) -> float:
        return statistics.median(arms[setting, kind][3][-args.block :])

    paired: dict[tuple[str, str], list[float]] = {}  # (setting, "a/b") -> ratio per round
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for arm in order:
            run_block(arm, (r + 1) * args.block, record=True)
        for setting in SETTINGS:
            for a, b in (("probe", "builtin"), ("probe", "hook"), ("hook", "builtin")):
                ratio = last_block(setting, a) / last_block(setting, b)
                paired.setdefault((setting, f"{a}/{b}"), []).append(ratio)

    # The probe's own bookkeeping, away from any model: four phases, one record encoded,
    # appended to the file and sent to the monitor socket.
    bare = StepProbe(work / "run", rank=2, world=3)
    n = 2000
    t0 = time.perf_counter()
    for step in range(n):
        with bare.step(step, tokens=tokens, lr=1e-3) as s:
            for name in ("data", "forward", "backward", "optimizer"):
                with s.phase(name, synced=True if name == "backward" else None):
                    pass
            s.loss = 1.0
        drain()  # timed here, a little more than the probe's share
    bare_s = (time.perf_counter() - t0) / n

    drops = sum(arm[2].drops for arm in arms.values()) + bare.drops
    lost = sum(arm[2].lost for arm in arms.values()) + bare.lost
    for _, _, probe, _ in arms.values():
        probe.close()
    bare.close()

    print(
        f"probe overhead: 1 process, DDP over a 1-rank gloo group, GPT depth {cfg.depth} "
        f"vocab {cfg.vocab}, {tokens} tokens/step, {args.rounds} rounds x {args.block} steps"
    )
    print(f"{'':25}{'builtin':>11}{'hook':>11}{'probe':>11}{'probe/builtin':>15}"
          f"{'probe/hook':>12}{'hook/builtin':>14}")
    base_step = statistics.median(arms["DDP defaults", "builtin"][3])
    for setting in SETTINGS:
        times = "".join(f"{statistics.median(arms[setting, k][3]) * 1e3:>8.2f} ms" for k in KINDS)
        ratios = "".join(
            f"{statistics.median(paired[setting, name]):>{width}.4f}"
            for name, width in (("probe/builtin", 15), ("probe/hook", 12), ("hook/builtin", 14))
        )
        print(f"{setting:25}{times}{ratios}")
    print("  (median step times; ratios: median over rounds of the ratio of block medians)")
    print(
        f"probe bookkeeping alone: {bare_s * 1e6:.1f} us/step "
        f"= {bare_s / base_step:.3%} of a step without the probe"
    )
    print(f"monitor drops {drops}, records lost {lost}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "depth": cfg.depth, "vocab": cfg.vocab,
            "step_ms": base_step * 1000, "bookkeeping_us": bare_s * 1e6,
            "ratios": {f"{setting}: {name}": statistics.median(values)
                       for (setting, name), values in paired.items()}}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
