"""The header: what the run is, where it runs, its state, and how far it got."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive

from scalemon.core.units import format_count, format_duration, format_params
from scalemon.state.checklist import FAIL, PASS
from scalemon.state.summary import RunInfo
from scalemon.views.text import CHECK_MARKS

from .glyphs import bar
from .panel import Panel
from .view import ViewData

STATE_STYLE = {"training": "panel--good", "finished": "panel--good", "starting": "panel--warn",
               "stalled": "panel--warn", "stopped": "panel--warn", "failed": "panel--bad"}


def describe(info: RunInfo, compact: bool = False) -> str:
    """'demo · d2 · 2.5M params (84% emb) · vocab 8,192 · 2 ranks on vm · gloo/cpu';
    compact: 'demo · d2 · 2.5M (84% emb) · V 8,192 · 2 on vm · gloo/cpu'."""
    parts = [info.name or "?"]
    if info.depth:
        parts.append(f"d{info.depth}")
    if info.n_params:
        params = format_params(info.n_params) + ("" if compact else " params")
        if info.embedding_share is not None:
            params += f" ({info.embedding_share:.0%} emb)"
        parts.append(params)
    if info.vocab:
        parts.append(f"{'V' if compact else 'vocab'} {info.vocab:,}")
    if info.world:
        where = f"{info.world}" if compact else \
            f"{info.world} rank{'s' if info.world != 1 else ''}"
        if info.hosts:
            shown = ", ".join(info.hosts[:3]) + (" …" if len(info.hosts) > 3 else "")
            where += f" on {shown}"
        parts.append(where)
    setup = "/".join(p for p in (info.backend, info.device) if p)
    if setup:
        parts.append(setup)
    return " · ".join(parts)


class RunTitle(Panel):
    """The header's first line: what the run is and where, and its state."""

    can_focus = False
    ALLOW_MAXIMIZE = False
    SLOW = False  # every view: a state change shows at once (and it rarely changes)
    paused: reactive[bool] = reactive(False)

    def watch_paused(self) -> None:
        self.redraw()

    def content(self, view: ViewData) -> Text:
        width = max(1, self.size.width)
        badge = Text(f" {view.summary.phase.upper()} ",
                     style=self.style(STATE_STYLE.get(view.summary.phase, "panel--dim")))
        if self.paused:
            badge = Text(" PAUSED (p) ", style=self.style("panel--warn")) + " " + badge
        room = width - badge.cell_len - 1
        text = describe(view.summary.info)
        if len(text) > room:
            text = describe(view.summary.info, compact=True)
        line = Text(text, style=self.style("panel--em"))
        line.truncate(max(1, room), overflow="ellipsis")
        line.pad_right(width - line.cell_len - badge.cell_len)
        return line.append_text(badge)


class RunProgress(Panel):
    """The header's second line: step / horizon with a progress bar, and the speed.

    A widget of its own because it changes with every step: repainting one line
    is what keeps the screen's cost down while it follows the run.
    """

    can_focus = False
    ALLOW_MAXIMIZE = False
    SLOW = False  # every view: the step counter is how fast the screen follows the run

    def content(self, view: ViewData) -> Text:
        width = max(1, self.size.width)
        done = max(view.summary.step + 1, 0)
        line = Text(f"step {done:,}")
        age = ""
        summary = view.summary
        since = summary.now - summary.last_step_t if summary.last_step_t is not None else 0.0
        if since >= 2 and not summary.done:  # only when it says something: a slow or stuck step
            age = f" · last step {format_duration(since)} ago"
        if view.summary.eta is not None and view.summary.eta.tok_s == view.summary.eta.tok_s:
            age = f" · {format_count(view.summary.eta.tok_s)} tok/s" + age
        if not view.summary.horizon:
            return line + Text(" (no horizon)" + age, style=self.style("panel--dim"))
        fraction = min(1.0, done / view.summary.horizon)
        line.append(f"/{view.summary.horizon:,} ")
        tail = f" {fraction:.1%}"
        room = width - line.cell_len - len(tail) - len(age)
        if room >= 8:
            line.append(bar(fraction, room), style=self.style("panel--good"))
        line.append(tail)
        line.append(age, style=self.style("panel--dim"))
        return line


class PlumbingLine(Panel):
    """The header's third line: the plumbing checklist as it is proved, then the verdict
    (`c` lists each check with its evidence)."""

    can_focus = False
    ALLOW_MAXIMIZE = False
    MARK_STYLE = {PASS: "panel--good", FAIL: "panel--bad"}

    def content(self, view: ViewData) -> Text:
        dim = self.style("panel--dim")
        listed = view.summary.checklist
        if listed is None:
            return Text("plumbing: needs the step probe" if view.summary.source == "log"
                        else "plumbing: waiting for the run", style=dim)
        if listed.validated:
            verdict = view.verdict or ""
            if len(verdict) + 2 > self.size.width:
                verdict = view.verdict_short or verdict
            return Text(f"✓ {verdict}", style=self.style("panel--good"))
        line = Text("plumbing ", style=dim)
        for check in listed.checks:
            style = self.style(self.MARK_STYLE.get(check.state, "panel--dim"))
            line.append(f"{CHECK_MARKS[check.state]}{check.label}", style=style)
            line.append(" ")
        passed = len(listed.of(PASS))
        line.append(f"· {passed}/{len(listed.checks)} (c: details)", style=dim)
        return line
