"""The token view: for each query, the keys it attends to most, with bars and entropy.

Bars are drawn with block glyphs (eighths of a cell), so they read the same
with and without colour; a weight of 1 fills `BAR` cells.

>>> bar(1.0), bar(0.5), bar(0.0625), bar(0.0)
('████████████████████', '██████████', '█▎', '')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..i18n import _, ngettext
from .text import fmt, matrices

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
    filled: str | None = None,
    sink: bool = False,
) -> list[Text]:
    """The lines for one query: its entropy, its top keys ranked with bars, its masked keys.

    ``width`` pads the query label so the entropies of every query line up;
    ``filled`` names the ``--empty-rows`` rule that filled a fully masked row;
    ``sink``: the row's softmax had a sink, which takes 1 − Σ of the weight.
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
        head.append(_("  no weights: every key is masked"), style="dim")
        if sink:
            head.append(_(" (the sink takes all of it)"), style="dim")
        return [head]
    if sink:
        total = float(row[order].sum())
        head.append(
            _("  the sink takes {sink}; the keys {keys}").format(
                sink=fmt(1 - total, precision), keys=fmt(total, precision)
            ),
            style="dim",
        )
    elif softmax:
        h = entropy_bits(row[order])
        most = math.log2(len(order))
        head.append(
            ngettext(
                "  entropy {bits} bits (uniform over {n} key: {most})",
                "  entropy {bits} bits (uniform over {n} keys: {most})",
                len(order),
            ).format(bits=fmt(h, precision), n=len(order), most=fmt(most, precision)),
            style="dim",
        )
    else:
        head.append(_("  entropy: none (sigmoid weights do not sum to 1)"), style="dim")
    lines = [head]
    if filled:
        lines.append(
            Text(
                _("  every key is masked: weights filled by --empty-rows {filled}").format(
                    filled=filled
                ),
                style="dim",
            )
        )
    shown = order[:top]
    key_w = max(cell_len(k) for k in keys)
    for rank, j in enumerate(shown, 1):
        line = Text(f"  {rank:>{len(str(len(shown)))}}. ")
        line.append(keys[j] + " " * (key_w - cell_len(keys[j])), style="bold")
        line.append(f"  {fmt(float(row[j]), precision)}  ")
        line.append(bar(float(row[j])), style=BAR_STYLE)
        lines.append(line)
    if len(order) > len(shown):
        lines.append(Text(_("  … {n} more").format(n=len(order) - len(shown)), style="dim"))
    if masked:
        lines.append(Text(_("  masked: {keys}").format(keys=", ".join(masked)), style="dim"))
    return lines


def token_view_lines(trace: Trace, top: int, precision: int, full: bool = False) -> list[Text]:
    """The token view of every head and batch item; of many queries, the first and last
    (as a table shows them) unless ``full``."""
    import numpy as np
    from rich.cells import cell_len
    from rich.text import Text

    from ..focus import allowed, blocked_cells

    stage = trace.stages["weights"]
    ok = allowed(trace)
    blocked = blocked_cells(stage.array, ok)
    empty = None if ok is None else ~ok.any(axis=-1)  # ([B,] [h,] n): rows with no key
    n, m = stage.shape
    queries = trace.labels("queries", n, short=True)
    keys = trace.labels("keys", m, short=True)
    softmax = trace.meta["normalize"] == "softmax"
    sink = trace.meta.get("sinks") is not None
    shown = min(top, m)
    width = max(cell_len(q) for q in queries)
    lines = [
        Text(
            ngettext(
                "top {n} key per query (weights, heaviest first)",
                "top {n} keys per query (weights, heaviest first)",
                shown,
            ).format(n=shown),
            style="bold",
        ),
        Text(
            _("with sinks a row's weights sum to less than 1: the sink takes the rest")
            if sink
            else _("entropy in bits: 0 = all weight on one key; log₂(keys) = spread evenly"),
            style="dim",
        ),
    ]
    from .text import EDGE_ROWS, MAX_ROWS, pick

    if stage.index is not None:  # only the rows a summary shows were computed
        at = {int(i): k for k, i in enumerate(stage.index)}
        picked = pick(n, 2 * EDGE_ROWS)
    else:
        at = {i: i for i in range(n)}
        picked = pick(n, 2 * EDGE_ROWS) if n > MAX_ROWS and not full else list(range(n))
    for idx, (suffix, matrix) in zip(np.ndindex(*stage.array.shape[:-2]), matrices(stage, trace)):
        if suffix:
            lines += [Text(), Text(suffix, style="italic")]
        for i in picked:
            if i is None:
                lines.append(Text("⋮", style="dim"))
                continue
            k = at[i]
            filled = trace.meta["empty_rows"] if empty is not None and empty[idx][k] else None
            row, no = matrix[k], blocked[idx][k]
            lines += query_block(
                queries[i], row, no, keys, top, precision, softmax, width, filled, sink
            )
    if None in picked:
        count = len([i for i in picked if i is not None])
        lines.append(
            Text(
                _("showing {count} of {n} queries (--full shows all)").format(count=count, n=n),
                style="dim",
            )
        )
    return lines


def draw_token_view(
    trace: Trace, console: Console, top: int, precision: int, full: bool = False
) -> None:
    """Print the token view after a blank line."""
    console.print()
    for line in token_view_lines(trace, top, precision, full):
        console.print(line, soft_wrap=True)
