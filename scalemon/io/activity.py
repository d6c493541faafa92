"""The per-rank activity file (format: scalemon.core.activity): the probe writes it through a
shared memory map (a store per phase, no system call); the monitor reads it once a second."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from scalemon.core.activity import PHASE, SIZE, WAITING, Activity, decode


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
    return decode(first) if first == second else None
