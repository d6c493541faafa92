"""A braille dot canvas: 2x4 dots per character cell, one style per cell.

Pure (no textual): lines and dots go in, rows of (text, layer) runs come out.
Each cell takes the style of the highest layer drawn into it, so a smoothed
curve stays on top of the raw loss, and both on top of the baselines.
"""

from __future__ import annotations

# Bit of each dot in a braille character, indexed [y][x] inside the 2x4 cell.
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
_BLANK = 0x2800


class BrailleCanvas:
    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = max(0, columns), max(0, rows)
        self.width, self.height = 2 * self.columns, 4 * self.rows  # in dots
        self._bits = [0] * (self.columns * self.rows)
        self._layer = [-1] * (self.columns * self.rows)

    def dot(self, x: int, y: int, layer: int) -> None:
        """Set the dot at (x, y), y = 0 at the top; dots outside the canvas are dropped."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return
        cell = (y >> 2) * self.columns + (x >> 1)
        self._bits[cell] |= _DOTS[y & 3][x & 1]
        if layer > self._layer[cell]:
            self._layer[cell] = layer

    def vline(self, x: int, y0: int, y1: int, layer: int) -> None:
        for y in range(max(0, min(y0, y1)), min(self.height - 1, max(y0, y1)) + 1):
            self.dot(x, y, layer)

    def line(self, x0: int, y0: int, x1: int, y1: int, layer: int) -> None:
        """A straight line (Bresenham), endpoints included."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, layer)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def hline(self, y: int, layer: int, step: int = 1) -> None:
        """A horizontal line; step 2 or more draws it dotted."""
        for x in range(0, self.width, step):
            self.dot(x, y, layer)

    def layer_at(self, column: int, row: int) -> int:
        return self._layer[row * self.columns + column]

    def rows_of_runs(self) -> list[list[tuple[str, int]]]:
        """Each row as runs of (characters, layer); layer -1 is blank.

        A blank cell shows no dots, so it joins whichever run it is next to: fewer
        runs make fewer styled segments for the terminal to draw.
        """
        out = []
        for row in range(self.rows):
            runs: list[tuple[str, int]] = []
            base = row * self.columns
            for column in range(self.columns):
                char = chr(_BLANK + self._bits[base + column])
                layer = self._layer[base + column]
                if runs and (layer == -1 or runs[-1][1] in (layer, -1)):
                    text, last = runs[-1]
                    runs[-1] = (text + char, last if layer == -1 else layer)
                else:
                    runs.append((char, layer))
            out.append(runs)
        return out
