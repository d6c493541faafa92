"""From a measured run to other shapes and setups: step time, tok/s, time to horizon, cost.

Pure arithmetic over `Measured` (what a run's records say; scalemon.state.measure builds it).
Each part of a measured step is scaled by what drives it: forward and backward by their
FLOPs (matmul-exact, and 6N beside), the optimizer by its own FLOPs, data by tokens, the wait
for the slowest rank with compute, sync by the gradients' bytes; the rest is held per step.
A GPU has no measurement behind it: it is modelled at an assumed MFU of its peak. Every part
says which of these it is (`basis`) and from what (`source`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from scalemon.core import scaling
from scalemon.core.units import format_duration, format_rate

MEASURED, SCALED, MODELLED = "measured", "scaled", "modelled"
FALLBACK_LINK_BIT_S = 1e9  # between machines when neither the run nor --link says


@dataclass(frozen=True)
class Measured:
    """One rank's median optimizer step in a run, with the shape and setup it ran at."""

    name: str
    shape: scaling.ModelShape
    seq_len: int
    n_params: int
    params_counted: bool  # counted on the real module (else the shape's formula)
    world: int
    nodes: int
    micro_steps: int
    tokens_per_step: int  # all ranks, all micro-steps
    samples: int  # rank-steps behind the medians
    step_s: float
    compute_s: float  # forward + backward without sync, all micro-steps
    # of which the loss head (softcap and cross-entropy: elementwise over every logit, which
    # no FLOPs count sees), when the trainer timed it apart
    head_s: float | None
    data_s: float
    optimizer_s: float
    other_s: float
    sync_s: float
    sync_lower_bound: bool
    wait_s: float
    sync_bytes: int  # moved a step: DDP's buckets and the script's own collectives
    bus_bit_s: float | None  # achieved ring bandwidth, when DDP's allreduce was timed
    muon: bool  # Muon on the matrices (nanochat), else AdamW-like elementwise work
    sharded: bool  # each rank updates its own share of the parameters (ZeRO, nanochat)
    optimizer_name: str
    device: str
    link_bit_s: float | None  # the run's --link, or its interface's speed

    @property
    def ranks_per_node(self) -> int:
        return max(1, self.world // max(1, self.nodes))

    @property
    def tokens_per_micro(self) -> float:
        """Tokens one rank runs through forward and backward in one micro-step."""
        return self.tokens_per_step / (self.world * self.micro_steps)

    @property
    def matmul_s(self) -> float:
        """Forward and backward less the loss head: what the FLOPs counts are for."""
        return max(0.0, self.compute_s - (self.head_s or 0.0))

    def compute_s_per_flop(self, model: str = "exact") -> float:
        flops = scaling.flops_per_token_exact(self.shape, self.seq_len) if model == "exact" \
            else 6.0 * self.n_params
        return self.matmul_s / (self.micro_steps * self.tokens_per_micro * flops)

    def head_s_per_logit(self) -> float:
        return (self.head_s or 0.0) / (self.micro_steps * self.tokens_per_micro *
                                       self.shape.vocab)

    def optimizer_s_per_flop(self) -> float:
        share = self.world if self.sharded else 1
        return self.optimizer_s * share / scaling.optimizer_flops(self.shape, self.muon)

    def data_s_per_token(self) -> float:
        return self.data_s / (self.micro_steps * self.tokens_per_micro)

    @property
    def parts_scale(self) -> float:
        """The median step over the sum of its parts' medians: medians do not add (a rank's
        wait and its compute move against each other), so predicted parts are scaled by this
        to add up as the measured ones do to the measured step."""
        parts = self.compute_s + self.data_s + self.wait_s + self.optimizer_s + self.sync_s + \
            self.other_s
        return min(1.0, self.step_s / parts) if parts > 0 else 1.0

    def bytes_per_param(self) -> float:
        """Bytes each parameter puts on the wire in an allreduce's worth of sync (a sharded
        optimizer's reduce_scatter plus all_gather move it twice)."""
        return self.sync_bytes / self.n_params / (2 if self.sharded else 1)


@dataclass(frozen=True)
class Target:
    depth: int
    seq_len: int
    tokens_per_step: int
    nodes: int
    link_bit_s: float | None = None  # None: the measured run's link


@dataclass(frozen=True)
class Part:
    name: str  # compute, data, wait, optimizer, sync, other
    seconds: float
    basis: str  # measured | scaled | modelled
    source: str


@dataclass(frozen=True)
class Prediction:
    setup: str  # "here" or a device preset's key
    label: str  # "here (2 ranks on 1 node)", "one H100 SXM at 40% MFU"
    depth: int
    params: int
    flops_exact: float  # per token
    flops_6n: float
    world: int
    nodes: int
    micro_steps: int
    tokens_per_step: int
    steps: int  # to the horizon
    parts: tuple[Part, ...]
    step_s: float  # the parts' sum (see Measured.parts_scale), compute by matmul-exact FLOPs
    step_6n_s: float  # the same with compute by 6N FLOPs
    cost: float | None  # to the horizon at --price per machine-hour

    @property
    def tok_s(self) -> float:
        return self.tokens_per_step / self.step_s if self.step_s > 0 else math.nan

    @property
    def horizon_s(self) -> float:
        return scaling.horizon_seconds(self.step_s, self.steps)

    @property
    def measured(self) -> bool:
        return all(part.basis == MEASURED for part in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tok_s": self.tok_s, "horizon_s": self.horizon_s,
                "measured": self.measured}


def shape_at(measured: Measured, depth: int) -> scaling.ModelShape:
    """The run's model family (vocab, width per layer, head size, value embeddings) at
    another depth."""
    return dataclasses.replace(measured.shape, depth=depth)


def params_at(measured: Measured, shape: scaling.ModelShape) -> int:
    """The shape's parameters; at the run's own shape, the count taken on its module."""
    same = shape == measured.shape
    return measured.n_params if same else scaling.param_count(shape).total


def horizon_steps(params: int, tokens_per_step: int, steps: int | None,
                  tokens_per_param: float) -> int:
    return steps or max(1, math.ceil(tokens_per_param * params / tokens_per_step))


def predict_here(m: Measured, target: Target, steps: int | None = None,
                 tokens_per_param: float = 20.0, price: float | None = None) -> Prediction:
    """The target on machines like the measured run's, each part scaled from its measurement."""
    shape = shape_at(m, target.depth)
    params = params_at(m, shape)
    world = target.nodes * m.ranks_per_node
    per_micro = m.tokens_per_micro * target.seq_len / m.seq_len  # same sequences a micro-step
    micro = max(1, math.ceil(target.tokens_per_step / (world * per_micro)))
    tokens = round(micro * world * per_micro)
    rank_tokens = micro * per_micro
    exact = scaling.flops_per_token_exact(shape, target.seq_len)
    six_n = 6.0 * params
    same = (shape == m.shape and target.seq_len == m.seq_len and micro == m.micro_steps
            and world == m.world and target.link_bit_s is None)

    def part(name: str, seconds: float, source: str, basis: str = SCALED) -> Part:
        return Part(name, seconds, MEASURED if same else basis,
                    "measured in this run" if same else source)

    head = rank_tokens * shape.vocab * m.head_s_per_logit()
    compute = rank_tokens * exact * m.compute_s_per_flop("exact") + head
    compute_6n = rank_tokens * six_n * m.compute_s_per_flop("6N") + head
    optimizer_work = scaling.optimizer_flops(shape, m.muon) / (world if m.sharded else 1)
    parts = [
        part("compute", compute, _compute_source(m)),
        part("data", rank_tokens * m.data_s_per_token(),
             f"{m.data_s_per_token() * 1e6:.3g} µs a token, measured"),
        part("wait", 0.0 if world < 2 else m.wait_s * compute / m.compute_s
             if m.compute_s > 0 else 0.0, "grows with compute, measured"),
        part("optimizer", optimizer_work * m.optimizer_s_per_flop(),
             f"{_giga(m.optimizer_s_per_flop())} of optimizer work, measured "
             f"({optimizer_model(m)})"),
        _sync(m, params, world, target, same),
        part("other", m.other_s, "the measured rest of a step, held per step",
             basis=MEASURED),
    ]
    scale = m.parts_scale
    parts = [dataclasses.replace(p, seconds=p.seconds * scale) for p in parts]
    step = sum(p.seconds for p in parts)
    steps_to = horizon_steps(params, tokens, steps, tokens_per_param)
    label = f"here ({world} rank{'s' * (world != 1)} on {target.nodes} node" \
            f"{'s' * (target.nodes != 1)})"
    machines = target.nodes
    return Prediction(
        setup="here", label=label, depth=target.depth, params=params, flops_exact=exact,
        flops_6n=six_n, world=world, nodes=target.nodes, micro_steps=micro,
        tokens_per_step=tokens, steps=steps_to, parts=tuple(parts), step_s=step,
        step_6n_s=step + (compute_6n - compute) * scale,
        cost=None if price is None else scaling.cost(step * steps_to, price, machines))


def _giga(seconds_per_flop: float) -> str:
    return f"{1 / seconds_per_flop / 1e9:.3g} GFLOP/s" if seconds_per_flop > 0 else "no FLOP/s"


def _compute_source(m: Measured) -> str:
    text = f"{_giga(m.compute_s_per_flop('exact'))} of matmul-exact FLOPs, measured"
    if m.head_s is None:
        return text + " (the loss head not timed apart: counted as FLOPs)"
    return text + (f", and the loss head {m.head_s_per_logit() * 1e9:.3g} ns a logit, "
                   "measured")


def optimizer_model(m: Measured) -> str:
    work = f"Muon, {scaling.MUON_NS_STEPS} Newton–Schulz steps on the matrices" if m.muon \
        else f"{m.optimizer_name or 'AdamW'}, {scaling.ADAMW_FLOPS_PER_PARAM} FLOPs a parameter"
    return work + (", sharded over the ranks" if m.sharded else "")


def _sync(m: Measured, params: int, world: int, target: Target, same: bool) -> Part:
    if world < 2:
        return Part("sync", 0.0, MODELLED if m.world > 1 else MEASURED, "one rank: no sync")
    at_least = "at least " if m.sync_lower_bound else ""
    if same:
        return Part("sync", m.sync_s, MEASURED, "measured in this run" +
                    (" (at least: what overlap slows is not priced)" if at_least else ""))
    if world == m.world and target.nodes == m.nodes and target.link_bit_s is None \
            and m.sync_bytes > 0:
        return Part("sync", m.sync_s * params / m.n_params, SCALED,
                    f"{at_least}{format_duration(m.sync_s)} measured, scaled by the "
                    "gradients' bytes")
    link, said = target.link_bit_s, "--link"
    if link is None and m.nodes > 1 and m.link_bit_s:
        link, said = m.link_bit_s, "the run's link"
    if link is None:
        link, said = FALLBACK_LINK_BIT_S, "no link given (--link)"
    wire = params * (m.bytes_per_param() if m.sync_bytes else 4.0)
    seconds = scaling.ring_allreduce_seconds(wire, target.nodes, link)
    return Part("sync", seconds, MODELLED,
                f"ring allreduce over {target.nodes} nodes at {format_rate(link)} ({said}), "
                "none of it overlapped")


def predict_device(m: Measured, key: str, depth: int, seq_len: int, tokens_per_step: int,
                   mfu: float = 0.4, dtype: str = "bf16", steps: int | None = None,
                   tokens_per_param: float = 20.0, price: float | None = None) -> Prediction:
    """One GPU at an assumed MFU of its peak: nothing of the measured run carries over but
    the model's shape."""
    device = scaling.device_preset(key)
    shape = shape_at(m, depth)
    params = params_at(m, shape)
    peak = scaling.peak_flops(device, dtype)
    exact = scaling.flops_per_token_exact(shape, seq_len)
    six_n = 6.0 * params
    step = tokens_per_step * exact / (peak * mfu)
    steps_to = horizon_steps(params, tokens_per_step, steps, tokens_per_param)
    source = f"{mfu:.0%} MFU of the {device.label}'s {dtype} peak ({peak / 1e12:,.0f} TFLOP/s)"
    return Prediction(
        setup=device.key, label=f"one {device.label} at {mfu:.0%} MFU", depth=depth,
        params=params, flops_exact=exact, flops_6n=six_n, world=1, nodes=1, micro_steps=1,
        tokens_per_step=tokens_per_step, steps=steps_to,
        parts=(Part("compute", step, MODELLED, source),), step_s=step,
        step_6n_s=tokens_per_step * six_n / (peak * mfu),
        cost=None if price is None else scaling.cost(step * steps_to, price))
