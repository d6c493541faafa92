"""A Summary's parts in words, shared by the headless lines and the screen, so the same
figure reads the same in both."""

from __future__ import annotations

import math
import time

from scalemon.core.config import RelayServerStatus
from scalemon.core.forecast import Prediction, Target, predict_device, predict_here
from scalemon.core.snapshots import SystemSnapshot
from scalemon.core.units import format_bytes, format_duration, format_money, format_rate
from scalemon.state.checklist import FAIL, PASS, PENDING, UNKNOWN, Check
from scalemon.state.events import Event, Level
from scalemon.state.summary import Summary

SPLIT_LABELS = (("fwd+bwd", ("forward", "backward")), ("sync", ("sync",)), ("wait", ("wait",)),
                ("opt", ("optimizer",)), ("data", ("data",)), ("other", ("other",)))
LOWER_BOUND_HINT = ("what overlap costs needs no_sync samples: accumulate, or calibrate "
                    "(README: The step split)")
UNRESOLVED_HINT = "so far, too few to price the overlap"
EVENT_MARKS = {Level.INFO: "-", Level.WARN: "!", Level.ERROR: "!!"}
CHECK_MARKS = {PASS: "✓", FAIL: "✗", PENDING: "·", UNKNOWN: "-"}
# What the verdict looks ahead to: the next model the seed analysis takes to a big GPU.
VERDICT_DEPTHS = (12, 20)
VERDICT_DEVICE = "h100"


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def split_text(summary: Summary) -> str:
    """'fwd+bwd 72% sync 6% wait 1% opt 20% data 0% other 1%' (wait once ranks can wait)."""
    split = summary.split
    if split is None or not split.total > 0:
        return f"split: {summary.split_missing or 'waiting'}"
    parts = []
    for label, names in SPLIT_LABELS:
        if label == "wait" and (summary.world or 1) < 2:
            continue
        share = sum(split.share(n) for n in names)
        at_least = "≥" if label == "sync" and split.sync_lower_bound else ""
        parts.append(f"{label} {at_least}{share:.0%}")
    return " ".join(parts)


def sync_text(summary: Summary, brief: bool = False) -> str | None:
    """'sync 259 ms: 125 ms after backward + 134 ms slowing the overlapped backward; rank 1
    slowest, peers wait 40 ms' (`brief`: the first part only, for a status line). A script's
    own collectives add the time the host blocked on them (a lower bound: what they slow the
    compute they overlap is not measured)."""
    split = summary.split
    if split is None or (split.comm <= 0 and not split.collectives):
        return None
    own = None
    if split.collectives:
        own = (f"{format_duration(split.sync_blocked)} blocked in {split.collectives} "
               f"collective{'s' * (split.collectives != 1)} a step of the script's own "
               f"({format_bytes(split.collective_bytes)})")
    tail, slowed = format_duration(split.sync_tail), format_duration(split.sync_overlap)
    if split.comm <= 0:  # no DDP: only the script's collectives (nanochat's optimizer)
        text = f"sync at least {format_duration(split.sync)}"
        if not brief:
            text += f": {own}; what they slow the overlapped compute is not measured"
    elif split.sync_lower_bound:
        text = f"sync at least {format_duration(split.sync)}"
        if not brief:
            samples = split.sync_samples
            why = f"{samples} no_sync sample{'s' * (samples != 1)} {UNRESOLVED_HINT}" \
                if samples else LOWER_BOUND_HINT
            text += f" (after backward; {why})" if own is None else \
                f" ({tail} after backward, {own}; {why})"
    elif brief:
        text = f"sync {format_duration(split.sync)}: {tail} after backward + {slowed} slowing it"
    else:
        text = (f"sync {format_duration(split.sync)}: {tail} after backward + {slowed} slowing "
                "the overlapped backward" + (f" + {own}" if own else ""))
    lag = summary.straggler
    if not brief and lag is not None and math.isfinite(lag.wait_s):
        text += f"; rank {lag.rank} slowest, peers wait {format_duration(lag.wait_s)}"
    return text


