"""Heatmaps of the query × key stages: a shaded grid with token labels and a legend.

Every cell holds its value between shade glyphs, so the grid reads the same
with colour (the glyphs take the cell's colour and disappear into it) and
without (the glyph ramp ``" ░▒▓█"`` shows the level). Files saved with
``--svg``/``--html`` therefore hold exactly the characters of the terminal.

>>> s = Shades(0.0, 1.0)
>>> [s.level(v) for v in (0.0, 0.19, 0.2, 0.5, 0.99, 1.0)]
[0, 0, 1, 2, 4, 4]
>>> RAMP[s.level(0.45)]
'▒'
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import shape_str
from ..trace import SQUARE
from .text import fmt, matrices, scientific

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.text import Text

    from ..trace import Stage, Trace

#: Glyphs from the lowest shade to the highest.
RAMP = " ░▒▓█"
#: Five steps of viridis (perceptually even, colour-blind safe), one per glyph.
PALETTE = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
#: Text colour readable on each step.
INK = ("#ffffff", "#ffffff", "#000000", "#000000", "#000000")
#: Stages a heatmap can draw: the ones indexed by queries and keys.
GRID_STAGES = SQUARE
MASKED = "×"
PAD = 2  # shade glyphs on each side of a value


@dataclass(frozen=True)
class Shades:
    """Maps values in [lo, hi] to one of ``len(RAMP)`` equal bins (the last one closed)."""

    lo: float
    hi: float

    def level(self, v: float) -> int:
        """The bin of ``v``, by the same edges the legend prints; outside [lo, hi]: the nearest end."""
        if self.hi <= self.lo:
            return len(RAMP) // 2
        return bisect.bisect_right(self.edges()[1:-1], v)

    def edges(self) -> list[float]:
        """The bin boundaries, lowest first: ``len(RAMP) + 1`` values."""
        n = len(RAMP)
        return [self.lo + (self.hi - self.lo) * i / n for i in range(n)] + [self.hi]


def shades_for(stage: Stage) -> Shades:
    """Weights are shaded on [0, 1]; other stages from their smallest to largest finite value.

    One scale per stage, shared by every head and batch item, so shades compare.
    """
    import numpy as np

    if stage.name == "weights":
        return Shades(0.0, 1.0)
    finite = stage.array[np.isfinite(stage.array)]
    if finite.size == 0:
        return Shades(math.nan, math.nan)
    return Shades(float(finite.min()), float(finite.max()))


def _edge(v: float, precision: int) -> str:
    """A bin boundary for the legend: ``precision`` significant digits."""
    return f"{v:.{max(precision, 1)}g}"


def _swatch(level: int, text: str) -> Text:
    """Shade glyphs drawn in the colour of their level, on that colour."""
    from rich.text import Text

    colour = PALETTE[level]
    return Text(text, style=f"{colour} on {colour}")


def legend(
    stage: Stage, shades: Shades, precision: int, has_masked: bool, width: int
) -> list[Text]:
    """Lines mapping each shade to its range of values, e.g. ``[▒▒] 0.4–0.6``, wrapped at ``width``."""
    from rich.text import Text

    what = "weight" if stage.name == "weights" else stage.name
    entries: list[Text] = []

    def entry(level: int, label: str) -> None:
        piece = Text("[")
        piece.append_text(_swatch(level, RAMP[level] * PAD))
        piece.append(f"] {label}")
        entries.append(piece)

    if math.isnan(shades.lo):
        pass  # no finite value to shade
    elif shades.hi <= shades.lo:
        entry(len(RAMP) // 2, f"all {_edge(shades.lo, precision)}")
    else:
        e = [_edge(v, precision) for v in shades.edges()]
        for i in range(len(RAMP)):
            entry(i, f"{e[i]}–{e[i + 1]}")
    if has_masked:
        entries.append(
            Text(f"{MASKED} masked (weight 0)" if stage.name == "weights" else "−∞ masked")
        )
    prefix = f"shade = {what}: "
    lines = [Text(prefix)]
    fresh = True  # no entry on the last line yet
    for piece in entries:
        if not fresh and lines[-1].cell_len + 2 + piece.cell_len > width:
            lines.append(Text(" " * len(prefix)))
            fresh = True
        lines[-1].append("" if fresh else "  ")
        lines[-1].append_text(piece)
        fresh = False
    return lines


def cell_texts(matrix: np.ndarray, blocked: np.ndarray | None, precision: int) -> list[list[str]]:
    """What each cell says: its value (every one in the same notation), or ``×`` for a masked weight."""
    shown = matrix if blocked is None else matrix[~blocked]
    sci = scientific(shown, precision)
    return [
        [
            MASKED if blocked is not None and blocked[i, j] else fmt(float(v), precision, sci)
            for j, v in enumerate(row)
        ]
        for i, row in enumerate(matrix)
    ]


def grid(
    rows: list[str],
    cols: list[str],
    cells: list[list[str]],
    values: np.ndarray,
    shades: Shades,
    width: int,
) -> list[Text]:
    """The lines of one heatmap: a header of key labels, then one line per query.

    ``width`` is the inner width every value is right-aligned to.
    """
    from rich.cells import cell_len
    from rich.text import Text

    cell_w = max([width + 2 * PAD] + [cell_len(c) for c in cols])
    label_w = max(cell_len(r) for r in rows)
    head = Text(" " * (label_w + 1))
    for j, c in enumerate(cols):
        head.append((" " if j else "") + _center(c, cell_w), style="bold")
    head.rstrip()
    lines = [head]
    for i, r in enumerate(rows):
        line = Text()
        line.append(r, style="bold")
        line.append(" " * (label_w - cell_len(r) + 1))
        for j, text in enumerate(cells[i]):
            if j:
                line.append(" ")
            v = float(values[i, j])
            if text == MASKED or not math.isfinite(v):
                line.append(_center(text, cell_w), style="dim")
                continue
            level = shades.level(v)
            left = cell_w - PAD - cell_len(text)
            line.append_text(_swatch(level, RAMP[level] * left))
            colour = PALETTE[level]
            line.append(text, style=f"{INK[level]} on {colour}")
            line.append_text(_swatch(level, RAMP[level] * PAD))
        lines.append(line)
    return lines


def _center(text: str, width: int) -> str:
    from rich.cells import cell_len

    gap = max(width - cell_len(text), 0)
    return " " * (gap - gap // 2) + text + " " * (gap // 2)


def side_by_side(blocks: list[list[Text]], width: int, gap: int = 4) -> list[Text]:
    """Place blocks of lines next to each other while they fit in ``width``, else below."""
    from rich.text import Text

    out: list[Text] = []
    row: list[list[Text]] = []
    used = 0

    def flush() -> None:
        if not row:
            return
        if out:
            out.append(Text())
        widths = [max(line.cell_len for line in b) for b in row]
        for k in range(max(len(b) for b in row)):
            line = Text()
            for n, (b, w) in enumerate(zip(row, widths)):
                part = b[k] if k < len(b) else Text()
                line.append_text(part)
                if n < len(row) - 1:
                    line.append(" " * (w - part.cell_len + gap))
            out.append(line)
        row.clear()

    for block in blocks:
        w = max(line.cell_len for line in block)
        if row and used + gap + w > width:
            flush()
            used = 0
        used += (gap if row else 0) + w
        row.append(block)
    flush()
    return out


def heatmap_lines(trace: Trace, stage: Stage, precision: int, width: int) -> list[Text]:
    """Every heatmap of a stage (one per head and batch item), its title and legend."""
    import numpy as np
    from rich.cells import cell_len
    from rich.text import Text

    from ..focus import allowed, blocked_cells

    shades = shades_for(stage)
    ok = allowed(trace)
    blocked = blocked_cells(stage.array, ok) if stage.name == "weights" else None
    parts = matrices(stage, trace)
    n, m = stage.shape
    rows = trace.labels(stage.rows, n, short=True)
    cols = trace.labels(stage.cols, m, short=True)
    all_cells = []
    for idx, (_, matrix) in zip(np.ndindex(*stage.array.shape[:-2]), parts):
        all_cells.append(cell_texts(matrix, None if blocked is None else blocked[idx], precision))
    inner = max(cell_len(c) for cells in all_cells for row in cells for c in row)
    formula = stage.formula.split(" = ", 1)[-1]
    title = Text(f"{stage.name} = {formula} ({shape_str(stage.shape)})", style="bold")
    lines = [title, Text("rows: queries (who looks) · columns: keys (looked at)", style="dim")]
    blocks = []
    for (suffix, matrix), cells in zip(parts, all_cells):
        block = [Text(suffix, style="italic")] if suffix else []
        block += grid(rows, cols, cells, matrix, shades, inner)
        blocks.append(block)
    lines += side_by_side(blocks, width)
    masked = bool(blocked is not None and blocked.any()) or bool(
        np.isneginf(stage.array).any() and stage.name != "weights"
    )
    lines += legend(stage, shades, precision, masked, width)
    return lines


def heatmap_stages(trace: Trace, names: list[str] | None, every: bool) -> list[Stage]:
    """The stages to draw: those named (each must be queries × keys), all with ``every``, else weights.

    Raises `OptionError` for a stage that is not a query × key matrix.
    """
    from ..errors import OptionError

    if every and not names:
        return [s for s in trace.stages.values() if s.name in GRID_STAGES]
    chosen = trace.select(names or ["weights"])
    for s in chosen:
        if s.name not in GRID_STAGES:
            raise OptionError(
                f"--heatmap draws {', '.join(GRID_STAGES)} (queries × keys); "
                f"{s.name} is {s.rows} × {s.cols}"
            )
    return chosen


def draw_heatmaps(trace: Trace, stages: list[Stage], console: Console, precision: int) -> None:
    """Print a heatmap of each stage, separated by blank lines."""
    for stage in stages:
        console.print()
        for line in heatmap_lines(trace, stage, precision, console.width):
            console.print(line, soft_wrap=True)
