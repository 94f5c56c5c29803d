"""Every layer and head at once: a table of each head's entropy, and a small heatmap of each head.

Like bertviz's model view, in the terminal: one row of small grids per layer,
one grid per head, each titled with the head's mean entropy — the average,
over its queries, of −Σ p·log₂ p of the query's weights. 0 bits: every
query puts all its weight on one key; log₂(keys): every query spreads it
evenly. A low number is a focused head, usually the one worth a look.

>>> import numpy as np
>>> w = np.array([[[1.0, 0.0], [0.5, 0.5]]])  # one head, two queries
>>> mean_entropy(w, None).tolist()
[0.5]
>>> focus_level(0.0, 2), focus_level(1.0, 2)
(4, 0)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..i18n import _
from .heatmap import PALETTE, RAMP, Shades
from .text import fmt, pad

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console
    from rich.text import Text

    from ..trace import Trace

#: Sentences longer than this get the entropy table only (a grid per head would not fit).
THUMBNAIL_TOKENS = 32


def mean_entropy(weights: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Per head, the mean entropy in bits of its query rows: (…, h, n, m) → (…, h).

    Rows whose every key is masked have no distribution and are left out
    (NaN when a head has no row left).
    """
    import numpy as np

    from ..focus import entropy_bits

    lead = weights.shape[:-2]
    out = np.full(lead, np.nan)
    for idx in np.ndindex(*lead):
        rows = [
            entropy_bits(row)
            for i, row in enumerate(weights[idx])
            if allowed is None or allowed[idx][i].any()
        ]
        if rows:
            out[idx] = sum(rows) / len(rows)
    return out


def head_entropies(trace: Trace) -> np.ndarray | None:
    """(B, h) mean entropies of a run's heads, or None for sigmoid weights (no distribution)."""
    import numpy as np

    from ..focus import allowed

    if trace.meta["normalize"] != "softmax":
        return None
    w = trace["weights"]
    ok = allowed(trace)
    if not trace.batched:
        w, ok = w[None], None if ok is None else ok[None]
    if trace.heads == 1:  # single-head stages have no head axis
        w, ok = w[:, None], None if ok is None else ok[:, None]
    return mean_entropy(np.asarray(w, dtype=float), ok)


def focus_level(bits: float, keys: int) -> int:
    """A shade level for an entropy: the top one for 0 bits (focused), the lowest for log₂(keys)."""
    if keys < 2 or not math.isfinite(bits):
        return len(RAMP) // 2
    most = math.log2(keys)
    return Shades(0.0, most).level(most - bits)


def _glyph(level: int, text: str) -> Text:
    from rich.text import Text

    colour = PALETTE[level]
    return Text(text, style=f"{colour} on {colour}")


def entropy_table(
    labels: list[str], ent: list[np.ndarray], keys: int, precision: int
) -> list[Text]:
    """One line per layer: each head's mean entropy followed by a glyph of how focused it is."""
    from rich.cells import cell_len
    from rich.text import Text

    heads = max(len(e) for e in ent)
    cells = [[fmt(float(v), precision) for v in e] for e in ent]
    w = max(cell_len(c) for row in cells for c in row)
    label_w = max(cell_len(x) for x in labels)
    head = Text(" " * label_w)
    for h in range(heads):
        head.append(" " + f"h{h + 1}".rjust(w + 1), style="bold")
    lines = [head]
    for label, row, e in zip(labels, cells, ent):
        line = Text(pad(label, label_w), style="bold")
        for text, bits in zip(row, e):
            level = focus_level(float(bits), keys)
            line.append(" " + text.rjust(w))
            line.append_text(_glyph(level, RAMP[level]))
        lines.append(line)
    return lines


def thumbnail(weights: np.ndarray, allowed: np.ndarray | None, title: str, cell: int) -> list[Text]:
    """A head's weights as a grid of ``cell`` glyphs per (query, key), under its title."""
    from rich.text import Text

    shades = Shades(0.0, 1.0)
    lines = [Text(title, style="bold")]
    for i, row in enumerate(weights):
        line = Text()
        for j, v in enumerate(row):
            if allowed is not None and not allowed[i, j]:
                line.append("·" * cell, style="dim")
                continue
            level = shades.level(float(v))
            line.append_text(_glyph(level, RAMP[level] * cell))
        lines.append(line)
    return lines


