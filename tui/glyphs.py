"""Text bars and sparklines: the block characters every panel draws with."""

from __future__ import annotations

import math

_EIGHTHS = " ▏▎▍▌▋▊▉█"
_SPARKS = "▁▂▃▄▅▆▇█"


def bar(fraction: float, width: int, empty: str = "░") -> str:
    """A left-to-right bar `width` cells wide, filled to `fraction`, in eighths of a cell."""
    if width <= 0:
        return ""
    fraction = min(1.0, max(0.0, fraction if math.isfinite(fraction) else 0.0))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text + empty * (width - len(text))


def sparkline(values, top: float | None = None) -> str:
    """One block per value, scaled to `top` (default: the largest value); NaN is a space."""
    finite = [v for v in values if math.isfinite(v)]
    top = top if top is not None else max(finite, default=0.0)
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
        elif top <= 0:
            out.append(_SPARKS[0])
        else:
            out.append(_SPARKS[min(len(_SPARKS) - 1, max(0, int(v / top * len(_SPARKS))))])
    return "".join(out)


def segments(parts: list[tuple[str, float]], width: int) -> list[tuple[str, int]]:
    """Split `width` cells among named shares (largest remainder), so the cells add up.

    A part with a share too small for one cell gets none; the widths always sum to
    `width` when the shares sum to 1.
    """
    total = sum(max(0.0, s) for _, s in parts if math.isfinite(s))
    if width <= 0 or total <= 0:
        return [(name, 0) for name, _ in parts]
    exact = [max(0.0, s) / total * width if math.isfinite(s) else 0.0 for _, s in parts]
    cells = [math.floor(e) for e in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in order[: width - sum(cells)]:
        cells[i] += 1
    return [(name, n) for (name, _), n in zip(parts, cells, strict=True)]
