"""Summary: one frozen picture of a run, built once per tick, that every view reads.

`summarize(state, now)` computes everything a view shows from the fold (each analysis once:
the split feeds the regime, the advice and the sync model), so the headless lines, the screen
and `--json` agree on every number. `Summary.to_dict` is the JSON export (`replay --json`).
`refresh` brings a summary's fast parts (step, phase, events) up to date without the medians,
for views that redraw the header more often than the panels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from scalemon.core import scaling
from scalemon.core.activity import Activity
from scalemon.core.config import ModelConfig, RelayStatus, RunPhase, RunStatus
from scalemon.core.forecast import Measured
from scalemon.core.logparse import EvalLine, StepLine
from scalemon.core.snapshots import SystemSnapshot
from scalemon.state import analysis
from scalemon.state.analysis import (
    Eta,
    NodeLag,
    Plumbing,
    Split,
    Straggler,
    SyncAdvice,
    SyncModel,
)
from scalemon.state.checklist import Checklist, checklist
from scalemon.state.events import Event
from scalemon.state.fold import RunState
from scalemon.state.measure import measured
from scalemon.state.series import Bucket


@dataclass(frozen=True)
class RunInfo:
    """What the header says about the run; changes only when a rank (re)starts."""

    name: str
    depth: int | None
    shape: scaling.ModelShape | None  # the nanochat shape, when depth and vocab are known
    n_params: int | None
    embedding_share: float | None
    vocab: int | None
    world: int | None
    hosts: tuple[str, ...]
    backend: str | None
    device: str | None
    seq_len: int
    tokens_per_step: int | None


@dataclass(frozen=True)
class RankSummary:
    """A rank as the fold knows it (the fields of state.ranks.RankInfo, frozen)."""

    rank: int
    pid: int | None
    host: str | None
    start_step: int
    last_step: int
    last_t: float | None
    ended: str | None
    message: str | None
    drops: int
    lost: int
    stale: bool
    node: int
    started: float | None
    gone: bool
    frozen: bool
    losing: bool
    activity: Activity | None
    stuck: bool
    steps: tuple[tuple[int, int], ...]  # [first, last] ranges of steps recorded

    @property
    def missing(self) -> int:
        """Steps inside the recorded range with no record (lost or never written)."""
        return sum(b[0] - a[1] - 1 for a, b in zip(self.steps, self.steps[1:], strict=False))


@dataclass(frozen=True)
class Summary:
    now: float  # wall clock it was built at (clocks and ages are relative to it)
    name: str
    source: str  # "probe" (step records) or "log" (parsed log lines)
    phase: RunPhase
    step: int  # last finished step of rank 0, -1 before the first
    first_step: int | None  # first step in the loss history
    steps_seen: int  # steps in the loss history
    horizon: int | None
    last_step_t: float | None  # wall time rank 0 finished `step`
    world: int | None
    depth: int | None
    vocab: int | None
    ln_vocab: float | None
    unigram_entropy: float | None
    entropy_rate: float | None
    loss: float | None
    smoothed_loss: float | None
    split: Split | None
    split_missing: str | None  # why there is no split ("waiting", "needs the step probe ...")
    straggler: Straggler | None
    eta: Eta | None
    eta_missing: str | None
    regime: str
    advice: str
    micro_steps: int
    sync_model: SyncModel | None
    sync_advice: SyncAdvice | None
    nodes_behind: tuple[NodeLag, ...]
    relay: RelayStatus | None
    relay_down_s: float | None  # on the other nodes: how long node 0 has been out of reach
    ranks: tuple[RankSummary, ...]
    events: tuple[Event, ...]
    event_count: int
    status: RunStatus | None
    records: int
    info: RunInfo
    loss_all: tuple[Bucket, ...]  # the whole run, at most a thousand buckets
    loss_recent: tuple[Bucket, ...]  # the last steps, one bucket each
    sync_history: tuple[float, ...]  # exposed sync / step time of recent steps, oldest first
    system: SystemSnapshot | None
    net_bytes_per_step: float | None
    stderr_tail: tuple[str, ...]  # the trainer's last stderr lines once it failed
    plumbing: Plumbing | None = None
    printed: StepLine | None = None  # a probed script's own last step line
    printed_eval: EvalLine | None = None  # ... and its last evaluation
    unknown: str | None = None  # what an injected probe could not find in the script
    checklist: Checklist | None = None  # what the run has proved of its plumbing
    measured: Measured | None = None  # the median step with its shape: a forecast's input

    @property
    def done(self) -> bool:
        return self.phase.ended

    def events_since(self, seen: int) -> tuple[Event, ...]:
        """The events logged since `seen` of them were handled (the kept ones, at most)."""
        fresh = min(self.event_count - seen, len(self.events))
        return self.events[len(self.events) - fresh:] if fresh > 0 else ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON export: the run's state as plain data."""
        return {
            "name": self.name, "source": self.source, "state": self.phase.value,
            "step": self.step, "horizon": self.horizon, "world": self.world,
            "depth": self.depth, "vocab": self.vocab, "ln_vocab": self.ln_vocab,
            "unigram_entropy": self.unigram_entropy, "entropy_rate": self.entropy_rate,
            "loss": self.loss, "smoothed_loss": self.smoothed_loss,
            "split": _plain(self.split), "straggler": _plain(self.straggler),
            "eta": _plain(self.eta), "regime": self.regime, "advice": self.advice,
            "split_missing": self.split_missing, "eta_missing": self.eta_missing,
            "ranks": [asdict(rank) for rank in self.ranks],
            "events": [asdict(event) for event in self.events],
            "status": self.status.to_dict() if self.status else None,
            "records": self.records, "sync_model": _plain(self.sync_model),
            "sync_advice": _plain(self.sync_advice),
            "nodes_behind": [asdict(lag) for lag in self.nodes_behind],
            "relay": self.relay.to_dict() if self.relay else None,
            "plumbing": _plain(self.plumbing), "printed": _plain(self.printed),
            "printed_eval": _plain(self.printed_eval), "unknown": self.unknown,
            "checklist": _plain(self.checklist),
            "validated_step": self.checklist.validated_step if self.checklist else None,
            "measured": _plain(self.measured),
        }


