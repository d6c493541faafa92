"""Host probe: CPU, load, memory and swap, and the run's process tree (psutil).

The process tree is the given root pids (the launcher, or the ranks
themselves) and all their descendants. It is rescanned only when the kernel
has handed out a new pid since the last scan (``/proc/loadavg`` names the last
one), so a steady run costs one small read per sample instead of a walk over
every process on the machine. Processes that exit simply vanish from the next
snapshot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

import psutil

from scalemon.core.na import NA, as_float
from scalemon.core.snapshots import HostSnapshot, ProcessSnapshot

__all__ = ["HostProbe", "HostSnapshot", "ProcessSnapshot"]

_SETTLE_S = 2.0  # a process this old has exec'd: its name and environment are final


class _Tracked:
    """What the probe remembers about one process between samples."""

    __slots__ = ("proc", "ppid", "name", "env_rank", "settled", "cpu_s", "t")

    def __init__(self, proc: psutil.Process):
        self.proc = proc
        self.ppid = 0  # from the last tree scan: psutil's ppid() costs a pid-reuse check
        self.settled = False
        self.identify()
        self.cpu_s: float | None = None  # user + system seconds at time t
        self.t = 0.0

    def identify(self) -> None:
        """Read name and RANK; again on later samples while the process is young,
        because between fork and exec it still shows its parent's."""
        self.name = _or(self.proc.name, "?")
        self.env_rank = _env_rank(self.proc)
        self.settled = time.time() - _or(self.proc.create_time, 0.0) > _SETTLE_S


class HostProbe:
    """Samples the host and the process tree rooted at `root_pids`.

    `rank_of` maps pid -> rank for processes whose environment cannot be read
    (another user's, or not started by torchrun); it wins over RANK in the
    environment. Not thread-safe: sample from one thread.
    """

    def __init__(self, root_pids: Iterable[int] = (), rank_of: Mapping[int, int] | None = None):
        self._roots = tuple(root_pids)
        self._rank_of = dict(rank_of or {})
        self._tracked: dict[int, _Tracked] = {}
        self._last_pid: bytes | None = None  # last pid handed out when the tree was scanned
        self._prune = False  # drop processes outside the tree at the next scan
        self._cpu_prev: list | None = None

    def set_roots(self, pids: Iterable[int]) -> None:
        self._roots = tuple(pids)
        self._last_pid = None  # rescan on the next sample
        self._prune = True

    def set_rank_map(self, rank_of: Mapping[int, int]) -> None:
        self._rank_of = dict(rank_of)

    def sample(self) -> HostSnapshot:
        try:
            return self._sample()
        except Exception as exc:  # a probe never raises into the monitor
            return HostSnapshot.unavailable(f"{type(exc).__name__}: {exc}")

    def _sample(self) -> HostSnapshot:
        reasons: list[tuple[str, str]] = []
        now = time.monotonic()
        per_core, total = self._cpu_percent(reasons)
        load, last_pid = _read_loadavg()
        if load is None:
            load = _try(psutil.getloadavg, reasons, "load_1", "load_5", "load_15") or (NA,) * 3
        mem_fields = ("mem_total_bytes", "mem_used_bytes", "mem_available_bytes")
        mem = _try(psutil.virtual_memory, reasons, *mem_fields)
        swap = _try(psutil.swap_memory, reasons, "swap_total_bytes", "swap_used_bytes")
        if last_pid is None or last_pid != self._last_pid:
            self._rescan()
            self._last_pid = last_pid
        return HostSnapshot(
            t_monotonic=now,
            cpu_count=len(per_core),
            cpu_percent_total=total,
            cpu_percent_per_core=per_core,
            load_1=as_float(load[0]),
            load_5=as_float(load[1]),
            load_15=as_float(load[2]),
            mem_total_bytes=as_float(mem and mem.total),
            mem_used_bytes=as_float(mem and mem.used),
            mem_available_bytes=as_float(mem and mem.available),
            swap_total_bytes=as_float(swap and swap.total),
            swap_used_bytes=as_float(swap and swap.used),
            processes=self._sample_processes(),
            reasons=tuple(reasons),
        )

    def _cpu_percent(self, reasons: list) -> tuple[tuple[float, ...], float]:
        cur = _try(lambda: psutil.cpu_times(percpu=True), reasons, "cpu_percent_total",
                   "cpu_percent_per_core")  # fmt: skip
        prev, self._cpu_prev = self._cpu_prev, cur
        if cur is None:
            return (), NA
        if prev is None or len(prev) != len(cur):
            reasons.append(("cpu_percent_total", "first sample: a rate needs two"))
            return (NA,) * len(cur), NA
        spans = [_busy_and_all(a, b) for a, b in zip(prev, cur, strict=True)]
        per_core = tuple(_percent(busy, whole) for busy, whole in spans)
        total = _percent(sum(s[0] for s in spans), sum(s[1] for s in spans))
        return per_core, total

    def _rescan(self) -> None:
        ppid_of = _ppid_map() if self._roots else {}
        tree = _descendants(self._roots, ppid_of)
        if self._prune:
            self._tracked = {pid: t for pid, t in self._tracked.items() if pid in tree}
            self._prune = False
        # Otherwise a process stays tracked until it exits, even if its parent
        # dies and it is re-parented out of the tree: a stray rank is worth seeing.
        for pid in tree:
            tracked = self._tracked.get(pid)
            if tracked is not None and tracked.proc.is_running():
                continue  # is_running() also catches a reused pid
            try:
                self._tracked[pid] = _Tracked(psutil.Process(pid))
            except psutil.Error:
                self._tracked.pop(pid, None)
        for pid, tracked in self._tracked.items():
            tracked.ppid = ppid_of.get(pid, tracked.ppid)

    def _sample_processes(self) -> tuple[ProcessSnapshot, ...]:
        out = []
        for pid, tracked in list(self._tracked.items()):
            snap = self._sample_process(tracked)
            if snap is None:
                del self._tracked[pid]
                self._last_pid = None  # its children were re-parented: rescan for their ppid
            else:
                out.append(snap)
        out.sort(key=lambda p: (p.rank is not None, p.rank or 0, p.pid))
        return tuple(out)

    def _sample_process(self, tracked: _Tracked) -> ProcessSnapshot | None:
        proc = tracked.proc
        if not tracked.settled:
            tracked.identify()
        reasons: list[tuple[str, str]] = []
        rank = self._rank_of.get(proc.pid, tracked.env_rank)
        try:
            with proc.oneshot():
                now = time.monotonic()
                state = proc.status()
                cpu = _proc_read(lambda: sum(proc.cpu_times()[:2]), reasons, "cpu_percent")
                rss = _proc_read(lambda: proc.memory_info().rss, reasons, "rss_bytes")
                threads = _proc_read(proc.num_threads, reasons, "threads")
        except psutil.ZombieProcess:
            why = "zombie: exited, not yet reaped"
            reasons = [(field, why) for field in ("cpu_percent", "rss_bytes", "threads")]
            zombie = psutil.STATUS_ZOMBIE
            return ProcessSnapshot(
                proc.pid, tracked.ppid, tracked.name, rank, NA, NA, NA, zombie, tuple(reasons)
            )
        except psutil.NoSuchProcess:
            return None
        except psutil.Error as exc:
            reasons = [("state", f"unreadable: {exc}")]
            return ProcessSnapshot(
                proc.pid, tracked.ppid, tracked.name, rank, NA, NA, NA, "?", tuple(reasons)
            )
        cpu_percent = NA
        if cpu is not NA:
            if tracked.cpu_s is not None and now > tracked.t:
                cpu_percent = max(0.0, 100.0 * (cpu - tracked.cpu_s) / (now - tracked.t))
            else:
                reasons.append(("cpu_percent", "first sample: a rate needs two"))
            tracked.cpu_s, tracked.t = cpu, now
        return ProcessSnapshot(
            pid=proc.pid, ppid=tracked.ppid, name=tracked.name, rank=rank, cpu_percent=cpu_percent,
            rss_bytes=rss, threads=threads, state=state, reasons=tuple(reasons),
        )  # fmt: skip


