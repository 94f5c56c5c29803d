"""The token view: for each query, the keys it attends to most, with bars and entropy.

Bars are drawn with block glyphs (eighths of a cell), so they read the same
with and without colour; a weight of 1 fills `BAR` cells.

>>> bar(1.0), bar(0.5), bar(0.0625), bar(0.0)
('████████████████████', '██████████', '█▎', '')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .tables import fmt, labels, matrices

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.text import Text

    from ..trace import Trace

BAR = 20  # cells for a weight of 1
EIGHTHS = " ▏▎▍▌▋▊▉"
BAR_STYLE = "#21918c"
DEFAULT_TOP = 5


def bar(w: float) -> str:
    """A horizontal bar of ``w × BAR`` cells, to the nearest eighth of a cell."""
    if not math.isfinite(w) or w <= 0:
        return ""
    eighths = round(min(w, 1.0) * BAR * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[rest] if rest else "")


def query_block(
    query: str,
    row: np.ndarray,
    blocked: np.ndarray | None,
    keys: list[str],
    top: int,
    precision: int,
    softmax: bool,
    width: int = 0,
) -> list[Text]:
    """The lines for one query: its entropy, its top keys ranked with bars, its masked keys.

    ``width`` pads the query label so the entropies of every query line up.
    """
    from rich.cells import cell_len
    from rich.text import Text

    from ..focus import entropy_bits, ranked

    order = ranked(row, blocked)
    masked = [keys[j] for j in range(len(keys)) if blocked is not None and blocked[j]]
    head = Text()
    head.append(query, style="bold")
    head.pad_right(width - cell_len(query))
    if not order:
        head.append("  no weights: every key is masked", style="dim")
        return [head]
    if softmax:
        h = entropy_bits(row[order])
        most = math.log2(len(order))
        head.append(
            f"  entropy {fmt(h, precision)} bits"
            f" (uniform over {len(order)} key{'s' if len(order) > 1 else ''}: {fmt(most, precision)})",
            style="dim",
        )
    else:
        head.append("  entropy: none (sigmoid weights do not sum to 1)", style="dim")
    lines = [head]
    shown = order[:top]
    key_w = max(cell_len(keys[j]) for j in shown)
    for rank, j in enumerate(shown, 1):
        line = Text(f"  {rank:>{len(str(len(shown)))}}. ")
        line.append(keys[j] + " " * (key_w - cell_len(keys[j])), style="bold")
        line.append(f"  {fmt(float(row[j]), precision)}  ")
        line.append(bar(float(row[j])), style=BAR_STYLE)
        lines.append(line)
    if len(order) > len(shown):
        lines.append(Text(f"  … {len(order) - len(shown)} more", style="dim"))
    if masked:
        lines.append(Text(f"  masked: {', '.join(masked)}", style="dim"))
    return lines


def token_view_lines(trace: Trace, top: int, precision: int) -> list[Text]:
    """The token view of every head and batch item."""
    import numpy as np
    from rich.cells import cell_len
    from rich.text import Text

    from ..focus import allowed, blocked_cells

    stage = trace.stages["weights"]
    blocked = blocked_cells(stage.array, allowed(trace))
    n, m = stage.shape
    queries = labels(trace, "queries", n)
    keys = labels(trace, "keys", m)
    softmax = trace.meta["normalize"] == "softmax"
    shown = min(top, m)
    width = max(cell_len(q) for q in queries)
    lines = [
        Text(f"top {shown} keys per query (weights, heaviest first)", style="bold"),
        Text(
            "entropy in bits: 0 = all weight on one key; log₂(keys) = spread evenly",
            style="dim",
        ),
    ]
    for idx, (suffix, matrix) in zip(np.ndindex(*stage.array.shape[:-2]), matrices(stage, trace)):
        if suffix:
            lines += [Text(), Text(suffix, style="italic")]
        for i, q in enumerate(queries):
            row = matrix[i]
            lines += query_block(q, row, blocked[idx][i], keys, top, precision, softmax, width)
    return lines


def draw_token_view(trace: Trace, console: Console, top: int, precision: int) -> None:
    """Print the token view after a blank line."""
    console.print()
    for line in token_view_lines(trace, top, precision):
        console.print(line, soft_wrap=True)
