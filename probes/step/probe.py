"""The in-trainer step probe: times each step's phases and gradient sync, writes records.

Records go to RUN_DIR/ranks/rank-<RANK>.jsonl (durable) and, best effort, as datagrams to
every live monitor socket in RUN_DIR/monitors/. Neither path ever blocks the training step
or raises into it: a failed file write keeps the record in a bounded backlog that is retried
on the next record; a datagram that cannot be delivered is counted as a drop.

Exposed gradient sync is measured with a DDP comm hook, not by timing a barrier after
backward (that reads ~0 under DDP, see DESIGN.md "The measurement trap"): exposed = end of
the synced backward minus the time the last gradient bucket became ready.

torch is imported only inside the functions that need it, so `import scalemon.probes` stays
cheap for the monitor.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalemon.core import layout
from scalemon.core.codec import encode
from scalemon.core.errors import RecordError
from scalemon.core.records import (
    END_REASONS,
    CheckpointRecord,
    EndRecord,
    JSONScalar,
    MetaRecord,
    Record,
    StartRecord,
    StepRecord,
)
from scalemon.io.activity import ActivityWriter
from scalemon.io.recordfile import RecordFile
from scalemon.io.transport import MonitorSender
from scalemon.probes.step.buckets import BucketTimer
from scalemon.probes.step.calibration import CalibrationSchedule, schedule_from_env
from scalemon.probes.step.steps import (
    CALIBRATION_PHASE,
    NULL_PHASE,
    NULL_STEP,
    Collective,
    NullContext,
    NullStep,
    Step,
)

BACKLOG_RECORDS = 10_000


class StepProbe:
    """Per-rank step timer. Inactive (every method a cheap no-op) when run_dir is None."""

    # Set by scalemon.probes.inject while its probe runs in a script: a probe the script makes
    # itself takes over (the injected one lets go of the rank's file).
    on_explicit: Callable[[], None] | None = None

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None,
        *,
        rank: int = 0,
        world: int = 1,
        local_rank: int = 0,
        meta: dict[str, Any] | None = None,
        synchronize: Callable[[], Any] | None = None,
        backlog: int = BACKLOG_RECORDS,
        calibration: CalibrationSchedule | None = None,
    ) -> None:
        self.active = run_dir is not None
        self.rank = rank
        self.world = world
        self._synchronize = synchronize
        self._calibration = calibration or CalibrationSchedule()
        self._synced_ddp = False  # a DDP model is attached over more than one rank
        self._last_step: int | None = None
        self._file: RecordFile | None = None
        self._monitors: MonitorSender | None = None
        if run_dir is None:  # inactive
            return
        if StepProbe.on_explicit is not None:
            StepProbe.on_explicit()
        run_dir = Path(run_dir)
        # perf_counter for durations (monotonic, fine-grained); this offset turns its
        # readings into unix time for the fields that other ranks' clocks are compared with.
        self._wall_offset = time.time() - time.perf_counter()
        self._activity = ActivityWriter(run_dir / layout.activity_file(rank))
        self._buckets = BucketTimer(self._activity)
        self._file = RecordFile(run_dir / layout.rank_file(rank), backlog)
        self._monitors = MonitorSender(run_dir / layout.MONITORS)
        start = StartRecord(
            rank=rank,
            t=time.time(),
            pid=os.getpid(),
            host=socket.gethostname(),
            world=world,
            local_rank=local_rank,
            meta=dict(meta or {}),
        )
        # Encoded here, not in _emit, so bad meta fails loudly at startup, not silently later.
        self._send(encode(start))

    @classmethod
    def from_env(cls, meta: dict[str, Any] | None = None) -> StepProbe:
        """Active only when SCALEMON_RUN_DIR is set; rank and world from torchrun's env."""
        run_dir = os.environ.get(layout.RUN_DIR_ENV) or None
        synchronize = None
        if run_dir and meta and str(meta.get("device", "")).startswith("cuda"):
            import torch

            synchronize = torch.cuda.synchronize
        return cls(
            run_dir,
            rank=int(os.environ.get("RANK", "0")),
            world=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            meta=meta,
            synchronize=synchronize,
            calibration=schedule_from_env(),
        )

    @property
    def lost(self) -> int:
        """Records whose file write failed when emitted (retried from the backlog)."""
        return self._file.lost if self._file else 0

    @property
    def discarded(self) -> int:
        """Records given up for good because the backlog was full."""
        return self._file.discarded if self._file else 0

    @property
    def drops(self) -> int:
        """Datagrams not delivered to a monitor socket."""
        return self._monitors.drops if self._monitors else 0

    def attach_ddp(self, model: Any) -> None:
        """Time gradient sync through a comm hook wrapping DDP's normal allreduce.

        A plain module (world size 1, no DDP) is accepted: there is no sync to time.
        A model on CUDA makes phase ends synchronize the device so they are GPU-accurate.
        """
        if not self.active:
            return
        first = next(model.parameters(), None)
        if self._synchronize is None and first is not None and first.is_cuda:
            import torch

            self._synchronize = torch.cuda.synchronize
        if hasattr(model, "register_comm_hook"):
            import torch.distributed as dist

            group = getattr(model, "process_group", None) or dist.group.WORLD
            # torch's own all_reduce, not scalemon.probes.inject's wrapper: DDP's buckets are
            # not the script's collectives.
            self._buckets.all_reduce = getattr(dist.all_reduce, "__wrapped__", dist.all_reduce)
            self._buckets.process_group = group
            self._buckets.world = dist.get_world_size(group)
            model.register_comm_hook(self._buckets, BucketTimer.comm_hook)
            self._synced_ddp = self._buckets.world > 1

    def sync_with(self, hook: Callable[[Any], Any]) -> None:
        """Time a comm hook of the script's own (hook(bucket) -> Future[Tensor]) in place of
        DDP's default allreduce, on the model attach_ddp attached."""
        buckets = getattr(self, "_buckets", None)
        if buckets is not None:
            buckets.inner = hook

    def step(self, step: int, tokens: int = 0, lr: float | None = None) -> Step | NullStep:
        """Context manager timing one optimizer step; emits a step record on normal exit."""
        if not self.active:
            return NULL_STEP
        return Step(self, step, tokens, lr)

    def collective(self, name: str) -> Collective | NullContext:
        """Mark a collective of the loop's own (a stop vote, a metric all-reduce) as a wait,
        so a rank stuck in it shows as waiting for its peers, like one stuck in gradient sync."""
        if not self.active:
            return NULL_PHASE
        return Collective(self, name)

    def describe(self, meta: dict[str, JSONScalar]) -> None:
        """What was learned after the start (the model a script builds): merged into the
        start's meta by every reader."""
        if self.active:
            self._emit(lambda: MetaRecord(rank=self.rank, t=time.time(), meta=dict(meta)))

    def checkpoint(self, step: int, path: str | os.PathLike[str], seconds: float,
                   error: str | None = None) -> None:
        """A checkpoint written, or with `error`, one that could not be (training goes on)."""
        if self.active:
            self._emit(
                lambda: CheckpointRecord(rank=self.rank, t=time.time(), step=step,
                                         path=str(path), seconds=seconds, error=error)
            )

    def close(self, reason: str = "finished", message: str | None = None) -> None:
        """Emit the end record and close the file; later calls do nothing."""
        if reason not in END_REASONS:
            raise ValueError(f"reason must be one of {END_REASONS}, not {reason!r}")
        if self.active:
            self._emit(
                lambda: EndRecord(
                    rank=self.rank,
                    t=time.time(),
                    reason=reason,
                    step=self._last_step,
                    message=None if message is None else str(message),
                )
            )
            self.release()
        # DDP keeps the hook state alive until interpreter exit; a process group still
        # referenced from it then is torn down too late and gloo aborts (SIGABRT).
        buckets = getattr(self, "_buckets", None)
        if buckets is not None:
            buckets.process_group = None
            buckets.all_reduce = None

    def release(self) -> None:
        """Stop recording and close the files, without an end record (another probe takes
        the rank). A comm hook already registered goes on syncing, untimed."""
        if not self.active:
            return
        self.active = False
        assert self._file is not None and self._monitors is not None  # set while active
        self._file.close()
        self._monitors.close()
        self._activity.close(-1 if self._last_step is None else self._last_step, time.time())
        self._buckets.passthrough = True

    def __enter__(self) -> StepProbe:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or (exc_type is SystemExit and exc.code in (0, None)):
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("stopped")
        else:
            self.close("error", f"{exc_type.__name__}: {exc}")

    def _emit(self, make_record: Callable[[], Record]) -> None:
        try:
            data = encode(make_record())
        except (RecordError, TypeError, ValueError, OverflowError):
            # A value the schema rejects (negative tokens, a NaN lr ...): a caller's bug, but
            # not one to stop training for. The record is never written; count it as lost.
            assert self._file is not None  # only an active probe emits
            self._file.lost += 1
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        assert self._file is not None and self._monitors is not None  # only an active probe sends
        self._file.write(data)
        self._monitors.send(data)

    def _emit_step(self, s: Step, dt: float) -> None:
        if not self.active:
            return  # closed while the step ran
        self._last_step = s.step
        try:
            loss = None if s.loss is None else float(s.loss)  # a tensor, numpy scalar ...
        except (TypeError, ValueError):
            loss = None
        nosync = statistics.median(s.nosync_backward) if s.nosync_backward else None
        sample_s = s.phases.get(CALIBRATION_PHASE)
        compute_s = s.phases.get("forward", 0.0) + s.phases.get("backward", 0.0)
        self._calibration.observed(dt, compute_s, sample_s,
                                   accumulated=bool(s.nosync_backward) and sample_s is None)
        monitors, file = self._monitors, self._file
        assert monitors is not None and file is not None  # set while active
        self._emit(
            lambda: StepRecord(
                rank=self.rank,
                t=time.time(),
                step=s.step,
                dt=dt,
                phases=s.phases,
                tokens=int(s.tokens),
                loss=loss,
                lr=None if s.lr is None else float(s.lr),
                micro_steps=max(1, s.micro_steps),
                sync=s.sync,
                nosync_backward=nosync,
                synced_backward=s.synced_backward,
                drops=monitors.drops,
                lost=file.lost,
                collectives=s.own.timing(),
                data=s.data,
            )
        )


