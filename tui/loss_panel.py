"""Is the model learning: loss and its smoothed curve against ln(vocab) and the data's entropy."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive

from .chart import Baseline, loss_chart
from .panel import Panel
from .view import ViewData

# The x-axis: every step, or the last N (the `x` key cycles).
X_MODES = (("all", None), ("last 1,000", 1000), ("last 100", 100))
WIDE = 70  # from this width the baselines get their long names


class LossPanel(Panel):
    TITLE = "Loss"
    COMPONENT_CLASSES = {"loss--raw", "loss--smooth", "loss--lnv", "loss--unigram", "loss--rate",
                         "loss--axis"}

    x_mode: reactive[int] = reactive(0)

    def cycle_x(self) -> str:
        self.x_mode = (self.x_mode + 1) % len(X_MODES)
        return X_MODES[self.x_mode][0]

    def watch_x_mode(self) -> None:
        if self.view is not None:
            self.set_title(self.title(self.view))
            self.redraw()

    def title(self, view: ViewData) -> str:
        return f"{self.TITLE} · {X_MODES[self.x_mode][0]} steps (x)"

    def content(self, view: ViewData) -> Text:
        width, height = max(1, self.size.width), max(2, self.size.height)
        count = X_MODES[self.x_mode][1]
        buckets = view.summary.loss_all if count is None else view.summary.loss_recent[-count:]
        wide = width >= WIDE
        baselines = []
        for (short, long), value, layer in ((("lnV", "ln V"), view.summary.ln_vocab, 0),
                                            (("H1", "unigram H"), view.summary.unigram_entropy, 1),
                                            (("Hr", "entropy rate"), view.summary.entropy_rate, 2)):
            if value is not None and math.isfinite(value):
                baselines.append(Baseline(long if wide else short, value, layer))
        styles = {0: self.style("loss--lnv"), 1: self.style("loss--unigram"),
                  2: self.style("loss--rate"), 10: self.style("loss--raw"),
                  11: self.style("loss--smooth")}
        cap = 1.5 * view.summary.ln_vocab if view.summary.ln_vocab else None
        numbers = [self._numbers(view)]
        cut = numbers[0].plain.rfind(" · ")
        if numbers[0].cell_len > width and cut > 0:  # narrow: the distance gets its own line
            numbers = [numbers[0][:cut], numbers[0][cut + 3:]]
        lines = loss_chart(buckets, width, height - len(numbers), baselines, styles,
                           self.style("loss--axis"), cap=cap)
        return Text("\n").join([*numbers, *lines])

    def _numbers(self, view: ViewData) -> Text:
        line = Text()
        if view.summary.loss is None:
            return line.append("no loss yet", style=self.style("panel--dim"))
        if not math.isfinite(view.summary.loss):
            return line.append(f"loss {view.summary.loss}", style=self.style("panel--bad"))
        line.append("loss ")
        line.append(f"{view.summary.loss:.3f}",
                    style=self.style("loss--raw") + self.style("panel--em"))
        if view.summary.smoothed_loss is not None:
            line.append(" · smoothed ")
            line.append(f"{view.summary.smoothed_loss:.3f}",
                        style=self.style("loss--smooth") + self.style("panel--em"))
        if view.summary.ln_vocab:
            below = view.summary.ln_vocab - view.summary.loss
            side, style = ("below", "panel--good") if below >= 0 else ("above", "panel--bad")
            line.append(" · ")
            line.append(f"{abs(below):.2f} nats {side} ln V", style=self.style(style))
        return line
