"""DDP's gradient sync, timed from a comm hook: when each bucket became ready and when its
allreduce finished (DESIGN.md, "The measurement trap": a barrier after backward reads ~0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from scalemon.core.records import SyncTiming
from scalemon.io.activity import ActivityWriter


class BucketTimer:
    """Comm hook state: [ready, done, bytes] per gradient bucket of the current backward.

    The hook runs on the autograd thread when a bucket is ready; the completion callback
    runs on the backend's thread, hence the lock. It also keeps the activity file's
    "waiting since": the start of the oldest collective not finished yet.
    """

    def __init__(self, activity: ActivityWriter) -> None:
        self.all_reduce: Callable[..., Any] | None = None  # torch.distributed's, once attached
        self.process_group: Any = None
        self.world = 1
        # A comm hook of the script's own (hook(bucket) -> Future[Tensor]) that does the sync
        # instead of the default allreduce: timed the same way.
        self.inner: Callable[[Any], Any] | None = None
        self.passthrough = False  # the probe was released: sync, time nothing
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
        if self.passthrough:
            if self.inner is not None:
                return self.inner(bucket)
            return self._average(bucket).then(lambda f: f.value()[0])
        ready = time.perf_counter()
        entry = [ready, -1.0, float(bucket.buffer().nbytes)]
        with self._lock:  # one lock taken a bucket on each thread, not two
            self._buckets.append(entry)
            self._pending += 1
            if self._pending == 1:
                self._activity.waiting(time.time())
        if self.inner is not None:
            return self.inner(bucket).then(lambda f: self._done(entry, f.value()))
        # [0]: the averaged bucket, which DDP copies back to the grads
        return self._average(bucket).then(lambda f: self._done(entry, f.value()[0]))

    def _average(self, bucket: Any) -> Any:
        """DDP's default: an async allreduce of the bucket, averaged; its work's future."""
        tensor = bucket.buffer()
        if self.world > 1:  # averaged, divided first for fp16's range; by 1 is a wasted pass
            tensor.div_(self.world)
        assert self.all_reduce is not None  # attached before DDP's first backward
        return self.all_reduce(tensor, group=self.process_group, async_op=True).get_future()

    def _done(self, entry: list[float], value: Any) -> Any:
        finished = time.perf_counter()
        with self._lock:
            entry[1] = finished
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._activity.waiting(None)
        return value

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
