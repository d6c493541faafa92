"""A fingerprint of a batch of token ids: equal on two ranks when they train on the same data.

Taken only from a batch on the CPU: reading one on a GPU would wait for the device, and the
probe never makes the trainer wait.
"""

from __future__ import annotations

from typing import Any

FINGERPRINT_TOKENS = 4096  # enough to tell batches apart; a few microseconds to sum


def batch_fingerprint(batch: Any) -> int | None:
    """A position-weighted sum of the batch's first token ids; None when it cannot be taken
    (not a CPU tensor of integer ids)."""
    import torch

    if not isinstance(batch, torch.Tensor) or batch.device.type != "cpu" or \
            batch.is_floating_point() or batch.is_complex() or batch.numel() == 0:
        return None
    flat = batch.detach().reshape(-1)[:FINGERPRINT_TOKENS].to(torch.int64)
    weights = torch.arange(1, flat.numel() + 1, dtype=torch.int64)
    return int((flat * weights).sum()) % (1 << 63)
