"""`scalemon plan`: the scaling table for depths, devices and links."""

from __future__ import annotations

import json

import click

from scalemon.cli.base import FiniteFloat, UserError, cli


@cli.command()
@click.argument("more_depths", nargs=-1, type=click.IntRange(min=1), metavar="[DEPTH]...")
@click.option("--depth", "depths", multiple=True, type=click.IntRange(min=1),
              help="Model depth (layers); list several: --depth 4 8 12 20.")
@click.option("--vocab", type=click.IntRange(min=2), default=65_536, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Sequence length T for the attention FLOPs.")
@click.option("--tokens-per-step", type=click.IntRange(min=1), default=65_536,
              show_default=True, help="Tokens per optimizer step (all ranks, all micro-steps).")
@click.option("--steps", type=click.IntRange(min=1), help="Step horizon.")
@click.option("--tokens-per-param", type=FiniteFloat(min=0, min_open=True),
              help="Horizon as tokens per parameter (Chinchilla: 20); the default.")
@click.option("--ref-tok-s", metavar="TOK_S@DEPTH",
              help="A throughput you measured, e.g. 115@4: scaled to each depth by FLOPs.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines in the measured setup, joined by --link.")
@click.option("--link", default="1gbit", show_default=True,
              help="Link between nodes: 1gbit, 2.5gbe, 10gbit, 125MB/s ...")
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
def plan(more_depths, depths, vocab, seq_len, tokens_per_step, steps, tokens_per_param,
         ref_tok_s, nodes, link, latency_ms, devices, mfu, dtype, grad_dtype, price,
         as_json) -> None:
    """Print params, FLOPs, speed, step time, time to horizon, cost and sync for depths.

    \b
    scalemon plan --depth 4 8 12 20 --ref-tok-s 115@4 --tokens-per-step 65536 \\
                  --steps 200000 --nodes 2 --link 1gbit --device h100 --price 2
    """
    from scalemon.core import scaling
    from scalemon.core.plan import PlanSettings, build_plan, render_plan
    from scalemon.core.units import parse_link, parse_reference

    all_depths = tuple(depths) + tuple(more_depths)
    if not all_depths:
        raise UserError("give at least one depth: scalemon plan --depth 4 8 12")
    if steps and tokens_per_param:
        raise UserError("give either --steps or --tokens-per-param, not both")
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
