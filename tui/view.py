"""ViewData: one immutable picture of the run, built off the UI thread, drawn by the widgets.

Everything a panel shows is in here, already computed (medians, ETA, MFU,
what-if rows, the downsampled loss), so the widgets only format. A view is
compared by identity: every update is a new object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from scalemon.core import scaling
from scalemon.headless import nodes_text, sync_model_text
from scalemon.runstate import ENDED_STATES, Eta, Event, RunState, Split, Straggler

from .series import Bucket, LossSeries
from .whatif import Mfu, WhatIf, run_mfu, shape_of, what_if


@dataclass(frozen=True)
class RunInfo:
    """What the header says about the run; changes only when a rank (re)starts."""

    name: str
    depth: int | None
    n_params: int | None
    embedding_share: float | None
    vocab: int | None
    world: int | None
    hosts: tuple[str, ...]
    backend: str | None
    device: str | None
    seq_len: int
    tokens_per_step: int | None


@dataclass(frozen=True, eq=False)
class ViewData:
    now: float  # wall clock the view was built at (clocks and ages are relative to it)
    info: RunInfo
    state: str  # starting | training | stalled | finished | stopped | failed
    step: int  # last finished step of rank 0, -1 before the first
    horizon: int | None
    last_step_t: float | None  # wall time rank 0 finished `step`
    loss: float | None
    smoothed_loss: float | None
    ln_vocab: float | None
    unigram_entropy: float | None
    entropy_rate: float | None
    loss_all: tuple[Bucket, ...]  # the whole run, at most a thousand buckets
    loss_recent: tuple[Bucket, ...]  # the last steps, one bucket each
    split: Split | None
    split_missing: str | None  # why there is no split ("waiting", "needs the step probe ...")
    sync_model: str | None  # the ring model for the link beside the measured sync
    nodes_behind: str | None  # multi-node runs: which node's records lag here, and why
    sync_history: tuple[float, ...]  # exposed sync / step time of recent steps, oldest first
    straggler: Straggler | None
    regime: str
    advice: str
    eta: Eta | None
    eta_missing: str | None
    mfu: Mfu
    what_if_steps: int  # steps the what-if rows are for
    what_if: tuple[WhatIf, ...]
    price: float | None
    system: object | None  # scalemon.probes.system.SystemSnapshot (immutable)
    net_bytes_per_step: float | None
    events: tuple[Event, ...]
    event_count: int
    stderr_tail: tuple[str, ...]  # the trainer's last stderr lines once it failed
    full: bool = True  # False: only the fast panels (header, events) need this view

    @property
    def done(self) -> bool:
        return self.state in ENDED_STATES


def run_info(state: RunState) -> RunInfo:
    config, meta = state.config, state.meta
    model, train = config.get("model", {}), config.get("train", {})
    shape = shape_of(state.depth, state.vocab, model)
    counted = scaling.param_count(shape) if shape else None
    n_params = meta.get("n_params") or (counted.total if counted else None)
    hosts = list(config.get("hosts") or [])
    for info in sorted(state.ranks.values(), key=lambda i: i.rank):
        if info.host and info.host not in hosts:
            hosts.append(info.host)
    return RunInfo(
        name=state.name or config.get("name", ""), depth=state.depth, n_params=n_params,
        embedding_share=counted.embedding_share if counted else None, vocab=state.vocab,
        world=state.world, hosts=tuple(hosts),
        backend=train.get("backend") or meta.get("backend"),
        device=meta.get("device") or train.get("device"),
        seq_len=int(model.get("seq_len") or meta.get("seq_len") or scaling.DEFAULT_SEQ_LEN),
        tokens_per_step=state.tokens_per_step)


def light_view(state: RunState, full: ViewData, *, now: float,
               stderr_tail: tuple[str, ...]) -> ViewData:
    """`full` with what the fast panels show brought up to date (cheap: no medians)."""
    return replace(
        full, now=now, state=state.state(), step=state.step, horizon=state.horizon,
        last_step_t=state.step_times[-1][1] if state.step_times else None, loss=state.loss,
        events=tuple(state.events)[-50:], event_count=state.event_count,
        stderr_tail=stderr_tail, full=False)


def build_view(state: RunState, series: LossSeries, *, now: float, system=None,
               net_bytes_per_step: float | None = None, sync_history: tuple[float, ...] = (),
               stderr_tail: tuple[str, ...] = (), price: float | None = None,
               info: RunInfo | None = None) -> ViewData:
    """Everything the screen shows, from the folded state (call from the collector's thread)."""
    info = info or run_info(state)
    split, eta, straggler = state.split(), state.eta(), state.straggler()
    regime, advice = state.regime()
    shape = shape_of(state.depth, state.vocab, state.config.get("model", {}))
    gpus = list(getattr(system, "gpus", ()) or ())
    names = [gpu.name for gpu in gpus if any(p.rank is not None for p in gpu.processes)] or \
        [gpu.name for gpu in gpus]
    mfu = run_mfu(eta.tok_s if eta else None, shape, info.seq_len, info.device, names,
                  info.world or len(names))
    remaining = eta.remaining_steps if eta else None
    if remaining is None and state.horizon:
        remaining = max(0, state.horizon - (state.step + 1))
    # Once the horizon is reached, the rows say what the whole run would have taken.
    steps = remaining if remaining else (state.horizon or 0)
    return ViewData(
        now=now, info=info, state=state.state(), step=state.step, horizon=state.horizon,
        last_step_t=state.step_times[-1][1] if state.step_times else None,
        loss=state.loss, smoothed_loss=state.smoothed_loss(), ln_vocab=state.ln_vocab,
        unigram_entropy=state.meta.get("unigram_entropy"),
        entropy_rate=state.meta.get("entropy_rate"),
        loss_all=series.all_buckets(), loss_recent=series.recent_buckets(),
        split=split, split_missing=None if split else state.split_missing(),
        sync_model=sync_model_text(state), nodes_behind=nodes_text(state, now),
        sync_history=sync_history, straggler=straggler, regime=regime,
        advice=advice, eta=eta, eta_missing=None if eta else state.eta_missing(), mfu=mfu,
        what_if_steps=steps,
        what_if=what_if(shape, info.seq_len, state.tokens_per_step, steps, price), price=price,
        system=system, net_bytes_per_step=net_bytes_per_step, events=tuple(state.events)[-50:],
        event_count=state.event_count, stderr_tail=stderr_tail)
