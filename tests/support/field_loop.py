"""A training loop shaped like the field's, with no scalemon code in it: what
`scalemon run -- field_loop.py --shape S` must time without being told anything.

Shapes:
  ddp           a plain DDP loop over gloo
  zero          no DDP: the optimizer launches async reduce_scatter and all_gather itself and
                waits on them (nanochat's MuonAdamW, ZeRO-2 style), plus a small all_reduce
  single        one process, no torch.distributed
  accum-nosync  DDP, --accum micro-steps, all but the last under no_sync()
  accum-flag    the same through require_backward_grad_sync (nanoGPT's way)
  no-group      torchrun ranks that never make a process group (nanochat on CPU)

It prints nanochat's step line and writes its own timings to OUT/loop-rank<R>.json: per step
the loss it printed, tokens, and perf_counter around its optimizer step and around every
collective call and wait (the host's time in them), for tests to compare with scalemon's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Config:
    def __init__(self, vocab_size: int, n_layer: int, n_embd: int) -> None:
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd


class TinyGPT(nn.Module):
    """Token embedding, a few MLP blocks, a head; returns the mean cross-entropy."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd),
                                                  nn.GELU(),
                                                  nn.Linear(4 * config.n_embd, config.n_embd))
                                    for _ in range(config.n_layer))
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.blocks:
            x = x + block(x)
        logits = self.head(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class ShardedSGD(torch.optim.Optimizer):
    """SGD whose gradients are averaged the way nanochat's optimizer does it: reduce_scatter
    of each large gradient (async, all launched first), update of this rank's shard as each
    completes, all_gather of the updated shards (async), then wait on the gathers. Small ones
    (under 1,024 elements) go through one all_reduce each."""

    def __init__(self, params: list[nn.Parameter], lr: float, waits: list[float]) -> None:
        super().__init__(params, {"lr": lr})
        self.waits = waits  # the host's time in each collective call and each wait()
        self.launched = 0  # collectives launched in the last step

    def _timed(self, call: Any, launch: bool = True) -> Any:
        self.launched += launch
        t0 = time.perf_counter()
        result = call()
        self.waits.append(time.perf_counter() - t0)
        return result

    def _wait(self, work: dist.Work) -> None:
        self._timed(work.wait, launch=False)

    @torch.no_grad()
    def step(self) -> None:
        world, rank = dist.get_world_size(), dist.get_rank()
        launched = []
        self.launched = 0
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if p.numel() < 1024 or p.shape[0] % world:
                    launched.append((p, None, self._timed(lambda g=grad: dist.all_reduce(
                        g, op=dist.ReduceOp.AVG, async_op=True))))
                else:
                    shard = torch.empty_like(grad[: p.shape[0] // world])
                    launched.append((p, shard, self._timed(
                        lambda s=shard, g=grad: dist.reduce_scatter_tensor(
                            s, g.contiguous(), op=dist.ReduceOp.AVG, async_op=True))))
        gathers = []
        lr = self.param_groups[0]["lr"]
        for p, shard, work in launched:
            self._wait(work)
            if shard is None:
                p.add_(p.grad, alpha=-lr)
                continue
            rows = p.shape[0] // world
            mine = p[rank * rows:(rank + 1) * rows] - lr * shard
            gathers.append(self._timed(lambda p=p, m=mine: dist.all_gather_into_tensor(
                p, m.contiguous(), async_op=True)))
        for work in gathers:
            self._wait(work)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, choices=["ddp", "zero", "single", "accum-nosync",
                                                       "accum-flag", "no-group"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--out", default=os.environ.get("LOOP_OUT", "."))
    ap.add_argument("--save-at", type=int, help="rank 0 saves the model (torch.save) after "
                                                "this step")
    ap.add_argument("--same-data", action="store_true", help="every rank draws the same batches")
    ap.add_argument("--idle-rank", type=int, help="this rank builds its model and optimizer, "
                                                  "then exits without a step")
    args = ap.parse_args()

    torch.set_num_threads(1)
    shape = args.shape
    grouped = shape not in ("single", "no-group")
    if grouped:
        dist.init_process_group("gloo")
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.manual_seed(1337)
    model = TinyGPT(Config(args.vocab, args.layers, args.embd))
    waits: list[float] = []
    ddp = shape in ("ddp", "accum-nosync", "accum-flag")
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model: nn.Module = DDP(model)
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    elif shape == "zero":
        train_model, optimizer = model, ShardedSGD(list(model.parameters()), 0.05, waits)
    else:
        train_model, optimizer = model, torch.optim.SGD(model.parameters(), lr=0.05)
    if rank == args.idle_rank:
        return
    gen = torch.Generator().manual_seed(0 if args.same_data else rank)
    steps = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        losses = []
        for micro in range(args.accum):
            x = torch.randint(0, args.vocab, (1, args.seq_len), generator=gen)
            last = micro == args.accum - 1
            if shape == "accum-flag":
                train_model.require_backward_grad_sync = last
            if shape == "accum-nosync" and not last:
                with train_model.no_sync():
                    loss = train_model(x, x)
                    loss.backward()
            else:
                loss = train_model(x, x)
                loss.backward()
            losses.append(loss.item())
        waits.clear()
        t_opt = time.perf_counter()
        optimizer.step()
        optimizer_s = time.perf_counter() - t_opt
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        mean_loss = sum(losses) / len(losses)
        tokens = args.seq_len * args.accum * world
        steps.append({"loss": mean_loss, "tokens": tokens, "optimizer": optimizer_s,
                      "waits": list(waits), "dt": dt,
                      "collectives": getattr(optimizer, "launched", 0)})
        if rank == 0 and step == args.save_at:
            torch.save(model.state_dict(), os.path.join(args.out, f"model_{step:05d}.pt"))
        if rank == 0:
            print(f"step {step:05d}/{args.steps:05d} ({100 * step / args.steps:.2f}%) | "
                  f"loss: {mean_loss:.6f} | dt: {dt * 1000:.2f}ms | tok/sec: "
                  f"{int(tokens / dt):,}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    with open(os.path.join(args.out, f"loop-rank{rank}.json"), "w") as f:
        json.dump({"steps": steps, "n_params": n_params, "vocab": args.vocab,
                   "ln_vocab": math.log(args.vocab)}, f)
    if grouped:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
