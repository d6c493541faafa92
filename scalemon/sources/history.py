"""A long run's history, folded behind the live state so that the first screen need not wait.

Folding a million steps takes tens of seconds; the first screen needs only the
recent window. So the collector first folds each rank file's first line (the
start record) and its last TAIL_BYTES (a few thousand steps) into the state it
shows. `Backfill` then folds every file from the top into a second RunState, a
slice per poll, up to where that tail stopped; records that arrive meanwhile
(files and datagrams) are kept and folded in after. When it is done, the full
state takes the shown one's place, with what the monitor itself observed in the
meantime (the events it logged, rank processes, the supervisor's status).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from scalemon.core import codec
from scalemon.core.config import RunConfig
from scalemon.core.errors import RecordError
from scalemon.core.records import Record
from scalemon.io.tail import RecordTail, history_tail
from scalemon.state.fold import RunState

TAIL_BYTES = 1 << 20  # of each rank file before the first screen: about 2,500 steps
SLICE_BYTES = 256 << 10  # folded between looks at the clock: a few ms


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class Backfill:
    """The whole history of the rank files up to `ends` (path -> offset), folded a slice
    at a time into `state`, then `finish`ed into the state to show."""

    def __init__(self, config: RunConfig, ends: dict[Path, int], shown: RunState,
                 tail_bad: int = 0) -> None:
        self.state = RunState(config)
        self.ends = ends
        self.tails = [RecordTail(path) for path in ends]
        self.todo = list(self.tails)
        self.pending: list[Record] = []  # records shown since, in the order shown
        self.shown_events = shown.events.count  # what the tail fold logged
        self.tail_bad = tail_bad  # bad lines the tail fold skipped
        self.cut_short = False  # a file ended before its history did

    @classmethod
    def start(cls, state: RunState, config: RunConfig, paths: list[Path]) -> Backfill | None:
        """Fold each file's first line and tail into `state`; the Backfill for the rest, or
        None when every file is short (then nothing was folded: read them whole)."""
        if all(_size(path) <= TAIL_BYTES for path in paths):
            return None
        ends, bad = {}, 0
        for path in paths:
            lines, ends[path] = history_tail(path, TAIL_BYTES)
            for line in lines:
                try:
                    state.apply(codec.decode(line))
                except RecordError:
                    bad += 1
        return cls(config, ends, state, tail_bad=bad)

    @property
    def bad(self) -> int:
        """Bad lines in the whole history (known once it is all folded)."""
        return sum(tail.bad for tail in self.tails)

    @property
    def replaced(self) -> bool:
        """A file shrank under it (truncated or replaced): this history is no longer its."""
        return self.cut_short or any(tail.truncations for tail in self.tails)

    def add(self, records: list[Record]) -> None:
        """Records the shown state got (file or datagram): the full state gets them after."""
        self.pending.extend(records)

    def step(self, deadline: float) -> bool:
        """Fold history until `deadline` (time.monotonic()); True once all of it is in."""
        while self.todo and not self.replaced:
            tail = self.todo[0]
            end, before = self.ends[tail.path], tail.offset
            self.state.apply_all(tail.read(min(SLICE_BYTES, end - tail.offset)))
            if tail.offset >= end:
                self.todo.pop(0)
            elif tail.offset == before:
                self.cut_short = True
            if time.monotonic() >= deadline:
                break
        return not self.todo

    def finish(self, shown: RunState) -> RunState:
        """The full state, brought up to the shown one: the records shown since it opened,
        and what the monitor observed meanwhile."""
        full = self.state
        history_events = list(full.events)
        full.apply_all(self.pending)
        full.take_observations(shown, history_events, self.shown_events)
        return full
