"""An append-only record file that survives a full or failing disk (the probe's rank file)."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from pathlib import Path


class RecordFile:
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
