"""`scalemon plan`: the scaling table for depths, devices and links."""

from __future__ import annotations

import json

import click

from scalemon.cli.base import FiniteFloat, UserError, cli


@cli.command()
@click.argument("more_depths", nargs=-1, type=click.IntRange(min=1), metavar="[DEPTH]...")
@click.option("--depth", "depths", multiple=True, type=click.IntRange(min=1),
              help="Model depth (layers); list several: --depth 4 8 12 20.")
@click.option("--from-run", "from_run", metavar="RUN",
              help="Predict from what RUN measured (its time per FLOP, sync, data wait, "
                   "ranks); the options below default to the run's own.")
@click.option("--vocab", type=click.IntRange(min=2), help="Vocabulary size [default: 65536].")
@click.option("--seq-len", type=click.IntRange(min=1),
              help="Sequence length T for the attention FLOPs [default: 2048].")
@click.option("--tokens-per-step", type=click.IntRange(min=1),
              help="Tokens per optimizer step, all ranks and micro-steps [default: 65536].")
@click.option("--steps", type=click.IntRange(min=1), help="Step horizon.")
@click.option("--tokens-per-param", type=FiniteFloat(min=0, min_open=True),
              help="Horizon as tokens per parameter (Chinchilla: 20); the default.")
@click.option("--ref-tok-s", metavar="TOK_S@DEPTH",
              help="A throughput you measured, e.g. 115@4: scaled to each depth by FLOPs.")
@click.option("--nodes", type=click.IntRange(min=1),
              help="Machines in the measured setup, joined by --link [default: 1].")
@click.option("--link", help="Link between nodes: 1gbit, 2.5gbe, 10gbit, 125MB/s ... "
                             "[default: 1gbit; with --from-run, the run's].")
@click.option("--latency-ms", type=FiniteFloat(min=0), default=0.1, show_default=True,
              help="Per-hop link latency.")
@click.option("--device", "devices", multiple=True, metavar="NAME",
              help="GPU preset for a what-if setup (h100 h200 a100 mi300x rtx4090 rtx4070); "
                   "repeat for several.")
@click.option("--mfu", type=FiniteFloat(min=0, max=1, min_open=True), default=0.4,
              show_default=True, help="Assumed model FLOPs utilisation on --device.")
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True,
              help="Which peak of --device to use.")
@click.option("--grad-dtype", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="Gradient precision on the wire.")
@click.option("--price", type=FiniteFloat(min=0), help="Price per GPU-hour for --device.")
@click.option("--json", "as_json", is_flag=True, help="Print the same data as JSON.")
def plan(more_depths, depths, from_run, vocab, seq_len, tokens_per_step, steps,
         tokens_per_param, ref_tok_s, nodes, link, latency_ms, devices, mfu, dtype, grad_dtype,
         price, as_json) -> None:
    """Print params, FLOPs, speed, step time, time to horizon, cost and sync for depths.

    \b
    scalemon plan --depth 4 8 12 20 --ref-tok-s 115@4 --tokens-per-step 65536 \\
                  --steps 200000 --nodes 2 --link 1gbit --device h100 --price 2
    scalemon plan --from-run d4-demo --depth 4 12 20 --device h100 --price 2
    """
    from scalemon.core import scaling
    from scalemon.core.plan import PlanSettings, build_plan, render_plan
    from scalemon.core.units import parse_link, parse_reference

    all_depths = tuple(depths) + tuple(more_depths)
    if steps and tokens_per_param:
        raise UserError("give either --steps or --tokens-per-param, not both")
    if from_run:
        if vocab or ref_tok_s:
            raise UserError("--vocab and --ref-tok-s come from the run with --from-run")
        _from_run(from_run, all_depths, seq_len, tokens_per_step, steps, tokens_per_param,
                  nodes, link, devices, mfu, dtype, price, as_json)
        return
    vocab, seq_len = vocab or 65_536, seq_len or 2048
    tokens_per_step, nodes, link = tokens_per_step or 65_536, nodes or 1, link or "1gbit"
    if not all_depths:
        raise UserError("give at least one depth: scalemon plan --depth 4 8 12")
    try:
        ref = parse_reference(ref_tok_s) if ref_tok_s else (None, None)
        link_bit_s = parse_link(link)
        for key in devices:
            scaling.device_preset(key)
    except ValueError as error:
        raise UserError(str(error)) from None
    settings = PlanSettings(
        depths=all_depths, vocab=vocab, seq_len=seq_len, tokens_per_step=tokens_per_step,
        steps=steps, tokens_per_param=tokens_per_param or 20.0, ref_tok_s=ref[0],
        ref_depth=ref[1], nodes=nodes, link_bit_s=link_bit_s, latency_s=latency_ms / 1000,
        devices=tuple(d.lower() for d in devices), mfu=mfu, dtype=dtype,
        grad_dtype=grad_dtype, price_per_hour=price,
    )
    result = build_plan(settings)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_plan(result))


def _from_run(name, depths, seq_len, tokens_per_step, steps, tokens_per_param, nodes, link,
              devices, mfu, dtype, price, as_json) -> None:
    from scalemon.core import scaling
    from scalemon.core.plan import build_run_plan, render_run_plan
    from scalemon.core.units import parse_link
    from scalemon.io.rundir import resolve_run
    from scalemon.sources.rundir import RunDirSource
    from scalemon.views.text import (
        VERDICT_DEPTHS,
        VERDICT_DEVICE,
        checklist_block,
        verdict_text,
    )

    try:
        link_bit_s = parse_link(link) if link else None
        for key in devices:
            scaling.device_preset(key)
    except ValueError as error:
        raise UserError(str(error)) from None
    run = resolve_run(name)
    with RunDirSource(run, live=False) as source:
        summary = source.summary()
    m = summary.measured
    if m is None:
        why = summary.split_missing if summary.split is None else \
            "its depth, vocab or tokens a step are not known"
        raise UserError(f"{run.name} has no measured step to plan from ({why})")
    own = m.shape.depth
    chosen = depths or (own, *(d for d in VERDICT_DEPTHS if d > own))
    result = build_run_plan(
        m, tuple(chosen), seq_len or m.seq_len, tokens_per_step or m.tokens_per_step,
        nodes or m.nodes, link_bit_s, tuple(d.lower() for d in devices) or (VERDICT_DEVICE,),
        mfu, dtype, steps, tokens_per_param or 20.0, price)
    verdict = verdict_text(summary, price)
    listed = summary.checklist
    printed = _printed_flops(run.stdout_log)
    if as_json:
        click.echo(json.dumps(result.to_dict() | {
            "checklist": summary.to_dict()["checklist"], "verdict": verdict,
            "validated_step": listed.validated_step if listed else None,
            "script_flops_per_token": printed}, indent=2))
        return
    click.echo(render_run_plan(result))
    if printed is not None:
        counted = scaling.flops_per_token_exact(m.shape, m.seq_len)
        click.echo(f"\nthe script printed {printed:.6g} FLOPs a token for its own model; "
                   f"scalemon's matmul-exact count: {counted:.6g} ({counted / printed:.3f}x)")
    if listed is not None:
        click.echo("\n" + "\n".join(checklist_block(summary, price)))


def _printed_flops(log) -> float | None:
    """The FLOPs a token a script printed near its start (nanochat does), if it did."""
    import itertools

    from scalemon.core.logparse import printed_flops_per_token

    try:
        with open(log, encoding="utf-8", errors="replace") as lines:
            return printed_flops_per_token(list(itertools.islice(lines, 400)))
    except OSError:
        return None
