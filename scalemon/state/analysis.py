"""What the recent steps say: the median step split, the straggler, the pace and ETA, the
regime, and for gradient sync the ring model and the accumulation that would tame it.

Pure functions over a `RunState` (scalemon.state.fold); `summary.summarize` calls each once
per summary, passing the split on to those that need it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scalemon.core import scaling
from scalemon.core.config import RelayClientStatus, RelayServerStatus
from scalemon.core.records import StepRecord
from scalemon.core.units import format_count, format_duration

if TYPE_CHECKING:
    from scalemon.state.fold import RunState

WARMUP_STEPS = 3  # after a (re)start: allocator, caches and the first allreduce are slow
SYNC_TARGET = 0.10
SYNC_BOUND = 0.3  # sync share above which gradient sync, not compute, sets the pace
LAG_GRACE_S = 5.0  # relayed records this late are in transit, not behind
# Runs read from a log (scalemon attach/replay --log) have step times, but no phases or sync.
PROBE_HINT = ("needs the step probe: run it through `scalemon run -- SCRIPT` "
              "(README: Any training script)")
MEDIAN_ERROR = 1.2533  # a median's standard error, in standard errors of the mean (normal)
RESOLVED = 0.10  # the full sync is said once its error is under this share of the tail


@dataclass(frozen=True)
class Split:
    """The median step of the recent window, in seconds, its parts adding up to `total`.

    `sync` is what gradient sync adds to a step: the tail after the last bucket is ready
    (`sync_tail`) plus what the overlapped allreduces slow the backward (`sync_overlap`: the
    synced backward's compute less the same backward under no_sync, from the no_sync samples).
    Without such samples only the tail is known: `sync_lower_bound`. A rank's wait for a slower
    peer's last bucket is `wait`, not sync. `backward` is backward compute without sync.

    A script's own collectives (nanochat's optimizer: async reduce_scatter, all_reduce and
    all_gather inside optimizer.step) add the time the host blocked on them, less the wait
    for the slowest rank to launch its first (`sync_blocked`). What they slow the compute
    they overlap is not measured, so their sync is a lower bound.
    """

    data: float
    forward: float
    backward: float
    sync: float
    optimizer: float
    other: float
    total: float
    comm: float  # all bucket allreduces, overlapped or not
    overlap: float  # comm hidden behind backward (comm less the exposed tail)
    bytes: int
    bus_bit_s: float  # achieved ring bandwidth: 2(n−1)/n · bytes·8 / comm
    steps: int  # samples behind the medians
    wait: float = 0.0  # waiting for a slower rank's last bucket
    sync_tail: float = 0.0  # sync after the backward's last bucket, less the wait
    sync_overlap: float = 0.0  # how much the overlapped allreduces slow the backward
    sync_lower_bound: bool = False  # too few no_sync samples yet: sync is the tail alone
    sync_samples: int = 0  # no_sync samples behind the compute estimate (the fewest of ranks)
    sync_blocked: float = 0.0  # blocked in the script's own collectives, less the wait
    # DDP's full figure as the samples estimate it, and that estimate's standard error, also
    # while it is withheld as too uncertain (None: too few samples for either)
    sync_estimate: float | None = None
    sync_error: float | None = None
    collectives: int = 0  # the script's own collectives a step
    collective_bytes: int = 0  # their tensors' bytes a step

    PARTS = ("data", "forward", "backward", "sync", "wait", "optimizer", "other")

    def share(self, part: str) -> float:
        value: float = getattr(self, part)
        return value / self.total if self.total > 0 else math.nan


@dataclass(frozen=True)
class Plumbing:
    """How the ranks are connected, as the run shows it: its process group (None: it made
    none, "" not known), its world, whether DDP syncs its gradients, and what its collectives
    move a step against what its parameters weigh."""

    backend: str | None
    world: int
    ddp: bool | None  # None: not known (a run that does not say)
    collectives: int  # a step: DDP's buckets and the script's own collectives
    bytes_per_step: int
    param_bytes: int | None

    @property
    def isolated(self) -> bool:
        """Several ranks and no process group: each trains its own copy, alone."""
        return self.world > 1 and self.backend is None

    @property
    def synced_share(self) -> float | None:
        """Bytes moved a step over the parameters' bytes (DDP's allreduce moves 1x, a sharded
        optimizer's reduce_scatter and all_gather 2x); None when not known."""
        if not self.param_bytes or self.isolated or self.world < 2:
            return None
        return self.bytes_per_step / self.param_bytes


