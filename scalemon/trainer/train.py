"""Per-rank training entry: ``python -m torch.distributed.run ... -m scalemon.trainer.train
--run-dir DIR``. Reads DIR/config.json, trains, checkpoints into DIR/checkpoints, resumes from
the latest checkpoint there, and reports every step through the StepProbe.

SIGTERM/SIGINT stop the run cleanly at the end of the current step: the ranks agree on it
through a one-element all-reduce each step, rank 0 saves a checkpoint, and every rank exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from scalemon.core.config import RunConfig
from scalemon.io.rundir import RunDir
from scalemon.probes import StepProbe
from scalemon.trainer import checkpoint
from scalemon.trainer.data import SyntheticMarkov, TokenShards
from scalemon.trainer.model import GPT, GPTConfig, count_parameters, head_loss

WARMDOWN_FRACTION = 0.2


def lr_multiplier(step: int, steps: int, warmup_steps: int) -> float:
    """nanochat's schedule: linear warmup, constant, linear warmdown to 0 over the last 20%."""
    warmdown = round(WARMDOWN_FRACTION * steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step <= steps - warmdown:
        return 1.0
    return (steps - step) / warmdown


class StopRequest:
    """Remembers SIGTERM/SIGINT so the loop stops between steps. Repeats change nothing:
    torchrun forwards a signal that the whole process group may already have had."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def say(line: str, stream=None) -> None:
    """Print a log line. The logs live in the run dir: a full disk must not end the run."""
    with contextlib.suppress(OSError):
        print(line, file=stream or sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scalemon.trainer.train")
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    return train(run_dir, RunDir(run_dir).read_config())


def train(run_dir: Path, config: RunConfig) -> int:
    tc = config.train
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.set_num_threads(config.launch.threads_per_rank or 1)
    if tc.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(tc.device or "cpu")
    stop = StopRequest()
    dist.init_process_group(tc.backend)
    probe = run = None
    try:
        run = Run(run_dir, config, rank, world, device)
        probe = StepProbe.from_env(meta=run.meta)
        reason = run.loop(probe, stop)
        dist.barrier()  # no rank tears gloo down while a peer still talks to it
    except BaseException as e:
        if probe is not None:
            probe.close("error", message=str(e) or type(e).__name__)
        raise
    finally:
        # A DDP still holding the group when it is destroyed makes gloo abort at exit.
        run = None
        gc.collect()
        dist.destroy_process_group()
    probe.close(reason)
    return 0


class Run:
    """One rank's model, optimizer, data and position, built from config.json."""

    def __init__(self, run_dir: Path, config: RunConfig, rank: int, world: int, device):
        tc = config.train
        self.rank, self.world, self.device = rank, world, device
        self.ckpt_dir = RunDir(run_dir).checkpoints_dir
        self.steps, self.accum = int(tc.steps or 0), int(tc.accum or 1)
        self.device_batch = int(tc.device_batch or 1)
        self.every = int(tc.checkpoint_every or 0)
        self.lr, self.warmup = float(tc.lr or 0.0), int(tc.warmup_steps or 0)
        self.cfg = GPTConfig(**{k: v for k, v in asdict(config.model).items() if v is not None})
        self.tokens_per_step = self.device_batch * self.cfg.seq_len * world * self.accum
        if tc.tokens_per_step not in (None, self.tokens_per_step):
            raise ValueError(
                f"config.json says {tc.tokens_per_step} tokens per step, but device_batch × "
                f"seq_len × world × accum = {self.tokens_per_step} with {world} ranks"
            )

        self.data: SyntheticMarkov | TokenShards
        if tc.data:
            self.data = TokenShards(tc.data)
            if self.data.vocab_size > self.cfg.vocab:
                raise ValueError(
                    f"{tc.data} has token ids up to {self.data.vocab_size - 1}; "
                    f"the vocab must be at least {self.data.vocab_size}, not {self.cfg.vocab}"
                )
            unigram, rate = self.data.estimate_unigram_entropy(), None
        else:
            self.data = SyntheticMarkov(self.cfg.vocab, seed=int(tc.seed or 0))
            unigram, rate = self.data.unigram_entropy, self.data.entropy_rate

        torch.manual_seed(int(tc.seed or 0))  # same init everywhere (DDP also broadcasts rank 0's)
        with device:
            self.model = GPT(self.cfg)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.lr,
            betas=(0.9, 0.95),
            weight_decay=0.0,
            fused=device.type == "cuda",
        )
        self.start_step, resumed_from = 0, None
        state = self._latest_checkpoint()
        if state is not None:
            if state["extra"].get("model") not in (None, asdict(self.cfg)):
                raise ValueError(
                    f"checkpoint in {self.ckpt_dir} is for model {state['extra']['model']}, "
                    f"not {asdict(self.cfg)}"
                )
            last, _ = checkpoint.restore(state, self.model, self.optimizer)
            self.start_step, resumed_from = last + 1, last
        self.resumed_from = resumed_from
        self.net: GPT | DDP = self.model
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # Gradients as views into DDP's buckets: no copy into the buckets that the
            # probe's comm hook could not see (it would read as compute), and less memory.
            # The only buffers are the rotary tables, equal on every rank: broadcasting them
            # in every forward would hide a collective (and its waits) there.
            self.net = DDP(self.model, device_ids=ids, gradient_as_bucket_view=True,
                           forward_sync_buffers=False)
        self.meta = {
            "n_params": count_parameters(self.model),
            "param_bytes": sum(p.numel() * p.element_size() for p in self.model.parameters()),
            "vocab": self.cfg.vocab,
            "depth": self.cfg.depth,
            "seq_len": self.cfg.seq_len,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.steps,
            "device": str(device),
            "backend": tc.backend,
            "unigram_entropy": unigram,
            "entropy_rate": rate,
            "start_step": self.start_step,
        }

    def _latest_checkpoint(self) -> dict[str, Any] | None:
        """Rank 0's latest checkpoint, on every rank. Ranks that see the same file (one machine,
        or a shared run dir) read it themselves; otherwise rank 0 sends it over the group."""
        path = checkpoint.latest(self.ckpt_dir) if self.rank == 0 else None
        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)
        if box[0] is None:
            return None
        have = torch.tensor([int(Path(box[0]).is_file())], device=self.device)
        dist.all_reduce(have, op=dist.ReduceOp.MIN)
        if have.item():
            return checkpoint.read(box[0])
        state: list[dict[str, Any] | None] = [checkpoint.read(box[0]) if self.rank == 0 else None]
        dist.broadcast_object_list(state, src=0)
        return state[0]

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``index`` (= step × accum + micro) of this rank: a pure function of it."""
        if isinstance(self.data, SyntheticMarkov):
            x, y = self.data.batch(self.rank, index, self.device_batch, self.cfg.seq_len)
        else:
            args = (self.rank, self.world, index, self.device_batch, self.cfg.seq_len)
            x, y = self.data.batch(*args)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def save(self, step: int, probe: StepProbe) -> None:
        t0 = time.perf_counter()
        extra = {
            "model": asdict(self.cfg),
            "data": str(self.data.path) if isinstance(self.data, TokenShards) else "synthetic",
            "next_micro_batch": (step + 1) * self.accum,  # batches are a function of this
            "world": self.world,
            "tokens_per_step": self.tokens_per_step,
        }
        try:
            path = checkpoint.save(self.ckpt_dir, step, self.model, self.optimizer, extra)
        except OSError as error:
            # A full disk must not end a run that can still train; the next save retries.
            message = f"checkpoint at step {step} not written: {error.strerror or error}"
            say(f"scalemon: {message}", sys.stderr)
            probe.checkpoint(step, str(self.ckpt_dir), time.perf_counter() - t0, message)
            return
        probe.checkpoint(step, str(path), time.perf_counter() - t0)

    @property
    def time_head(self) -> bool:
        # On a GPU the host's clock does not see the kernels (and a sync would cost the step).
        return self.device.type == "cpu"

    def calibrate(self, s: Any, step: int, autocast: Any) -> None:
        """A forward and backward of the step's first micro-batch under no_sync, thrown away
        (the gradients are zero before and after): the probe's ground truth for sync."""
        x, y = self.batch(step * self.accum)
        with s.calibration(self.net) as calibration:
            with autocast:
                loss = self.net(x, y) / self.accum
            with calibration.backward():
                loss.backward()

    def loop(self, probe: StepProbe, stop: StopRequest) -> str:
        """Train to the horizon or a stop request; returns the end reason."""
        probe.attach_ddp(self.net)  # a plain module (one rank) is fine: nothing to time
        if self.rank == 0 and self.resumed_from is not None:
            say(f"resuming from checkpoint step {self.resumed_from}")
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        stop_flag = torch.zeros(1, device=self.device)
        for step in range(self.start_step, self.steps):
            lr = self.lr * lr_multiplier(step, self.steps, self.warmup)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            with probe.step(step, tokens=self.tokens_per_step, lr=lr) as s:
                if s.calibrate:  # now and then: what this step's backward costs without sync
                    self.calibrate(s, step, autocast)
                loss_sum = torch.zeros((), device=self.device)
                for micro in range(self.accum):
                    last = micro == self.accum - 1
                    with s.phase("data"):
                        x, y = self.batch(step * self.accum + micro)
                    if micro == 0:
                        s.data_from(x)
                    # Only the last micro-step syncs gradients; the others accumulate locally.
                    local = not last and self.world > 1  # then net is the DDP wrapper
                    with cast(DDP, self.net).no_sync() if local else contextlib.nullcontext():
                        with s.phase("forward"), autocast:
                            logits = self.net(x, raw=True)
                            head = HeadTimer(logits) if self.time_head else None
                            loss = head_loss(logits, y) / self.accum
                            if head is not None:
                                head.forward_done()
                        with s.phase("backward", synced=last):
                            if head is not None:
                                head.backward_started()
                            loss.backward()
                        if head is not None:
                            s.part("loss_head", head.seconds())
                    loss_sum += loss.detach()
                with s.phase("optimizer"):
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=False)  # keep the bucket views
                s.loss = loss_sum.item()
            dt = time.perf_counter() - t0
            if self.rank == 0:  # counted from 1 here, so the last line reads "step N/N"
                say(f"step {step + 1}/{self.steps} | loss {s.loss:.4f} | dt {dt:.2f}s | "
                    f"tok/s {self.tokens_per_step / dt:.0f}")
            # Every rank must leave the loop at the same step, or the rest hang in the next
            # gradient all-reduce: agree on any rank's stop request.
            stop_flag.fill_(float(stop.requested))
            with probe.collective("stop vote"):
                dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX)
            stopping = bool(stop_flag.item())
            done = step == self.steps - 1
            periodic = self.every > 0 and (step + 1) % self.every == 0
            if self.rank == 0 and (done or stopping or periodic):
                self.save(step, probe)
            if stopping and not done:
                if self.rank == 0:
                    say(f"stopped after step {step + 1}/{self.steps}")
                return "stopped"
        return "finished"


class HeadTimer:
    """The loss head's time in a micro-step: its forward (softcap and cross-entropy), and its
    backward, which runs first in backward and ends when the gradient reaches the logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        self._t0 = time.perf_counter()
        self._forward = 0.0
        self._backward_from: float | None = None
        self._reached: float | None = None
        logits.register_hook(self._logits_grad)

    def _logits_grad(self, grad: torch.Tensor) -> None:
        self._reached = time.perf_counter()

    def forward_done(self) -> None:
        self._forward = time.perf_counter() - self._t0

    def backward_started(self) -> None:
        self._backward_from = time.perf_counter()

    def seconds(self) -> float:
        if self._reached is None or self._backward_from is None:
            return self._forward
        return self._forward + max(0.0, self._reached - self._backward_from)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every record is written; the interpreter's teardown can still abort on gloo's threads
    # ("terminate called without an active exception"), turning a clean end into exit 134.
    os._exit(code)

