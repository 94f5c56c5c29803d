"""Plain text of a run, without rich: numbers as tables show them, the header, box-drawn tables.

Shared by the rich tables, the pictures and the plain writers (Markdown,
LaTeX, the homework reports).

>>> fmt(0.123456, 4), fmt(float("-inf"), 4)
('0.1235', '−∞')
"""

from __future__ import annotations

import math
import unicodedata
from typing import TYPE_CHECKING, TextIO

from ..i18n import N_, _, ngettext
from ..trace import NEG_INF

if TYPE_CHECKING:
    import numpy as np

    from ..trace import Stage, Trace


def fmt(v: float, precision: int, sci: bool | None = None) -> str:
    """A cell as shown in tables: fixed decimals (or scientific: ``sci``), −∞ for masked, NaN.

    ``sci`` is the notation of the cell's table (see `scientific`); None decides
    for this value alone: scientific when fixed decimals would show a non-zero
    value as 0 or it is 1e9 or more.

    >>> fmt(0.016, 1), fmt(0.9, 1, sci=True), fmt(0.0, 2, sci=True)
    ('1.6e-02', '9.0e-01', '0.00e+00')
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return NEG_INF if v < 0 else "∞"
    if sci is None:
        sci = v != 0 and (abs(v) >= 1e9 or abs(v) < 10.0**-precision / 2)
    if sci:
        return f"{v + 0.0:.{precision}e}"  # + 0.0 turns −0.0 into 0.0
    text = f"{v:.{precision}f}"
    return "0." + "0" * precision if text.lstrip("-") == "0." + "0" * precision else text


def width(text: str) -> int:
    """The columns ``text`` takes in a terminal: 2 for a wide (Chinese) character, 0 for a combining one.

    >>> width("权重 x1"), width("weights")
    (7, 7)
    """
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def pad(text: str, cells: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``cells`` columns (on the left when ``right``-aligned).

    >>> pad("键", 4) + "|", pad("1.5", 4, right=True)
    ('键  |', ' 1.5')
    """
    fill = " " * max(0, cells - width(text))
    return fill + text if right else text + fill


#: Characters a line does not begin with (Chinese punctuation that closes), nor ends with (that opens).
_NO_START, _NO_END = "，。、；：！？）》」』】…,.;:!?)", "（《「『【("


def wrap(
    text: str,
    width_: int = 78,
    initial_indent: str = "",
    subsequent_indent: str = "",
    preserve_paragraphs: bool = False,
) -> str:
    """click's ``wrap_text``, measured in terminal columns and breaking between Chinese characters.

    Paragraphs are split by blank lines; one that starts with a ``\\b`` line
    is kept as written (click's rule).

    >>> print(wrap("计算注意力并显示每个阶段的表格。", 12))
    计算注意力并
    显示每个阶段
    的表格。
    """
    text = text.expandtabs()
    if not preserve_paragraphs:
        return _fill(text, width_, initial_indent, subsequent_indent)
    paragraphs: list[tuple[int, bool, list[str]]] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if line]
        if not lines:
            continue
        first = lines[0]
        indent = len(first) - len(first.lstrip())
        if first.strip() == "\b":
            paragraphs.append((indent, True, lines[1:]))
        else:
            paragraphs.append((indent, False, [line.strip() for line in lines]))
    out = []
    for indent, raw, lines in paragraphs:
        first, rest = initial_indent + " " * indent, subsequent_indent + " " * indent
        if raw:
            out.append(
                "\n".join((first if i == 0 else rest) + line for i, line in enumerate(lines))
            )
            continue
        joined = lines[0]
        for line in lines[1:]:
            wide = width(joined[-1:]) == 2 and width(line[:1]) == 2
            joined += ("" if wide else " ") + line
        out.append(_fill(joined, width_, first, rest))
    return "\n\n".join(out)


def _fill(text: str, cells: int, first: str, rest: str) -> str:
    """One paragraph filled greedily to ``cells`` columns (a word longer than a line stays whole)."""
    units: list[str] = []  # words, spaces, and each wide character alone (a line may break there)
    for c in text.strip():
        kind = "s" if c.isspace() else "w" if width(c) == 2 else "a"
        if (
            units
            and kind != "w"
            and units[-1][-1:].isspace() == (kind == "s")
            and width(units[-1][-1]) < 2
        ):
            units[-1] += c
        else:
            units.append(c)
    merged: list[str] = []
    for u in units:  # punctuation that closes sticks to what it closes; that opens, to what follows
        if merged and (u[0] in _NO_START or (merged[-1][-1] in _NO_END and not u.isspace())):
            merged[-1] += u
        else:
            merged.append(u)
    lines, line, space = [], first, ""
    for u in merged:
        if u.isspace():
            space = " "
            continue
        if line.strip() and width(line + space + u) > cells:
            lines.append(line)
            line, space = rest, ""
        line += (space if line.strip() else "") + u
        space = ""
    lines.append(line)
    return "\n".join(line.rstrip() for line in lines)


