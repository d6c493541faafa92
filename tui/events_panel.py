"""What a person should know: ranks silent, loss NaN or high, sync jumps, checkpoints, exits."""

from __future__ import annotations

from rich.text import Text

from .clock import clock
from .panel import Panel
from .view import ViewData

MARK = {"info": "-", "warn": "!", "error": "!!"}


class EventsPanel(Panel):
    TITLE = "Events"
    SLOW = False  # every view: a new event shows at once (and costs nothing when none came)
    COMPONENT_CLASSES = {"events--info", "events--warn", "events--error"}

    def title(self, view: ViewData) -> str:
        count = view.summary.event_count
        return f"{self.TITLE} ({count})" if count else self.TITLE

    def content(self, view: ViewData) -> Text:
        height = max(1, self.size.height)
        tail = []
        if view.summary.stderr_tail and height >= 3:
            # One line for the newest event (the exit), one for this heading, the rest for
            # the trainer's last words, newest kept.
            tail.append(Text("last lines of the trainer's stderr:", style=self.style("panel--dim")))
            tail += [Text(f"  {line}", style=self.style("events--error"))
                     for line in view.summary.stderr_tail[-(height - 2):]]
        lines = []
        if view.nodes_behind:  # a condition now, not an event: it stays on top while it lasts
            lines.append(Text(f"! {view.nodes_behind}", style=self.style("events--warn")))
        for event in view.summary.events[-max(1, height - len(tail) - len(lines)):]:
            line = Text()
            line.append(f"{clock(event.t)} ", style=self.style("panel--dim"))
            line.append(f"{MARK.get(event.level, '-'):<2} {event.text}",
                        style=self.style(f"events--{event.level}"))
            lines.append(line)
        if not lines and not tail:
            return Text("nothing yet", style=self.style("panel--dim"))
        # Newest at the bottom, then the trainer's last words; older events: `scalemon replay`.
        return Text("\n").join(lines + tail)
