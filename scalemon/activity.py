"""Where each rank is right now: a tiny per-rank file the step probe overwrites in place.

Step records say what a rank has finished; this says what it is doing: the step and
phase it is in and since when, and since when its oldest collective (a gradient
allreduce, or the loop's own) has been waiting. A rank stuck in sync shows as waiting;
the rank it waits for shows in some other phase. The probe writes through a shared
memory map (a store, no system call per phase); the monitor reads it once a second.
The file outlives the rank, so after a SIGKILL it still says where the rank died.

    ranks/rank-<RANK>.now   40 bytes: step (int64), phase (16 bytes UTF-8, NUL padded),
                            phase since (unix s, float64) | waiting since (float64, 0: none)
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

PHASE = struct.Struct("<q16sd")  # written by the training thread
WAITING = struct.Struct("<d")  # written by the backend's thread too
SIZE = PHASE.size + WAITING.size


@dataclass(frozen=True)
class Activity:
    step: int  # the step in progress, or the last one begun
    phase: str  # a phase name; "step" between phases; "between steps"; "ended"
    since: float  # unix time the phase began
    waiting_since: float | None  # unix time the oldest unfinished collective began


def activity_path(run_dir: Path, rank: int) -> Path:
    return run_dir / "ranks" / f"rank-{rank}.now"


class ActivityWriter:
    """Never raises into the training loop: any failure turns it into a no-op."""

    def __init__(self, path: Path) -> None:
        self._map: mmap.mmap | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            os.ftruncate(fd, SIZE)
            # Allocate the page now: a store into a map whose page a full disk cannot
            # back would be a SIGBUS, not an error.
            os.posix_fallocate(fd, 0, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        except (OSError, ValueError):
            self._map = None
        finally:
            os.close(fd)

    def phase(self, step: int, name: str, since: float) -> None:
        if self._map is not None:
            PHASE.pack_into(self._map, 0, step, name.encode()[:16], since)

    def waiting(self, since: float | None) -> None:
        if self._map is not None:
            WAITING.pack_into(self._map, PHASE.size, since or 0.0)

    def close(self, step: int, since: float) -> None:
        if self._map is not None:
            self.phase(step, "ended", since)
            self.waiting(None)
            self._map.close()
            self._map = None


def _decode(data: bytes) -> Activity | None:
    if len(data) != SIZE:
        return None
    step, name, since = PHASE.unpack_from(data)
    (waiting,) = WAITING.unpack_from(data, PHASE.size)
    if not math.isfinite(since) or not math.isfinite(waiting):
        return None
    phase = name.rstrip(b"\0").decode(errors="replace")
    return Activity(step=step, phase=phase, since=since,
                    waiting_since=waiting if waiting > 0 else None)


def read_activity(path: Path) -> Activity | None:
    """The rank's activity, or None when there is no readable file."""
    try:
        with open(path, "rb") as f:
            first = f.read(SIZE)
            f.seek(0)
            second = f.read(SIZE)
    except OSError:
        return None
    # The writer stores without a lock: two equal reads were not torn by it.
    return _decode(first) if first == second else None
