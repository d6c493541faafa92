"""The headless view: one readable line every few seconds, for SSH sessions and logs.

`run --no-tui`, `attach --no-tui` and `replay` print the same lines from the
same RunState the screen shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from scalemon.core.units import format_bytes, format_count, format_duration, format_rate
from scalemon.runstate import ENDED_STATES, Event, RunState

SPLIT_LABELS = (("fwd+bwd", ("forward", "backward")), ("sync", ("sync",)),
                ("opt", ("optimizer",)), ("data", ("data",)), ("other", ("other",)))


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def split_text(state: RunState) -> str:
    split = state.split()
    if split is None or not split.total > 0:
        return f"split: {state.split_missing() or 'waiting'}"
    parts = []
    for label, names in SPLIT_LABELS:
        share = sum(split.share(n) for n in names)
        parts.append(f"{label} {share:.0%}")
    return " ".join(parts)


def loss_text(state: RunState) -> str:
    loss = state.loss
    if loss is None:
        return "loss -"
    text = f"loss {loss:.3f}"
    if state.ln_vocab and math.isfinite(loss):
        below = state.ln_vocab - loss
        side = "below" if below > -0.005 else "above"  # -0.001 prints as 0.00 below
        text += f" ({abs(below):.2f} {side} ln V)"
    return text


def system_text(snapshot, net_bytes_per_step: float | None = None) -> str:
    """CPU of the run's ranks, memory, GPUs and the run interface, in one short segment."""
    host, parts = snapshot.host, []
    ranks = [p for p in host.processes if p.rank is not None]
    if ranks:
        parts.append("cpu " + " ".join(f"r{p.rank} {p.cpu_percent:.0f}%" for p in ranks))
    else:
        parts.append(f"cpu {host.cpu_percent_total:.0f}%")
    parts.append(f"mem {format_bytes(host.mem_used_bytes)}/{format_bytes(host.mem_total_bytes)}")
    for gpu in snapshot.gpus:
        parts.append(f"gpu{gpu.index} {gpu.utilization_percent:.0f}% "
                     f"{format_bytes(gpu.memory_used_bytes)} {gpu.power_w:.0f} W")
    run = snapshot.net.run
    if run is not None:
        rate = (run.rx_bytes_per_s + run.tx_bytes_per_s) * 8
        text = f"{run.name} {format_rate(rate)}"
        if net_bytes_per_step is not None:
            text += f" {format_bytes(net_bytes_per_step)}/step sent"
        parts.append(text)
    return " ".join(parts)


def status_line(state: RunState, now: float | None = None, system: str | None = None) -> str:
    now = time.time() if now is None else now
    horizon = f"/{state.horizon:,}" if state.horizon else ""
    step = max(state.step + 1, 0)
    parts = [f"{_clock(now)} {state.state():<8} step {step:,}{horizon}", loss_text(state)]
    eta = state.eta()
    if eta is not None:
        parts.append(f"{format_count(eta.tok_s)} tok/s")
    parts.append(split_text(state))
    model = state.sync_model()
    if model is not None:
        parts.append(f"sync {format_duration(model.exposed_s)} (model "
                     f"{format_duration(model.predicted_s)} at {format_rate(model.link_bit_s)})")
    advice = state.sync_advice()
    if advice is not None:
        parts.append(f"sync-bound: use {advice.micro_steps} micro-steps per allreduce "
                     f"({format_duration(advice.step_s)}/step, sync "
                     f"{advice.sync_share:.0%})")
    straggler = state.straggler()
    if straggler is not None:
        parts.append(f"slowest r{straggler.rank} (+{format_duration(straggler.wait_s)})")
    nodes = nodes_text(state, now)
    if nodes:
        parts.append(nodes)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta.mid_s)}" if eta.remaining_steps else "done")
    elif state.horizon is None:
        parts.append(f"ETA unknown ({state.eta_missing()})")
    if system:
        parts.append(system)
    return " | ".join(parts)


def nodes_text(state: RunState, now: float | None = None, detail: bool = False) -> str | None:
    """Across machines: which node's records lag here and why, or that node 0 is out of reach
    (with `detail`, the relay's own reason)."""
    parts = []
    for lag in state.nodes_behind(now):
        where = f"node {lag.node}" + (f" ({', '.join(lag.hosts)})" if lag.hosts else "")
        text = f"{where} behind by {lag.steps_behind} steps" if lag.reported else \
            f"{where}: no records yet"
        if lag.relay_down_s is not None:
            text += f" (relay down {format_duration(lag.relay_down_s)})"
        elif lag.relay_up:
            text += " (relay slow)"
        parts.append(text)
    relay = state.relay or {}
    if relay.get("role") == "server" and relay.get("error"):
        parts.append(f"relay not listening on {relay.get('listen')}: {relay['error']}")
    down = state.relay_down_s(now)
    if down is not None:
        text = f"relay to node 0 down {format_duration(down)} (records kept here)"
        error = relay.get("error")
        parts.append(f"{text}: {error}" if detail and error else text)
    return "; ".join(parts) or None


