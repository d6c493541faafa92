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

import contextlib
import os
import socket
import stat
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalemon.activity import ActivityWriter, activity_path
from scalemon.core.codec import encode
from scalemon.core.errors import RecordError
from scalemon.core.records import (
    END_REASONS,
    CheckpointRecord,
    EndRecord,
    Record,
    StartRecord,
    StepRecord,
    SyncTiming,
)

BACKLOG_RECORDS = 10_000
MAX_SOCKET_ADDRESS = 108  # bytes in sockaddr_un.sun_path on Linux, the final NUL included
MONITOR_RESCAN_S = 2.0


class StepProbe:
    """Per-rank step timer. Inactive (every method a cheap no-op) when run_dir is None."""

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
    ) -> None:
        self.active = run_dir is not None
        self.rank = rank
        self.world = world
        self._synchronize = synchronize
        self._last_step: int | None = None
        self._file: _RecordFile | None = None
        self._monitors: _MonitorSender | None = None
        if not self.active:
            return
        run_dir = Path(run_dir)
        # perf_counter for durations (monotonic, fine-grained); this offset turns its
        # readings into unix time for the fields that other ranks' clocks are compared with.
        self._wall_offset = time.time() - time.perf_counter()
        self._activity = ActivityWriter(activity_path(run_dir, rank))
        self._buckets = _BucketTimer(self._activity)
        self._file = _RecordFile(run_dir / "ranks" / f"rank-{rank}.jsonl", backlog)
        self._monitors = _MonitorSender(run_dir / "monitors")
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
        run_dir = os.environ.get("SCALEMON_RUN_DIR") or None
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
            self._buckets.all_reduce = dist.all_reduce
            self._buckets.process_group = group
            self._buckets.world = dist.get_world_size(group)
            model.register_comm_hook(self._buckets, _BucketTimer.comm_hook)

    def step(self, step: int, tokens: int = 0, lr: float | None = None) -> _Step | _NullStep:
        """Context manager timing one optimizer step; emits a step record on normal exit."""
        if not self.active:
            return _NULL_STEP
        return _Step(self, step, tokens, lr)

    def collective(self, name: str) -> _Collective | _NullContext:
        """Mark a collective of the loop's own (a stop vote, a metric all-reduce) as a wait,
        so a rank stuck in it shows as waiting for its peers, like one stuck in gradient sync."""
        if not self.active:
            return _NULL_PHASE
        return _Collective(self, name)

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
        if not self.active:
            return
        self._emit(
            lambda: EndRecord(
                rank=self.rank,
                t=time.time(),
                reason=reason,
                step=self._last_step,
                message=None if message is None else str(message),
            )
        )
        self.active = False
        self._file.close()
        self._monitors.close()
        self._activity.close(-1 if self._last_step is None else self._last_step, time.time())
        # DDP keeps the hook state alive until interpreter exit; a process group still
        # referenced from it then is torn down too late and gloo aborts (SIGABRT).
        self._buckets.process_group = None
        self._buckets.all_reduce = None

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
            self._file.lost += 1
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        self._file.write(data)
        self._monitors.send(data)

    def _emit_step(self, s: _Step, dt: float) -> None:
        if not self.active:
            return  # closed while the step ran
        self._last_step = s.step
        try:
            loss = None if s.loss is None else float(s.loss)  # a tensor, numpy scalar ...
        except (TypeError, ValueError):
            loss = None
        nosync = statistics.median(s.nosync_backward) if s.nosync_backward else None
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
                drops=self._monitors.drops,
                lost=self._file.lost,
            )
        )


class _Step:
    """One step in progress: phase sums over micro-steps, backward samples, sync timing."""

    __slots__ = (
        "probe",
        "step",
        "tokens",
        "lr",
        "loss",
        "phases",
        "micro_steps",
        "nosync_backward",
        "synced_backward",
        "sync",
        "_t0",
    )

    def __init__(self, probe: StepProbe, step: int, tokens: int, lr: float | None) -> None:
        self.probe = probe
        self.step = step
        self.tokens = tokens
        self.lr = lr
        self.loss: float | None = None
        self.phases: dict[str, float] = {}
        self.micro_steps = 0
        self.nosync_backward: list[float] = []
        self.synced_backward: float | None = None
        self.sync: SyncTiming | None = None

    def phase(self, name: str, synced: bool | None = None) -> _Phase:
        """Time a named phase; for backward, synced says whether DDP syncs gradients in it."""
        return _Phase(self, name, synced)

    def __enter__(self) -> _Step:
        self.probe._buckets.reset()
        self.probe._activity.phase(self.step, "step", time.time())
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return  # an unfinished step has no meaningful timing
        if self.probe._synchronize is not None:
            self.probe._synchronize()
        self.probe._emit_step(self, time.perf_counter() - self._t0)
        self.probe._activity.phase(self.step, "between steps", time.time())


