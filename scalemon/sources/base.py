"""The one interface every view watches a run through: a source folds what it reads (records
and observations) into a RunState and hands out frozen Summaries.

Sources: `rundir.RunDirSource` (a scalemon run: its run dir and live datagrams; `RunWatch`
for attach), `log.LogSource` (a run known by its log and process). Not thread-safe: one
thread polls and summarizes.
"""

from __future__ import annotations

import time
from typing import Protocol, Self

from scalemon.sources.system import SystemWatch
from scalemon.state.fold import RunState
from scalemon.state.summary import Summary, fast_key, refresh, summarize


class Source(Protocol):
    @property
    def history_pending(self) -> bool:
        """The state holds only the recent history; the rest is folding in."""
        ...

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for records and fold what came; how many new ones."""
        ...

    def summary(self, now: float | None = None) -> Summary: ...

    def refresh(self, summary: Summary, now: float | None = None) -> Summary: ...

    def fast_key(self) -> tuple[object, ...]: ...

    def catch_up(self) -> None:
        """Fold everything there is to read now (the run has ended)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class FoldedSource:
    """What the sources share: the fold, its summaries, and the system probes' polls."""

    def __init__(self, state: RunState, system: SystemWatch | None = None) -> None:
        self.state = state
        self.system = system

    @property
    def history_pending(self) -> bool:
        return False

    def summary(self, now: float | None = None) -> Summary:
        return summarize(self.state, time.time() if now is None else now)

    def refresh(self, summary: Summary, now: float | None = None) -> Summary:
        return refresh(summary, self.state, time.time() if now is None else now)

    def fast_key(self) -> tuple[object, ...]:
        return fast_key(self.state)

    def poll(self, timeout: float) -> int:
        raise NotImplementedError

    def catch_up(self) -> None:
        raise NotImplementedError

    def poll_system(self, roots: list[int] | None = None) -> None:
        if self.system is not None and self.system.due():
            self.state.apply(self.system.sample(self.state, roots))

    def close(self) -> None:
        if self.system is not None:
            self.system.close()
            self.system = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
