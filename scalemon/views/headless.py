"""The headless view: one readable line every few seconds, for SSH sessions and logs.

`run --no-tui`, `attach --no-tui` and `replay` print these lines from the same Summary the
screen shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from scalemon.core.config import RunPhase
from scalemon.core.units import format_bytes, format_count, format_duration, format_rate
from scalemon.sources.base import Source
from scalemon.state.checklist import PASS
from scalemon.state.summary import Summary
from scalemon.views.text import (
    checklist_block,
    clock,
    event_line,
    loss_text,
    nodes_text,
    plumbing_text,
    printed_text,
    records_text,
    split_text,
    sync_model_text,
    sync_text,
    system_text,
)


def status_line(summary: Summary) -> str:
    horizon = f"/{summary.horizon:,}" if summary.horizon else ""
    step = max(summary.step + 1, 0)
    parts = [f"{clock(summary.now)} {summary.phase:<8} step {step:,}{horizon}",
             loss_text(summary)]
    eta = summary.eta
    if eta is not None:
        parts.append(f"{format_count(eta.tok_s)} tok/s")
    parts.append(split_text(summary))
    sync = sync_text(summary, brief=True)
    model = summary.sync_model
    if sync and model is not None:
        sync += (f" (model {format_duration(model.predicted_s)} at "
                 f"{format_rate(model.link_bit_s)})")
    if sync:
        parts.append(sync)
    advice = summary.sync_advice
    if advice is not None:
        parts.append(f"sync-bound: use {advice.micro_steps} micro-steps per allreduce "
                     f"({format_duration(advice.step_s)}/step, sync "
                     f"{advice.sync_share:.0%})")
    straggler = summary.straggler
    if straggler is not None:
        parts.append(f"slowest r{straggler.rank} (+{format_duration(straggler.wait_s)})")
    nodes = nodes_text(summary)
    if nodes:
        parts.append(nodes)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta.mid_s)}" if eta.remaining_steps else "done")
    elif summary.horizon is None:
        parts.append(f"ETA unknown ({summary.eta_missing})")
    printed = printed_text(summary)
    if printed:
        parts.append(f"script: {printed}")
    if summary.plumbing is not None and summary.plumbing.isolated:
        parts.append(plumbing_text(summary) or "")
    listed = summary.checklist
    if listed is not None:
        proved = listed.validated_step
        parts.append(f"plumbing validated at step {proved:,}" if proved is not None else
                     f"plumbing {len(listed.of(PASS))}/{len(listed.checks)}")
    if summary.system is not None:
        parts.append(system_text(summary.system, summary.net_bytes_per_step))
    return " | ".join(parts)


def report(summary: Summary, price: float | None = None) -> str:
    """A multi-line summary of a whole run (replay's default output); `price` per GPU-hour
    prices the verdict's GPU."""
    s = summary
    lines = [f"run {s.name or '?'}: {s.phase}, step {max(s.step + 1, 0):,}"
             + (f" of {s.horizon:,}" if s.horizon else "")
             + (f", world {s.world}" if s.world else "")
             + (f", depth {s.depth}, vocab {s.vocab:,}" if s.depth and s.vocab else "")]
    lines.append(loss_text(s) + (f", unigram entropy {s.unigram_entropy:.3f}"
                                 if s.unigram_entropy else ""))
    split = s.split
    sync = sync_text(s)  # names the slowest rank too, when there is a sync to say
    if split is not None:
        lines.append(f"median step {format_duration(split.total)}: {split_text(s)}")
        if sync:
            lines.append(sync)
        if split.comm > 0:
            lines.append(f"comm {format_duration(split.comm)} a step "
                         f"({format_duration(split.overlap)} hidden behind backward), "
                         f"{format_bytes(split.bytes)}/step at {format_rate(split.bus_bit_s)}")
        model = sync_model_text(s)
        if model:
            lines.append(model)
    if s.straggler is not None and sync is None:
        lines.append(f"slowest rank: {s.straggler.rank}, peers wait "
                     f"{format_duration(s.straggler.wait_s)} a step")
    plumbing = plumbing_text(s)
    if plumbing:
        lines.append(f"plumbing: {plumbing}")
    if s.unknown:
        lines.append(f"not found in the script: {s.unknown}")
    printed = printed_text(s)
    if printed:
        lines.append(f"the script printed: {printed}")
    lines.append(f"regime: {s.regime}: {s.advice}")
    nodes = nodes_text(s, detail=True)
    if nodes:
        lines.append(nodes)
    eta = s.eta
    if eta is not None:
        when = (f"ETA {format_duration(eta.mid_s)} ({format_duration(eta.low_s)} to "
                f"{format_duration(eta.high_s)})" if eta.remaining_steps else "horizon reached")
        lines.append(f"{format_count(eta.tok_s)} tok/s, {format_duration(eta.step_s)}/step; "
                     + when)
    lines += checklist_block(s, price)
    recorded = records_text(s)
    if recorded:
        lines.append(recorded)
    lines += [event_line(e) for e in s.events[-10:]]
    return "\n".join(lines)


RELAYED_END_GRACE_S = 5.0  # how long the last line waits for other nodes' end records


def _last_records(source: Source) -> Summary:
    """The run has ended: fold all it left behind. Other nodes' last records come through
    the relay a little after node 0's trainer exits; wait a few seconds for their ends."""
    deadline = time.monotonic() + RELAYED_END_GRACE_S
    while True:
        source.catch_up()
        summary = source.summary()
        waiting = [r for r in summary.ranks if r.steps and not r.ended]
        if summary.relay is None or not waiting or time.monotonic() > deadline:
            return summary
        source.poll(0.25)


def follow(source: Source, out: Callable[[str], None], interval: float = 5.0,
           stop: Callable[[], bool] = lambda: False) -> RunPhase:
    """Print status lines until the run ends or `stop()` says so; returns the final phase.

    A line every `interval` seconds while steps advance, at least every
    6 intervals while they do not, and one at the end; events as they happen.
    """
    seen_events = 0
    last_line, last_step = -math.inf, None
    summary = source.summary()
    while True:
        source.poll(0.25)
        summary = source.refresh(summary)  # the events and the step: no medians
        for event in summary.events_since(seen_events):
            out(event_line(event))
        seen_events = summary.event_count
        since = time.monotonic() - last_line
        if summary.done or (since >= interval and summary.step != last_step) or \
                since >= 6 * interval:
            summary = _last_records(source) if summary.done else source.summary()
            for event in summary.events_since(seen_events):  # what catching up brought
                out(event_line(event))
            seen_events = summary.event_count
            out(status_line(summary))
            last_line, last_step = time.monotonic(), summary.step
        if summary.done:
            recorded = records_text(summary)
            if recorded:
                out(recorded)
        if summary.done or stop():
            return summary.phase
