"""The script's own torch.distributed collectives: when each was launched, its bytes, and how
long the host blocked on it.

`torch.distributed.<collective>` is replaced by a wrapper (the original stays as
`__wrapped__`). A synchronous call blocks the host for its whole length. An async one returns
torch's own Work, untouched (DDP, futures and C++ code keep working with it): the Work and the
future it hands out are remembered by id until the script waits on them, and Work.wait and
Future.wait, patched on their classes, time that wait. Ids of objects that are not the
script's collectives (DDP's own buckets, anything else) cost one dict lookup.

Calls made from inside another wrapped call (all_gather_object calls all_gather ...) or
inside a DDP comm hook (`quiet()`) are not the script's and pass through.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from scalemon.probes.inject.driver import Driver
from scalemon.probes.inject.replacing import Replacements

# The collectives a training script calls; point-to-point ops (send, recv) are not timed.
COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "reduce", "broadcast", "barrier",
    "monitored_barrier", "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_single",
    "all_gather", "all_gather_into_tensor", "all_gather_single", "all_gather_coalesced",
    "all_to_all", "all_to_all_single", "gather", "scatter", "all_gather_object",
    "broadcast_object_list", "gather_object", "scatter_object_list",
)
PENDING_LIMIT = 100_000  # works never waited on are forgotten past this many

_local = threading.local()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Collectives called in here are not the script's (a DDP comm hook's)."""
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth


def tensor_bytes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The bytes a collective moves: its largest tensor argument (a tensor, or a list of
    them summed), so an all_gather counts its output and a reduce_scatter its input."""
    import torch

    largest = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            largest = max(largest, value.nelement() * value.element_size())
        elif isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
            largest = max(largest, sum(t.nelement() * t.element_size() for t in value
                                       if isinstance(t, torch.Tensor)))
    return largest


class Collectives:
    """Installs the wrappers and the wait patches (undone with `replaced.restore()`)."""

    def __init__(self, driver: Driver, replaced: Replacements) -> None:
        self.driver = driver
        self.replaced = replaced
        self._pending: dict[int, tuple[Any, ...]] = {}  # id -> (objects kept alive)

    def install(self) -> None:
        import torch
        import torch.distributed as dist

        replace = self.replaced.replace
        for name in COLLECTIVES:
            original = getattr(dist, name, None)
            if original is not None:
                replace(dist, name, self._wrap(original))
        work = dist.Work
        replace(work, "wait", self._timed_wait(work.wait))
        replace(work, "get_future", self._future_of(work.get_future))
        replace(torch._C.Future, "wait", self._timed_wait(torch._C.Future.wait))

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        driver = self.driver

        @functools.wraps(original)
        def collective(*args: Any, **kwargs: Any) -> Any:
            if getattr(_local, "depth", 0) or not driver.on:
                return original(*args, **kwargs)
            wall, start = time.time(), time.perf_counter()
            with quiet(), driver.waiting(original.__name__):
                result = original(*args, **kwargs)
            seconds = time.perf_counter() - start
            driver.collective_launched(wall, tensor_bytes(args, kwargs))
            driver.collective_blocked(seconds)  # a sync call, or an async one's launch
            if result is not None and hasattr(result, "wait"):
                self._remember(result)
            return result

        return collective

    def _remember(self, work: Any) -> None:
        if len(self._pending) >= PENDING_LIMIT:
            self._pending.clear()
        self._pending[id(work)] = (work, self.driver.steps)

    def forget_before(self, step: int) -> None:
        """Drop the works launched before `step` and never waited on (a future chained with
        then(), a Work polled with is_completed()): they would keep their tensors alive."""
        stale = [key for key, kept in self._pending.items() if kept[-1] < step]
        for key in stale:
            del self._pending[key]

    def _future_of(self, original: Callable[..., Any]) -> Callable[..., Any]:
        pending = self._pending

        def get_future(work: Any) -> Any:
            future = original(work)
            kept = pending.get(id(work))
            if kept is not None:  # waiting on either is the same wait
                pending[id(future)] = (future, work, kept[-1])
            return future

        return get_future

    def _timed_wait(self, original: Callable[..., Any]) -> Callable[..., Any]:
        pending, driver = self._pending, self.driver

        def wait(obj: Any, *args: Any, **kwargs: Any) -> Any:
            kept = pending.pop(id(obj), None)
            if kept is None or kept[0] is not obj:
                return original(obj, *args, **kwargs)
            for other in kept[1:-1]:
                pending.pop(id(other), None)
            start = time.perf_counter()
            try:
                with driver.waiting("wait"):
                    return original(obj, *args, **kwargs)
            finally:
                driver.collective_blocked(time.perf_counter() - start)

        return wait