def _busy_and_all(before, after) -> tuple[float, float]:
    """Busy and total CPU seconds between two psutil cpu_times readings of one core."""

    def split(t) -> tuple[float, float]:
        whole = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # in user/nice
        idle = t.idle + getattr(t, "iowait", 0.0)
        return whole - idle, whole

    busy0, all0 = split(before)
    busy1, all1 = split(after)
    return max(0.0, busy1 - busy0), max(0.0, all1 - all0)


def _percent(busy: float, whole: float) -> float:
    # No elapsed ticks (two samples within one jiffy) is no reading, not 0%.
    return min(100.0, 100.0 * busy / whole) if whole > 0 else NA


def _read_loadavg() -> tuple[tuple[float, float, float] | None, bytes | None]:
    """Load averages and the last pid handed out, from one read of /proc/loadavg."""
    try:
        with open("/proc/loadavg", "rb") as f:
            fields = f.read().split()
        return (float(fields[0]), float(fields[1]), float(fields[2])), fields[4]
    except (OSError, IndexError, ValueError):
        return None, None  # not Linux: the caller falls back and rescans every time


def _ppid_map() -> dict[int, int]:
    """{pid: parent pid} for every process on the machine."""
    if not os.path.isdir("/proc/self"):
        return {p.pid: p.info["ppid"] for p in psutil.process_iter(["ppid"])}
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 1024)
            finally:
                os.close(fd)
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            out[int(entry)] = int(data[data.rfind(b")") + 2 :].split(b" ", 2)[1])
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
    return out


def _descendants(roots: Iterable[int], ppid_of: Mapping[int, int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in ppid_of.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in ppid_of]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, ()))
    return seen


def _env_rank(proc: psutil.Process) -> int | None:
    try:
        return int(proc.environ()["RANK"])
    except (psutil.Error, KeyError, ValueError, OSError):
        return None  # not a rank, or another user's process


def _proc_read(fn, reasons: list, field: str):
    """One per-process reading; access denied is N/A, an exit propagates."""
    try:
        return fn()
    except psutil.AccessDenied:
        reasons.append((field, "access denied"))
        return NA


def _try(fn, reasons: list, *fields: str):
    try:
        return fn()
    except Exception as exc:  # a probe never raises into the monitor
        reasons.extend((field, f"{type(exc).__name__}: {exc}") for field in fields)
        return None


def _or(fn, default):
    try:
        return fn()
    except psutil.Error:
        return default
