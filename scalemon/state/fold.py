"""RunState: the pure fold of records and observations into what the monitor knows of a run.

It changes only through `apply(record or observation)`. Records may arrive twice (file and
socket) or late; `apply` drops duplicates and tolerates any order. What follows from the state
(the split, the ETA, the regime ...) is computed in scalemon.state.analysis and frozen into a
`Summary` (scalemon.state.summary) for the views.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from scalemon.core.config import RelayStatus, RunConfig, RunPhase, RunStatus
from scalemon.core.logparse import EvalLine, StepLine
from scalemon.core.records import (
    CheckpointRecord,
    EndRecord,
    JSONScalar,
    MetaRecord,
    Record,
    StartRecord,
    StepRecord,
)
from scalemon.core.snapshots import SystemSnapshot
from scalemon.state import liveness
from scalemon.state.alerts import Alerts
from scalemon.state.events import Event, EventLog, Level
from scalemon.state.observations import (
    ActivitySeen,
    LogRestarted,
    Note,
    Observation,
    ProcessSeen,
    RelaySeen,
    ScriptPrinted,
    StatusSeen,
    StderrSeen,
    SystemSeen,
    Tick,
)
from scalemon.state.ranks import OBSERVED_FIELDS, RankInfo, add_step
from scalemon.state.series import Ema, LossSeries

RECENT = 100  # steps per rank in the rolling window for medians (steady on a noisy machine)
SYNC_HISTORY = 120  # steps of sync share kept for the split panel's history
SMOOTHED_OVER = 200  # the smoothed loss is the EMA of this many last steps
WINDOW_MAX = RECENT + RECENT // 4  # step windows are trimmed back to RECENT past this
SEEN_KEPT = 4096  # records remembered per rank to drop duplicates
NOSYNC_SAMPLES = 32  # no_sync backward samples kept per rank for the compute estimate
RESUME_LOSSES = 5  # losses before a resume whose median it is to continue from
_RECORD_TYPES = (StepRecord, StartRecord, MetaRecord, CheckpointRecord, EndRecord)


@dataclass(frozen=True)
class Resume:
    """Rank 0 restarted at `step` (from a checkpoint); the loss it had just before."""

    step: int
    t: float
    loss_before: float | None


@dataclass
class DataCheck:
    """Steps whose first batch every rank fingerprinted: how many, and how many had two ranks
    on the same batch (the first such step is kept to say)."""

    checked: int = 0
    same: int = 0
    first_step: int | None = None
    first_same: int | None = None


class RunState:
    def __init__(self, config: RunConfig | None = None, source: str = "probe") -> None:
        self.config = config or RunConfig()
        self.source = source  # where steps come from: "probe" (records) or "log" (parsed lines)
        self.meta: dict[str, JSONScalar] = {}  # the start records' meta (n_params, device ...)
        self.depth: int | None = self.config.model.depth
        self.vocab: int | None = self.config.model.vocab
        self.horizon: int | None = self.config.train.steps
        self.tokens_per_step: int | None = self.config.train.tokens_per_step
        self.world: int | None = self.config.launch.world_size
        self.nic_bit_s: float | None = None  # the run interface's speed, when known
        self.net_bytes_per_step: float | None = None  # sent on the run interface per step
        self.system: SystemSnapshot | None = None  # the last poll of the system probes
        self.relay: RelayStatus | None = None  # the relay's status (relay.json)
        self.status: RunStatus | None = None  # how the launcher ended (status.json)
        self.stderr_tail: tuple[str, ...] = ()  # the trainer's last stderr lines, once failed
        self.printed: StepLine | None = None  # a probed script's own last step line
        self.printed_eval: EvalLine | None = None  # ... and its last evaluation line
        self.now: float | None = None  # the last tick
        self.tick_step_s = (-math.inf, 0.0)  # liveness's median step, and when it was taken
        self.ranks: dict[int, RankInfo] = {}
        self.loss_steps = array("q")  # loss of the lowest reporting rank, by step
        self.loss_values = array("d")
        self.loss_rank: int | None = None
        self.recent: dict[int, deque[StepRecord]] = {}
        # step -> rank -> when the rank reached the step's sync (unix time)
        self.ready_by_step: dict[int, dict[int, float]] = {}
        # Per rank, backward times under no_sync (accumulation, calibration): compute alone.
        self.nosync: dict[int, deque[float]] = {}
        self.step_times: deque[tuple[int, float, int]] = deque(maxlen=RECENT + 1)
        self.sync_history: deque[float] = deque(maxlen=SYNC_HISTORY)  # exposed sync / dt
        self.checkpoint_steps: set[int] = set()
        self.last_checkpoint: CheckpointRecord | None = None
        self.first_checkpoint: CheckpointRecord | None = None  # the first written
        self.resumes: list[Resume] = []
        self.data_check = DataCheck()
        self._data_by_step: dict[int, dict[int, int]] = {}  # step -> rank -> fingerprint
        self.events = EventLog()
        self.records = 0
        self.duplicates = 0
        self.series = LossSeries()  # the loss downsampled, brought up to date when summarized
        self._seen: dict[int, list[set[tuple[str, float, int | None]]]] = {}
        self._alerts = Alerts()
        self._handlers: dict[type, Callable[[Any], None]] = {
            StartRecord: self._apply_start, StepRecord: self._apply_step,
            MetaRecord: self._apply_meta, CheckpointRecord: self._apply_checkpoint,
            EndRecord: self._apply_end,
            StatusSeen: self._apply_status, RelaySeen: self._apply_relay,
            SystemSeen: self._apply_system, StderrSeen: self._apply_stderr,
            ActivitySeen: lambda o: liveness.observe_activity(self, o.rank, o.activity),
            ProcessSeen: lambda o: liveness.observe_process(self, o.rank, o.status, o.t),
            Note: lambda o: self.log(o.t, o.level, o.text),
            LogRestarted: self._apply_log_restart, ScriptPrinted: self._apply_printed,
            Tick: lambda o: liveness.tick(self, o.now),
        }

    # --- what views read directly ---------------------------------------------------------

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

    @property
    def phase(self) -> RunPhase:
        """starting | training | stalled | finished | stopped | failed."""
        return liveness.phase(self)

    def smoothed_loss(self) -> float | None:
        """Bias-corrected EMA over the recent steps (nanochat smooths the same way)."""
        ema = Ema()
        for value in self.loss_values[-SMOOTHED_OVER:]:
            ema.add(value)
        return None if math.isnan(ema.value) else ema.value

    def node_of(self, rank: int) -> int:
        return self.config.launch.node_of(rank)

    def log(self, t: float, level: Level, text: str) -> None:
        self.events.add(t, level, text)

    def take_observations(self, shown: RunState, history: list[Event], shown_before: int
                          ) -> None:
        """Become the state to show in `shown`'s place (this one folded the same records from
        the files): take what the monitor observed into `shown` since, and its events.

        The events: this fold's own `history`, then those `shown` logged after its first
        `shown_before` (live records, the monitor's notes). Views count events to find new
        ones: none of the history is new to them."""
        since = shown.events.count - shown_before
        logged = list(shown.events)[-since:] if since > 0 else []
        self.events = EventLog(history + logged, count=shown.events.count)
        self.status, self.relay, self.now = shown.status, shown.relay, shown.now
        self.system, self.stderr_tail = shown.system, shown.stderr_tail
        self.nic_bit_s, self.net_bytes_per_step = shown.nic_bit_s, shown.net_bytes_per_step
        for rank, info in shown.ranks.items():
            if rank in self.ranks:
                for name in OBSERVED_FIELDS:
                    setattr(self.ranks[rank], name, getattr(info, name))

    # --- folding ----------------------------------------------------------------------

    def apply(self, item: Record | Observation) -> bool:
        """Fold a record or an observation in; False for a record already seen."""
        if isinstance(item, _RECORD_TYPES):  # a tuple: isinstance of a union is slower
            record = item  # narrowed to a record
            # A duplicate is one among the rank's last SEEN_KEPT records (to twice as many):
            # the newer keys and the older, swapped when the newer are full, cost no eviction
            # per record (inline: this runs a million times in a replay).
            kept = self._seen.get(record.rank)
            if kept is None:
                kept = self._seen[record.rank] = [set(), set()]
            newer, older = kept
            key = (record.kind, record.t, getattr(record, "step", None))
            if key in newer or key in older:
                self.duplicates += 1
                return False
            newer.add(key)
            if len(newer) >= SEEN_KEPT:
                kept[:] = [set(), newer]
            self.records += 1
            info = self.ranks.get(record.rank)
            if info is None:  # not setdefault: a RankInfo per record is a fifth of apply's time
                info = self.ranks[record.rank] = RankInfo(record.rank,
                                                          node=self.node_of(record.rank))
            info.stale = False
        self._handlers[type(item)](item)
        return True

    def apply_all(self, items: Iterable[Record | Observation]) -> int:
        """apply() each in turn (a loop in C: a replay folds a million); how many were new."""
        return sum(map(self.apply, items))

    def _apply_start(self, record: StartRecord) -> None:
        info = self.ranks[record.rank]
        info.pid, info.host, info.started = record.pid, record.host, record.t
        info.gone = False
        start_step = record.meta.get("start_step")
        info.start_step = start_step if isinstance(start_step, int) else 0
        info.ended = None
        self._take_meta(record.meta)
        if self.source != "log":  # a log's start record is made up: its world is a placeholder
            self.world = self.world or record.world
        if record.rank == 0 and info.start_step:
            before = [v for step, v in zip(self.loss_steps, self.loss_values, strict=True)
                      if step < info.start_step and math.isfinite(v)][-RESUME_LOSSES:]
            self.resumes.append(Resume(info.start_step, record.t,
                                       statistics.median(before) if before else None))
        if record.rank == 0:
            verb = "resumed at step" if info.start_step else "started at step"
            self.log(record.t, Level.INFO, f"rank 0 {verb} {info.start_step} on {record.host}")

    def _take_meta(self, meta: dict[str, JSONScalar]) -> None:
        self.meta.update(meta)
        self.depth = self.depth or _whole(meta.get("depth"))
        self.vocab = self.vocab or _whole(meta.get("vocab"))
        self.horizon = self.horizon or _whole(meta.get("steps"))
        self.tokens_per_step = self.tokens_per_step or _whole(meta.get("tokens_per_step"))

    def _apply_meta(self, record: MetaRecord) -> None:
        said = self.meta.get("process_group")
        self._take_meta(record.meta)  # every rank finds the same model
        world = self.world or 1
        if record.meta.get("process_group") == "none" and said != "none" and world > 1:
            self.log(record.t, Level.WARN, f"{world} ranks, no process group: the ranks do not "
                                           "communicate (each trains its own copy)")

    def _apply_step(self, record: StepRecord) -> None:
        # The hot path of a replay (a million records): attributes are read once into locals.
        rank, step = record.rank, record.step
        info = self.ranks[rank]
        newest = step > info.last_step
        if step >= info.last_step:
            info.last_step, info.last_t = step, record.t
        add_step(info.steps, step)
        if record.drops > info.drops:
            info.drops = record.drops
        if record.lost > info.lost or info.losing:
            self._alerts.recording(self, info, record, newest)
        recent = self.recent.get(rank)
        if recent is None:
            recent = self.recent[rank] = deque(maxlen=RECENT)
        recent.append(record)
        if record.nosync_backward is not None:
            samples = self.nosync.get(rank)
            if samples is None:
                samples = self.nosync[rank] = deque(maxlen=NOSYNC_SAMPLES)
            samples.append(record.nosync_backward)
        # When the rank reached the step's sync: its last gradient bucket, else its first own
        # collective. The last rank there sets when the others' sync can finish.
        sync, collectives = record.sync, record.collectives
        arrived = sync.last_ready if sync is not None else \
            collectives.first_launch if collectives is not None and collectives.count else None
        if arrived is not None:
            ready = self.ready_by_step.get(step)
            if ready is None:
                ready = self.ready_by_step[step] = {}
                if len(self.ready_by_step) > WINDOW_MAX:
                    _keep_highest(self.ready_by_step)
            ready[rank] = arrived
        if record.data is not None:
            self._check_data(record, record.data)
        loss_rank = self.loss_rank
        if loss_rank is None or rank < loss_rank:
            self.loss_rank = loss_rank = rank
            self.loss_steps, self.loss_values = array("q"), array("d")
            self.step_times.clear()
            self.sync_history.clear()
        if rank == loss_rank:
            self._append_loss(record)
            self.step_times.append((step, record.t, record.tokens))
            self._alerts.loss(self, record)
            self._alerts.sync_jump(self, record)

    def _check_data(self, record: StepRecord, data: int) -> None:
        """Once every rank has fingerprinted a step's first batch: were any two the same?"""
        seen = self._data_by_step.get(record.step)
        if seen is None:
            seen = self._data_by_step[record.step] = {}
            if len(self._data_by_step) > WINDOW_MAX:
                _keep_highest(self._data_by_step)
        seen[record.rank] = data
        world = self.world or 0
        if world < 2 or len(seen) < world:
            return
        del self._data_by_step[record.step]
        check = self.data_check
        check.checked += 1
        if check.first_step is None:
            check.first_step = record.step
        if len(set(seen.values())) < len(seen):
            check.same += 1
            if check.first_same is None:
                check.first_same = record.step
                self.log(record.t, Level.WARN, f"ranks trained on the same batch at step "
                                               f"{record.step}: is the data sharded by rank?")

    def _append_loss(self, record: StepRecord) -> None:
        # A resume re-does the steps after the last checkpoint: they replace the old ones.
        if self.loss_steps and self.loss_steps[-1] >= record.step:
            self.sync_history.clear()
            while self.loss_steps and self.loss_steps[-1] >= record.step:
                self.loss_steps.pop()
                self.loss_values.pop()
        self.loss_steps.append(record.step)
        self.loss_values.append(math.nan if record.loss is None else record.loss)
        exposed = (record.sync.exposed if record.sync else 0.0) + \
            (record.collectives.blocked if record.collectives else 0.0)
        self.sync_history.append(exposed / record.dt if record.dt > 0 else 0.0)

    def _apply_checkpoint(self, record: CheckpointRecord) -> None:
        said = record.step in self.checkpoint_steps  # each rank saves its part of a step's
        self.checkpoint_steps.add(record.step)  # its time is not a step's, written or not
        if record.error is not None:
            self.log(record.t, Level.ERROR, record.error)
            return
        if self.last_checkpoint is None or record.t >= self.last_checkpoint.t:
            self.last_checkpoint = record
        first = self.first_checkpoint  # rank 0's file of the first step saved
        if first is None or (record.step, record.rank) < (first.step, first.rank):
            self.first_checkpoint = record
        if not said:
            self.log(record.t, Level.INFO, f"checkpoint at step {record.step} "
                                           f"({record.seconds:.1f} s)")

    def _apply_end(self, record: EndRecord) -> None:
        info = self.ranks[record.rank]
        info.ended, info.message = record.reason, record.message
        text = f"rank {record.rank} ended: {record.reason}"
        if record.message:
            text += f": {record.message}"
        self.log(record.t, Level.ERROR if record.reason == "error" else Level.INFO, text)

    def _apply_status(self, seen: StatusSeen) -> None:
        if seen.status == self.status:
            return
        self.status = status = seen.status
        level = seen.level or (Level.INFO if status.exit_code == 0 else Level.ERROR)
        self.log(status.ended or 0.0, level,
                 seen.text or f"trainer exited with code {status.exit_code} ({status.reason})")

    def _apply_relay(self, seen: RelaySeen) -> None:
        self.relay = seen.relay

    def _apply_system(self, seen: SystemSeen) -> None:
        self.system = seen.snapshot
        self.net_bytes_per_step = seen.net_bytes_per_step
        nic = seen.nic_bit_s
        self.nic_bit_s = nic if nic and math.isfinite(nic) else None

    def _apply_stderr(self, seen: StderrSeen) -> None:
        self.stderr_tail = seen.lines

    def _apply_printed(self, seen: ScriptPrinted) -> None:
        line = seen.line
        if isinstance(line, EvalLine):
            self.printed_eval = line
            self.log(seen.t, Level.INFO, f"the script's evaluation at {line.text()}")
            return
        self.printed = line
        if self.horizon is None and line.horizon:  # `step S/N`: the script's own horizon
            self.horizon = line.horizon
            self.log(seen.t, Level.INFO, f"horizon {line.horizon:,} steps, as the script "
                                         "prints it")

    def _apply_log_restart(self, seen: LogRestarted) -> None:
        self.horizon = seen.horizon


def _keep_highest(by_step: dict[int, Any]) -> None:
    """Keep the last RECENT steps of a step-keyed window past WINDOW_MAX, the lowest dropped
    first: a replay folds one rank's file, then the next, whose steps complete those kept
    (dropping by arrival would drop them before their peers come). In batches: a min() over
    the keys at every new step was a tenth of a replay's fold."""
    for step in sorted(by_step)[:-RECENT]:
        del by_step[step]


def _whole(value: JSONScalar) -> int | None:
    """A start record's meta value as a count (meta holds any JSON scalar)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None
