"""RunState: a pure fold of records into what the monitor shows.

No I/O: records, the run config and the supervisor's status go in; the step
split, loss series, rates, ETA, straggler, regime and events come out. Every
view (headless, TUI, JSON) reads the same state. Records may arrive twice (file
and socket) or late; `apply` drops duplicates and tolerates any order.
"""

from __future__ import annotations

import bisect
import math
import statistics
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field

from scalemon.core import scaling
from scalemon.core.records import CheckpointRecord, EndRecord, Record, StartRecord, StepRecord
from scalemon.core.units import format_count, format_duration

WARMUP_STEPS = 3  # after a (re)start: allocator, caches and the first allreduce are slow
RECENT = 50  # steps in the rolling window for medians
ENDED_STATES = ("finished", "stopped", "failed")  # the states a run does not leave
STALE_AFTER_S = 30.0  # a rank silent this long (or 10 median steps) has stopped reporting
STUCK_AFTER_S = 5.0  # waiting this long in a collective (or 5 median steps) is stuck
SYNC_TARGET = 0.10
SYNC_BOUND = 0.3  # sync share above which gradient sync, not compute, sets the pace
LAG_GRACE_S = 5.0  # relayed records this late are in transit, not behind
# Runs read from a log (scalemon attach/replay --log) have step times, but no phases or sync.
PROBE_HINT = "needs the step probe (see README: Your own training loop)"


@dataclass
class RankInfo:
    rank: int
    pid: int | None = None
    host: str | None = None
    start_step: int = 0
    last_step: int = -1
    last_t: float | None = None
    ended: str | None = None  # finished | stopped | error
    message: str | None = None
    drops: int = 0
    lost: int = 0
    stale: bool = False
    node: int = 0  # node_rank of its machine: torchrun numbers ranks node by node
    started: float | None = None  # wall time of its start record
    gone: bool = False  # its process vanished without an end record (killed, crashed hard)
    frozen: bool = False  # its process is stopped (SIGSTOP, Ctrl-Z, a debugger)
    losing: bool = False  # its records cannot be written to the run dir right now
    activity: object = None  # scalemon.activity.Activity: where it is now, when readable
    stuck: bool = False  # waiting in a collective for far longer than a step
    steps: list = field(default_factory=list)  # [first, last] ranges of steps recorded

    def missing(self) -> int:
        """Steps inside the recorded range with no record (lost or never written)."""
        return sum(b[0] - a[1] - 1 for a, b in zip(self.steps, self.steps[1:], strict=False))


@dataclass(frozen=True)
class Split:
    """The median step of the recent window, in seconds."""

    data: float
    forward: float
    backward: float  # backward compute: the backward phase less its exposed sync
    sync: float  # exposed gradient sync
    optimizer: float
    other: float
    total: float
    comm: float  # all bucket allreduces, overlapped or not
    overlap: float
    bytes: int
    bus_bit_s: float  # achieved ring bandwidth: 2(n−1)/n · bytes·8 / comm
    steps: int  # samples behind the medians

    PARTS = ("data", "forward", "backward", "sync", "optimizer", "other")

    def share(self, part: str) -> float:
        return getattr(self, part) / self.total if self.total > 0 else math.nan


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
class Event:
    t: float
    level: str  # info | warn | error
    text: str


@dataclass(frozen=True)
class SyncModel:
    """Measured gradient sync beside the ring model's prediction for the link."""

    exposed_s: float  # median exposed sync per step (comm hook)
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


def _add_step(ranges: list, step: int) -> None:
    """Add a step to sorted, disjoint [first, last] ranges (in order, this only extends)."""
    if ranges and ranges[-1][0] <= step <= ranges[-1][1] + 1:
        ranges[-1][1] = max(ranges[-1][1], step)
        return
    i = bisect.bisect_right(ranges, [step, math.inf])  # first range starting after step
    if i and ranges[i - 1][1] >= step - 1:
        ranges[i - 1][1] = max(ranges[i - 1][1], step)
        i -= 1
    else:
        ranges.insert(i, [step, step])
    while i + 1 < len(ranges) and ranges[i + 1][0] <= ranges[i][1] + 1:
        ranges[i][1] = max(ranges[i][1], ranges.pop(i + 1)[1])