@dataclass(frozen=True)
class Straggler:
    rank: int
    wait_s: float  # median time the other ranks wait for it per step


@dataclass(frozen=True)
class Eta:
    remaining_steps: int
    step_s: float  # robust seconds per step (wall, between records)
    low_s: float
    mid_s: float
    high_s: float
    tok_s: float


@dataclass(frozen=True)
class SyncModel:
    """Measured gradient sync beside the ring model's prediction for the link."""

    sync_s: float  # what sync costs a step (Split.sync)
    comm_s: float  # median allreduce time, overlapped or not
    bytes: int  # gradient bytes all-reduced per step
    bus_bit_s: float  # achieved: 2(n−1)/n · bytes·8 / comm
    predicted_s: float  # 2(n−1)/n · bytes·8 / link, n = ranks in the ring
    link_bit_s: float
    link_source: str  # "--link" or "NIC" (the run interface's speed, from the kernel)
    ring: int  # ranks in the ring
    net_bytes: float | None  # bytes the network probe saw this machine send per step


@dataclass(frozen=True)
class SyncAdvice:
    """For a sync-bound run: the accumulation that brings sync under SYNC_TARGET."""

    micro_steps: int  # micro-steps per allreduce to use
    now_micro_steps: int
    tokens_per_step: int | None  # the --tokens-per-step that gives micro_steps
    step_s: float  # predicted seconds per step at micro_steps
    sync_share: float  # predicted sync share at micro_steps
    tok_s: float | None  # predicted throughput at micro_steps


@dataclass(frozen=True)
class NodeLag:
    """A node whose ranks' records lag the others' on this (the collecting) node."""

    node: int
    hosts: tuple[str, ...]
    steps_behind: int
    reported: bool  # False: no records from it at all yet
    relay_up: bool | None  # None when the relay state is unknown
    relay_down_s: float | None  # how long the relay to that node has been down


