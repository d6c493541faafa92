"""`scalemon plan`: the scaling table a person would otherwise build by hand.

`build_plan` is pure (numbers from `scaling`); `render_plan` turns it into text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from scalemon.core import forecast, scaling
from scalemon.core.units import (
    format_bytes,
    format_count,
    format_duration,
    format_money,
    format_params,
    format_percent,
    format_rate,
)

SYNC_TARGET = 0.10  # the verdict suggests accumulation that brings sync under this share


@dataclass(frozen=True)
class PlanSettings:
    depths: tuple[int, ...]
    vocab: int = scaling.DEFAULT_VOCAB
    seq_len: int = scaling.DEFAULT_SEQ_LEN
    tokens_per_step: int = 65_536
    steps: int | None = None  # None: Chinchilla horizon from tokens_per_param
    tokens_per_param: float = 20.0
    ref_tok_s: float | None = None
    ref_depth: int | None = None
    nodes: int = 1
    link_bit_s: float = 1e9
    latency_s: float = 1e-4
    devices: tuple[str, ...] = ()
    mfu: float = 0.4
    dtype: str = "bf16"
    grad_dtype: str = "fp32"
    price_per_hour: float | None = None


@dataclass(frozen=True)
class Estimate:
    """Speed and time for one FLOPs model ('6N' or 'exact')."""

    flops_per_token: float
    tok_s: float
    compute_s: float  # per optimizer step
    step_s: float  # compute + allreduce (no overlap assumed)
    horizon_s: float
    cost: float | None


@dataclass(frozen=True)
class Row:
    depth: int
    dim: int
    params: int
    embedding_share: float
    steps: int
    grad_bytes: int
    allreduce_s: float
    sync_share: float  # of the matmul-exact step
    accum_for_target: int  # micro-steps per allreduce for sync under SYNC_TARGET
    estimates: dict[str, Estimate]


@dataclass(frozen=True)
class Setup:
    key: str
    label: str  # "this machine (115 tok/s measured at d4), 2 nodes over 1 Gbit/s"
    short: str  # "this machine", "one H100 SXM at 40% MFU": for the verdict
    machines: int
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    settings: PlanSettings
    setups: list[Setup]
    verdict: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TokSFor = Callable[[scaling.ModelShape, str], float]  # (shape, FLOPs model) -> tok/s


def _row(settings: PlanSettings, depth: int, tok_s_for: _TokSFor, nodes: int, machines: int,
         rented: bool) -> Row:
    shape = scaling.ModelShape(depth=depth, vocab=settings.vocab)
    params = scaling.param_count(shape)
    steps = settings.steps or scaling.steps_for_tokens_per_param(
        shape, settings.tokens_per_param, settings.tokens_per_step
    )
    nbytes = scaling.grad_bytes(shape, settings.grad_dtype)
    allreduce = scaling.ring_allreduce_seconds(
        nbytes, nodes, settings.link_bit_s, settings.latency_s
    )
    estimates: dict[str, Estimate] = {}
    for name, flops in scaling.FLOPS_MODELS.items():
        tok_s = tok_s_for(shape, name)
        compute = settings.tokens_per_step / tok_s
        step = compute + allreduce
        horizon = scaling.horizon_seconds(step, steps)
        # Renting is priced per machine-hour; the reference machines are your own.
        price = settings.price_per_hour if rented else None
        estimates[name] = Estimate(
            flops_per_token=flops(shape, settings.seq_len),
            tok_s=tok_s,
            compute_s=compute,
            step_s=step,
            horizon_s=horizon,
            cost=None if price is None else scaling.cost(horizon, price, machines),
        )
    exact = estimates["exact"]
    return Row(
        depth=depth,
        dim=shape.dim,
        params=params.total,
        embedding_share=params.embedding_share,
        steps=steps,
        grad_bytes=nbytes,
        allreduce_s=allreduce,
        sync_share=scaling.sync_share(exact.compute_s, allreduce),
        accum_for_target=scaling.accumulation_for_sync_share(
            exact.compute_s, allreduce, SYNC_TARGET
        ),
        estimates=estimates,
    )


def build_plan(settings: PlanSettings) -> Plan:
    setups: list[Setup] = []
    if settings.ref_tok_s is not None:
        ref_tok_s = settings.ref_tok_s
        assert settings.ref_depth is not None  # set together with ref_tok_s (TOK_S@DEPTH)
        ref_shape = scaling.ModelShape(depth=settings.ref_depth, vocab=settings.vocab)

        def from_reference(shape: scaling.ModelShape, model: str) -> float:
            return scaling.tok_s_from_reference(
                ref_tok_s, ref_shape, shape, model, settings.seq_len
            )

        label = f"this machine ({settings.ref_tok_s:g} tok/s measured at d{settings.ref_depth})"
        if settings.nodes > 1:
            label += f", {settings.nodes} nodes over {format_rate(settings.link_bit_s)}"
        rows = [_row(settings, d, from_reference, settings.nodes, settings.nodes, False)
                for d in settings.depths]
        setups.append(Setup("reference", label, "this machine", settings.nodes, rows))
    for key in settings.devices:
        device = scaling.device_preset(key)
        peak = scaling.peak_flops(device, settings.dtype)

        def from_device(shape: scaling.ModelShape, model: str, peak: float = peak) -> float:
            return scaling.tok_s_from_device(peak, settings.mfu, shape, model, settings.seq_len)

        short = f"one {device.label} at {settings.mfu:.0%} MFU"
        rows = [_row(settings, d, from_device, 1, 1, True) for d in settings.depths]
        setups.append(Setup(device.key, f"{short} ({settings.dtype} peak)", short, 1, rows))
    return Plan(settings, setups, _verdict(settings, setups))


def _verdict(settings: PlanSettings, setups: list[Setup]) -> list[str]:
    lines: list[str] = []
    for index, depth in enumerate(settings.depths):
        parts: list[str] = []
        for setup in setups:
            row = setup.rows[index]
            exact = row.estimates["exact"]
            to_horizon = format_duration(exact.horizon_s)
            if not parts:
                to_horizon += f" to {row.steps:,} steps"
            text = f"{setup.short}: {format_duration(exact.step_s)}/step, {to_horizon}"
            if exact.cost is not None:
                text += f" ({format_money(exact.cost)})"
            if setup.machines > 1 and row.sync_share > SYNC_TARGET:
                text += (f"; sync is {format_percent(row.sync_share)} of a step, "
                         f"{row.accum_for_target} micro-steps per allreduce bring it under "
                         f"{format_percent(SYNC_TARGET)}")
            parts.append(text)
        if parts:
            lines.append(f"d{depth} on " + "; on ".join(parts))
    return lines


def _pair(estimates: dict[str, Estimate], attr: str, fmt: Callable[[Any], str]) -> str:
    return " / ".join(fmt(getattr(estimates[m], attr)) for m in scaling.FLOPS_MODELS)


def render_plan(plan: Plan) -> str:
    s = plan.settings
    horizon = f"{s.steps:,} steps" if s.steps else f"{s.tokens_per_param:g} tokens per parameter"
    out = [
        f"scalemon plan: vocab {s.vocab:,}, seq {s.seq_len}, {s.tokens_per_step:,} tokens/step, "
        f"{horizon}" + (f", rented GPUs at {format_money(s.price_per_hour)}/h"
                        if s.price_per_hour is not None else ""),
        "pairs are 6N / matmul-exact FLOPs per token; step = compute + allreduce (no overlap)",
    ]
    model_rows: list[tuple[str, ...]] = [
        ("depth", "dim", "params", "emb", "FLOPs/tok", "grads " + s.grad_dtype)
    ]
    for depth in s.depths:
        shape = scaling.ModelShape(depth=depth, vocab=s.vocab)
        params = scaling.param_count(shape)
        model_rows.append((
            f"d{depth}", str(shape.dim), format_params(params.total),
            format_percent(params.embedding_share),
            " / ".join(format_count(f(shape, s.seq_len)) for f in scaling.FLOPS_MODELS.values()),
            format_bytes(scaling.grad_bytes(shape, s.grad_dtype)),
        ))
    out += ["", *_table(model_rows)]
    for setup in plan.setups:
        header: tuple[str, ...] = ("depth", "tok/s", "step", "to horizon")
        priced = setup.key != "reference" and s.price_per_hour is not None
        if priced:
            header += ("cost",)
        if setup.machines > 1:
            header += ("allreduce", "sync")
        rows = [header]
        for row in setup.rows:
            e = row.estimates
            cells: tuple[str, ...] = (
                f"d{row.depth}",
                _pair(e, "tok_s", lambda v: format_count(v)),
                _pair(e, "step_s", format_duration),
                _pair(e, "horizon_s", format_duration),
            )
            if priced:
                cells += (_pair(e, "cost", format_money),)
            if setup.machines > 1:
                cells += (format_duration(row.allreduce_s), format_percent(row.sync_share, 1))
            rows.append(cells)
        out += ["", setup.label, *_table(rows)]
    if plan.verdict:
        out += ["", "verdict (matmul-exact):", *(f"  {line}" for line in plan.verdict)]
    if not plan.setups:
        out += ["", "give --ref-tok-s TOK_S@DEPTH (a speed you measured) or --device NAME "
                "for speeds and times"]
    return "\n".join(out)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


@dataclass(frozen=True)
class RunPlan:
    """`scalemon plan --from-run`: what the run measured and what follows at other setups."""

    measured: forecast.Measured
    predictions: list[forecast.Prediction]
    steps: int | None
    tokens_per_param: float

    def to_dict(self) -> dict[str, Any]:
        return {"measured": asdict(self.measured),
                "predictions": [p.to_dict() for p in self.predictions],
                "steps": self.steps, "tokens_per_param": self.tokens_per_param}


def build_run_plan(measured: forecast.Measured, depths: tuple[int, ...], seq_len: int,
                   tokens_per_step: int, nodes: int, link_bit_s: float | None,
                   devices: tuple[str, ...], mfu: float, dtype: str, steps: int | None,
                   tokens_per_param: float, price: float | None) -> RunPlan:
    predictions = []
    for depth in depths:
        predictions.append(forecast.predict_here(
            measured, forecast.Target(depth, seq_len, tokens_per_step, nodes, link_bit_s),
            steps, tokens_per_param))
        predictions += [forecast.predict_device(measured, key, depth, seq_len, tokens_per_step,
                                                mfu, dtype, steps, tokens_per_param, price)
                        for key in devices]
    return RunPlan(measured, predictions, steps, tokens_per_param)


def render_measured(m: forecast.Measured) -> list[str]:
    counted = "counted on the module" if m.params_counted else "by the shape's formula"
    shape = m.shape
    nanochat = ", value embeddings" if shape.value_embeddings else ""
    at_least = "≥" if m.sync_lower_bound else ""
    rank_tokens = m.tokens_per_micro * m.micro_steps
    exact = scaling.flops_per_token_exact(shape, m.seq_len)
    moved = f"{format_bytes(m.sync_bytes)} a step ({m.sync_bytes / 4 / m.n_params:.1f}x the " \
        "fp32 parameters)" if m.sync_bytes else "nothing moved"
    bus = f", {format_rate(m.bus_bit_s)} achieved" if m.bus_bit_s else ""
    rows = [
        ("step", format_duration(m.step_s), f"median of {m.samples} rank-steps"),
        ("fwd+bwd", format_duration(m.compute_s),
         f"{format_flop_s(m.compute_s_per_flop('exact'))} of matmul-exact FLOPs "
         f"({format_count(exact)} a token x {format_count(rank_tokens)} tokens a rank); "
         f"{format_flop_s(m.compute_s_per_flop('6N'))} counted as 6N" +
         ("" if m.head_s is not None else "; the loss head not timed apart")),
        *([("  of which", format_duration(m.head_s), f"the loss head (softcap, cross-entropy): "
            f"{m.head_s_per_logit() * 1e9:.3g} ns a logit, {format_count(m.shape.vocab)} "
            "logits a token")] if m.head_s is not None else []),
        ("optimizer", format_duration(m.optimizer_s),
         f"{format_flop_s(m.optimizer_s_per_flop())} of optimizer FLOPs "
         f"({forecast.optimizer_model(m)}: modelled work)"),
        ("data", format_duration(m.data_s), f"{m.data_s_per_token() * 1e6:.3g} µs a token"),
        ("sync", at_least + format_duration(m.sync_s), moved + bus +
         ("; a lower bound: what overlap slows is not priced" if m.sync_lower_bound else "")),
        ("wait", format_duration(m.wait_s), "for the slowest rank"),
        ("other", format_duration(m.other_s), "the rest of the step"),
    ]
    return [
        f"measured in {m.name or 'the run'}: d{shape.depth} (dim {shape.dim}, vocab "
        f"{shape.vocab:,}{nanochat}, {format_params(m.n_params)} parameters {counted}), seq "
        f"{m.seq_len}, {m.world} rank{'s' * (m.world != 1)} on {m.nodes} node"
        f"{'s' * (m.nodes != 1)} ({m.device}), {m.micro_steps} micro-step"
        f"{'s' * (m.micro_steps != 1)}, {m.tokens_per_step:,} tokens a step",
        *(f"  {part:<10} {time:>8}  {what}" for part, time, what in rows),
    ]


def format_flop_s(seconds_per_flop: float) -> str:
    if not seconds_per_flop > 0 or not math.isfinite(seconds_per_flop):
        return "N/A FLOP/s"
    return f"{1 / seconds_per_flop / 1e9:.3g} GFLOP/s"


def render_run_plan(plan: RunPlan) -> str:
    horizon = f"{plan.steps:,} steps" if plan.steps else \
        f"{plan.tokens_per_param:g} tokens a parameter"
    out = render_measured(plan.measured)
    rows: list[tuple[str, ...]] = [("setup", "depth", "params", "FLOPs/tok", "micro",
                                    "tokens/step", "step", "6N", "tok/s", "to horizon",
                                    "cost", "basis")]
    for p in plan.predictions:
        basis = "measured" if p.measured else \
            "modelled" if all(part.basis == forecast.MODELLED for part in p.parts) else "scaled"
        rows.append((p.label, f"d{p.depth}", format_params(p.params),
                     f"{format_count(p.flops_exact)} / {format_count(p.flops_6n)}",
                     str(p.micro_steps), f"{p.tokens_per_step:,}", format_duration(p.step_s),
                     format_duration(p.step_6n_s), format_count(p.tok_s),
                     format_duration(p.horizon_s),
                     format_money(p.cost) if p.cost is not None else "-", basis))
    out += ["", f"predicted, to {horizon} (FLOPs a token: matmul-exact / 6N; step by "
            "matmul-exact FLOPs, 6N beside):", *_table(rows), "", "how each part is made:"]
    said: set[tuple[str, str, str]] = set()
    for p in plan.predictions:
        if p.measured:
            continue
        for part in p.parts:
            key = (p.setup, part.name, part.basis)
            if key not in said:
                said.add(key)
                where = "here" if p.setup == "here" else p.label
                out.append(f"  {where}: {part.name}: {part.basis}, {part.source}")
    return "\n".join(out)