def plumbing_text(summary: Summary) -> str | None:
    """'gloo, 2 ranks · 34 collectives a step moving 2.0x the parameters' bytes: gradients
    synced each step', or the warning that ranks do not communicate at all."""
    plumbing = summary.plumbing
    if plumbing is None:
        return None
    ranks = f"{plumbing.world} rank{'s' * (plumbing.world != 1)}"
    if plumbing.isolated:
        return f"{ranks}, no process group: the ranks do not communicate (each trains its " \
               "own copy)"
    head = f"{plumbing.backend}, {ranks}" if plumbing.backend else ranks
    if plumbing.world < 2:
        return head
    parts = [head, f"{plumbing.collectives} collective{'s' * (plumbing.collectives != 1)} a step"]
    share = plumbing.synced_share
    if share is not None:
        verdict = "gradients synced each step" if share >= 0.9 else \
            "less than the gradients: not all of them synced each step"
        parts[-1] += f" moving {share:.1f}x the parameters' bytes: {verdict}"
    elif plumbing.bytes_per_step:
        parts[-1] += f" moving {format_bytes(plumbing.bytes_per_step)}"
    if plumbing.ddp is False:
        parts.append("no DDP")
    return " · ".join(parts)


def printed_text(summary: Summary) -> str | None:
    """The script's own figures, as it printed them: 'step 13/16 · loss 8.3035 · dt 1.02 s ·
    tok/s 1,005 · mfu 0.00 · eta 18 s'."""
    line = summary.printed
    if line is None:
        return None
    step = f"step {line.step}" + (f"/{line.horizon}" if line.horizon else "")
    parts = [step]
    if line.loss is not None:
        parts.append(f"loss {line.loss:.4f}")
    parts.append(f"dt {format_duration(line.dt)}")
    if line.tok_s is not None:
        parts.append(f"tok/s {line.tok_s:,.0f}")
    if line.mfu is not None:
        parts.append(f"mfu {line.mfu:.2f}")
    if line.eta_s is not None:
        parts.append(f"eta {format_duration(line.eta_s)}")
    evaluation = summary.printed_eval
    if evaluation is not None:
        parts.append(evaluation.text())
    return " · ".join(parts)


def loss_text(summary: Summary) -> str:
    loss = summary.loss
    if loss is None:
        return "loss -"
    text = f"loss {loss:.3f}"
    if summary.ln_vocab and math.isfinite(loss):
        below = summary.ln_vocab - loss
        side = "below" if below > -0.005 else "above"  # -0.001 prints as 0.00 below
        text += f" ({abs(below):.2f} {side} ln V)"
    return text


def system_text(snapshot: SystemSnapshot, net_bytes_per_step: float | None = None) -> str:
    """CPU of the run's ranks, memory, GPUs and the run interface, in one short segment."""
    host, parts = snapshot.host, []
    # A rank's helpers (torch.compile's workers, DataLoader workers) inherit its RANK: summed.
    ranks: dict[int, float] = {}
    for p in host.processes:
        if p.rank is not None:
            before = ranks.get(p.rank)
            ranks[p.rank] = p.cpu_percent if before is None or math.isnan(before) else \
                before + (0.0 if math.isnan(p.cpu_percent) else p.cpu_percent)
    if ranks:
        parts.append("cpu " + " ".join(f"r{rank} {cpu:.0f}%" for rank, cpu in ranks.items()))
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


def nodes_text(summary: Summary, detail: bool = False) -> str | None:
    """Across machines: which node's records lag here and why, or that node 0 is out of reach
    (with `detail`, the relay's own reason)."""
    parts = []
    for lag in summary.nodes_behind:
        where = f"node {lag.node}" + (f" ({', '.join(lag.hosts)})" if lag.hosts else "")
        text = f"{where} behind by {lag.steps_behind} steps" if lag.reported else \
            f"{where}: no records yet"
        if lag.relay_down_s is not None:
            text += f" (relay down {format_duration(lag.relay_down_s)})"
        elif lag.relay_up:
            text += " (relay slow)"
        parts.append(text)
    relay = summary.relay
    if isinstance(relay, RelayServerStatus) and relay.error:
        parts.append(f"relay not listening on {relay.listen}: {relay.error}")
    if summary.relay_down_s is not None:
        text = f"relay to node 0 down {format_duration(summary.relay_down_s)} (records kept here)"
        error = relay.error if relay is not None else None
        parts.append(f"{text}: {error}" if detail and error else text)
    return "; ".join(parts) or None


def sync_model_text(summary: Summary, detail: bool = True) -> str | None:
    """The ring model for the link, to show beside the measured sync; with `detail`, how the
    measurement compares and what the network probe saw (a short panel may leave them out)."""
    model = summary.sync_model
    if model is None:
        return None
    text = (f"model: {format_duration(model.predicted_s)} to all-reduce "
            f"{format_bytes(model.bytes)} in a ring of {model.ring} over "
            f"{format_rate(model.link_bit_s)} ({model.link_source})")
    if detail:
        text += f"; sync is {model.sync_s / model.predicted_s:.2f}x that"
        if model.net_bytes is not None:
            text += f"; the network probe saw {format_bytes(model.net_bytes)}/step sent"
    return text