def sync_model_text(state: RunState, detail: bool = True) -> str | None:
    """The ring model for the link, to show beside the measured sync; with `detail`, how the
    measurement compares and what the network probe saw (a short panel may leave them out)."""
    model = state.sync_model()
    if model is None:
        return None
    text = (f"model: {format_duration(model.predicted_s)} to all-reduce "
            f"{format_bytes(model.bytes)} in a ring of {model.ring} over "
            f"{format_rate(model.link_bit_s)} ({model.link_source})")
    if detail:
        text += f"; exposed sync is {model.exposed_s / model.predicted_s:.2f}x that"
        if model.net_bytes is not None:
            text += f"; the network probe saw {format_bytes(model.net_bytes)}/step sent"
    return text


def event_line(event: Event) -> str:
    mark = {"info": "-", "warn": "!", "error": "!!"}.get(event.level, "-")
    return f"{_clock(event.t)} {mark} {event.text}"


def report(state: RunState) -> str:
    """A multi-line summary of a whole run (replay's default output)."""
    s = state.summary()
    lines = [f"run {s['name'] or '?'}: {s['state']}, step {max(s['step'] + 1, 0):,}"
             + (f" of {s['horizon']:,}" if s["horizon"] else "")
             + (f", world {s['world']}" if s["world"] else "")
             + (f", depth {s['depth']}, vocab {s['vocab']:,}" if s["depth"] and s["vocab"]
                else "")]
    lines.append(loss_text(state) + (f", unigram entropy {s['unigram_entropy']:.3f}"
                                     if s["unigram_entropy"] else ""))
    split = state.split()
    if split is not None:
        lines.append(f"median step {format_duration(split.total)}: {split_text(state)}")
        if split.comm > 0:
            lines.append(f"sync: exposed {format_duration(split.sync)} of "
                         f"{format_duration(split.comm)} comm ({format_duration(split.overlap)} "
                         f"overlapped), {format_bytes(split.bytes)}/step at "
                         f"{format_rate(split.bus_bit_s)}")
        model = sync_model_text(state)
        if model:
            lines.append(model)
    straggler = state.straggler()
    if straggler is not None:
        lines.append(f"slowest rank: {straggler.rank}, peers wait "
                     f"{format_duration(straggler.wait_s)} a step")
    regime, advice = state.regime()
    lines.append(f"regime: {regime}: {advice}")
    nodes = nodes_text(state, detail=True)
    if nodes:
        lines.append(nodes)
    eta = state.eta()
    if eta is not None:
        when = (f"ETA {format_duration(eta.mid_s)} ({format_duration(eta.low_s)} to "
                f"{format_duration(eta.high_s)})" if eta.remaining_steps else "horizon reached")
        lines.append(f"{format_count(eta.tok_s)} tok/s, {format_duration(eta.step_s)}/step; "
                     + when)
    recorded = records_text(state)
    if recorded:
        lines.append(recorded)
    lines += [event_line(e) for e in list(state.events)[-10:]]
    return "\n".join(lines)


def records_text(state: RunState) -> str | None:
    """'records: ranks 0-1 steps 0-199, none missing': which step records the run dir holds."""
    if not state.ranks or state.source == "log":
        return None
    groups: dict[str, list[int]] = {}
    for rank, info in sorted(state.ranks.items()):
        spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in info.steps) or "none"
        missing = info.missing()
        text = f"steps {spans}" + (f" ({missing:,} missing)" if missing else "")
        groups.setdefault(text, []).append(rank)
    parts = []
    for text, ranks in groups.items():
        who = f"ranks {ranks[0]}-{ranks[-1]}" if len(ranks) > 1 and \
            ranks[-1] - ranks[0] == len(ranks) - 1 else \
            "rank" + ("s " if len(ranks) > 1 else " ") + ", ".join(map(str, ranks))
        parts.append(f"{who} {text}")
    total = sum(info.missing() for info in state.ranks.values())
    return "records: " + "; ".join(parts) + ("" if total else ", none missing")


def new_events(state: RunState, seen: int) -> list[Event]:
    """Events logged since `seen` of them were handled (the log keeps only the last 200)."""
    fresh = min(state.event_count - seen, len(state.events))
    return list(state.events)[len(state.events) - fresh:] if fresh > 0 else []


def follow(collector, out: Callable[[str], None], interval: float = 5.0,
           stop: Callable[[], bool] = lambda: False) -> str:
    """Print status lines until the run ends or `stop()` says so; returns the final state.

    A line every `interval` seconds while steps advance, at least every
    6 intervals while they do not, and one at the end; events as they happen.
    """
    seen_events = 0
    last_line, last_step = -math.inf, None
    while True:
        collector.poll(0.25)
        state = collector.state  # a long history's full state takes over once it is read
        for event in new_events(state, seen_events):
            out(event_line(event))
        seen_events = state.event_count
        current = state.state()
        done = current in ENDED_STATES
        since = time.monotonic() - last_line
        if done or (since >= interval and state.step != last_step) or since >= 6 * interval:
            system = None
            if collector.last_system is not None:
                system = system_text(collector.last_system, collector.net_bytes_per_step())
            out(status_line(state, system=system))
            last_line, last_step = time.monotonic(), state.step
        if done:
            collector.catch_up()
            recorded = records_text(collector.state)
            if recorded:
                out(recorded)
        if done or stop():
            return current
