"""`scalemon plan`: the scaling table a person would otherwise build by hand.

`build_plan` is pure (numbers from `scaling`); `render_plan` turns it into text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from scalemon.core import scaling
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
