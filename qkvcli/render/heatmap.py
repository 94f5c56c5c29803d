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

from .. import i18n
from ..errors import shape_str
from ..trace import SQUARE, titled
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

    what = i18n._("weight") if stage.name == "weights" else stage.name
    entries: list[Text] = []

    def entry(level: int, label: str) -> None:
        piece = Text("[")
        piece.append_text(_swatch(level, RAMP[level] * PAD))
        piece.append(f"] {label}")
        entries.append(piece)

    if math.isnan(shades.lo):
        pass  # no finite value to shade
    elif shades.hi <= shades.lo:
        entry(len(RAMP) // 2, i18n._("all {value}").format(value=_edge(shades.lo, precision)))
    else:
        e = [_edge(v, precision) for v in shades.edges()]
        for i in range(len(RAMP)):
            entry(i, f"{e[i]}–{e[i + 1]}")
    if has_masked:
        entries.append(
            Text(
                i18n._("{masked} masked (weight 0)").format(masked=MASKED)
                if stage.name == "weights"
                else i18n._("−∞ masked")
            )
        )
    prefix = i18n._("shade = {what}: ").format(what=what)
    lines = [Text(prefix)]
    fresh = True  # no entry on the last line yet
    for piece in entries:
        if not fresh and lines[-1].cell_len + 2 + piece.cell_len > width:
            lines.append(Text(" " * Text(prefix).cell_len))
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

    ``width`` is the inner width every value is right-aligned to. A row or a
    column labelled ``⋮`` / ``…`` is where a summary leaves rows or columns out
    (its cells are ``⋮`` / ``…`` too). Each line is one `Text` with style spans,
    built in one pass (appending cell by cell costs seconds for big grids).
    """
    import numpy as np
    from rich.cells import cell_len
    from rich.text import Span, Text

    values = np.asarray(values, dtype=float)  # (rows, cols)
    finite = np.isfinite(values)
    levels = np.full(values.shape, len(RAMP) // 2)  # (rows, cols): each cell's shade
    if shades.hi > shades.lo:  # bisect_right over the inner edges, as `Shades.level`
        levels[finite] = np.searchsorted(shades.edges()[1:-1], values[finite], side="right")
    swatches = [f"{colour} on {colour}" for colour in PALETTE]
    inks = [f"{INK[k]} on {colour}" for k, colour in enumerate(PALETTE)]
    cell_w = max([width + 2 * PAD] + [cell_len(c) for c in cols])
    label_w = max(cell_len(r) for r in rows)
    head = " " * (label_w + 1) + " ".join(_center(c, cell_w) for c in cols)
    head = head.rstrip()
    lines = [Text(head, spans=[Span(label_w + 1, len(head), "bold")])]
    for i, r in enumerate(rows):
        parts = [r, " " * (label_w - cell_len(r) + 1)]
        spans = [Span(0, len(r), "bold")]
        pos = len(parts[0]) + len(parts[1])
        shown, levels_i = finite[i].tolist(), levels[i].tolist()
        for j, text in enumerate(cells[i]):
            if j:
                parts.append(" ")
                pos += 1
            if text == MASKED or text in GAPS or not shown[j]:
                piece = _center(text, cell_w)
                parts.append(piece)
                spans.append(Span(pos, pos + len(piece), "dim"))
                pos += len(piece)
                continue
            level = levels_i[j]
            glyph = RAMP[level]
            left = glyph * (cell_w - PAD - cell_len(text))
            right = glyph * PAD
            parts += [left, text, right]
            swatch = swatches[level]
            spans.append(Span(pos, pos + len(left), swatch))
            pos += len(left)
            spans.append(Span(pos, pos + len(text), inks[level]))
            pos += len(text)
            spans.append(Span(pos, pos + len(right), swatch))
            pos += len(right)
        lines.append(Text("".join(parts), spans=spans))
    return lines


#: What stands for left-out rows and columns in a summarised heatmap.
GAPS = ("⋮", "…")


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


def heatmap_lines(
    trace: Trace, stage: Stage, precision: int, width: int, full: bool = False
) -> list[Text]:
    """Every heatmap of a stage (one per head and batch item), its title and legend.

    Unless ``full``, a big grid is summarised like a table: its first and last
    rows, and the columns from both ends that fit in ``width``, with a line
    saying what is shown.
    """
    import numpy as np
    from rich.cells import cell_len
    from rich.text import Text

    from ..focus import allowed, blocked_cells
    from .text import EDGE_ROWS, MAX_ROWS, pick

    shades = shades_for(stage)
    ok = allowed(trace)
    blocked = blocked_cells(stage.array, ok) if stage.name == "weights" else None
    parts = matrices(stage, trace)
    n, m = stage.shape
    if stage.index is not None:  # only the rows a summary shows were computed
        at = {int(i): k for k, i in enumerate(stage.index)}
        shown = pick(n, 2 * EDGE_ROWS)
    else:
        at = {i: i for i in range(n)}
        shown = pick(n, 2 * EDGE_ROWS) if n > MAX_ROWS and not full else list(range(n))
    real = [i for i in shown if i is not None]
    row_labels = trace.labels(stage.rows, n, short=True)
    col_labels = trace.labels(stage.cols, m, short=True)
    near = (
        list(range(m))
        if full or m <= width // 2
        else [*range(width // 4), *range(m - width // 4, m)]
    )
    texts = []  # per matrix: the text of each shown row's near columns
    for idx, (_, matrix) in zip(np.ndindex(*stage.array.shape[:-2]), parts):
        cut = matrix[[at[i] for i in real]][:, near]  # (shown rows, near columns)
        no = None if blocked is None else blocked[idx][[at[i] for i in real]][:, near]
        texts.append(cell_texts(cut, no, precision))
    inner = max(cell_len(c) for cells in texts for row in cells for c in row)
    cell_w = max([inner + 2 * PAD] + [cell_len(col_labels[j]) for j in near])
    label_w = max(cell_len(row_labels[i]) for i in real)
    room = max(2, (width - label_w - 1) // (cell_w + 1))
    keep = list(range(len(near)))
    if not full and len(near) > room:  # the columns from both ends that fit, and a … column
        data = max(2, room - 1)
        keep = [*range((data + 1) // 2), *range(len(near) - data // 2, len(near))]
    jumps = [k for k in range(len(keep) - 1) if near[keep[k + 1]] != near[keep[k]] + 1]
    gap_after = jumps[0] if jumps else None
    formula = stage.formula.split(" = ", 1)[-1]
    title = i18n._("{formula} ({shape})").format(
        formula=f"{titled(stage.name)} = {formula}", shape=shape_str(stage.shape)
    )
    title = Text(title, style="bold")
    lines = [
        title,
        Text(i18n._("rows: queries (who looks) · columns: keys (looked at)"), style="dim"),
    ]
    blocks = []
    for (suffix, matrix), cells in zip(parts, texts):
        block = [Text(suffix, style="italic")] if suffix else []
        rows, grid_cells, values = [], [], []
        for i in shown:
            if i is None:
                rows.append("⋮")
                grid_cells.append(["⋮"] * (len(keep) + (gap_after is not None)))
                values.append([math.nan] * (len(keep) + (gap_after is not None)))
                continue
            k = real.index(i)
            line, vals = [], []
            for c, kk in enumerate(keep):
                line.append(cells[k][kk])
                vals.append(float(matrix[at[i], near[kk]]))
                if c == gap_after:
                    line.append("…")
                    vals.append(math.nan)
            rows.append(row_labels[i])
            grid_cells.append(line)
            values.append(vals)
        cols = [col_labels[near[kk]] for kk in keep]
        if gap_after is not None:
            cols.insert(gap_after + 1, "…")
        block += grid(rows, cols, grid_cells, np.array(values), shades, inner)
        blocks.append(block)
    lines += side_by_side(blocks, width)
    c_n = len(keep)
    if len(real) < n or c_n < m:
        lines.append(
            Text(
                i18n._(
                    "{rows}×{cols}: showing {r_n} of {rows} rows and {c_n} of {cols} columns "
                    "(--full shows all)"
                ).format(rows=n, cols=m, r_n=len(real), c_n=c_n),
                style="dim",
            )
        )
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
                i18n._("--heatmap draws {join} (queries × keys); {name} is {rows} × {cols}").format(
                    join=", ".join(GRID_STAGES), name=s.name, rows=s.rows, cols=s.cols
                )
            )
    return chosen


def draw_heatmaps(
    trace: Trace, stages: list[Stage], console: Console, precision: int, full: bool = False
) -> None:
    """Print a heatmap of each stage, separated by blank lines (big ones summarised unless ``full``)."""
    for stage in stages:
        console.print()
        for line in heatmap_lines(trace, stage, precision, console.width, full):
            console.print(line, soft_wrap=True)