def _plain(value: Any) -> dict[str, Any] | None:
    return None if value is None else asdict(value)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def shape_of(depth: int | None, vocab: int | None, model: ModelConfig
             ) -> scaling.ModelShape | None:
    if not depth or not vocab:
        return None
    try:
        return scaling.ModelShape(
            depth=depth, vocab=vocab,
            aspect_ratio=model.aspect_ratio or scaling.DEFAULT_ASPECT_RATIO,
            head_dim=model.head_dim or scaling.DEFAULT_HEAD_DIM)
    except ValueError:
        return None


def run_info(state: RunState) -> RunInfo:
    config, meta = state.config, state.meta
    shape = shape_of(state.depth, state.vocab, config.model)
    counted = scaling.param_count(shape) if shape else None
    n_params = meta.get("n_params")
    hosts = list(config.hosts)
    for info in sorted(state.ranks.values(), key=lambda i: i.rank):
        if info.host and info.host not in hosts:
            hosts.append(info.host)
    seq_len = config.model.seq_len or meta.get("seq_len")
    backend, device = config.train.backend or meta.get("backend"), meta.get("device")
    return RunInfo(
        name=state.config.name, depth=state.depth, shape=shape,
        n_params=n_params if isinstance(n_params, int) else (counted.total if counted else None),
        embedding_share=counted.embedding_share if counted else None, vocab=state.vocab,
        world=state.world, hosts=tuple(hosts),
        backend=backend if isinstance(backend, str) else None,
        device=device if isinstance(device, str) else config.train.device,
        seq_len=seq_len if isinstance(seq_len, int) else scaling.DEFAULT_SEQ_LEN,
        tokens_per_step=state.tokens_per_step)


def _rank(info: Any) -> RankSummary:
    values = {f.name: getattr(info, f.name) for f in fields(RankSummary)}
    values["steps"] = tuple((first, last) for first, last in info.steps)
    return RankSummary(**values)


def summarize(state: RunState, now: float) -> Summary:
    """Everything the views show, from the fold as it is now."""
    window = analysis.window(state)
    split = analysis.split(state, window)
    eta = analysis.eta(state)
    straggler = analysis.straggler(state)
    micro_steps = analysis.micro_steps(window)
    advice = analysis.sync_advice(state, split, micro_steps)
    regime, regime_advice = analysis.regime(state, split, straggler, advice)
    state.series.update(state.loss_steps, state.loss_values)
    info, plumbing = run_info(state), analysis.plumbing(state, window)
    loss_all = state.series.all_buckets()
    entropy = _number(state.meta.get("unigram_entropy"))
    proved = checklist(state, split, plumbing, loss_all, entropy) \
        if state.source != "log" else None
    return Summary(
        now=now, name=state.config.name, source=state.source, phase=state.phase,
        step=state.step, first_step=state.loss_steps[0] if state.loss_steps else None,
        steps_seen=len(state.loss_steps), horizon=state.horizon,
        last_step_t=state.step_times[-1][1] if state.step_times else None,
        world=state.world, depth=state.depth, vocab=state.vocab, ln_vocab=state.ln_vocab,
        unigram_entropy=entropy,
        entropy_rate=_number(state.meta.get("entropy_rate")),
        loss=state.loss, smoothed_loss=state.smoothed_loss(),
        split=split, split_missing=None if split else analysis.split_missing(state),
        straggler=straggler, eta=eta,
        eta_missing=None if eta else analysis.eta_missing(state),
        regime=regime, advice=regime_advice, micro_steps=micro_steps,
        sync_model=analysis.sync_model(state, split), sync_advice=advice,
        nodes_behind=tuple(analysis.nodes_behind(state, now)), relay=state.relay,
        relay_down_s=analysis.relay_down_s(state, now),
        ranks=tuple(_rank(info) for _, info in sorted(state.ranks.items())),
        events=tuple(state.events), event_count=state.events.count, status=state.status,
        records=state.records, info=info,
        loss_all=loss_all, loss_recent=state.series.recent_buckets(),
        sync_history=tuple(state.sync_history), system=state.system,
        net_bytes_per_step=state.net_bytes_per_step, stderr_tail=state.stderr_tail,
        plumbing=plumbing, printed=state.printed, printed_eval=state.printed_eval,
        unknown=unknown if isinstance(unknown := state.meta.get("unknown"), str) else None,
        checklist=proved,
        measured=measured(state, info, split, plumbing, micro_steps, window))


def refresh(summary: Summary, state: RunState, now: float) -> Summary:
    """`summary` with its fast parts (what the header and the events show) brought up to
    date: cheap, no medians."""
    return replace(
        summary, now=now, phase=state.phase, step=state.step, horizon=state.horizon,
        last_step_t=state.step_times[-1][1] if state.step_times else None, loss=state.loss,
        events=tuple(state.events), event_count=state.events.count, status=state.status,
        stderr_tail=state.stderr_tail, printed=state.printed)


def fast_key(state: RunState) -> tuple[int, RunPhase, int]:
    """What `refresh` would change: a new summary is worth building when this moves."""
    return state.step, state.phase, state.events.count