def event_line(event: Event) -> str:
    return f"{clock(event.t)} {EVENT_MARKS.get(event.level, '-')} {event.text}"


def records_text(summary: Summary) -> str | None:
    """'records: ranks 0-1 steps 0-199, none missing': which step records the run dir holds."""
    if not summary.ranks or summary.source == "log":
        return None
    groups: dict[str, list[int]] = {}
    for info in summary.ranks:
        spans = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in info.steps) or "none"
        missing = info.missing
        text = f"steps {spans}" + (f" ({missing:,} missing)" if missing else "")
        groups.setdefault(text, []).append(info.rank)
    parts = []
    for text, ranks in groups.items():
        who = f"ranks {ranks[0]}-{ranks[-1]}" if len(ranks) > 1 and \
            ranks[-1] - ranks[0] == len(ranks) - 1 else \
            "rank" + ("s " if len(ranks) > 1 else " ") + ", ".join(map(str, ranks))
        parts.append(f"{who} {text}")
    total = sum(info.missing for info in summary.ranks)
    return "records: " + "; ".join(parts) + ("" if total else ", none missing")


def check_line(check: Check) -> str:
    """'✓ a checkpoint written        at step 9 (…/step-00000009.pt)'"""
    return f"{CHECK_MARKS[check.state]} {check.title:<27} {check.detail}"


def checklist_block(summary: Summary, price: float | None = None) -> list[str]:
    """'plumbing checklist:', a line a check, then the verdict (replay, plan --from-run)."""
    if summary.checklist is None:
        return []
    return ["plumbing checklist:", *(f"  {check_line(c)}" for c in summary.checklist.checks),
            verdict_text(summary, price) or ""]


def checklist_strip(summary: Summary) -> str | None:
    """'plumbing ✓group ✓synced ✓ranks ✓data ✓distinct ·checkpoint ·resume ·unigram'"""
    if summary.checklist is None:
        return None
    return "plumbing " + " ".join(f"{CHECK_MARKS[c.state]}{c.label}"
                                  for c in summary.checklist.checks)


def verdict_predictions(summary: Summary, price: float | None = None
                        ) -> tuple[Prediction, Prediction] | None:
    """The next depth up from the run's, here (at its batch) and on one big GPU, to 20
    tokens a parameter."""
    measured = summary.measured
    if measured is None:
        return None
    depth = next((d for d in VERDICT_DEPTHS if d > measured.shape.depth), None)
    if depth is None:
        return None
    tokens, seq = measured.tokens_per_step, measured.seq_len
    here = predict_here(measured, Target(depth, seq, tokens, measured.nodes))
    return here, predict_device(measured, VERDICT_DEVICE, depth, seq, tokens, price=price)


def verdict_text(summary: Summary, price: float | None = None, compact: bool = False
                 ) -> str | None:
    """'plumbing validated at step 1,020: this run has done its job. d12 here: 26 years; on
    one H100 SXM at 40% MFU: 9.6 h ($19)', or what is still to prove."""
    listed = summary.checklist
    if listed is None:
        return None
    step = listed.validated_step
    if step is None:
        passed = len(listed.of(PASS))
        knowable = len(listed.checks) - len(listed.of(UNKNOWN))
        text = f"plumbing: {passed} of {knowable} proved"
        if listed.of(FAIL):
            text += "; failing: " + ", ".join(c.label for c in listed.of(FAIL))
        if listed.of(PENDING):
            text += "; to prove: " + ", ".join(c.label for c in listed.of(PENDING))
        return text
    ahead = verdict_predictions(summary, price)
    if compact:  # for a one-line header
        text = f"plumbing validated at step {step:,}"
        if ahead is not None:
            here, gpu = ahead
            text += (f" · d{here.depth} here {format_duration(here.horizon_s)} · "
                     f"{gpu.label.removeprefix('one ')} {format_duration(gpu.horizon_s)}")
    else:
        text = f"plumbing validated at step {step:,}: this run has done its job."
        if ahead is not None:
            here, gpu = ahead
            text += (f" d{here.depth} here: {format_duration(here.horizon_s)}; on {gpu.label}:"
                     f" {format_duration(gpu.horizon_s)}")
    if ahead is not None and ahead[1].cost is not None:
        text += f" ({format_money(ahead[1].cost)})"
    return text
