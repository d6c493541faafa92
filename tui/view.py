"""ViewData: what the screen draws, the run's Summary and the screen's own figures (MFU and
the what-if rows at --price), built off the UI thread by the feed.

Widgets only format. A view is compared by identity: every update is a new object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scalemon.state.summary import Summary
from scalemon.views.text import nodes_text, sync_model_text, verdict_text

from .whatif import Mfu, WhatIf, run_mfu, what_if


@dataclass(frozen=True, eq=False)
class ViewData:
    summary: Summary
    mfu: Mfu
    what_if_steps: int  # steps the what-if rows are for
    what_if: tuple[WhatIf, ...]
    price: float | None
    sync_model: str | None  # the ring model for the link beside the measured sync
    nodes_behind: str | None  # multi-node runs: which node's records lag here, and why
    verdict: str | None = None  # what the plumbing checklist says, with the look ahead
    verdict_short: str | None = None  # the same for a one-line header
    full: bool = True  # False: only the fast panels (header, events) need this view


def build_view(summary: Summary, price: float | None = None) -> ViewData:
    """The screen's picture of a summary (call from the feed's thread)."""
    info, eta, system = summary.info, summary.eta, summary.system
    gpus = list(system.gpus) if system is not None else []
    names = [gpu.name for gpu in gpus if any(p.rank is not None for p in gpu.processes)] or \
        [gpu.name for gpu in gpus]
    mfu = run_mfu(eta.tok_s if eta else None, info.shape, info.seq_len, info.device, names,
                  info.world or len(names))
    remaining = eta.remaining_steps if eta else None
    if remaining is None and summary.horizon:
        remaining = max(0, summary.horizon - (summary.step + 1))
    # Once the horizon is reached, the rows say what the whole run would have taken.
    steps = remaining if remaining else (summary.horizon or 0)
    return ViewData(
        summary=summary, mfu=mfu, what_if_steps=steps,
        what_if=what_if(info.shape, info.seq_len, info.tokens_per_step, steps, price),
        price=price, sync_model=sync_model_text(summary), nodes_behind=nodes_text(summary),
        verdict=verdict_text(summary, price), verdict_short=verdict_text(summary, price, True))


def light_view(full: ViewData, summary: Summary) -> ViewData:
    """`full` with a refreshed summary, for the fast panels only (no medians rebuilt)."""
    return replace(full, summary=summary, full=False)