def median(values: Iterable[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    index = q * (len(ordered) - 1)
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def _any_in(steps: set[int], low: int, high: int) -> bool:
    """Whether a step in [low, high) is in the set, in the fewer of the two lookups (a
    hostile record's step may be 2**62 steps past the last)."""
    if high - low <= len(steps):
        return any(step in steps for step in range(low, high))
    return any(low <= step < high for step in steps)


def window(state: RunState) -> list[StepRecord]:
    """The recent steps of every rank, past each rank's warm-up when there are such."""
    out: list[StepRecord] = []
    for rank, recent in state.recent.items():
        start = state.ranks[rank].start_step + WARMUP_STEPS
        out.extend(r for r in recent if r.step >= start)
    return out or [r for recent in state.recent.values() for r in recent]


def _waits(state: RunState) -> dict[tuple[int, int], float]:
    """(step, rank) -> how long the rank's last bucket was ready before the slowest rank's,
    for the steps every rank has reported (its sync waited that long for the others)."""
    out = {}
    for step, ready in state.ready_by_step.items():
        if len(ready) < 2 or (state.world and len(ready) < state.world):
            continue
        latest = max(ready.values())
        for rank, t in ready.items():
            out[(step, rank)] = latest - t
    return out


@dataclass(frozen=True)
class Estimate:
    """A median and how far it may be off: 1.25 standard deviations over the root of the
    count, the standard error of a median (infinite below three samples)."""

    value: float
    error: float
    samples: int


def estimate(values: list[float]) -> Estimate:
    error = MEDIAN_ERROR * statistics.stdev(values) / math.sqrt(len(values)) \
        if len(values) >= 3 else math.inf
    return Estimate(median(values), error, len(values))


def compute_estimates(state: RunState) -> dict[int, Estimate]:
    """Per rank, the backward under no_sync: its compute alone."""
    return {rank: estimate(list(samples)) for rank, samples in state.nosync.items() if samples}


def split(state: RunState, steps: list[StepRecord] | None = None) -> Split | None:
    steps = window(state) if steps is None else steps
    if not steps or state.source == "log":
        return None
    waits, compute = _waits(state), compute_estimates(state)
    # Per rank-step: the wait for the slowest rank's last bucket (its tail holds it), the tail
    # less that wait, and the synced backward less the same backward unsynced less the wait.
    tails, waited, costs, spent, blocked = [], [], [], [], []
    used: dict[int, Estimate] = {}
    for r in steps:
        late = waits.get((r.step, r.rank), 0.0)
        mine = r.collectives
        if mine is not None and mine.count:
            # Without DDP the first collective is where a rank waits for the slowest one.
            held = 0.0 if r.sync is not None else min(mine.blocked, late)
            blocked.append(mine.blocked - held)
            if r.sync is None:
                waited.append(held)
        if r.sync is None:
            spent.append(0.0)
            continue
        tail = r.sync.exposed
        wait = min(tail, late)
        tails.append(tail - wait)
        waited.append(wait)
        unsynced = compute.get(r.rank)
        if unsynced is not None and r.synced_backward is not None:
            used[r.rank] = unsynced
            costs.append(r.synced_backward - unsynced.value - wait)
            spent.append(max(tail, r.synced_backward - unsynced.value))
        else:
            spent.append(tail)

    def phase(name: str) -> float:
        return median(r.phases.get(name, 0.0) for r in steps)

    sync_tail = median(tails) if tails else 0.0
    error = _error(costs, list(used.values()))
    known = error <= RESOLVED * max(sync_tail, 1e-3)
    # The time after the last bucket is all sync: a cost under it is an estimate's noise.
    ddp_sync = max(sync_tail, median(costs)) if known else sync_tail
    sync_blocked = median(blocked) if blocked else 0.0
    sync = ddp_sync + sync_blocked
    # Which rank is last flips from step to step with the ranks' noise: the mean, not the
    # median, says how long they wait on the whole.
    wait = statistics.fmean(waited) if waited else 0.0
    backward = median(r.phases.get("backward", 0.0) - used
                      for r, used in zip(steps, spent, strict=True))
    data, forward, optimizer = phase("data"), phase("forward"), phase("optimizer")
    total = median(r.dt for r in steps)
    other = max(0.0, total - (data + forward + backward + sync + wait + optimizer))
    synced = [r.sync for r in steps if r.sync]
    comm = median(s.comm for s in synced) if synced else 0.0
    nbytes = int(median(s.bytes for s in synced)) if synced else 0
    world = state.world or 1
    bus = 2 * (world - 1) / world * nbytes * 8 / comm if comm > 0 else math.nan
    own = [r.collectives for r in steps if r.collectives is not None]
    return Split(data=data, forward=forward, backward=max(0.0, backward), sync=sync,
                 optimizer=optimizer, other=other, total=total, comm=comm,
                 overlap=median(s.overlap for s in synced) if synced else 0.0,
                 bytes=nbytes, bus_bit_s=bus, steps=len(steps), wait=wait,
                 sync_tail=sync_tail, sync_overlap=ddp_sync - sync_tail,
                 sync_lower_bound=(bool(synced) and not known) or bool(blocked),
                 sync_samples=min((e.samples for e in used.values()), default=0),
                 sync_blocked=sync_blocked,
                 sync_estimate=max(sync_tail, median(costs)) if costs else None,
                 sync_error=error if math.isfinite(error) else None,
                 collectives=round(median(c.count for c in own)) if own else 0,
                 collective_bytes=int(median(c.bytes for c in own)) if own else 0)


def _error(costs: list[float], compute: list[Estimate]) -> float:
    """The standard error of what sync costs: the median cost's own, and that of the compute
    estimates, which every step of a rank shares, averaged over the ranks. It is said once
    that is under RESOLVED of the tail; until then only the tail is sure. Infinite with
    under three costs."""
    if len(costs) < 3 or not compute:
        return math.inf
    own = estimate(costs).error
    shared = math.sqrt(statistics.fmean(e.error ** 2 for e in compute) / len(compute))
    return math.hypot(own, shared)


def plumbing(state: RunState, steps: list[StepRecord]) -> Plumbing | None:
    """The run's plumbing; None until a step or the run's config says enough (and for a run
    known by its log alone)."""
    if state.source == "log":
        return None
    meta, config = state.meta, state.config
    group = meta.get("process_group")
    if isinstance(group, str):  # an injected probe looked
        backend: str | None = None if group == "none" else group
    elif config.command == "train" and config.train.backend:
        backend = config.train.backend  # scalemon's trainer always makes its group
    else:
        backend = ""
    world = state.world or 1
    if not steps and backend == "":
        return None
    said = meta.get("ddp")
    ddp: bool | None = said if isinstance(said, bool) else \
        (True if config.command == "train" and world > 1 else None)
    buckets = median(r.sync.buckets for r in steps if r.sync) if any(r.sync for r in steps) \
        else 0.0
    own = [r.collectives for r in steps if r.collectives]
    count = buckets + (median(c.count for c in own) if own else 0.0)
    nbytes = median(((r.sync.bytes if r.sync else 0) +
                     (r.collectives.bytes if r.collectives else 0)) for r in steps) \
        if steps else 0.0
    param_bytes = meta.get("param_bytes")
    return Plumbing(backend=backend, world=world, ddp=ddp, collectives=round(count),
                    bytes_per_step=int(nbytes),
                    param_bytes=param_bytes if isinstance(param_bytes, int) else None)


def split_missing(state: RunState) -> str:
    """Why there is no split."""
    if state.source != "log":
        return "waiting"
    relaunch = state.meta.get("relaunch")
    return f"needs the step probe: run it as {relaunch}" if isinstance(relaunch, str) \
        else PROBE_HINT


def micro_steps(steps: list[StepRecord]) -> int:
    """Micro-steps per allreduce in the recent window (gradient accumulation)."""
    return max(1, round(median(r.micro_steps for r in steps))) if steps else 1


def straggler(state: RunState) -> Straggler | None:
    """The rank whose last gradient bucket is ready last; its peers wait that long."""
    late_counts: dict[int, int] = {}
    waits = []
    for ready in state.ready_by_step.values():
        if len(ready) < 2 or (state.world and len(ready) < state.world):
            continue
        late = max(ready, key=lambda rank: ready[rank])
        late_counts[late] = late_counts.get(late, 0) + 1
        waits.append(ready[late] - min(ready.values()))
    if not waits:
        return None
    return Straggler(rank=max(late_counts, key=lambda rank: late_counts[rank]),
                     wait_s=median(waits))


def intervals(state: RunState) -> list[tuple[float, int]]:
    """(seconds, tokens) between consecutive steps, skipping warm-up and checkpoints."""
    loss_rank = state.loss_rank
    start = state.ranks[loss_rank].start_step if loss_rank in state.ranks else 0
    out = []
    times = list(state.step_times)
    for (s0, t0, _), (s1, t1, tokens) in zip(times, times[1:], strict=False):
        # A log may print every k-th step: the interval is spread over the steps it covers.
        if s1 <= s0 or s0 < start + WARMUP_STEPS - 1 or _any_in(state.checkpoint_steps, s0, s1):
            continue
        out.append(((t1 - t0) / (s1 - s0), tokens))
    return out


def step_seconds(state: RunState) -> float | None:
    spans = intervals(state)
    return median(seconds for seconds, _ in spans) if spans else None


def eta(state: RunState) -> Eta | None:
    spans = intervals(state)
    if not spans or not state.horizon:
        return None
    seconds = [s for s, _ in spans]
    remaining = max(0, state.horizon - (state.step + 1))
    step_s = median(seconds)
    tok_s = median(tokens / s for s, tokens in spans if s > 0)
    return Eta(remaining_steps=remaining, step_s=step_s,
               low_s=remaining * quantile(seconds, 0.25), mid_s=remaining * step_s,
               high_s=remaining * quantile(seconds, 0.75), tok_s=tok_s)


def eta_missing(state: RunState) -> str:
    """Why there is no ETA."""
    if not state.horizon:
        return "no horizon: give --steps N" if state.source == "log" else "no horizon"
    return "waiting for steps"


def predict_accumulation(split_now: Split, now_micro_steps: int, micro: int
                         ) -> tuple[float, float]:
    """(step seconds, sync share) with `micro` micro-steps per allreduce: compute per
    micro-step scales, optimizer and sync stay once per step."""
    compute = (split_now.data + split_now.forward + split_now.backward + split_now.wait) / \
        now_micro_steps  # a slower rank's lead grows with the compute it does
    step_s = micro * compute + split_now.optimizer + split_now.other + split_now.sync
    return step_s, split_now.sync / step_s if step_s > 0 else math.nan


def sync_advice(state: RunState, split_now: Split | None, now_micro_steps: int
                ) -> SyncAdvice | None:
    """When sync dominates: micro-steps per allreduce that bring it under SYNC_TARGET."""
    if split_now is None or not split_now.share("sync") > SYNC_BOUND:
        return None
    compute = (split_now.data + split_now.forward + split_now.backward + split_now.wait) / \
        now_micro_steps
    if compute <= 0:
        return None
    k = scaling.accumulation_for_sync_share(compute, split_now.sync, SYNC_TARGET)
    step_s, share = predict_accumulation(split_now, now_micro_steps, k)
    tokens = state.tokens_per_step // now_micro_steps * k if state.tokens_per_step else None
    return SyncAdvice(micro_steps=k, now_micro_steps=now_micro_steps, tokens_per_step=tokens,
                      step_s=step_s, sync_share=share,
                      tok_s=tokens / step_s if tokens and step_s > 0 else None)


def advice_text(advice: SyncAdvice, trainer: bool = True) -> str:
    """'34 micro-steps per allreduce (--tokens-per-step 34816) would bring it under 10%: ...'
    (for a script of the user's own, its tokens a step rather than scalemon's flag)."""
    text = f"{advice.micro_steps} micro-steps per allreduce"
    if advice.tokens_per_step:
        text += f" (--tokens-per-step {advice.tokens_per_step})" if trainer else \
            f" ({advice.tokens_per_step:,} tokens a step)"
    text += (f" would bring it under {SYNC_TARGET:.0%}: {format_duration(advice.step_s)} "
             "a step")
    if advice.tok_s:
        text += f", {format_count(advice.tok_s)} tok/s"
    return text


def regime(state: RunState, split_now: Split | None, lag: Straggler | None,
           advice: SyncAdvice | None) -> tuple[str, str]:
    """(name, plain-words advice): compute-, sync-, input- or straggler-bound."""
    if state.source == "log":
        return "unknown", f"the compute/sync split {PROBE_HINT}"
    if split_now is None or not split_now.total > 0:
        return "unknown", "waiting for steps"
    if advice is not None:
        return "sync-bound", (f"sync is {split_now.share('sync'):.0%} of a step; "
                              f"{advice_text(advice, state.config.command != 'script')}")
    if lag and lag.wait_s > 0.1 * split_now.total:
        return "straggler-bound", (f"rank {lag.rank} is late by {lag.wait_s:.2f} s a step; "
                                   "its peers wait")
    if split_now.share("data") > 0.2:
        return "input-bound", f"data loading is {split_now.share('data'):.0%} of a step"
    return "compute-bound", "forward and backward set the pace"


def sync_model(state: RunState, split_now: Split | None) -> SyncModel | None:
    """Measured sync beside the ring model's prediction for the link, once its speed is
    known (`--link`, or the run interface's; loopback has none)."""
    link_bit_s = state.config.launch.link_bit_s
    link, source = (link_bit_s, "--link") if link_bit_s else (state.nic_bit_s, "NIC")
    ring = state.world or 1
    if split_now is None or split_now.bytes <= 0 or not link or ring < 2:
        return None
    return SyncModel(sync_s=split_now.sync, comm_s=split_now.comm, bytes=split_now.bytes,
                     bus_bit_s=split_now.bus_bit_s,
                     predicted_s=scaling.ring_allreduce_seconds(split_now.bytes, ring, link),
                     link_bit_s=link, link_source=source, ring=ring,
                     net_bytes=state.net_bytes_per_step)


def nodes_behind(state: RunState, now: float | None = None) -> list[NodeLag]:
    """On node 0 of a multi-node run: the nodes whose records lag, and their relay."""
    launch = state.config.launch
    if launch.nnodes < 2 or launch.node_rank != 0 or not launch.nproc_per_node \
            or not state.ranks:
        return []
    now = now or state.now or max((i.last_t or 0.0) for i in state.ranks.values())
    lead = max(info.last_step for info in state.ranks.values())
    relay = state.relay if isinstance(state.relay, RelayServerStatus) else None
    lags = []
    for node in range(1, launch.nnodes):
        infos = [state.ranks.get(rank) for rank in launch.ranks_of(node)]
        last = min(info.last_step if info else -1 for info in infos)
        newest = max((info.last_t for info in infos if info and info.last_t), default=None)
        if lead - last < 2 or (newest is not None and now - newest < LAG_GRACE_S):
            continue
        link = relay.nodes.get(node) if relay else None
        up = link.connected if link else None
        down_s = now - link.since if link and not up and link.since is not None else None
        hosts = tuple(sorted({info.host for info in infos if info and info.host}))
        lags.append(NodeLag(node=node, hosts=hosts, steps_behind=lead - last,
                            reported=any(infos), relay_up=up, relay_down_s=down_s))
    return lags


def relay_down_s(state: RunState, now: float | None = None) -> float | None:
    """On the other nodes: how long node 0 has been out of reach (None while it is not)."""
    relay = state.relay
    if not isinstance(relay, RelayClientStatus) or relay.connected or relay.delivered:
        return None
    now = now or state.now
    return now - relay.since if relay.since is not None and now else None
