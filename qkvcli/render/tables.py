"""Rich tables of the stages of a `Trace`: labelled, titled with formula and shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import shape_str
from ..i18n import _
from ..trace import titled
from .text import (
    EDGE_ROWS,
    MAX_ROWS,
    PLAIN_CELLS,
    box,
    fmt,
    fmt_row,
    header,
    matrices,
    pick,
    scientific,
    write_out,
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


@dataclass
class Grid:
    """A stage's table as text: the column titles (the row labels' first), the rows of cells,
    and what a summary left out. ``values`` are the weights behind their cells (for shading)."""

    head: list[str]
    rows: list[list[str]]
    values: list[list[float]] | None = None
    note: str | None = None
    justify: list[str] | None = None  # "left" or "right" per column; default: labels left


def grid_table(grid: Grid) -> Table:
    """A grid as a plain rich table: bold titles, each column justified as the grid says."""
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    justify = grid.justify or ["left", *["right"] * (len(grid.head) - 1)]
    for title, side in zip(grid.head, justify):
        table.add_column(Text(title), justify=side, no_wrap=True)  # type: ignore[arg-type]
    for cells in grid.rows:
        table.add_row(*(Text(c) for c in cells))
    return table


def stage_grid(
    trace: Trace,
    stage: Stage,
    matrix: np.ndarray,
    precision: int,
    width: int | None = None,
) -> Grid:
    """One matrix of a stage as a grid of texts; weights get a Σ column.

    With ``width`` a big matrix is summarised to its corners (rows beyond
    `MAX_ROWS`, columns beyond what fits in ``width``, a ⋮ row and a …
    column where they were), and the note says what is shown. Without it
    every cell is there.
    """
    import numpy as np

    from ..exact import is_exact
    from ..exact import text as exact_text

    rows, cols = stage.shape if stage.index is not None else matrix.shape
    at = None if stage.index is None else {int(i): k for k, i in enumerate(stage.index)}

    def row(i: int) -> np.ndarray:  # row i of the stage (of the rows that were computed)
        return matrix[i] if at is None else matrix[at[i]]

    row_labels = trace.labels(stage.rows, rows)
    col_labels = trace.labels(stage.cols, cols)
    weights = stage.name == "weights"
    exact = matrix.dtype == object and any(is_exact(v) for v in matrix.flat)
    shown_rows: list[int | None] = list(range(rows))
    if width is not None:
        shown_rows = pick(rows, 2 * EDGE_ROWS) if rows > MAX_ROWS else shown_rows
    real_rows = [i for i in shown_rows if i is not None]
    # Format only the cells that can be shown: at most `width` // 4 columns from each end.
    near = list(range(cols))
    if width is not None and cols > width // 2:
        near = [*range(width // 4), *range(cols - width // 4, cols)]

    def layout(sci: bool) -> tuple[dict[int, list[str]], list[int | None], str | None]:
        """The cells' texts in one notation, and the columns that fit (None: the … gap)."""
        if exact:
            text = {j: [exact_text(row(i)[j]) if is_exact(row(i)[j])
                        else fmt(float(row(i)[j]), precision, sci) for i in real_rows]
                    for j in near}  # fmt: skip
        else:
            by_row = [fmt_row(np.asarray(row(i), dtype=float)[near], precision, sci)
                      for i in real_rows]  # fmt: skip
            text = {j: [r[k] for r in by_row] for k, j in enumerate(near)}
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
    head = ["", *("…" if j is None else col_labels[j] for j in shown_cols)]
    head += ["Σ"] if weights else []
    position = {i: k for k, i in enumerate(real_rows)}
    body: list[list[str]] = []
    values: list[list[float]] | None = [] if weights else None
    for i in shown_rows:
        if i is None:
            body.append(["⋮"] * len(head))
            if values is not None:
                values.append([math.nan] * len(head))
            continue
        k = position[i]
        body.append([row_labels[i], *("…" if j is None else text[j][k] for j in shown_cols)])
        if values is not None:
            r = row(i)
            values.append([math.nan, *(math.nan if j is None else float(r[j]) for j in shown_cols)])
            body[-1].append(fmt(float(r.sum()), precision, sci))
            values[-1].append(math.nan)
    return Grid(head, body, values, note)


