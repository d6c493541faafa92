"""Following a log file the way `tail -F` does: complete lines only (a partial last line
waits for its newline), and a file that shrinks (truncated) or is replaced under its name
(rotated) is read again from the top, each with a note for the view."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

MAX_READ = 64 << 20  # bytes per read: a long history arrives over a few polls
MAX_LINE = 1 << 20  # a "line" longer than this is dropped (and counted)


class LogTail:
    """New complete lines of a log file at each `read()`, surviving truncation and rotation."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.mtime: float | None = None  # modification time seen at the last read
        self.truncations = 0
        self.rotations = 0
        self.long_lines = 0
        self._file: BinaryIO | None = None
        self._id: tuple[int, int] | None = None  # (device, inode) of the open file
        self._partial = b""
        self._problem: str | None = None  # the last trouble reported, so it is said once

    def _say_once(self, notes: list[str], text: str) -> None:
        if text != self._problem:
            notes.append(text)
            self._problem = text

    def _open(self, notes: list[str]) -> bool:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open between reads)
        except FileNotFoundError:
            self._say_once(notes, f"log {self.path} does not exist (yet); waiting for it")
            return False
        except OSError as error:
            self._say_once(notes, f"cannot read log {self.path}: {error.strerror or error}")
            return False
        st = os.fstat(self._file.fileno())
        self._id = (st.st_dev, st.st_ino)
        self._problem = None
        return True

    def _read_new(self, notes: list[str]) -> bytes:
        assert self._file is not None  # the caller opened it
        st = os.fstat(self._file.fileno())
        self.mtime = st.st_mtime
        if st.st_size < self._file.tell():
            self.truncations += 1
            notes.append(f"log {self.path} was truncated: reading it again from the top")
            self._file.seek(0)
            self._partial = b""
        return self._file.read(MAX_READ)

    def read(self) -> tuple[list[str], list[str]]:
        """(new complete lines, notes about the file: truncated, rotated, missing ...)."""
        notes: list[str] = []
        if self._file is None and not self._open(notes):
            return [], notes
        data = self._read_new(notes)
        assert self._file is not None  # open: _open succeeded above or on an earlier read
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._say_once(notes, f"log {self.path} was moved or deleted; waiting for a new one")
            st = None
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) != self._id:
            # Rotated: the old file is finished (its last line too); the new one starts fresh.
            lines = self._split(data + self._file.read(MAX_READ) + b"\n")
            self._file.close()
            self._file = None
            if self._open(notes):
                self.rotations += 1
                notes.append(f"log {self.path} was rotated (a new file took its name): "
                              "following the new one")
                lines += self._split(self._read_new(notes))
            return lines, notes
        return self._split(data), notes

    def _split(self, data: bytes) -> list[str]:
        """Complete, non-blank lines; a carriage return (progress bars) also ends a line."""
        text = (self._partial + data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        pieces = text.split(b"\n")
        self._partial = pieces.pop()
        if len(self._partial) > MAX_LINE:
            self.long_lines += 1
            self._partial = b""
        return [p.decode("utf-8", errors="replace") for p in pieces if p.strip()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
