"""When will it finish, and should it run here at all: ETA, speed, MFU and what-if rows."""

from __future__ import annotations

from rich.text import Text

from scalemon.core.units import format_count, format_duration, format_money, format_percent
from scalemon.views.text import printed_text

from .clock import finish_time
from .panel import Panel
from .view import ViewData
from .whatif import WHAT_IF_MFU


class EtaPanel(Panel):
    TITLE = "ETA"

    def content(self, view: ViewData) -> Text:
        dim, em = self.style("panel--dim"), self.style("panel--em")
        lines = self._eta(view)
        speed = Text()
        if view.mfu.value is not None:
            speed.append(f"MFU {format_percent(view.mfu.value, 1)}", style=em)
            speed.append(f" {view.mfu.note}", style=dim)
        else:
            speed.append(f"MFU N/A ({view.mfu.note})", style=dim)
        if view.summary.eta is not None:
            speed.append(" · ")
            speed.append(f"{format_count(view.summary.eta.tok_s)} tok/s", style=em)
            speed.append(f" · {format_duration(view.summary.eta.step_s)}/step")
        lines.append(speed)
        printed = printed_text(view.summary)
        if printed:  # the script's own figures, to read beside scalemon's
            lines.append(Text.assemble(("the script says: ", dim), printed))
        lines += self._what_if(view)
        return Text("\n").join(lines)

    def _eta(self, view: ViewData) -> list[Text]:
        dim, em = self.style("panel--dim"), self.style("panel--em")
        eta = view.summary.eta
        if not view.summary.horizon:
            return [Text(f"ETA unknown: {view.summary.eta_missing or 'no horizon'}", style=dim)]
        if view.summary.phase == "finished" or (eta is not None and eta.remaining_steps == 0):
            return [Text("horizon reached", style=self.style("panel--good"))]
        if view.summary.phase in ("stopped", "failed"):
            done = max(view.summary.step + 1, 0)
            return [Text(f"no ETA: the run {view.summary.phase} at step {done:,} of "
                         f"{view.summary.horizon:,}", style=self.style("panel--warn"))]
        if eta is None:
            return [Text("ETA after a few steps past warm-up", style=dim)]
        first = Text.assemble("ETA ", (format_duration(eta.mid_s), em))
        low, high = format_duration(eta.low_s), format_duration(eta.high_s)
        if low != high:
            first.append(f" ({low} to {high})", style=dim)
        second = Text.assemble("finishes ", (finish_time(view.summary.now, eta.mid_s), em),
                               f" · {eta.remaining_steps:,} steps left")
        if view.summary.phase == "stalled":
            first.append(" once it moves again (stalled)", style=self.style("panel--warn"))
        return [first, second]

    def _what_if(self, view: ViewData) -> list[Text]:
        dim = self.style("panel--dim")
        if not view.what_if:
            return []
        whole = view.summary.horizon is not None and view.what_if_steps == view.summary.horizon
        span = "the whole run" if whole else "the rest"
        price = f", ${view.price:.2f}/h" if view.price is not None else ""
        lines = [Text(f"what if, {span} at {WHAT_IF_MFU:.0%} MFU{price}", style=dim)]
        eta = view.summary.eta
        if eta is not None:
            here_s = eta.step_s * view.what_if_steps
            lines.append(self._row("here", eta.tok_s, here_s, None, self.style("panel--em")))
        for row in view.what_if:
            lines.append(self._row(row.label, row.tok_s, row.seconds, row.cost, None))
        return lines

    def _row(self, label: str, tok_s: float, seconds: float, cost: float | None,
             style) -> Text:
        cost_text = format_money(cost) if cost is not None else ""
        text = (f" {label:<11} {format_count(tok_s) + '/s':>7} {format_duration(seconds):>8}"
                f" {cost_text:>7}")
        return Text(text.rstrip(), style=style or "")