def _median(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return math.nan
    index = q * (len(values) - 1)
    low, high = math.floor(index), math.ceil(index)
    return values[low] + (values[high] - values[low]) * (index - low)


def _any_in(steps: set[int], low: int, high: int) -> bool:
    """Whether a step in [low, high) is in the set, in the fewer of the two lookups (a
    hostile record's step may be 2**62 steps past the last)."""
    if high - low <= len(steps):
        return any(step in steps for step in range(low, high))
    return any(low <= step < high for step in steps)


class RunState:
    def __init__(self, config: dict | None = None) -> None:
        self.config = config or {}
        model, train = self.config.get("model", {}), self.config.get("train", {})
        self.meta: dict = {}
        self.name = self.config.get("name", "")
        self.depth: int | None = model.get("depth")
        self.vocab: int | None = model.get("vocab")
        self.horizon: int | None = train.get("steps")
        self.tokens_per_step: int | None = train.get("tokens_per_step")
        launch = self.config.get("launch", {})
        self.world: int | None = launch.get("world_size")
        self.nproc: int | None = launch.get("nproc_per_node")
        self.nnodes: int = launch.get("nnodes") or 1
        self.node_rank: int = launch.get("node_rank") or 0  # the node this run dir is on
        self.link_bit_s: float | None = launch.get("link_bit_s")  # from --link
        self.nic_bit_s: float | None = None  # the run interface's speed, when known
        self.net_bytes_per_step: float | None = None  # sent on the run interface per step
        self.relay: dict | None = None  # the relay's status (relay.json)
        self.now: float | None = None  # the last tick
        self.ranks: dict[int, RankInfo] = {}
        self.loss_steps = array("q")  # loss of the lowest reporting rank, by step
        self.loss_values = array("d")
        self.loss_rank: int | None = None
        self.recent: dict[int, deque[StepRecord]] = {}
        self.ready_by_step: dict[int, dict[int, float]] = {}  # step -> rank -> last_ready
        self.step_times: deque[tuple[int, float, int]] = deque(maxlen=RECENT + 1)
        self.checkpoint_steps: set[int] = set()
        self.last_checkpoint: CheckpointRecord | None = None
        self.events: deque[Event] = deque(maxlen=200)
        self.event_count = 0  # events ever logged, so views can tell which are new
        self.status: dict | None = None
        self.records = 0
        self.duplicates = 0
        self._seen: dict[int, tuple[set, deque]] = {}
        self._last_nan_warning = -math.inf
        self._last_high_warning = -math.inf
        self._last_sync_warning = -math.inf

    # --- folding ---------------------------------------------------------------------

    def apply(self, record: Record) -> bool:
        """Fold one record in; False for a duplicate already seen."""
        if self._duplicate(record):
            self.duplicates += 1
            return False
        self.records += 1
        info = self.ranks.get(record.rank)
        if info is None:  # not setdefault: a RankInfo per record is a fifth of apply's time
            info = self.ranks[record.rank] = RankInfo(record.rank, node=self.node_of(record.rank))
        info.stale = False
        if isinstance(record, StepRecord):
            self._apply_step(info, record)
        elif isinstance(record, StartRecord):
            self._apply_start(info, record)
        elif isinstance(record, CheckpointRecord):
            self.checkpoint_steps.add(record.step)  # its time is not a step's, written or not
            if record.error is not None:
                self._event(record.t, "error", record.error)
                return True
            if self.last_checkpoint is None or record.t >= self.last_checkpoint.t:
                self.last_checkpoint = record
            self._event(record.t, "info", f"checkpoint at step {record.step} "
                                           f"({record.seconds:.1f} s)")
        elif isinstance(record, EndRecord):
            info.ended, info.message = record.reason, record.message
            level = "error" if record.reason == "error" else "info"
            text = f"rank {record.rank} ended: {record.reason}"
            if record.message:
                text += f": {record.message}"
            self._event(record.t, level, text)
        return True

    def _duplicate(self, record: Record) -> bool:
        seen, order = self._seen.setdefault(record.rank, (set(), deque()))
        key = (record.kind, record.t, getattr(record, "step", None))
        if key in seen:
            return True
        seen.add(key)
        order.append(key)
        if len(order) > 4096:
            seen.discard(order.popleft())
        return False

    def _apply_start(self, info: RankInfo, record: StartRecord) -> None:
        info.pid, info.host, info.started = record.pid, record.host, record.t
        info.gone = False
        info.start_step = int(record.meta.get("start_step") or 0)
        info.ended = None
        self.meta.update(record.meta)
        self.world = self.world or record.world
        self.depth = self.depth or record.meta.get("depth")
        self.vocab = self.vocab or record.meta.get("vocab")
        self.horizon = self.horizon or record.meta.get("steps")
        self.tokens_per_step = self.tokens_per_step or record.meta.get("tokens_per_step")
        if record.rank == 0:
            verb = "resumed at step" if info.start_step else "started at step"
            self._event(record.t, "info", f"rank 0 {verb} {info.start_step} on {record.host}")

    def _apply_step(self, info: RankInfo, record: StepRecord) -> None:
        newest = record.step > info.last_step
        if record.step >= info.last_step:
            info.last_step, info.last_t = record.step, record.t
        _add_step(info.steps, record.step)
        info.drops = max(info.drops, record.drops)
        self._check_recording(info, record, newest)
        recent = self.recent.setdefault(record.rank, deque(maxlen=RECENT))
        recent.append(record)
        if record.sync is not None:
            self.ready_by_step.setdefault(record.step, {})[record.rank] = record.sync.last_ready
            while len(self.ready_by_step) > RECENT:
                del self.ready_by_step[min(self.ready_by_step)]
        if self.loss_rank is None or record.rank < self.loss_rank:
            self.loss_rank = record.rank
            self.loss_steps, self.loss_values = array("q"), array("d")
            self.step_times.clear()
        if record.rank == self.loss_rank:
            self._append_loss(record)
            self.step_times.append((record.step, record.t, record.tokens))
            self._check_loss(record)
            self._check_sync_jump(record)

    def _check_recording(self, info: RankInfo, record: StepRecord, newest: bool) -> None:
        """`lost` counts the records a rank could not write when made (held back, written
        later): it grows while the run dir's disk refuses and stops growing once one went in."""
        if record.lost > info.lost:
            if not info.losing:
                self._event(record.t, "warn", f"rank {record.rank} cannot write records to "
                                              "the run dir (disk full?); it holds them back")
            info.lost, info.losing = record.lost, True
        elif info.losing and newest and record.lost == info.lost:
            info.losing = False
            self._event(record.t, "info", f"rank {record.rank} records reach the run dir "
                                          f"again ({info.lost} were held back)")

    def _append_loss(self, record: StepRecord) -> None:
        # A resume re-does the steps after the last checkpoint: they replace the old ones.
        while self.loss_steps and self.loss_steps[-1] >= record.step:
            self.loss_steps.pop()
            self.loss_values.pop()
        self.loss_steps.append(record.step)
        self.loss_values.append(math.nan if record.loss is None else record.loss)

    def _check_loss(self, record: StepRecord) -> None:
        loss = record.loss
        if loss is None:
            return
        if not math.isfinite(loss):
            if record.step - self._last_nan_warning >= 100:
                self._last_nan_warning = record.step
                self._event(record.t, "error", f"loss is {loss} at step {record.step}")
            return
        baseline = self.ln_vocab
        warm = record.step >= self.ranks[record.rank].start_step + 50
        if warm and baseline and loss > baseline and record.step - self._last_high_warning >= 100:
            self._last_high_warning = record.step
            self._event(record.t, "warn", f"loss {loss:.3f} is above ln(vocab) = "
                                          f"{baseline:.2f} at step {record.step}")

    def _check_sync_jump(self, record: StepRecord) -> None:
        recent = self.recent[record.rank]
        if len(recent) < 20 or record.step % 5:  # every 5th step: the fold of a long history
            return                               # stays fast, an alert is at most 5 steps late
        shares = [r.sync.exposed / r.dt if r.sync and r.dt > 0 else 0.0 for r in recent]
        before, now = _median(shares[:-5]), _median(shares[-5:])
        jumped = now - before > 0.15 and now > 1.5 * before
        if jumped and record.step - self._last_sync_warning >= 100:
            self._last_sync_warning = record.step
            self._event(record.t, "warn", f"sync share jumped from {before:.0%} to {now:.0%} "
                                          f"at step {record.step}")

    def apply_status(self, status: dict | None) -> None:
        if status is None or status == self.status:
            return
        self.status = status
        code = status.get("exit_code")
        level = "info" if code == 0 else "error"
        self._event(status.get("ended") or 0.0, level,
                    f"trainer exited with code {code} ({status.get('reason', '')})")

    def tick(self, now: float) -> None:
        """Mark ranks that stopped reporting or are stuck waiting (the time-driven part)."""
        self.now = now
        step_s = self.step_seconds() or 0
        limit = max(STALE_AFTER_S, 10 * step_s)
        for info in self.ranks.values():
            silent = info.last_t is not None and info.ended is None and now - info.last_t > limit
            if silent and not info.stale and self.status is None:
                self._event(now, "warn", f"rank {info.rank} has not reported a step for "
                                         f"{now - info.last_t:.0f} s (last step {info.last_step})")
            info.stale = silent
        for info in self.ranks.values():
            waited = self._waiting_s(info, now)
            stuck = waited is not None and waited > max(STUCK_AFTER_S, 5 * step_s)
            if stuck and not info.stuck and self.status is None:
                self._event(now, "warn", f"rank {info.rank} has waited {waited:.0f} s in "
                                         f"{_sync_name(info.activity)} at step "
                                         f"{info.activity.step}{self._waited_for(info, now)}")
            info.stuck = stuck

    def _waiting_s(self, info: RankInfo, now: float) -> float | None:
        activity = info.activity
        if activity is None or activity.waiting_since is None or info.ended or info.gone \
                or info.frozen:
            return None
        return now - activity.waiting_since

    def _waited_for(self, waiter: RankInfo, now: float) -> str:
        """'; rank 1 is in forward (for 6 s)': the ranks it waits for, as far as seen here."""
        parts = []
        for info in sorted(self.ranks.values(), key=lambda i: i.rank):
            if info is waiter or self._waiting_s(info, now) is not None:
                continue
            if info.gone:
                parts.append(f"rank {info.rank} is gone")
            elif info.frozen:
                parts.append(f"rank {info.rank} is stopped")
            elif info.ended:
                parts.append(f"rank {info.rank} has ended ({info.ended})")
            elif info.activity is not None:
                parts.append(f"rank {info.rank} is in {info.activity.phase} "
                             f"(for {now - info.activity.since:.0f} s)")
        if not parts and self.nnodes > 1:
            parts.append("a rank on another node")
        return "; waiting for " + ", ".join(parts) if parts else ""

    def observe_activity(self, rank: int, activity) -> None:
        """Where a rank is now (scalemon.activity.Activity), read from its activity file."""
        info = self.ranks.get(rank)
        if info is not None and activity is not None:
            info.activity = activity

    def observe_process(self, rank: int, status: str | None, now: float) -> None:
        """A rank's process status as psutil names it ("running", "stopped" ...); None: gone."""
        info = self.ranks.get(rank)
        if info is None or info.ended or info.gone:
            return
        if status is None:
            self.rank_gone(rank, now)
            return
        frozen = status in ("stopped", "tracing-stop")
        if frozen != info.frozen:
            self._event(now, "warn" if frozen else "info",
                        f"rank {rank} (pid {info.pid}) is stopped (SIGSTOP, Ctrl-Z or a "
                        "debugger); its peers wait for it" if frozen else
                        f"rank {rank} (pid {info.pid}) runs again")
        info.frozen = frozen

    def rank_gone(self, rank: int, now: float) -> None:
        """A rank's process is gone without an end record: killed or crashed hard."""
        info = self.ranks.get(rank)
        if info is None or info.ended or info.gone:
            return
        info.gone = True
        text = f"rank {rank} (pid {info.pid}) is gone without an end record (killed?)"
        if info.activity is not None and info.activity.phase not in ("ended", ""):
            text += f", in {info.activity.phase} of step {info.activity.step}"
        # Its peers can finish no collective without it: those seen waiting are stuck.
        waiting = [i.rank for i in self.ranks.values() if i is not info and not i.gone and (
            i.stuck or i.activity is not None and i.activity.waiting_since is not None)]
        if waiting:
            names = ", ".join(str(r) for r in sorted(waiting))
            text += (f"; rank{'s' if len(waiting) > 1 else ''} {names} "
                     f"{'are' if len(waiting) > 1 else 'is'} stuck in sync waiting for it")
        self._event(now, "error", text)

    def _event(self, t: float, level: str, text: str) -> None:
        self.events.append(Event(t, level, text))
        self.event_count += 1

    def note(self, t: float, level: str, text: str) -> None:
        """Log an event that comes from outside the records (a monitor's own observations)."""
        self._event(t, level, text)

    # --- derived views ---------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where the steps come from: "probe" (step records) or "log" (parsed log lines)."""
        return str(self.meta.get("source") or "probe")

    @property
    def ln_vocab(self) -> float | None:
        return math.log(self.vocab) if self.vocab else None

    @property
    def step(self) -> int:
        """The last step the loss rank (rank 0) finished; -1 before the first."""
        return self.loss_steps[-1] if self.loss_steps else -1

    @property
    def loss(self) -> float | None:
        return self.loss_values[-1] if self.loss_values else None

    def smoothed_loss(self, alpha: float = 0.1) -> float | None:
        """Bias-corrected EMA over the recent window (nanochat smooths the same way)."""
        values = [v for v in self.loss_values[-200:] if math.isfinite(v)]
        if not values:
            return None
        ema = 0.0
        for v in values:
            ema = (1 - alpha) * ema + alpha * v
        return ema / (1 - (1 - alpha) ** len(values))

    def _window(self) -> list[StepRecord]:
        out = []
        for rank, recent in self.recent.items():
            start = self.ranks[rank].start_step + WARMUP_STEPS
            out.extend(r for r in recent if r.step >= start)
        return out or [r for recent in self.recent.values() for r in recent]

    def split(self) -> Split | None:
        window = self._window()
        if not window or self.source == "log":
            return None

        def phase(name):
            return _median(r.phases.get(name, 0.0) for r in window)

        sync = _median(r.sync.exposed if r.sync else 0.0 for r in window)
        backward = _median(r.phases.get("backward", 0.0) - (r.sync.exposed if r.sync else 0.0)
                           for r in window)
        data, forward, optimizer = phase("data"), phase("forward"), phase("optimizer")
        total = _median(r.dt for r in window)
        other = max(0.0, total - (data + forward + backward + sync + optimizer))
        synced = [r for r in window if r.sync]
        comm = _median(r.sync.comm for r in synced) if synced else 0.0
        nbytes = int(_median(r.sync.bytes for r in synced)) if synced else 0
        world = self.world or 1
        bus = 2 * (world - 1) / world * nbytes * 8 / comm if comm > 0 else math.nan
        return Split(data=data, forward=forward, backward=max(0.0, backward), sync=sync,
                     optimizer=optimizer, other=other, total=total, comm=comm,
                     overlap=_median(r.sync.overlap for r in synced) if synced else 0.0,
                     bytes=nbytes, bus_bit_s=bus, steps=len(window))

    def split_missing(self) -> str | None:
        """Why `split()` is None (None when it is not)."""
        if self.source == "log":
            return PROBE_HINT
        return None if self._window() else "waiting"

    def straggler(self) -> Straggler | None:
        """The rank whose last gradient bucket is ready last; its peers wait that long."""
        late_counts: dict[int, int] = {}
        waits = []
        for ready in self.ready_by_step.values():
            if len(ready) < 2 or (self.world and len(ready) < self.world):
                continue
            late = max(ready, key=ready.get)
            late_counts[late] = late_counts.get(late, 0) + 1
            waits.append(ready[late] - min(ready.values()))
        if not waits:
            return None
        return Straggler(rank=max(late_counts, key=late_counts.get), wait_s=_median(waits))

    def step_seconds(self) -> float | None:
        intervals = self._intervals()
        return _median(i for i, _ in intervals) if intervals else None

    def _intervals(self) -> list[tuple[float, int]]:
        """(seconds, tokens) between consecutive steps, skipping warm-up and checkpoints."""
        start = self.ranks[self.loss_rank].start_step if self.loss_rank in self.ranks else 0
        out = []
        times = list(self.step_times)
        for (s0, t0, _), (s1, t1, tokens) in zip(times, times[1:], strict=False):
            # A log may print every k-th step: the interval is spread over the steps it covers.
            if s1 <= s0 or s0 < start + WARMUP_STEPS - 1 or \
                    _any_in(self.checkpoint_steps, s0, s1):
                continue
            out.append(((t1 - t0) / (s1 - s0), tokens))
        return out

    def eta(self) -> Eta | None:
        intervals = self._intervals()
        if not intervals or not self.horizon:
            return None
        seconds = [i for i, _ in intervals]
        remaining = max(0, self.horizon - (self.step + 1))
        step_s = _median(seconds)
        tok_s = _median(tokens / s for s, tokens in intervals if s > 0)
        return Eta(remaining_steps=remaining, step_s=step_s,
                   low_s=remaining * _quantile(seconds, 0.25), mid_s=remaining * step_s,
                   high_s=remaining * _quantile(seconds, 0.75), tok_s=tok_s)

    def eta_missing(self) -> str | None:
        """Why `eta()` is None (None when it is not)."""
        if not self.horizon:
            return "no horizon: give --steps N" if self.source == "log" else "no horizon"
        return None if self.eta() is not None else "waiting for steps"

    def regime(self) -> tuple[str, str]:
        """(name, plain-words advice): compute-, sync-, input- or straggler-bound."""
        split = self.split()
        if self.source == "log":
            return "unknown", f"the compute/sync split {PROBE_HINT}"
        if split is None or not split.total > 0:
            return "unknown", "waiting for steps"
        straggler = self.straggler()
        advice = self.sync_advice()
        if advice is not None:
            return "sync-bound", (f"sync is {split.share('sync'):.0%} of a step; "
                                  f"{advice_text(advice)}")
        if straggler and straggler.wait_s > 0.1 * split.total:
            return "straggler-bound", (f"rank {straggler.rank} is late by "
                                       f"{straggler.wait_s:.2f} s a step; its peers wait")
        if split.share("data") > 0.2:
            return "input-bound", f"data loading is {split.share('data'):.0%} of a step"
        return "compute-bound", "forward and backward set the pace"

    def state(self) -> str:
        """starting | training | stalled | finished | stopped | failed."""
        ends = {info.ended for info in self.ranks.values()}
        if self.status is not None:
            code = self.status.get("exit_code")
            if code != 0:
                return "failed"
            return "stopped" if "stopped" in ends else "finished"
        if "error" in ends or any(info.gone for info in self.ranks.values()):
            return "failed"
        if self.ranks and None not in ends:
            return "stopped" if "stopped" in ends else "finished"
        if self.step < 0:
            return "starting"
        # A remote node's silence is its relay's (shown as behind): DDP steps in lockstep,
        # so while this node's ranks step, the run is not stalled.
        if any(info.stuck or info.stale and (info.node == self.node_rank or self.nnodes == 1)
               for info in self.ranks.values()):
            return "stalled"
        return "training"

    def summary(self) -> dict:
        """Everything a view needs, as plain data (also the JSON export)."""
        split, eta, straggler = self.split(), self.eta(), self.straggler()
        regime, advice = self.regime()
        return {
            "name": self.name,
            "source": self.source,
            "state": self.state(),
            "step": self.step,
            "horizon": self.horizon,
            "world": self.world,
            "depth": self.depth,
            "vocab": self.vocab,
            "ln_vocab": self.ln_vocab,
            "unigram_entropy": self.meta.get("unigram_entropy"),
            "entropy_rate": self.meta.get("entropy_rate"),
            "loss": self.loss,
            "smoothed_loss": self.smoothed_loss(),
            "split": None if split is None else asdict(split),
            "straggler": None if straggler is None else asdict(straggler),
            "eta": None if eta is None else asdict(eta),
            "regime": regime,
            "advice": advice,
            "split_missing": None if split is not None else self.split_missing(),
            "eta_missing": None if eta is not None else self.eta_missing(),
            "ranks": [asdict(info) for info in sorted(self.ranks.values(),
                                                      key=lambda i: i.rank)],
            "events": [asdict(e) for e in self.events],
            "status": self.status,
            "records": self.records,
            "sync_model": _plain(self.sync_model()),
            "sync_advice": _plain(self.sync_advice()),
            "nodes_behind": [asdict(lag) for lag in self.nodes_behind()],
            "relay": self.relay,
        }

    # --- across machines -------------------------------------------------------------

    def node_of(self, rank: int) -> int:
        return rank // self.nproc if self.nproc else 0

    def apply_relay(self, status: dict | None) -> None:
        self.relay = status

    def observe_network(self, bytes_per_step: float | None, nic_bit_s: float | None) -> None:
        """What the network probe saw: bytes sent per step, the run interface's speed."""
        self.net_bytes_per_step = bytes_per_step
        self.nic_bit_s = nic_bit_s if nic_bit_s and math.isfinite(nic_bit_s) else None

    def micro_steps(self) -> int:
        """Micro-steps per allreduce in the recent window (gradient accumulation)."""
        window = self._window()
        return max(1, round(_median(r.micro_steps for r in window))) if window else 1

    def sync_model(self) -> SyncModel | None:
        """Measured sync beside the ring model's prediction for the link, once its speed is
        known (`--link`, or the run interface's; loopback has none)."""
        split = self.split()
        link, source = (self.link_bit_s, "--link") if self.link_bit_s else (self.nic_bit_s, "NIC")
        ring = self.world or 1
        if split is None or split.bytes <= 0 or not link or ring < 2:
            return None
        return SyncModel(exposed_s=split.sync, comm_s=split.comm, bytes=split.bytes,
                         bus_bit_s=split.bus_bit_s,
                         predicted_s=scaling.ring_allreduce_seconds(split.bytes, ring, link),
                         link_bit_s=link, link_source=source, ring=ring,
                         net_bytes=self.net_bytes_per_step)

    def predict_accumulation(self, micro_steps: int) -> tuple[float, float] | None:
        """(step seconds, sync share) with `micro_steps` per allreduce: compute per
        micro-step scales, optimizer and sync stay once per step."""
        split = self.split()
        if split is None or not split.total > 0:
            return None
        compute = (split.data + split.forward + split.backward) / self.micro_steps()
        step_s = micro_steps * compute + split.optimizer + split.other + split.sync
        return step_s, split.sync / step_s if step_s > 0 else math.nan

    def sync_advice(self) -> SyncAdvice | None:
        """When sync dominates: micro-steps per allreduce that bring it under SYNC_TARGET."""
        split = self.split()
        if split is None or not split.share("sync") > SYNC_BOUND:
            return None
        now = self.micro_steps()
        compute = (split.data + split.forward + split.backward) / now
        if compute <= 0:
            return None
        k = scaling.accumulation_for_sync_share(compute, split.sync, SYNC_TARGET)
        step_s, share = self.predict_accumulation(k)
        tokens = self.tokens_per_step // now * k if self.tokens_per_step else None
        return SyncAdvice(micro_steps=k, now_micro_steps=now, tokens_per_step=tokens,
                          step_s=step_s, sync_share=share,
                          tok_s=tokens / step_s if tokens and step_s > 0 else None)

    def nodes_behind(self, now: float | None = None) -> list[NodeLag]:
        """On node 0 of a multi-node run: the nodes whose records lag, and their relay."""
        if self.nnodes < 2 or self.node_rank != 0 or not self.nproc or not self.ranks:
            return []
        now = now or self.now or max((i.last_t or 0.0) for i in self.ranks.values())
        lead = max(info.last_step for info in self.ranks.values())
        nodes = (self.relay or {}).get("nodes") or {}
        lags = []
        for node in range(1, self.nnodes):
            infos = [self.ranks.get(rank) for rank in
                     range(node * self.nproc, (node + 1) * self.nproc)]
            last = min(info.last_step if info else -1 for info in infos)
            newest = max((info.last_t for info in infos if info and info.last_t), default=None)
            if lead - last < 2 or (newest is not None and now - newest < LAG_GRACE_S):
                continue
            link = nodes.get(str(node)) if isinstance(nodes, dict) else None
            up = link.get("connected") if isinstance(link, dict) else None
            since = link.get("since") if isinstance(link, dict) else None
            down_s = now - since if up is False and isinstance(since, (int, float)) else None
            hosts = tuple(sorted({info.host for info in infos if info and info.host}))
            lags.append(NodeLag(node=node, hosts=hosts, steps_behind=lead - last,
                                reported=any(infos), relay_up=up, relay_down_s=down_s))
        return lags

    def relay_down_s(self, now: float | None = None) -> float | None:
        """On the other nodes: how long node 0 has been out of reach (None while it is not)."""
        relay = self.relay or {}
        if relay.get("role") != "client" or relay.get("connected") or relay.get("delivered"):
            return None
        since = relay.get("since")
        now = now or self.now
        return now - since if isinstance(since, (int, float)) and now else None


def advice_text(advice: SyncAdvice) -> str:
    """'34 micro-steps per allreduce (--tokens-per-step 34816) would bring it under 10%: ...'"""
    text = f"{advice.micro_steps} micro-steps per allreduce"
    if advice.tokens_per_step:
        text += f" (--tokens-per-step {advice.tokens_per_step})"
    text += (f" would bring it under {SYNC_TARGET:.0%}: {format_duration(advice.step_s)} "
             "a step")
    if advice.tok_s:
        text += f", {format_count(advice.tok_s)} tok/s"
    return text


def _sync_name(activity) -> str:
    """'gradient sync' for DDP's allreduce, else the collective's own name (a stop vote)."""
    return "gradient sync" if activity.phase in ("backward", "step") else activity.phase


def _plain(value) -> dict | None:
    return None if value is None else asdict(value)

