"""What a run measured, as the input of a forecast (scalemon.core.forecast.Measured).

Built from the fold and the summary's split and plumbing: the model's shape as the run says it
(scalemon's trainer: its config; a script: what the injected probe read off the module), the
median step's parts, the ranks, nodes and link. None until there is a split and a shape.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from scalemon.core import scaling
from scalemon.core.forecast import Measured
from scalemon.core.records import StepRecord
from scalemon.state.analysis import Plumbing, Split

if TYPE_CHECKING:
    from scalemon.state.fold import RunState
    from scalemon.state.summary import RunInfo

SHARDED_SHARE = 1.5  # bytes moved a step over the parameters' at which updates are sharded


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def shape_of_run(state: RunState, info: RunInfo) -> scaling.ModelShape | None:
    """The run's shape with what the module itself says (its width, nanochat's value
    embeddings) over the nanochat defaults."""
    if info.shape is None:
        return None
    meta, shape = state.meta, info.shape
    dim = _count(meta.get("dim"))
    aspect = dim // shape.depth if dim and dim % shape.depth == 0 else shape.aspect_ratio
    heads = _count(meta.get("n_head"))
    head_dim = dim // heads if dim and heads and dim % heads == 0 else shape.head_dim
    tables = _count(meta.get("embedding_tables"))
    # nanochat: the input embedding and a value embedding in every other layer
    value_embeddings = tables is not None and tables - 1 == (shape.depth + 1) // 2 and \
        shape.depth > 0 and tables > 1
    try:
        return scaling.ModelShape(depth=shape.depth, vocab=shape.vocab, aspect_ratio=aspect,
                                  head_dim=head_dim, value_embeddings=value_embeddings)
    except ValueError:
        return None


def measured(state: RunState, info: RunInfo, split: Split | None, plumbing: Plumbing | None,
             micro_steps: int, steps: list[StepRecord]) -> Measured | None:
    """What the run measured, from the split of `steps` (the recent window)."""
    shape = shape_of_run(state, info)
    if shape is None or split is None or not split.total > 0:
        return None
    world = state.world or 1
    tokens = state.tokens_per_step or _count(state.meta.get("tokens_per_step"))
    if not tokens:
        recent = [r.tokens for records in state.recent.values() for r in records if r.tokens]
        tokens = sorted(recent)[len(recent) // 2] if recent else None
    if not tokens:
        return None
    counted = _count(state.meta.get("n_params"))
    n_params = counted or scaling.param_count(shape).total
    optimizer = state.meta.get("optimizer")
    optimizer_name = optimizer if isinstance(optimizer, str) else \
        ("AdamW" if state.config.command == "train" else "")
    param_bytes = plumbing.param_bytes if plumbing else None
    moved = plumbing.bytes_per_step if plumbing else split.bytes
    sharded = bool(plumbing and plumbing.ddp is False and param_bytes and
                   moved >= SHARDED_SHARE * param_bytes)
    link = state.config.launch.link_bit_s or state.nic_bit_s
    heads = [r.phases["loss_head"] for r in steps if "loss_head" in r.phases]
    return Measured(
        name=state.config.name, shape=shape, seq_len=info.seq_len, n_params=n_params,
        params_counted=counted is not None, world=world,
        nodes=max(1, state.config.launch.nnodes), micro_steps=max(1, micro_steps),
        tokens_per_step=tokens, samples=split.steps, step_s=split.total,
        compute_s=split.forward + split.backward, data_s=split.data,
        head_s=statistics.median(heads) if heads else None,
        optimizer_s=split.optimizer, other_s=split.other, sync_s=split.sync,
        sync_lower_bound=split.sync_lower_bound, wait_s=split.wait, sync_bytes=moved,
        bus_bit_s=split.bus_bit_s if math.isfinite(split.bus_bit_s) else None,
        muon="muon" in optimizer_name.lower(), sharded=sharded,
        optimizer_name=optimizer_name, device=info.device or "cpu",
        link_bit_s=link if link and math.isfinite(link) else None)