def scientific(values: np.ndarray, precision: int) -> bool:
    """Whether a table of ``values`` is written in scientific notation, every cell of it.

    It is when fixed decimals would show some non-zero value as 0, or some
    value is 1e9 or more; otherwise every cell takes fixed decimals. Masked
    (−∞) and NaN cells do not count; exact values (fractions) are skipped.

    >>> import numpy as np
    >>> scientific(np.array([0.9, 0.016]), 1), scientific(np.array([0.9, 0.016]), 2)
    (True, False)
    """
    import numpy as np

    a = np.asarray(values)
    if a.dtype == object:
        from ..exact import is_exact

        a = np.array([float(v) for v in a.flat if not is_exact(v)], dtype=np.float64)
    a = np.abs(a[np.isfinite(a) & (a != 0)])
    return bool(a.size) and bool(a.max() >= 1e9 or a.min() < 10.0**-precision / 2)


def fmt_row(row: np.ndarray, precision: int, sci: bool | None = None) -> list[str]:
    """`fmt` of every value of a row in one notation (``sci``; None: the row's own, `scientific`).

    >>> import numpy as np
    >>> fmt_row(np.array([-0.0, 1.5, -2e-9]), 2), fmt_row(np.array([-0.0, 1.5]), 2)
    (['0.00e+00', '1.50e+00', '-2.00e-09'], ['0.00', '1.50'])
    """
    if sci is None:
        sci = scientific(row, precision)
    spec = f".{precision}{'e' if sci else 'f'}"
    zero = format(0.0, spec)
    texts = []
    for v in (row + 0.0).tolist():  # + 0.0 turns −0.0 into 0.0
        if math.isfinite(v):
            t = format(v, spec)
            texts.append(zero if t == "-" + zero else t)
        else:
            texts.append(fmt(v, precision))
    return texts


#: Tables with more rows than this show their first and last rows around a ⋮ row (unless --full).
MAX_ROWS = 20
#: Rows shown at each end of a summarised table.
EDGE_ROWS = 8


def pick(count: int, keep: int) -> list[int | None]:
    """Indices to show of ``count``: all, or the first and last around a gap (None).

    >>> pick(3, 4), pick(10, 4)
    ([0, 1, 2], [0, 1, None, 8, 9])
    """
    if count <= keep:
        return list(range(count))
    head = (keep + 1) // 2
    return [*range(head), None, *range(count - (keep - head), count)]


def summary_rows(count: int) -> list[int] | None:
    """The rows a summarised table shows of ``count`` (None: every row).

    >>> summary_rows(5), summary_rows(30)[:3], len(summary_rows(30))
    (None, [0, 1, 2], 16)
    """
    if count <= MAX_ROWS:
        return None
    return [i for i in pick(count, 2 * EDGE_ROWS) if i is not None]


def matrices(stage: Stage, trace: Trace) -> list[tuple[str, np.ndarray]]:
    """Split a stage into 2-D matrices with a suffix naming the batch item and head."""
    import numpy as np

    a = stage.array
    out = []
    for idx in np.ndindex(*a.shape[:-2]):
        parts = []
        if trace.batched:
            parts.append(_("item {i}").format(i=idx[0] + 1))
        if stage.per_head:
            parts.append(_("head {h}/{heads}").format(h=idx[-1] + 1, heads=trace.heads))
        out.append((", ".join(parts), a[idx]))
    return out


#: How the header separates its parts, and the items of a part, in the language spoken.
SEP, COMMA = N_("; "), N_(", ")


def header(trace: Trace) -> str:
    """The line printed above the tables: input, sizes, layout, scale, keys read."""
    from .. import i18n

    sep, comma = i18n._(SEP), i18n._(COMMA)
    m = trace.meta
    nq, nk = m["n_queries"], m["n_keys"]
    sizes = ngettext("{n} query", "{n} queries", nq).format(n=nq) + " × "
    sizes += ngettext("{n} key", "{n} keys", nk).format(n=nk)
    if m.get("past_length"):
        sizes += _(" ({n} from the KV cache)").format(n=m["past_length"])
    parts = [sizes]
    if m["d_model"]:
        parts.append(f"d_model {m['d_model']}")
    parts += [f"d_k {m['d_k']}", f"d_v {m['d_v']}"]
    if m["heads"] > 1:
        heads = ngettext("{n} head", "{n} heads", m["heads"]).format(n=m["heads"])
        if m["kv_heads"] != m["heads"]:
            heads += _(" ({n} K/V heads)").format(n=m["kv_heads"])
        parts.append(heads)
    layout = _("layout {layout}").format(layout=m["layout"])
    if m["layout"] == "rows":
        layout += comma + _("weights {layout}").format(layout=m["weights_layout"])
    rule = _("given") if m["scale_rule"] == "given" else m["scale_rule"]  # meta keeps "given"
    scale = _("scale {rule} = {value}").format(rule=rule, value=f"{m['scale']:.6g}")
    lines = [_("{input}: {sizes}").format(input=m["input"], sizes=comma.join(parts))]
    lines[0] += sep + layout + sep + scale
    extras = []
    if m["similarity"] != "dot":
        extras.append(_("similarity {similarity}").format(similarity=m["similarity"]))
    if m["normalize"] != "softmax":
        extras.append(_("weights by {normalize}").format(normalize=m["normalize"]))
    if m["temperature"] != 1:
        extras.append(_("temperature {t}").format(t=f"{m['temperature']:g}"))
    extras += variant_words(m)
    if m["mask"]:
        words = {
            "sliding_window": _("sliding window {w}").format(w=m.get("sliding_window")),
            "attention_chunk_size": _("chunks of {c}").format(c=m.get("attention_chunk_size")),
        }
        masks = _("masks: {masks}").format(masks=comma.join(words.get(k, k) for k in m["mask"]))
        if {"mask", "key_padding_mask"} & set(m["mask"]):
            masks += (
                _(" (1 = blocked)") if m["mask_polarity"] == "block" else _(" (1 = may attend)")
            )
        extras.append(masks)
    if m["empty_rows"] != "error":
        extras.append(_("fully masked rows → {fill}").format(fill=m["empty_rows"]))
    if m["dtype"] != "float64":
        extras.append(m["dtype"])
    if extras:
        lines.append(sep.join(extras))
    keys = [f"{canon} ← {key}" for canon, key in m["keys"].items()]
    if keys:
        lines.append(i18n._(READ) + comma.join(keys))
    return "\n".join(lines)


