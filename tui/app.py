"""The live screen: `run_screen(source, ...)` shows a run until the person quits.

The app never touches the source: a `Feed` thread polls it and posts
`ViewUpdated` messages, and the app hands each view to the panels. Quitting
leaves the run training (its supervisor has a session of its own); `s` asks
the supervisor to stop it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widgets import Footer

from scalemon.sources.base import Source
from scalemon.views.text import check_line

from .eta_panel import EtaPanel
from .events_panel import EventsPanel
from .feed import Feed, FeedFailed, ViewUpdated
from .header import PlumbingLine, RunProgress, RunTitle
from .loss_panel import LossPanel
from .panel import Panel
from .screens import ChecklistScreen, ConfirmStop, HelpScreen
from .split_panel import SplitPanel
from .system_panel import SystemPanel
from .view import ViewData

PANELS = ("split", "loss", "eta", "system", "events")  # the order of the 1-5 keys


class ScalemonApp(App[str]):
    CSS_PATH = Path(__file__).with_name("scalemon.tcss")  # absolute: subclasses live elsewhere
    TITLE = "scalemon"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None  # no panel looks selected until Tab or a digit picks one
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-normal")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (24, "-normal-height"), (30, "-roomy"), (40, "-tall")]
    BINDINGS = [
        Binding("q", "leave", "quit"),
        Binding("s", "stop_run", "stop run"),
        Binding("p", "pause", "pause"),
        Binding("x", "cycle_x", "loss x-axis"),
        Binding("f", "full_screen", "full screen"),
        Binding("c", "checklist", "checklist"),
        Binding("escape", "restore", "all panels", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        *(Binding(str(i), f"panel('{name}')", show=False) for i, name in enumerate(PANELS, 1)),
    ]

    def __init__(self, source: Source | None = None, *, price: float | None = None,
                 stop_run: Callable[[], bool] | None = None, quit_hint: str = "",
                 view: ViewData | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.source = source
        self.price = price
        self.stop_run = stop_run
        self.quit_hint = quit_hint
        self.clock = clock
        self.latest: ViewData | None = view
        self.paused = False
        self.feed: Feed | None = None
        self.panels: list[Panel] = []

    def compose(self) -> ComposeResult:
        with Container(id="header"):
            yield RunTitle(id="title")
            yield RunProgress(id="progress")
            yield PlumbingLine(id="plumbing")
        with Container(id="body"):
            yield SplitPanel(id="split")
            yield LossPanel(id="loss")
            yield EtaPanel(id="eta")
            yield SystemPanel(id="system")
            yield EventsPanel(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.panels = list(self.query(Panel))  # looked up once: views arrive 5 times a second
        self._on_hangup(self.exit, "quit")
        if self.latest is not None:
            self.show(self.latest)
        if self.source is not None:
            self.feed = Feed(self.source, self.post_message, price=self.price, clock=self.clock)
            self.feed.start()

    def on_unmount(self) -> None:
        self._on_hangup(None)
        if self.feed is not None:
            self.feed.stop()

    def _on_hangup(self, callback, *args) -> None:
        """A closed SSH session ends the screen as `q` does: the run keeps training."""
        try:
            loop = asyncio.get_running_loop()
            if callback is None:
                loop.remove_signal_handler(signal.SIGHUP)
            else:
                loop.add_signal_handler(signal.SIGHUP, callback, *args)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests), or no signals here

    def on_view_updated(self, message: ViewUpdated) -> None:
        self.latest = message.view
        if not self.paused:
            self.show(message.view, full=message.view.full)

    def on_feed_failed(self, message: FeedFailed) -> None:
        self.notify(message.text, title="cannot build the view", severity="error", timeout=10)

    def show(self, view: ViewData, full: bool = True) -> None:
        """Hand the view to the panels; the slow ones only take full views (see Feed)."""
        # A failed trainer's last stderr lines need more room than the usual few events.
        failed = bool(view.summary.stderr_tail)
        if self.screen.has_class("-trainer-failed") != failed:
            self.screen.set_class(failed, "-trainer-failed")
        for panel in self.panels:
            if full or not panel.SLOW:
                panel.view = view

    # --- keys -----------------------------------------------------------------------------

    def action_leave(self) -> None:
        latest = self.latest
        if latest is not None and latest.summary.done:
            self.exit(latest.summary.phase.value)
        else:
            self.exit("quit")

    async def action_quit(self) -> None:
        self.action_leave()  # ctrl+q, Textual's own quit key, says the same as q

    def action_stop_run(self) -> None:
        if self.stop_run is None:
            self.notify("this screen cannot stop the run", severity="warning")
        elif self.latest is not None and self.latest.summary.done:
            self.notify(f"the run has already ended ({self.latest.summary.phase.value})")
        else:
            name = self.latest.summary.info.name if self.latest else "this run"
            self.push_screen(ConfirmStop(name), self._stop_confirmed)

    def _stop_confirmed(self, stop: bool | None) -> None:
        if not stop:
            return
        assert self.stop_run is not None  # action_stop_run only asks when there is one
        if self.stop_run():
            self.notify("stop requested: the ranks checkpoint and exit", title="stopping")
        else:
            self.notify("could not reach the run's supervisor (has it exited?)",
                        severity="error")

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.query_one(RunTitle).paused = self.paused
        if not self.paused and self.latest is not None:
            self.show(self.latest)

    def action_cycle_x(self) -> None:
        self.query_one(LossPanel).cycle_x()

    def action_panel(self, name: str) -> None:
        panel = self.query_one(f"#{name}", Panel)
        panel.focus()
        self.screen.maximize(panel)

    def action_full_screen(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            focused = self.focused if isinstance(self.focused, Panel) else \
                self.query_one("#loss", Panel)
            focused.focus()
            self.screen.maximize(focused)

    def action_restore(self) -> None:
        self.screen.minimize()

    def action_checklist(self) -> None:
        latest = self.latest
        if latest is None or latest.summary.checklist is None:
            self.notify("no checklist yet: it needs steps from the step probe")
            return
        lines = [check_line(c) for c in latest.summary.checklist.checks]
        self.push_screen(ChecklistScreen([*lines, "", latest.verdict or ""]))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.quit_hint))


def run_screen(source: Source, *, price: float | None, on_quit_hint: str,
               stop_run: Callable[[], bool]) -> str:
    """Show the live screen until the person quits.

    Returns "quit" when they left the run going, or the run's final state
    (finished, stopped, failed) when it had ended. `on_quit_hint` (how to
    attach again) is printed after a "quit". The caller owns the source;
    it is idle again when this returns.
    """
    app = ScalemonApp(source, price=price, stop_run=stop_run, quit_hint=on_quit_hint)
    try:
        result = app.run() or "quit"
    finally:
        if app.feed is not None:
            app.feed.stop()
    if result == "quit" and on_quit_hint:
        with contextlib.suppress(OSError):  # the terminal went away (SSH closed)
            print(on_quit_hint)
    return result

