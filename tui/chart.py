"""The loss chart: raw loss as a min/max band, its smoothed curve, and labelled baselines.

Drawn in braille (2x4 dots a cell) from downsampled buckets, so the cost is
set by the chart's size, not by the length of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from scalemon.state.series import Bucket, columns

from .braille import BrailleCanvas

GUTTER = 6  # "11.09┤": the y labels and the axis
RAW, SMOOTH = 10, 11  # layers above every baseline's


@dataclass(frozen=True)
class Baseline:
    label: str  # short name drawn at the right end of its line
    value: float
    layer: int  # 0, 1, 2 ...: which baseline style it takes


def _tick(value: float) -> str:
    if abs(value) < 100:
        return f"{value:5.2f}"
    if abs(value) < 100_000:
        return f"{value:5.0f}"
    return f"{value:5.0e}"


def value_range(buckets: list[Bucket | None], baselines: list[Baseline],
                cap: float | None) -> tuple[float, float]:
    """(bottom, top) covering the data and every baseline; spikes above `cap` are clipped."""
    values = [b.value for b in baselines]
    for bucket in buckets:
        if bucket is not None:
            values += [v for v in (bucket.low, bucket.high, bucket.smooth) if math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    bottom, top = min(values), max(values)
    if cap is not None and top > cap:
        top = max(cap, bottom)
    pad = (top - bottom) * 0.04 or 0.5
    return bottom - pad, top + pad


def loss_chart(buckets: tuple[Bucket, ...], width: int, height: int, baselines: list[Baseline],
               styles: dict[int, Style], axis: Style, cap: float | None = None) -> list[Text]:
    """`height` lines of `width` cells: the plot, then one line of step numbers."""
    labels = [f" {b.label} {b.value:.2f}" for b in baselines]
    right = max((len(label) for label in labels), default=0)
    if width - GUTTER - right < 12:
        right, labels = 0, []  # too narrow to label the lines inside the chart
    plot_columns, plot_rows = width - GUTTER - right, height - 1
    if plot_columns < 2 or plot_rows < 1 or not buckets:
        return [Text("no loss yet" if not buckets else "", style=axis)]
    canvas = BrailleCanvas(plot_columns, plot_rows)
    picked = columns(buckets, canvas.width)
    bottom, top = value_range(picked, baselines, cap)

    def y(value: float) -> int:
        clipped = min(max(value, bottom), top)
        return round((top - clipped) / (top - bottom) * (canvas.height - 1))

    for baseline in baselines:
        canvas.hline(y(baseline.value), baseline.layer, step=2)
    _plot(canvas, picked, y)

    label_rows = {y(b.value) // 4: (text, b.layer) for b, text in zip(baselines, labels,
                                                                         strict=False)}
    lines = []
    for row, runs in enumerate(canvas.rows_of_runs()):
        tick = _tick(top) if row == 0 else _tick(bottom) if row == plot_rows - 1 else " " * 5
        line = Text(tick + ("┤" if row in (0, plot_rows - 1) else "│"), style=axis)
        for chars, layer in runs:
            line.append(chars, style=styles.get(layer, axis) if layer >= 0 else axis)
        if right:
            text, layer = label_rows.get(row, ("", -1))
            line.append(text.ljust(right), style=styles.get(layer, axis))
        lines.append(line)
    first, last = f"{buckets[0].first + 1:,}", f"{buckets[-1].last + 1:,}"
    gap = max(1, plot_columns - len(first) - len(last))
    lines.append(Text(" " * GUTTER + first + " " * gap + last, style=axis))
    return lines


def _plot(canvas: BrailleCanvas, picked: list[Bucket | None], y) -> None:
    """The raw loss as a min/max band (gaps bridged), the smoothed loss as a line over it."""
    previous_raw = previous_smooth = None
    for x, bucket in enumerate(picked):
        if bucket is None:
            continue
        if math.isfinite(bucket.low):
            mid = y((bucket.low + bucket.high) / 2)
            canvas.vline(x, y(bucket.high), y(bucket.low), RAW)
            if previous_raw is not None and x - previous_raw[0] > 1:
                canvas.line(*previous_raw, x, mid, RAW)
            previous_raw = (x, mid)
        if math.isfinite(bucket.smooth):
            point = (x, y(bucket.smooth))
            if previous_smooth is not None:
                canvas.line(*previous_smooth, *point, SMOOTH)
            else:
                canvas.dot(*point, SMOOTH)
            previous_smooth = point
