"""The run's event log: what happened, when, and how bad, for the views to list."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

EVENTS_KEPT = 200


class Level(StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    t: float
    level: Level
    text: str


class EventLog:
    """The last EVENTS_KEPT events, and how many were ever logged (so a view can tell which
    are new to it: Summary.events_since)."""

    def __init__(self, events: list[Event] | None = None, count: int | None = None) -> None:
        self.events: deque[Event] = deque(events or (), maxlen=EVENTS_KEPT)
        self.count = len(self.events) if count is None else count

    def add(self, t: float, level: Level, text: str) -> None:
        self.events.append(Event(t, level, text))
        self.count += 1

    def __getitem__(self, index: int) -> Event:
        return self.events[index]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)