#: What the header's last line begins with: the keys the problem file was read under.
READ = N_("read ")


def variant_words(m: dict) -> list[str]:
    """The variants of today's models in force, as the header names them.

    >>> variant_words({"rope": "half", "rope_theta": 10000.0, "rotary_dim": 4, "d_k": 8,
    ...                "position_offset": 3, "position_ids": None, "n_queries": 2})
    ['RoPE half (θ 10000, positions 3…4, 4 of 8 features)']
    """
    from .. import i18n

    comma = i18n._(COMMA)
    out = []
    if m.get("rope"):
        if m.get("position_ids") is not None:
            where = "position_ids"
        else:
            first, count = m["position_offset"], m["n_queries"]
            where = (
                _("positions {first}…{last}").format(first=first, last=first + count - 1)
                if count > 1
                else _("position {first}").format(first=first)
            )
        part = (
            comma + _("{rotary} of {d} features").format(rotary=m["rotary_dim"], d=m["d_k"])
            if m["rotary_dim"] < m["d_k"]
            else ""
        )
        out.append(f"RoPE {m['rope']} (θ {m['rope_theta']:g}{comma}{where}{part})")
    if m.get("qk_norm"):
        over = _("per head") if m["qk_norm"] == "head" else _("over all heads")
        form = comma + _("weights 1 + w") if m.get("rms_norm_unit_offset") else ""
        out.append(f"QK-norm {over} (eps {m['rms_norm_eps']:g}{form})")
    if m.get("attn_logit_softcapping") is not None:
        out.append(_("soft-cap {c}").format(c=f"{m['attn_logit_softcapping']:g}"))
    if m.get("alibi"):
        slopes = m["alibi_slopes"]
        shown = ", ".join(f"{v:g}" for v in slopes[:3]) + (" …" if len(slopes) > 3 else "")
        out.append(_("ALiBi (slopes {shown})").format(shown=shown))
    if m.get("sinks") is not None:
        out.append(_("sinks (weights sum to < 1)"))
    return out


#: ``--full`` tables with more cells than this are drawn as plain text (rich takes seconds).
PLAIN_CELLS = 4000


def write_out(out: TextIO, text: str) -> None:
    """``text`` to ``out`` in pieces of 64 KiB, then flushed.

    One write of megabytes into a pipe whose reader has gone can end without
    an error (the kernel takes part, Python drops the rest); in pieces, the
    next one fails, and the run ends as a closed pipe should (exit 141).
    """
    step = 1 << 16
    for i in range(0, len(text), step):
        out.write(text[i : i + step])
    out.flush()


def box(head: list[str], rows: list[list[str]], justify: list[str] | None = None) -> str:
    """A table in the box lines rich draws (its HEAVY_HEAD box, a space either side of a cell),
    each column ``justify``'d "left" or "right" (default: the row labels left, the rest right).

    >>> print(box(["", "1", "2"], [["1", "1.00", "-2.50"]]))
    ┏━━━┳━━━━━━┳━━━━━━━┓
    ┃   ┃    1 ┃     2 ┃
    ┡━━━╇━━━━━━╇━━━━━━━┩
    │ 1 │ 1.00 │ -2.50 │
    └───┴──────┴───────┘
    """
    widths = [max(width(r[j]) for r in (head, *rows)) for j in range(len(head))]

    def line(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    right = (
        [j > 0 for j in range(len(head))] if justify is None else [j == "right" for j in justify]
    )

    def cells(r: list[str], bar: str) -> str:
        parts = [pad(c, w, r_) for c, w, r_ in zip(r, widths, right)]
        return bar + bar.join(f" {p} " for p in parts) + bar

    out = [line("┏", "━", "┳", "┓"), cells(head, "┃"), line("┡", "━", "╇", "┩")]
    out += [cells(r, "│") for r in rows]
    out.append(line("└", "─", "┴", "┘"))
    return "\n".join(out)
