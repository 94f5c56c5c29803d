"""Rich tables of the stages of a `Trace`: labelled, titled with formula and shape.

The only module besides the CLI that imports rich.

>>> fmt(0.123456, 4), fmt(float("-inf"), 4)
('0.1235', '−∞')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import shape_str

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from ..trace import Stage, Trace


def fmt(v: float, precision: int) -> str:
    """A cell as shown in tables: fixed decimals, −∞ for masked, NaN as such."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "−∞" if v < 0 else "∞"
    if v != 0 and (abs(v) >= 1e9 or abs(v) < 10.0**-precision / 2):
        return f"{v:.{precision}e}"
    text = f"{v:.{precision}f}"
    return "0." + "0" * precision if text.lstrip("-") == "0." + "0" * precision else text


def labels(trace: Trace, axis: str, count: int) -> list[str]:
    """Labels for rows/columns: tokens for queries and keys, 1-based numbers otherwise."""
    names = {"queries": trace.tokens, "keys": trace.kv_tokens}.get(axis)
    if names is not None and len(names) == count:
        return list(names)
    return [str(i) for i in range(1, count + 1)]


def _shade(v: float) -> str:
    """A background style for a weight in [0, 1]: white to deep blue."""
    if not math.isfinite(v):
        return ""
    t = min(max(v, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * t) for c in (33, 102, 172))
    fg = "white" if t > 0.55 else "black"
    return f"{fg} on #{r:02x}{g:02x}{b:02x}"


def stage_table(trace: Trace, stage: Stage, matrix: np.ndarray, precision: int) -> Table:
    """One matrix of a stage as a table; weights get a heatmap and a Σ column."""
    from rich.table import Table
    from rich.text import Text

    from ..exact import is_exact
    from ..exact import text as exact_text

    rows, cols = matrix.shape
    row_labels = labels(trace, stage.rows, rows)
    col_labels = labels(trace, stage.cols, cols)
    table = Table(header_style="bold")
    table.add_column("", style="bold", no_wrap=True)
    for label in col_labels:
        table.add_column(Text(label), justify="right", no_wrap=True)
    weights = stage.name == "weights"
    if weights:
        table.add_column("Σ", justify="right", style="dim", no_wrap=True)
    for label, row in zip(row_labels, matrix):
        cells: list[Any] = []
        for v in row:
            text = exact_text(v) if is_exact(v) else fmt(float(v), precision)
            cells.append(Text(text, style=_shade(float(v)) if weights else ""))
        if weights:
            cells.append(Text(fmt(float(row.sum()), precision)))
        table.add_row(Text(label), *cells)
    return table


def matrices(stage: Stage, trace: Trace) -> list[tuple[str, np.ndarray]]:
    """Split a stage into 2-D matrices with a suffix naming the batch item and head."""
    import numpy as np

    a = stage.array
    out = []
    for idx in np.ndindex(*a.shape[:-2]):
        parts = []
        if trace.batched:
            parts.append(f"item {idx[0] + 1}")
        if stage.per_head:
            parts.append(f"head {idx[-1] + 1}/{trace.heads}")
        out.append((", ".join(parts), a[idx]))
    return out


def header(trace: Trace) -> str:
    """The line printed above the tables: input, sizes, layout, scale, keys read."""
    m = trace.meta
    sizes = f"{m['n_queries']} queries × {m['n_keys']} keys"
    if m["d_model"]:
        sizes += f", d_model {m['d_model']}"
    sizes += f", d_k {m['d_k']}, d_v {m['d_v']}"
    if m["heads"] > 1:
        sizes += f", {m['heads']} heads" + (
            f" ({m['kv_heads']} K/V heads)" if m["kv_heads"] != m["heads"] else ""
        )
    layout = f"layout {m['layout']}"
    if m["layout"] == "rows":
        layout += f", weights {m['weights_layout']}"
    scale = f"scale {m['scale_rule']} = {m['scale']:.6g}"
    lines = [f"{m['input']}: {sizes}; {layout}; {scale}"]
    extras = []
    if m["similarity"] != "dot":
        extras.append(f"similarity {m['similarity']}")
    if m["normalize"] != "softmax":
        extras.append(f"weights by {m['normalize']}")
    if m["temperature"] != 1:
        extras.append(f"temperature {m['temperature']:g}")
    if m["mask"]:
        masks = f"masks: {', '.join(m['mask'])}"
        if {"mask", "key_padding_mask"} & set(m["mask"]):
            masks += f" (1 = {'blocked' if m['mask_polarity'] == 'block' else 'may attend'})"
        extras.append(masks)
    if m["empty_rows"] != "error":
        extras.append(f"fully masked rows → {m['empty_rows']}")
    if m["dtype"] != "float64":
        extras.append(m["dtype"])
    if extras:
        lines.append("; ".join(extras))
    keys = [f"{canon} ← {key}" for canon, key in m["keys"].items()]
    if keys:
        lines.append("read " + ", ".join(keys))
    return "\n".join(lines)


def render(trace: Trace, stages: list[Stage], console: Console, precision: int = 4) -> None:
    """Print the header and one table per matrix of each stage."""
    from rich.measure import Measurement
    from rich.text import Text

    console.print(Text(header(trace)), soft_wrap=True)
    for stage in stages:
        for suffix, matrix in matrices(stage, trace):
            label = stage.formula.split(" = ", 1)
            name = stage.name + (f" [{suffix}]" if suffix else "")
            formula = f"{name} = {label[1]}" if len(label) == 2 else f"{name}: {stage.formula}"
            title = f"{formula} ({shape_str(matrix.shape)})"
            table = stage_table(trace, stage, matrix, precision)
            console.print()
            console.print(Text(title, style="italic"), soft_wrap=True)  # never wrapped or cut
            need = Measurement.get(console, console.options, table).maximum
            _print_wide(console, table, need)


def _print_wide(console: Console, renderable: Any, need: int) -> None:
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
