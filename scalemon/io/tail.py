"""Reading a run's files as they grow: rank files record by record (`RecordTail`), a long
history from its end (`history_tail`), the last step cheaply (`last_step_record`), and the
last bytes of a log (`read_tail`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

from scalemon.core import codec
from scalemon.core.errors import RecordError
from scalemon.core.records import MAX_RECORD_BYTES, Record, StepRecord

LOG_TAIL_BYTES = 65536


def read_tail(path: Path | str | None, size: int = LOG_TAIL_BYTES) -> str:
    """The last `size` bytes of a text file, or "" when it cannot be read."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


READ_CHUNK = 1 << 20  # a long file is read a piece at a time, never held whole


class RecordTail:
    """Follows one append-only rank file: new complete lines each call, bad ones counted.

    A partial last line (the writer is mid-record) waits for its newline. A file
    that shrank was truncated or replaced: reading starts again from the top.
    `offset` starts following at that byte (the start of a line).
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.bad = 0
        self.truncations = 0

    def read(self, max_bytes: int = 64 << 20) -> Iterator[Record]:
        """The records of the lines added since the last call, reading up to `max_bytes`
        (lazily, a chunk at a time; the records of a chunk are chained in C, not yielded one
        by one through two generators: a replay reads a million)."""
        return itertools.chain.from_iterable(self._chunks(max_bytes))

    def _chunks(self, max_bytes: int) -> Iterator[list[Record]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.truncations += 1
                    self.offset, self.partial = 0, b""
                f.seek(self.offset)
                stop = min(size, self.offset + max_bytes)
                while self.offset < stop:
                    chunk = f.read(min(READ_CHUNK, stop - self.offset))
                    if not chunk:
                        return
                    self.offset += len(chunk)
                    yield self._records(chunk)
        except OSError:
            return

    def _records(self, chunk: bytes) -> list[Record]:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_RECORD_BYTES:
            self.bad += 1
            self.partial = b""
        records, bad = codec.decode_many(lines)
        self.bad += bad
        return records


def history_tail(path: Path, window: int) -> tuple[list[bytes], int]:
    """A rank file's first line and its complete lines in the last `window` bytes, and the
    offset just past them, where following the file goes on. ([], 0) if unreadable."""
    try:
        with open(path, "rb") as f:
            first = f.readline(MAX_RECORD_BYTES + 1)
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - window)
            f.seek(start)
            chunk = f.read(size - start)
    except OSError:
        return [], 0
    cut = chunk.rfind(b"\n") + 1  # what follows is a record still being written
    lines = chunk[:cut].split(b"\n")[:-1]
    if start > 0:
        lines = [first.rstrip(b"\n"), *lines[1:]]  # the window's first line is a piece
    return lines, start + cut


def last_step_record(path: Path, window: int = 256 << 10) -> StepRecord | None:
    """The last valid step record of a rank file, reading only its tail."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - window))
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        if b'"kind":"step"' not in line:
            continue
        try:
            record = codec.decode(line)
        except RecordError:
            continue
        if isinstance(record, StepRecord):
            return record
    return None
