"""One rank of the sync-truth check (tests/e2e/test_sync_truth.py); run under torchrun.

Trains scalemon's GPT as DDP over gloo with the step probe attached (SCALEMON_RUN_DIR set,
its no_sync calibration as SCALEMON_CALIBRATE says) and cycles three kinds of step, so all
three see the same machine load:
  probe   a normal synced step through the probe (its records give the split's sync)
  truth   ground truth, without the probe's figures: a backward under no_sync, then the same
          backward synced, on the same input; their difference, and when the synced one's
          compute ended (a tensor hook on the input embedding, whose gradient is the last one
          backward computes), to tell waiting for a slower rank from the cost of sync
  naive   (with --naive) the wrong way: a synced backward, then a timed dist.barrier()
With --sleep, rank 1 sleeps that long before each forward: a straggler its peer waits for.
Each rank writes {"truth": [[synced, no_sync, compute end], ...], "naive": [...]} (seconds,
unix time) to OUT_DIR/timers-rank<R>.json.

Usage: torchrun --standalone --nproc-per-node 2 sync_truth_worker.py OUT_DIR
       [--depth D] [--vocab V] [--seq-len T] [--bucket-mb MB] [--steps N] [--warmup W]
       [--sleep S] [--naive]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from scalemon.probes import StepProbe
from scalemon.trainer.model import GPT, GPTConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--steps", type=int, default=6, help="steps of each kind after warm-up")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sleep", type=float, default=0.0, help="rank 1's delay before forward")
    ap.add_argument("--naive", action="store_true", help="also time a barrier after backward")
    args = ap.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1337)
    cfg = GPTConfig(depth=args.depth, vocab=args.vocab, seq_len=args.seq_len)
    # Gradients as bucket views, zeroed in place (not set to None), as scalemon's trainer
    # keeps them: DDP then accumulates straight into its buckets, synced or not.
    model = DDP(GPT(cfg), bucket_cap_mb=args.bucket_mb, gradient_as_bucket_view=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randint(0, cfg.vocab, (1, cfg.seq_len), generator=gen)
    y = torch.randint(0, cfg.vocab, (1, cfg.seq_len), generator=gen)
    tokens = cfg.seq_len * world
    wall = time.time() - time.perf_counter()

    probe = StepProbe.from_env(meta={"depth": cfg.depth, "vocab": cfg.vocab, "device": "cpu"})
    probe.attach_ddp(model)

    def straggle() -> None:
        if rank == 1 and args.sleep:
            time.sleep(args.sleep)

    computed: list[float] = [0.0]  # when backward computed its last gradient (perf_counter)

    def last_gradient(grad: torch.Tensor) -> None:
        computed[0] = time.perf_counter()

    model.module.wte.weight.register_hook(last_gradient)

    def timed_backward(synced: bool) -> float:
        with contextlib.nullcontext() if synced else model.no_sync():
            if synced:
                straggle()
            loss = model(x, y)
            t0 = time.perf_counter()
            loss.backward()
            return time.perf_counter() - t0

    truth, naive = [], []
    step = 0
    kinds = ("probe", "truth", "naive") if args.naive else ("probe", "truth")
    for i in range(args.warmup + len(kinds) * args.steps):
        kind = "probe" if i < args.warmup else kinds[i % len(kinds)]
        if kind == "probe":
            with probe.step(step, tokens=tokens, lr=1e-3) as s:
                if s.calibrate:
                    with s.calibration(model) as calibration:
                        loss = model(x, y)
                        with calibration.backward():
                            loss.backward()
                with s.phase("forward"):
                    straggle()
                    loss = model(x, y)
                with s.phase("backward", synced=True):
                    loss.backward()
                with s.phase("optimizer"):
                    opt.step()
                    opt.zero_grad(set_to_none=False)
                s.loss = loss.item()
            step += 1
        elif kind == "truth":
            # As a probe step runs: a no_sync sample first, then the synced step, then the
            # optimizer, so both see the same caches and allocator.
            nosync = timed_backward(synced=False)
            opt.zero_grad(set_to_none=False)
            synced = timed_backward(synced=True)
            opt.step()
            opt.zero_grad(set_to_none=False)
            truth.append([synced, nosync, wall + computed[0]])
        else:
            straggle()
            loss = model(x, y)
            loss.backward()
            t0 = time.perf_counter()
            dist.barrier()
            naive.append(time.perf_counter() - t0)
            opt.zero_grad(set_to_none=False)

    # The hook must not change what DDP computes: the synced gradient is the mean over ranks
    # of the local ones.
    with model.no_sync():
        model(x, y).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad(set_to_none=False)
    model(x, y).backward()
    for want, p in zip(expected, model.parameters(), strict=True):
        dist.all_reduce(want)
        torch.testing.assert_close(p.grad, want / world)

    probe.close("finished")
    with open(f"{args.out_dir}/timers-rank{rank}.json", "w") as f:
        json.dump({"truth": truth, "naive": naive}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
