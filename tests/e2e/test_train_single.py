"""The trainer for real: two gloo ranks under torchrun, a finished run, a resume, a stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scalemon.trainer.data import LLMC_MAGIC, SyntheticMarkov
from scalemon.trainer.train import lr_multiplier

STEPS = 40
VOCAB = 256
SEED = 1337


def write_config(
    run_dir: Path,
    steps: int = STEPS,
    checkpoint_every: int = 10,
    world: int = 2,
    vocab: int = VOCAB,
    data: str | None = None,
) -> None:
    device_batch, seq_len, accum = 4, 64, 2
    config = {
        "schema": 1,
        "name": run_dir.name,
        "created": time.time(),
        "command": "train",
        "script": None,
        "model": {
            "depth": 1,
            "vocab": vocab,
            "seq_len": seq_len,
            "aspect_ratio": 64,
            "head_dim": 128,
        },
        "train": {
            "device": "cpu",
            "backend": "gloo",
            "device_batch": device_batch,
            "accum": accum,
            "tokens_per_step": device_batch * seq_len * world * accum,
            "steps": steps,
            "lr": 0.003,
            "warmup_steps": 5,
            "seed": SEED,
            "checkpoint_every": checkpoint_every,
            "data": data,
        },
        "launch": {
            "nproc_per_node": world,
            "nnodes": 1,
            "node_rank": 0,
            "master_addr": "127.0.0.1",
            "master_port": 29500,
            "world_size": world,
            "threads_per_rank": 1,
        },
        "hosts": ["localhost"],
        "pids": {"supervisor": os.getpid()},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config))


def launch(run_dir: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SCALEMON_RUN_DIR=str(run_dir), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "scalemon.trainer.train",
        "--run-dir",
        str(run_dir),
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def run_to_exit(run_dir: Path, nproc: int = 2, returncode: int = 0) -> str:
    proc = launch(run_dir, nproc)
    out, _ = proc.communicate(timeout=120)
    assert (proc.returncode == 0) == (returncode == 0), out
    return out


def records(run_dir: Path, rank: int) -> list[dict]:
    lines = (run_dir / "ranks" / f"rank-{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def steps_done(run_dir: Path) -> int:
    path = run_dir / "ranks" / "rank-0.jsonl"
    if not path.exists():
        return 0
    complete = path.read_text().split("\n")[:-1]  # the last line may be half written
    return sum(json.loads(line)["kind"] == "step" for line in complete)


def step_losses(run_dir: Path, rank: int) -> dict[int, float]:
    # Later records win: a resumed run repeats the steps after its checkpoint.
    return {r["step"]: r["loss"] for r in records(run_dir, rank) if r["kind"] == "step"}


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt"))


@pytest.mark.slow
def test_two_ranks_learn_checkpoint_and_resume_exactly(tmp_path):
    run_dir = tmp_path / "run"
    write_config(run_dir)
    out = run_to_exit(run_dir)
    assert f"step {STEPS}/{STEPS} | loss" in out

    data = SyntheticMarkov(VOCAB, seed=SEED)
    first = [step_losses(run_dir, rank) for rank in (0, 1)]
    for rank in (0, 1):
        assert sorted(first[rank]) == list(range(STEPS))
        assert first[rank][STEPS - 1] < data.unigram_entropy
        start, end = records(run_dir, rank)[0], records(run_dir, rank)[-1]
        assert start["kind"] == "start" and start["meta"]["start_step"] == 0
        assert start["meta"]["unigram_entropy"] == pytest.approx(data.unigram_entropy)
        assert (end["kind"], end["reason"]) == ("end", "finished")
    assert checkpoints(run_dir) == ["step-00000029.pt", "step-00000039.pt"]

    # Relaunching the same run dir resumes after the latest checkpoint; with the data a
    # function of the step and the optimizer state restored, it retraces the same losses.
    (run_dir / "checkpoints" / "step-00000039.pt").unlink()
    out = run_to_exit(run_dir)
    assert "resuming from checkpoint step 29" in out
    assert "step 30/" not in out and f"step 31/{STEPS} | loss" in out
    for rank in (0, 1):
        starts = [r for r in records(run_dir, rank) if r["kind"] == "start"]
        assert starts[-1]["meta"]["start_step"] == 30
        again = step_losses(run_dir, rank)
        for step in range(30, STEPS):
            assert again[step] == pytest.approx(first[rank][step], abs=1e-4)
    assert checkpoints(run_dir) == ["step-00000029.pt", "step-00000039.pt"]


@pytest.mark.slow
def test_sigint_stops_every_rank_cleanly_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    write_config(run_dir, steps=100_000, checkpoint_every=0)
    proc = launch(run_dir, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not steps_done(run_dir) >= 3:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the launching terminal does
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    ends = [records(run_dir, rank)[-1] for rank in (0, 1)]
    assert [e["reason"] for e in ends] == ["stopped", "stopped"], out
    assert ends[0]["step"] == ends[1]["step"]
    assert checkpoints(run_dir) == [f"step-{ends[0]['step']:08d}.pt"]
    assert f"stopped after step {ends[0]['step'] + 1}/100000" in out


def test_lr_schedule_warms_up_holds_and_warms_down():
    steps, warmup = 100, 10
    lrs = [lr_multiplier(s, steps, warmup) for s in range(steps)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0
    assert all(m == 1.0 for m in lrs[10:81])
    assert lrs[81:] == sorted(lrs[81:], reverse=True) and lrs[-1] == pytest.approx(0.05)


@pytest.mark.slow
def test_one_rank_on_token_shards_checks_the_vocab(tmp_path):
    tokens = SyntheticMarkov(300, seed=5).sample(np.random.default_rng(0), 1, 50_000)[0]
    header = np.zeros(256, dtype="<i4")
    header[:3] = LLMC_MAGIC, 1, len(tokens)
    shard = tmp_path / "shard_train_000.bin"
    shard.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())
    vocab_needed = int(tokens.max()) + 1

    run_dir = tmp_path / "run"
    write_config(run_dir, steps=5, world=1, vocab=vocab_needed - 1, data=str(shard))
    out = run_to_exit(run_dir, nproc=1, returncode=1)
    assert f"the vocab must be at least {vocab_needed}, not {vocab_needed - 1}" in out

    write_config(run_dir, steps=5, world=1, vocab=vocab_needed, data=str(shard))
    out = run_to_exit(run_dir, nproc=1)
    assert "step 5/5 | loss" in out
    start, end = records(run_dir, 0)[0], records(run_dir, 0)[-1]
    assert start["meta"]["entropy_rate"] is None
    assert 0 < start["meta"]["unigram_entropy"] < np.log(vocab_needed)
    assert end["reason"] == "finished"
    assert checkpoints(run_dir) == ["step-00000004.pt"]