class _Phase:
    __slots__ = ("_step", "_name", "_synced", "_backward", "_t0")

    def __init__(self, step: _Step, name: str, synced: bool | None) -> None:
        self._step = step
        self._name = name
        self._synced = synced
        self._backward = name == "backward"

    def __enter__(self) -> _Phase:
        probe = self._step.probe
        if self._backward or self._synced:
            probe._buckets.reset()  # buckets from here on belong to this backward
        probe._activity.phase(self._step.step, self._name, time.time())
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        s = self._step
        probe = s.probe
        probe._activity.phase(s.step, "step", time.time())
        if probe._synchronize is not None:
            probe._synchronize()
        end = time.perf_counter()
        seconds = end - self._t0
        s.phases[self._name] = s.phases.get(self._name, 0.0) + seconds
        if self._backward:
            s.micro_steps += 1
        if self._synced is False:
            s.nosync_backward.append(seconds)  # no allreduce in it: ground-truth compute
        elif self._backward or self._synced:
            sync = probe._buckets.summary(end, probe._wall_offset)
            # An unflagged backward counts as synced only if DDP actually synced in it.
            if self._synced or sync is not None:
                s.synced_backward = seconds
                s.sync = sync


class _Collective:
    __slots__ = ("_probe", "_name")

    def __init__(self, probe: StepProbe, name: str) -> None:
        self._probe = probe
        self._name = name

    def __enter__(self) -> _Collective:
        now = time.time()
        step = -1 if self._probe._last_step is None else self._probe._last_step
        self._probe._activity.phase(step, self._name, now)
        self._probe._buckets.begin_wait(now)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._probe._buckets.end_wait()


class _NullContext:
    __slots__ = ()

    def __enter__(self) -> _NullContext:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None


class _NullStep(_NullContext):
    __slots__ = ("loss",)

    def phase(self, name: str, synced: bool | None = None) -> _NullContext:
        return _NULL_PHASE


_NULL_PHASE = _NullContext()
_NULL_STEP = _NullStep()


class _BucketTimer:
    """Comm hook state: [ready, done, bytes] per gradient bucket of the current backward.

    The hook runs on the autograd thread when a bucket is ready; the completion callback
    runs on the backend's thread, hence the lock. It also keeps the activity file's
    "waiting since": the start of the oldest collective not finished yet.
    """

    def __init__(self, activity: ActivityWriter) -> None:
        self.all_reduce: Callable[..., Any] | None = None  # torch.distributed's, once attached
        self.process_group: Any = None
        self.world = 1
        self._activity = activity
        self._lock = threading.Lock()
        self._buckets: list[list[float]] = []
        self._pending = 0  # collectives launched and not finished, across resets

    def reset(self) -> None:
        with self._lock:
            self._buckets = []

    def begin_wait(self, now: float) -> None:
        with self._lock:
            self._pending += 1
            if self._pending == 1:
                self._activity.waiting(now)

    def end_wait(self) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._activity.waiting(None)

    # No annotations: DDP's register_comm_hook rejects any but GradBucket -> Future[Tensor],
    # and postponed (string) annotations would not compare equal to those.
    # What it does to the bucket is DDP's default allreduce_hook, inlined: that hook chains a
    # Python callback of its own, and one per bucket is enough.
    def comm_hook(self, bucket):
        ready = time.perf_counter()
        tensor = bucket.buffer()
        entry = [ready, -1.0, float(tensor.nbytes)]
        with self._lock:
            self._buckets.append(entry)
        self.begin_wait(time.time())
        if self.world > 1:  # averaged, divided first for fp16's range; by 1 is a wasted pass
            tensor.div_(self.world)
        work = self.all_reduce(tensor, group=self.process_group, async_op=True)

        def done(f: Any) -> Any:
            finished = time.perf_counter()
            with self._lock:
                entry[1] = finished
            self.end_wait()
            return f.value()[0]  # the averaged bucket, which DDP copies back to the grads

        return work.get_future().then(done)

    def summary(self, end: float, wall_offset: float) -> SyncTiming | None:
        """Sync of the backward that ended at `end` (perf_counter); None if nothing synced."""
        with self._lock:
            buckets = [tuple(b) for b in self._buckets]
        if not buckets:
            return None
        last_ready = max(b[0] for b in buckets)
        exposed = max(0.0, end - last_ready)
        # Union of [ready, done] intervals; a bucket not done yet counts as busy until end.
        comm = 0.0
        cover_end = -1.0
        for ready, done, _ in sorted(buckets):
            done = end if done < 0 else min(done, end)
            if done <= cover_end:
                continue
            comm += done - max(ready, cover_end)
            cover_end = done
        return SyncTiming(
            exposed=exposed,
            comm=comm,
            overlap=max(0.0, comm - exposed),
            bytes=int(sum(b[2] for b in buckets)),
            buckets=len(buckets),
            last_ready=last_ready + wall_offset,
        )


