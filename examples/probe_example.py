"""A plain DDP training loop with scalemon's step probe, as in the README.

    scalemon run --nproc-per-node 2 --backend gloo -- examples/probe_example.py --steps 60

Outside scalemon (plain torchrun) the probe is a no-op and costs nothing.
"""

import argparse
import gc

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from scalemon.probes import StepProbe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    train(args.steps)
    # The DDP holds the process group: it is gone with train()'s frame before the group is
    # destroyed (freed after it, gloo's threads can abort the process at exit).
    gc.collect()
    dist.barrier()  # no rank tears gloo down while a peer still talks to it
    dist.destroy_process_group()


def train(steps: int) -> None:
    vocab, dim, batch, seq = 512, 128, 8, 64
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(dist.get_rank())
    tokens = batch * seq * dist.get_world_size()

    probe = StepProbe.from_env(meta={"vocab": vocab, "steps": steps})
    probe.attach_ddp(model)  # times gradient sync with a DDP comm hook
    for step in range(steps):
        with probe.step(step, tokens=tokens) as s:
            with s.phase("data"):
                start = torch.randint(0, vocab, (batch, 1), generator=generator)
                x = (start + 7 * torch.arange(seq + 1)) % vocab  # a learnable sequence
            if s.calibrate:  # now and then: this backward without sync, for what sync costs
                with s.calibration(model) as calibration:
                    logits = model(x[:, :-1])
                    loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
                    with calibration.backward():
                        loss.backward()
            with s.phase("forward"):
                logits = model(x[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
            with s.phase("backward", synced=True):
                loss.backward()
            with s.phase("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            s.loss = loss.item()
    probe.close("finished")


if __name__ == "__main__":
    main()
