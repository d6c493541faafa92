"""Where a step's time goes: the median step as a stacked bar, sync, straggler and regime."""

from __future__ import annotations

import math

from rich.text import Text

from scalemon.core.units import format_bytes, format_duration, format_percent, format_rate
from scalemon.state.analysis import Split
from scalemon.views.text import plumbing_text, sync_text

from .glyphs import segments, sparkline
from .panel import Panel
from .view import ViewData

# (field of Split, label, character drawn without colour)
PARTS = (("forward", "fwd", "f"), ("backward", "bwd", "b"), ("sync", "sync", "s"),
         ("optimizer", "opt", "o"), ("data", "data", "d"), ("other", "other", "·"))
# In the bar only: the straggler line below says who is waited for and how long.
BAR_PARTS = (*PARTS[:3], ("wait", "wait", "w"), *PARTS[3:])
REGIME_STYLE = {"compute-bound": "panel--good", "unknown": "panel--dim"}


class SplitPanel(Panel):
    TITLE = "Step split"
    COMPONENT_CLASSES = {f"split--{name}" for name, _, _ in BAR_PARTS}

    def title(self, view: ViewData) -> str:
        if view.summary.split is None:
            return self.TITLE
        return f"{self.TITLE} · median of {view.summary.split.steps} rank-steps"

    def content(self, view: ViewData) -> Text:
        split = view.summary.split
        if split is None or not split.total > 0:
            why = view.summary.split_missing or "waiting"
            text = "waiting for steps after warm-up" if why == "waiting" else f"split {why}"
            return Text(text, style=self.style("panel--dim"))
        width = max(10, self.size.width)
        lines = [self._bar(split, width), *self._regime(view).wrap(self.app.console, width)]
        lines += self._legend(split, width)
        comm = self._comm(view, split)
        # The straggler before the sync history: at 80x24 the last line is the one cut.
        lines += [comm[0], self._sync_history(view, width), *comm[1:]]
        if view.sync_model:
            lines += Text(view.sync_model, style=self.style("panel--dim")).wrap(
                self.app.console, width)
        plumbing = view.summary.plumbing
        if plumbing is not None and not plumbing.isolated and plumbing.world > 1:
            lines += Text(plumbing_text(view.summary) or "", style=self.style("panel--dim")).wrap(
                self.app.console, width)
        return Text("\n").join(lines)

    def _bar(self, split: Split, width: int) -> Text:
        total = f" {format_duration(split.total)}"
        cells = segments([(name, split.share(name)) for name, _, _ in BAR_PARTS],
                         width - len(total))
        line = Text()
        glyph = {name: char for name, _, char in BAR_PARTS}
        for name, count in cells:
            line.append((glyph[name] if self.plain else "█") * count,
                        style=self.style(f"split--{name}"))
        return line + Text(total, style=self.style("panel--em"))

    def _regime(self, view: ViewData) -> Text:
        style = self.style(REGIME_STYLE.get(view.summary.regime, "panel--warn"))
        return Text.assemble((view.summary.regime, style + self.style("panel--em")),
                             f": {view.summary.advice}")

    def _legend(self, split: Split, width: int) -> list[Text]:
        per_row = max(1, min(3, (width + 1) // 19))
        items = []
        for name, label, char in PARTS:
            item = Text()
            item.append((char if self.plain else "█") + " ", style=self.style(f"split--{name}"))
            at_least = "≥" if name == "sync" and split.sync_lower_bound else " "
            item.append(f"{label:<5}{at_least}{format_duration(getattr(split, name)):>6} "
                        f"{format_percent(split.share(name)):>3}")
            items.append(item)
        cell = max(19, (width + 1) // per_row)
        rows = []
        for start in range(0, len(items), per_row):
            row = Text()
            for item in items[start:start + per_row]:
                item.pad_right(cell - item.cell_len)
                row.append_text(item)
            row.rstrip()
            rows.append(row)
        return rows

    def _sync_history(self, view: ViewData, width: int) -> Text:
        history = view.summary.sync_history
        if not history:
            return Text("sync share: no steps yet", style=self.style("panel--dim"))
        now = history[-1]
        peak = max(history)
        tail = f" {format_percent(now)} (max {format_percent(peak)})"
        room = max(4, width - len("sync share ") - len(tail))
        line = Text("sync share ", style=self.style("panel--dim"))
        # Scaled to at least half a step, so a steady 10% reads as low, not as a full bar.
        line.append(sparkline(history[-room:], top=max(peak, 0.5)), style=self.style("split--sync"))
        return line + tail

    def _comm(self, view: ViewData, split: Split) -> list[Text]:
        dim = self.style("panel--dim")
        plumbing = view.summary.plumbing
        if plumbing is not None and plumbing.isolated:
            return [Text(plumbing_text(view.summary) or "", style=self.style("panel--warn"))]
        if (view.summary.info.world or 1) < 2:
            return [Text("one rank: no gradient sync", style=dim)]
        if split.comm <= 0 and not split.collectives:
            return [Text("no gradient sync measured (no comm hook?)", style=dim)]
        straggler = view.summary.straggler
        lines = [Text("no straggler measured yet", style=dim)]
        if straggler is not None and math.isfinite(straggler.wait_s):
            lines = [Text(f"rank {straggler.rank} slowest: peers wait "
                          f"{format_duration(straggler.wait_s)} "
                          f"({format_percent(straggler.wait_s / split.total)})")]
        lines.append(Text(sync_text(view.summary, brief=True) or ""))
        if split.comm > 0:
            rate = Text(f"comm {format_duration(split.comm)} · {format_bytes(split.bytes)}/step "
                        f"at {format_rate(split.bus_bit_s)}")
        else:  # the script's own collectives (nanochat's optimizer), no DDP
            rate = Text(f"{split.collectives} collectives · "
                        f"{format_bytes(split.collective_bytes)}/step · blocked "
                        f"{format_duration(split.sync_blocked)}")
        if view.summary.net_bytes_per_step is not None:
            rate.append(f" · {format_bytes(view.summary.net_bytes_per_step)} sent", style=dim)
        lines.append(rate)
        return lines