class _RecordFile:
    """Append-only record file that survives a full or failing disk.

    Unbuffered os.write calls, so a failed write leaves nothing half-buffered to duplicate;
    a partial write keeps its unwritten tail at the head of the backlog.
    """

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.lost = 0
        self.discarded = 0
        self._fd: int | None = None
        self._backlog: deque[bytes] = deque()

    def write(self, data: bytes) -> None:
        if len(self._backlog) >= self.capacity:
            self._drain()
            if len(self._backlog) >= self.capacity:
                self.discarded += 1
                self.lost += 1
                return
        self._backlog.append(data)
        self._drain()
        if self._backlog:  # FIFO: if anything is left, this record is
            self.lost += 1

    def _drain(self) -> None:
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, 0o600)
            while self._backlog:
                head = self._backlog[0]
                n = os.write(self._fd, head)
                if n < len(head):
                    self._backlog[0] = head[n:]
                else:
                    self._backlog.popleft()
        except OSError:
            pass  # disk full, read-only, I/O error: keep the backlog, retry on the next record

    def close(self) -> None:
        self._drain()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class _MonitorSender:
    """Best-effort, never-blocking datagrams to every monitor socket in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.drops = 0
        self._sock: socket.socket | None = None
        self._targets: list[str] = []
        # Sockets that refused, by path and file identity (inode, ctime): skipped, not
        # retried every rescan, until a new monitor binds a socket at that path.
        self._stale: set[tuple[str, tuple[int, int]]] = set()
        self._identity: dict[str, tuple[int, int]] = {}
        self._next_scan = 0.0
        self._dir_fd: int | None = None  # for socket paths too long for an address

    def send(self, data: bytes) -> None:
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + MONITOR_RESCAN_S
            self._scan()
        for path in self._targets:
            try:
                self._sock.sendto(data, path)  # type: ignore[union-attr]
            except (ConnectionRefusedError, FileNotFoundError):
                self.drops += 1  # monitor gone: forget the socket; its owner cleans it up
                self._stale.add((path, self._identity.get(path, (-1, -1))))
                self._targets = [p for p in self._targets if p != path]
            except OSError:
                self.drops += 1  # full (EAGAIN, ENOBUFS) or anything else: never wait

    def _scan(self) -> None:
        live: dict[str, tuple[int, int]] = {}
        try:
            for entry in os.scandir(self.directory):
                if entry.name.endswith(".sock"):
                    st = entry.stat(follow_symlinks=False)
                    # This user's own entries only: never a symlink to someone else's socket.
                    if not stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid():
                        live[self._address(entry)] = (st.st_ino, st.st_ctime_ns)
        except OSError:
            pass  # no monitors dir (yet), or it vanished mid-scan: try again next time
        self._stale &= set(live.items())  # a replaced or removed socket is stale no more
        self._identity = live
        self._targets = sorted(p for p, ident in live.items() if (p, ident) not in self._stale)
        if self._targets and self._sock is None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            except OSError:
                self._targets = []

    def _address(self, entry: os.DirEntry) -> str:
        """The socket's path, or for one longer than an address holds (108 bytes), the same
        socket through this process's open descriptor of the directory (Linux)."""
        if len(os.fsencode(entry.path)) < MAX_SOCKET_ADDRESS:
            return entry.path
        if self._dir_fd is None:
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{entry.name}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        self._targets = []