def stage_table(grid: Grid) -> Table:
    """A grid as a rich table: bold labels, numbers right-aligned, weights shaded white to blue."""
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    table.add_column("", style="bold", no_wrap=True)
    sums = grid.values is not None  # the weights' Σ column, dim
    for title in grid.head[1 : len(grid.head) - sums]:
        table.add_column(Text(title), justify="right", no_wrap=True)
    if sums:
        table.add_column(grid.head[-1], justify="right", style="dim", no_wrap=True)
    for r, cells in enumerate(grid.rows):
        shades = grid.values[r] if grid.values is not None else [math.nan] * len(cells)
        table.add_row(*(Text(c, style=_shade(v)) for c, v in zip(cells, shades)))  # NaN: none
    return table


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
            grid = stage_grid(trace, stage, matrix, precision, None if full else console.width)
            if full and matrix.size > PLAIN_CELLS:
                write_out(console.file, box(grid.head, grid.rows) + "\n")
                continue
            table = stage_table(grid)
            wide = console.options.update(max_width=10**6)  # the natural width, not clamped
            need = Measurement.get(console, wide, table).maximum
            print_wide(console, table, need)
            if grid.note:
                console.print(Text(grid.note, style="dim"), soft_wrap=True)


def write_tables(
    trace: Trace, stages: list[Stage], file: Any = None, precision: int = 4, full: bool = False
) -> None:
    """`render` to ``file`` (stdout); where rich would print no styles (a pipe, a file) and every
    label's width is sure, the same text is written without loading rich (start-up time)."""
    import sys

    out = file or sys.stdout
    pairs = [(s, suffix, m) for s in stages for suffix, m in matrices(s, trace)]
    if not plain(out, [*(trace.tokens or []), *(trace.kv_tokens or [])]):
        render(trace, stages, make_console(file), precision, full)
        return
    width = None if full else screen_width()
    parts = [header(trace)]
    for stage, suffix, matrix in pairs:
        grid = stage_grid(trace, stage, matrix, precision, width)
        parts += ["", stage_title(stage, suffix), box(grid.head, grid.rows)]
        parts += [grid.note] if grid.note else []
    write_out(out, "\n".join(parts) + "\n")


def styled(file: Any) -> bool:
    """Whether rich would style its output to ``file``: a terminal, or one forced by the
    environment (TTY_COMPATIBLE, FORCE_COLOR, as rich reads them)."""
    import os

    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False


def screen_width() -> int:
    """The width rich gives a console that is not a terminal: COLUMNS, else the terminal of
    stdin, stdout or stderr, else 80."""
    import os

    found = None
    for fd in (0, 1, 2):
        try:
            found = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        found = int(columns)
    return found or 80


def plain(file: Any, texts: list[str]) -> bool:
    """Whether tables of ``texts`` go to ``file`` as plain text: rich would print no styles
    there (`styled`), and each text's width is one qkv and rich agree on: ASCII, Latin
    letters, Chinese (emoji and combining marks are measured by rich alone).

    >>> import io
    >>> plain(io.StringIO(), ["猫", "café"]), plain(io.StringIO(), ["👍🏽"])
    (True, False)
    """
    return not styled(file) and all(sure_width(c) for text in texts for c in text)


#: Symbols qkv's tables hold (marks, gaps, exact values) whose width rich measures as qkv does.
SYMBOLS = frozenset("✓✗…⋮Σ−∞√·×½⅓¼ᵀθπ≈≤≥⌊⌋←→₂²")


def sure_width(c: str) -> bool:
    """Whether qkv (`text.width`) and rich measure ``c`` alike (tests/test_plain_tables.py).

    >>> sure_width("键"), sure_width("✓"), sure_width("\u0301")
    (True, True, False)
    """
    o = ord(c)
    return c in SYMBOLS or (
        0x20 <= o < 0x7F
        or 0xA0 <= o < 0x300
        or 0x3000 <= o <= 0x303F  # CJK punctuation
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF  # CJK ideographs
        or 0xFF01 <= o <= 0xFF5E  # full-width forms
    )


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
