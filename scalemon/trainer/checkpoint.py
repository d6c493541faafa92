"""Atomic checkpoints ``step-<STEP:08d>.pt``; the last two are kept.

A checkpoint is written to a temporary file in the same directory, fsynced and renamed into
place, so a crash or kill mid-write never leaves a truncated ``step-*.pt`` behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

KEEP = 2
NAME = re.compile(r"^step-(\d{8})\.pt$")


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel wrapper (state dict keys without `module.`)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = ((NAME.match(p.name), p) for p in ckpt_dir.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def save(
    ckpt_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any] | None = None,
) -> Path:
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{step:08d}.pt"
    state = {
        "step": step,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(dir=ckpt_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(ckpt_dir)
    for _, old in _checkpoints(ckpt_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse to open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def latest(ckpt_dir: str | os.PathLike) -> Path | None:
    found = _checkpoints(Path(ckpt_dir))
    return found[-1][1] if found else None


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict: step, model, optimizer, extra (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[int, dict[str, Any]]:
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), dict(state["extra"])


def load(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[int, dict[str, Any]]:
    """Load weights (and optimizer state) in place; returns (step, extra)."""
    return restore(read(path), model, optimizer)
