"""Whether a run's processes live: the one place that answers "is it alive".

`process_alive` for any pid (a zombie is not alive), `is_supervisor` for a run's supervisor
(alive and still running `scalemon.run.supervise`, so a reused pid does not count), and
`RankWatch` for the ranks the monitor checks every poll (psutil's status, with a pid the kernel
handed out again after the rank died not taken for the rank).
"""

from __future__ import annotations

import os

import psutil

SUPERVISOR_MODULE = "scalemon.run.supervise"


def _stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start time (clock ticks since boot), from one read of
    /proc/<pid>/stat; None where there is no such file (gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    try:
        return fields[0].decode(), fields[19].decode()
    except (IndexError, UnicodeDecodeError):
        return None


def _zombie(pid: int) -> bool | None:
    """Whether the process is a zombie (exited, not reaped by its parent); None if unreadable."""
    stat = _stat(pid)
    return None if stat is None else stat[0] == "Z"


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive, not ours to signal
    return _zombie(pid) is not True


def is_supervisor(pid: int | None) -> bool:
    """`pid` is alive and is a scalemon supervisor (not a later process with its pid)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return SUPERVISOR_MODULE.encode() in cmdline and _zombie(pid) is False


# /proc/<pid>/stat's state letters, as psutil names them; Z and X are gone.
_STATES = {"R": psutil.STATUS_RUNNING, "S": psutil.STATUS_SLEEPING,
           "D": psutil.STATUS_DISK_SLEEP, "T": psutil.STATUS_STOPPED,
           "t": psutil.STATUS_TRACING_STOP, "I": psutil.STATUS_IDLE,
           "P": psutil.STATUS_PARKED, "W": psutil.STATUS_WAKING}


class RankWatch:
    """The ranks' processes, checked every poll: psutil's view when first seen (is it the
    rank, not a later process with its pid), then one read of /proc/<pid>/stat a poll, the
    same start time telling it is the same process (psutil's is_running and status read it
    three times and build a second Process), where /proc is there."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._start_ticks: dict[int, str | None] = {}

    def status(self, pid: int, started: float | None) -> str | None:
        """psutil's status of a rank's process ("running", "stopped" ...); None once gone.
        `started` is the wall time of its start record."""
        process = self._processes.get(pid)
        try:
            if process is None:
                process = psutil.Process(pid)
                # A pid the kernel handed out again after the rank died is not the rank.
                if started is not None and process.create_time() > started + 1:
                    return None
                self._processes[pid] = process
                stat = _stat(pid)
                self._start_ticks[pid] = stat[1] if stat else None
            ticks = self._start_ticks.get(pid)
            if ticks is not None:
                stat = _stat(pid)
                if stat is None or stat[1] != ticks:
                    return None
                return _STATES.get(stat[0], psutil.STATUS_RUNNING) if stat[0] not in "ZX" \
                    else None
            with process.oneshot():
                if not process.is_running():
                    return None
                status = process.status()
            return None if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else status
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:
            return "unknown"  # not ours to inspect: no sign it is gone


def python_processes(root: int) -> list[int]:
    """The Python processes of the tree under `root` (ranks, and a Python launcher)."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for proc in procs:
        try:
            if "python" in proc.name().lower():
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out
