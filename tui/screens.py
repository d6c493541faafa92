"""The dialogs: confirm stopping the run, help, and the plumbing checklist."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmStop(ModalScreen[bool]):
    """Stopping is graceful (the ranks checkpoint first) but cannot be undone from here."""

    BINDINGS = [Binding("y", "answer(True)", "stop the run"),
                Binding("n,escape", "answer(False)", "keep training")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.run_name = name

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Stop run {self.run_name}?", classes="dialog-title")
            yield Static("The ranks finish the current step, save a checkpoint and exit. "
                         f"Continue later with: scalemon run --resume {self.run_name}")
            yield Static("y stop the run    n / Esc keep training", classes="dialog-keys")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)


HELP = """\
q        close the screen; the run keeps training
s        stop the run (asks first; ranks checkpoint)
p        pause screen updates (data still comes in)
x        loss x-axis: all steps, last 1,000, last 100
c        the plumbing checklist, each check's evidence
1 to 5   one panel full screen: split, loss, ETA,
         system, events (Esc: all panels again)
Tab, f   focus a panel, show it full screen
?        this help

sync     exposed gradient sync, timed by a DDP comm
         hook (a barrier after backward reads ~0)
hidden   gradient comm that ran under backward
slowest  the rank whose last gradient bucket is
         ready last: its peers wait that long
lnV      ln(vocab), the loss of a uniform guess
H1       the data's unigram entropy
Hr       the data's entropy rate (the floor)
ETA      median recent step (no warm-up or
         checkpoint steps), 25-75th percentile band
what if  the same tokens on one GPU of each kind
         at 40% MFU (as scalemon plan computes)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "close help")]

    def __init__(self, quit_hint: str) -> None:
        super().__init__()
        self.quit_hint = quit_hint

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static("scalemon keys", classes="dialog-title")
            yield Static(HELP + (f"\n{self.quit_hint}" if self.quit_hint else ""), markup=False)
            yield Static("Esc, q or ? closes this help", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)


class ChecklistScreen(ModalScreen[None]):
    """Each plumbing check with its evidence, and the verdict (lines from views.text)."""

    BINDINGS = [Binding("escape,q,c", "close", "close")]

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="-wide"):
            yield Static("plumbing checklist", classes="dialog-title")
            yield Static("\n".join(self.lines), markup=False)
            yield Static("Esc, q or c closes this list", classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)