def overview_lines(
    runs: list[tuple[str, Trace]], precision: int, width: int, hint: str = ""
) -> list[Text]:
    """The entropy table, a row of thumbnails per layer, and the most focused head named.

    ``hint`` follows that name, formatted with ``run`` and ``head`` (1-based):
    how to see the head, e.g. ``"see it with --layer {run} --head {head}"``.
    """
    import numpy as np
    from rich.text import Text

    from ..focus import allowed

    first = runs[0][1]
    n, m = first["weights"].shape[-2:]
    ent = [head_entropies(t) for _, t in runs]
    if any(e is None for e in ent):
        return [Text(_("no entropy: sigmoid weights are not a distribution over the keys"))]
    per_layer = [e[0] for e in ent if e is not None]  # item 1 of each run
    labels = [label for label, _ in runs]
    most = math.log2(m) if m > 1 else 0.0
    lines = [
        Text(_("mean entropy of each head's query rows, in bits"), style="bold"),
        Text(
            _(
                "0 = each query looks at one key; {most} = log₂ {m}, spread evenly; "
                "glyph: {focused} focused … {spread} spread"
            ).format(most=fmt(most, precision), m=m, focused=RAMP[-1], spread=RAMP[1]),
            style="dim",
        ),
    ]
    lines += entropy_table(labels, per_layer, m, precision)
    flat = [(float(e[h]), i, h) for i, e in enumerate(per_layer) for h in range(len(e))]
    bits, li, hi = min(flat)
    lines.append(Text())
    line = _("most focused: {label} head {head} ({bits} bits)").format(
        label=labels[li], head=hi + 1, bits=fmt(bits, precision)
    )
    if hint:
        line += "; " + hint.format(run=li + 1, head=hi + 1)
    lines.append(Text(line))
    if max(n, m) > THUMBNAIL_TOKENS:
        lines.append(
            Text(
                _("(a grid per head needs at most {most} tokens; this run has {n})").format(
                    most=THUMBNAIL_TOKENS, n=max(n, m)
                ),
                style="dim",
            )
        )
        return lines
    lines += [
        Text(),
        Text(
            _("weights of every head: rows = queries, columns = keys, in token order"), style="bold"
        ),
        Text(
            "shade = weight: "
            + "  ".join(f"{RAMP[k] or ' '} {k / 5:g}–{(k + 1) / 5:g}" for k in range(5)),
            style="dim",
        ),
    ]
    for (label, t), e in zip(runs, per_layer):
        w = np.asarray(t["weights"], dtype=float)
        ok = allowed(t)
        if t.batched:
            w, ok = w[0], None if ok is None else ok[0]
        if t.heads == 1:
            w, ok = w[None], None if ok is None else ok[None]
        cell = 2 if 2 * m <= THUMBNAIL_TOKENS else 1  # two glyphs: closer to square
        blocks = [
            thumbnail(w[h], None if ok is None else ok[h], f"h{h + 1} {float(e[h]):.2f}", cell)
            for h in range(len(w))
        ]
        lines.append(Text())
        lines.append(Text(label, style="bold"))
        lines += rows_of(blocks, width)
    return lines


def rows_of(blocks: list[list[Text]], width: int, gap: int = 2) -> list[Text]:
    """Blocks side by side in balanced rows (12 heads that fit 8 a row go 6 and 6)."""
    from rich.text import Text

    from .heatmap import side_by_side

    w = max(line.cell_len for b in blocks for line in b)
    fit = max(1, (width + gap) // (w + gap))
    rows = math.ceil(len(blocks) / fit)
    per = math.ceil(len(blocks) / rows)
    padded = [[line.copy() for line in b] for b in blocks]
    for b in padded:
        for line in b:
            line.pad_right(w - line.cell_len)
    out: list[Text] = []
    for k in range(0, len(padded), per):
        out += ([Text()] if out else []) + side_by_side(padded[k : k + per], width, gap)
    return out


def draw_overview(
    runs: list[tuple[str, Trace]], console: Console, precision: int, hint: str = ""
) -> None:
    """Print the overview of ``runs`` (label, trace) on ``console``; see `overview_lines`."""
    for line in overview_lines(runs, precision, console.width, hint):
        console.print(line, soft_wrap=True)
