"""Rich tables of the stages of a `Trace`: labelled, titled with formula and shape."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import shape_str
from ..i18n import _
from ..trace import titled
from .text import (
    EDGE_ROWS,
    MAX_ROWS,
    PLAIN_CELLS,
    fmt,
    header,
    matrices,
    pick,
    plain_table,
    scientific,
)
from .text import width as columns_of

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from ..trace import Stage, Trace


def _shade(v: float) -> str:
    """A background style for a weight in [0, 1]: white to deep blue."""
    if not math.isfinite(v):
        return ""
    t = min(max(v, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * t) for c in (33, 102, 172))
    fg = "white" if t > 0.55 else "black"
    return f"{fg} on #{r:02x}{g:02x}{b:02x}"


def fit_columns(widths: list[int], room: int, sep: int = 3) -> list[int | None]:
    """Columns to show from both ends so their widths (each plus ``sep``) fit in ``room``.

    Always at least the first and the last; None marks the … gap.

    >>> fit_columns([4, 4, 4, 4], 100), fit_columns([4, 4, 4, 4, 4], 18)
    ([0, 1, 2, 3], [0, None, 4])
    """
    count = len(widths)
    if sum(w + sep for w in widths) <= room:
        return list(range(count))
    room -= 1 + sep  # the … column
    left, right, used = [], [], 0
    lo, hi = 0, count - 1
    while lo <= hi:
        side = lo if len(left) <= len(right) else hi
        need = widths[side] + sep
        if used + need > room and left and right:
            break
        used += need
        if side == lo:
            left.append(lo)
            lo += 1
        else:
            right.append(hi)
            hi -= 1
    if lo > hi:
        return list(range(count))
    return [*left, None, *reversed(right)]


def stage_table(
    trace: Trace,
    stage: Stage,
    matrix: np.ndarray,
    precision: int,
    width: int | None = None,
) -> tuple[Table, str | None]:
    """One matrix of a stage as a table; weights get a heatmap and a Σ column.

    With ``width`` a big matrix is summarised to its corners (rows beyond
    `MAX_ROWS`, columns beyond what fits in ``width``); the second value then
    says what is shown. Without it every cell is drawn.
    """
    from rich.table import Table
    from rich.text import Text

    from ..exact import is_exact
    from ..exact import text as exact_text

    rows, cols = stage.shape if stage.index is not None else matrix.shape
    at = None if stage.index is None else {int(i): k for k, i in enumerate(stage.index)}

    def row(i: int) -> np.ndarray:  # row i of the stage (of the rows that were computed)
        return matrix[i] if at is None else matrix[at[i]]

    row_labels = trace.labels(stage.rows, rows)
    col_labels = trace.labels(stage.cols, cols)
    weights = stage.name == "weights"
    shown_rows: list[int | None] = list(range(rows))
    if width is not None:
        shown_rows = pick(rows, 2 * EDGE_ROWS) if rows > MAX_ROWS else shown_rows
    real_rows = [i for i in shown_rows if i is not None]
    # Format only the cells that can be shown: at most `width` // 4 columns from each end.
    near = list(range(cols))
    if width is not None and cols > width // 2:
        near = [*range(width // 4), *range(cols - width // 4, cols)]

    import numpy as np

    def layout(sci: bool) -> tuple[dict[int, list[str]], list[int | None], str | None]:
        """The cells' texts in one notation, and the columns that fit (None: the … gap)."""

        def cell(v: Any) -> str:
            return exact_text(v) if is_exact(v) else fmt(float(v), precision, sci)

        text = {j: [cell(row(i)[j]) for i in real_rows] for j in near}
        shown_cols: list[int | None] = list(near)
        note = None
        if width is not None:
            label_w = max((columns_of(row_labels[i]) for i in real_rows), default=1)
            sums = [len(fmt(float(row(i).sum()), precision, sci)) for i in real_rows]
            sums = sums if weights else []
            widths = [max(columns_of(col_labels[j]), *(len(t) for t in text[j])) for j in near]
            # Each column takes its text, a space either side and a border; the table a left border.
            picked = fit_columns(widths, width - 1 - (label_w + 3) - (max(sums) + 3 if sums else 0))
            shown_cols = [None if k is None else near[k] for k in picked]
            if len(near) < cols and None not in shown_cols:
                shown_cols = [*near[: len(near) // 2], None, *near[len(near) // 2 :]]
            if None in shown_rows or None in shown_cols:
                r_n, c_n = len(real_rows), len([j for j in shown_cols if j is not None])
                note = _(
                    "{rows}×{cols}: showing {r_n} of {rows} rows and {c_n} of {cols} columns "
                    "(--full shows all)"
                ).format(rows=rows, cols=cols, r_n=r_n, c_n=c_n)
        return text, shown_cols, note

    # One notation for the cells shown: fixed decimals, unless a cell shown needs scientific.
    text, shown_cols, note = layout(False)
    positions = real_rows if at is None else [at[i] for i in real_rows]
    shown = matrix[np.ix_(positions, [j for j in shown_cols if j is not None])]
    sci = scientific(shown, precision)
    if sci:
        text, shown_cols, note = layout(True)
    table = Table(header_style="bold")
    table.add_column("", style="bold", no_wrap=True)
    for j in shown_cols:
        table.add_column(Text("…" if j is None else col_labels[j]), justify="right", no_wrap=True)
    if weights:
        table.add_column("Σ", justify="right", style="dim", no_wrap=True)
    position = {i: k for k, i in enumerate(real_rows)}
    for i in shown_rows:
        if i is None:
            table.add_row(
                Text("⋮"), *(Text("⋮") for _ in shown_cols), *([Text("⋮")] if weights else [])
            )
            continue
        cells: list[Any] = []
        for j in shown_cols:
            if j is None:
                cells.append(Text("…"))
                continue
            v = float(row(i)[j])
            cells.append(Text(text[j][position[i]], style=_shade(v) if weights else ""))
        if weights:
            cells.append(Text(fmt(float(row(i).sum()), precision, sci)))
        table.add_row(Text(row_labels[i]), *cells)
    return table, note


def render(
    trace: Trace, stages: list[Stage], console: Console, precision: int = 4, full: bool = False
) -> None:
    """Print the header and one table per matrix of each stage.

    Big matrices are summarised to their corners unless ``full``.
    """
    from rich.measure import Measurement
    from rich.text import Text

    console.print(Text(header(trace)), soft_wrap=True)
    for stage in stages:
        for suffix, matrix in matrices(stage, trace):
            title = stage_title(stage, suffix)
            console.print()
            console.print(Text(title, style="italic"), soft_wrap=True)  # never wrapped or cut
            if full and matrix.size > PLAIN_CELLS:
                console.file.write(plain_table(trace, stage, matrix, precision) + "\n")
                continue
            width = None if full else console.width
            table, note = stage_table(trace, stage, matrix, precision, width)
            wide = console.options.update(max_width=10**6)  # the natural width, not clamped
            need = Measurement.get(console, wide, table).maximum
            print_wide(console, table, need)
            if note:
                console.print(Text(note, style="dim"), soft_wrap=True)


def stage_title(stage: Stage, suffix: str = "") -> str:
    """A table's title: the stage's name (in words too, in Chinese), its formula and its shape.

    >>> from types import SimpleNamespace
    >>> stage_title(SimpleNamespace(name="scores", formula="scores = Q·Kᵀ", shape=(3, 3)))
    'scores = Q·Kᵀ (3×3)'
    """
    label = stage.formula.split(" = ", 1)
    name = titled(stage.name) + (f" [{suffix}]" if suffix else "")
    formula = f"{name} = {label[1]}" if len(label) == 2 else f"{name}: {stage.formula}"
    return _("{formula} ({shape})").format(formula=formula, shape=shape_str(stage.shape))


def print_wide(console: Console, renderable: Any, need: int) -> None:
    """Print without squeezing: widen the console for a table wider than it."""
    width = console.width
    if need <= width:
        console.print(renderable)
        return
    console.width = need
    try:
        console.print(renderable, crop=False)
    finally:
        console.width = width


def make_console(file: Any = None, width: int | None = None, color: bool | None = None) -> Console:
    """A console for stdout (or ``file``); colour off when NO_COLOR is set or not a terminal."""
    from rich.console import Console

    class QuietPipeConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError  # the CLI ends quietly, with its own exit code

    kwargs: dict[str, Any] = {"file": file, "width": width, "highlight": False, "emoji": False}
    if color is False:
        kwargs["color_system"] = None
    return QuietPipeConsole(**kwargs)
