"""Write out the arithmetic behind one cell of one stage, with the actual numbers.

Cells are named as people write them by hand, 1-based: ``scores[2,3]`` is
row 2, column 3. The explanation walks the cell's own chain — the dot product
``q₂·k₃ = 2·4 + 2·4 + 2·0 = 16``, the scaling, the softmax shifted by the
row's maximum with its terms and the row's sum, the weighted sum of the rows
of V. Every line redoes with a calculator from the numbers printed on it:
factors are printed with as many decimals as that takes.

>>> parse_cell("weights[1, 2]")
('weights', 0, 1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from .errors import OptionError, shape_str
from .i18n import N_, _, ngettext
from .i18n import _ as tr
from .trace import NEG_INF, PER_HEAD

if TYPE_CHECKING:
    import numpy as np

    from .options import Options
    from .problem import Problem, Resolved
    from .trace import Trace

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_CELL = re.compile(r"^\s*([^\W\d][\w ]*?)\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]\s*$")
#: The most decimals a factor is printed with to make a line add up.
MOST = 12


def parse_cell(text: str) -> tuple[str, int, int]:
    """``"scores[2,3]"`` → ``("scores", 1, 2)`` (0-based inside, 1-based as written).

    The stage may be named as in an answer file (``权重``, ``attention weights``), and
    the digits, comma and brackets typed full-width (``权重［１，２］``, ``权重【1、2】``).

    >>> parse_cell("权重［１，２］"), parse_cell("注意力分数【2、3】")
    (('weights', 0, 1), ('scores', 1, 2))
    """
    from .answers import stage_key
    from .load.values import ascii_forms

    m = _CELL.match(ascii_forms(text, cell=True))
    if not m or not m[2].isascii() or not m[3].isascii():
        shown = text if len(text) <= 40 else text[:37] + "…"
        raise OptionError(
            _("cell {cell!r} is not of the form STAGE[ROW,COLUMN], e.g. scores[2,3] (1-based)")
            .format(cell=shown)
        )  # fmt: skip
    if len(m[2]) > 9 or len(m[3]) > 9:
        digits = max(len(m[2]), len(m[3]))
        message = (_("cell {stage}[…]: the row number has {n} digits; no stage is that large")
                   if len(m[2]) > 9 else
                   _("cell {stage}[…]: the column number has {n} digits; no stage is that large"))  # fmt: skip
        raise OptionError(message.format(stage=m[1], n=digits))
    row, col = int(m[2]), int(m[3])
    if row < 1 or col < 1:
        raise OptionError(_("cell {cell!r}: rows and columns count from 1").format(cell=text))
    return stage_key(m[1]) or m[1], row - 1, col - 1


def sub(i: int) -> str:
    """A 0-based index as a 1-based subscript: ``sub(1)`` → ``'₂'``."""
    return str(i + 1).translate(_SUB)


class Numbers:
    """How numbers are written: exact values as such, whole numbers bare, others fixed.

    >>> fmt = Numbers(4)
    >>> fmt(2 / 3), fmt.at(2 / 3, 6), fmt.given(0.125), fmt(-2.0)
    ('0.6667', '0.666667', '0.125', '−2')
    """

    def __init__(self, precision: int) -> None:
        self.precision = precision

    def __call__(self, v: Any) -> str:
        return self.at(v, self.precision)

    def at(self, v: Any, places: int) -> str:
        """``v`` with ``places`` decimals (whole numbers and exact values as they are)."""
        from .exact import is_exact, text

        if is_exact(v):
            return text(v)
        v = float(v)
        if math.isinf(v):
            return NEG_INF if v < 0 else "∞"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v)).replace("-", "−")
        return f"{v:.{places}f}".replace("-", "−")

    def given(self, v: Any) -> str:
        """A number of the problem exactly as given (its shortest form)."""
        from .exact import is_exact, text

        if is_exact(v):
            return text(v)
        v = float(v)
        if math.isinf(v):
            return NEG_INF if v < 0 else "∞"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v)).replace("-", "−")
        return repr(v).replace("-", "−")

    def factor(self, v: Any) -> str:
        """A number as a factor in a product: negatives in parentheses."""
        s = self(v)
        return f"({s})" if s.startswith("−") else s

    def big(self, v: float) -> str:
        """An e-power's value, 6 significant digits."""
        return f"{v:.6g}"

    def approx(self, v: Any) -> str:
        """An exact value with its decimal beside it when it is not a whole number."""
        from .exact import is_exact

        s = self(v)
        if is_exact(v) and float(v) != int(float(v)):
            return f"{s} ≈ {float(v):.{self.precision}f}"
        return s


def dec(text: str) -> Decimal:
    """A printed number read back exactly (``−`` as minus)."""
    return Decimal(text.replace("−", "-").strip("()"))


def paren(text: str) -> str:
    """A printed number as a factor: negatives in parentheses."""
    return f"({text})" if text.startswith("−") else text


def reproduces(got: Decimal, target: float, places: int) -> bool:
    """Does a result redone from printed numbers round to the printed target?"""
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = 1200  # a float's 309 whole digits and every decimal asked for
        unit = Decimal(1).scaleb(-places)
        want = Decimal(repr(float(target))).quantize(unit, ROUND_HALF_EVEN)
        return got.quantize(unit, ROUND_HALF_EVEN) == want


def fitted(
    make: Callable[[int], tuple[Any, Decimal]], target: float, fmt: Numbers
) -> tuple[Any, int]:
    """The fewest decimals (from ``fmt.precision`` up) at which a line's printed numbers redo
    its result; ``make(places)`` gives the printed parts and what they compute."""
    for places in range(fmt.precision, MOST + 1):
        parts, got = make(places)
        if reproduces(got, target, fmt.precision):
            return parts, places
    return make(MOST)[0], MOST


def dot_line(a: list[Any], b: list[Any], target: float, fmt: Numbers) -> tuple[str, str]:
    """``2·4 + 2·4 + 2·0`` and the result, factors at the decimals that make the sum redo."""
    from .exact import is_exact

    if any(is_exact(x) for x in (*a, *b)):
        return " + ".join(f"{fmt.factor(x)}·{fmt.factor(y)}" for x, y in zip(a, b)), fmt.approx(
            target
        )

    def make(places: int) -> tuple[Any, Decimal]:
        xs = [_short(x, places, fmt) for x in a]
        ys = [_short(y, places, fmt) for y in b]
        return (xs, ys), sum((dec(x) * dec(y) for x, y in zip(xs, ys)), Decimal(0))

    (xs, ys), _ = fitted(make, target, fmt)
    return " + ".join(f"{paren(x)}·{paren(y)}" for x, y in zip(xs, ys)), fmt(target)


def _short(v: Any, places: int, fmt: Numbers) -> str:
    """A factor: exactly when it has few decimals, else rounded to ``places``."""
    text = fmt.given(v)
    digits = text.split(".", 1)[1] if "." in text else ""
    return text if len(digits) <= places else fmt.at(v, places)


def dot_terms(a: list[Any], b: list[Any], fmt: Numbers) -> str:
    """``2·4 + 2·4 + 2·0``."""
    return " + ".join(f"{fmt.factor(x)}·{fmt.factor(y)}" for x, y in zip(a, b))


class Cell:
    """The canonical (rows-layout) arrays of one batch item and head of a run."""

    def __init__(self, r: Resolved, t: Trace, item: int, head: int) -> None:
        from .trace import to_internal

        self.r, self.t, self.b, self.h = r, t, item, head
        self.group = head // (r.heads // r.kv_heads)
        self.internal = {name: to_internal(r, name, t[name]) for name in t.stages}

    def head_cols(self, name: str, width: int, group: bool) -> np.ndarray:
        """The columns of Q/K/V that belong to this head (K and V by its K/V group)."""
        a = self.internal[name][self.b]  # (rows, h·d)
        k = self.group if group else self.h
        return a[:, k * width : (k + 1) * width]

    def stage(self, name: str) -> np.ndarray:
        """A per-head stage of this item and head: (n, m) or (n, dv)."""
        return self.internal[name][self.b, self.h]


def explain(
    problem: Problem,
    options: Options,
    cell: str,
    head: int | None = None,
    item: int | None = None,
    precision: int = 4,
) -> list[str]:
    """The lines explaining ``cell`` (e.g. ``"scores[2,3]"``); ``head``/``item`` are 1-based."""
    from .attention import run
    from .problem import resolve

    name, i, j = parse_cell(cell)
    r = resolve(problem, options)
    t = run(r)
    if name not in t.stages:
        from .answers import stage_hint

        raise OptionError(
            _("no stage {name!r} in this problem{hint}; stages: {names}").format(
                name=name, hint=stage_hint(name, list(t.stages)), names=", ".join(t.stages)
            )
        )
    stage = t.stages[name]
    per_head = name in PER_HEAD
    if per_head and r.multihead and head is None:
        raise OptionError(
            _("{name} is computed per head: give --head 1…{heads}").format(name=name, heads=r.heads)
        )
    h = (head or 1) - 1
    if not 0 <= h < r.heads:
        raise OptionError(
            _("--head {head}: this problem has {heads} head(s)").format(head=head, heads=r.heads)
        )
    b = (item or 1) - 1
    if not 0 <= b < r.B:
        raise OptionError(
            _("--item {item}: this problem has {B} batch item(s)").format(item=item, B=r.B)
        )
    rows, cols = stage.shape
    if i >= rows or j >= cols:
        raise OptionError(
            _("{name} is {shape_str}: {name}[{i},{j}] is outside it").format(
                name=name, shape_str=shape_str((rows, cols)), i=i + 1, j=j + 1
            )
        )
    fmt = Numbers(precision)
    c = Cell(r, t, b, h)
    where = [_("head {h}").format(h=h + 1)] if per_head and r.multihead else []
    where += [_("batch item {b}").format(b=b + 1)] if r.batched else []
    intro = f"{name}[{i + 1},{j + 1}]"
    if where:
        intro += _(" ({where})").format(where=_(", ").join(where))
    lines = [
        _("{intro}: rows and columns count from 1; {axes}.").format(
            intro=intro, axes=_axes(t, name, i, j)
        )
    ]
    if r.options.layout == "columns" and "features" in (stage.rows, stage.cols):
        i, j = j, i  # the working is written in rows form: the token is the row
        lines.append(
            _("(layout columns: worked in rows form, where this cell is {name}[{i},{j}])").format(
                name=name, i=i + 1, j=j + 1
            )
        )
    lines += _explain(c, name, i, j, fmt)
    return lines


def _axes(t: Trace, name: str, i: int, j: int) -> str:
    s = t.stages[name]

    def label(axis: str, k: int) -> str:
        word = {"queries": N_("query {n}"), "keys": N_("key {n}"), "features": N_("feature {n}")}
        word = tr(word[axis]).format(n=k + 1)
        if t.past and axis in ("queries", "keys"):  # a decode step: cached keys c1 c2 …
            count = t.stages[name].array.shape[-2 if axis == s.rows else -1]
            shown = t.labels(axis, count)[k]
            at = k + (t.past if axis == "queries" else 0)
            what = _("cached") if axis == "keys" and k < t.past else _("new")
            token = _(" ({shown}, {what}: token {at} of the sequence)").format(
                shown=shown, what=what, at=at + 1
            )
            return f"{word}{token}"
        names = {"queries": t.tokens, "keys": t.kv_tokens}.get(axis)
        token = f" ({names[k]})" if names and k < len(names) else ""
        return f"{word}{token}"

    return _("row = {label}, column = {label2}").format(
        label=label(s.rows, i), label2=label(s.cols, j)
    )


def _explain(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    return {
        "Q": _projection,
        "K": _projection,
        "V": _projection,
        "Q_normed": _normed,
        "K_normed": _normed,
        "Q_rotated": _rotated,
        "K_rotated": _rotated,
        "scores": _scores,
        "scaled": _scaled,
        "capped": _capped,
        "masked": _masked,
        "weights": _weights,
        "head_outputs": _weighted_sum,
        "concat": _concat,
        "output": _output,
    }[name](c, name, i, j, fmt)


def _projection(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    r = c.r
    value = c.internal[name][c.b][i, j]
    if name != "Q" and i < r.past:
        cache = "past_key" if name == "K" else "past_value"
        return [_("{name}[{i},{j}] = {cache}[{i},{j}] = {value} (row {i} is c{i}, a cached token: " "given in {cache})").format(name=name, i=i + 1, j=j + 1, cache=cache, value=fmt.approx(value))]  # fmt: skip
    if f"W_{name}" not in r.arrays:
        return [
            _("{name}[{i},{j}] = {value} ({name} is given directly)").format(
                name=name, i=i + 1, j=j + 1, value=fmt.approx(value)
            )
        ]
    src = "X" if name == "Q" or "X_kv" not in r.arrays else "X_kv"
    if name != "Q" and r.past:
        i -= r.past  # the new tokens' rows follow the cache's
    x = _exact_row(r, r.arrays[src][c.b][i])
    w = _exact_row(r, r.arrays[f"W_{name}"][:, j])
    row = i + (r.past if name != "Q" else 0)
    line = f"{name}[{row + 1},{j + 1}] = {src.lower()}{sub(i)} · ({_w_line(r, j, name)})"
    terms = " + ".join(f"{paren(fmt.given(a))}·{paren(fmt.given(b))}" for a, b in zip(x, w))
    line += f" = {terms}"
    if f"b_{name}" in r.arrays:
        line += f" + {paren(fmt.given(_exact_row(r, r.arrays[f'b_{name}'])[j]))}"
    return [f"{line} = {fmt.approx(value)}"]


def _w_line(r: Resolved, j: int, name: str) -> str:
    """``column 2 of W_Q`` (or ``row 2 of W_Q``): the line of W a cell of ``name`` reads."""
    if _w_axis(r) == "row":
        return _("row {j} of W_{name}").format(j=j + 1, name=name)
    return _("column {j} of W_{name}").format(j=j + 1, name=name)


def _w_axis(r: Resolved) -> str:
    """Which line of W the user sees: a column (in-out) or a row (out-in, columns layout)."""
    o = r.options
    return "row" if o.weights_layout == "out-in" or o.layout == "columns" else "column"


def _exact_row(r: Resolved, a: np.ndarray) -> list[Any]:
    """Input numbers as the run used them: fractions in an exact run."""
    if r.options.exact:
        from .exact import exact

        return [exact(float(v)) for v in a]
    return [float(v) for v in a]


def rows_of(t: Trace) -> tuple[str, str]:
    """The stages whose rows the scores read: ``Q_rotated``, ``Q_normed`` or ``Q`` (and K's)."""
    for q, k in (("Q_rotated", "K_rotated"), ("Q_normed", "K_normed")):
        if q in t.stages:
            return q, k
    return "Q", "K"


def _scores(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    r = c.r
    qn, kn = rows_of(c.t)
    q = list(c.head_cols(qn, r.d_head, False)[i])
    k = list(c.head_cols(kn, r.d_head, True)[j])
    value = c.stage("scores")[i, j]
    cols = ""
    if r.multihead:
        lo = c.h * r.d_head
        kv = c.group * r.d_head
        if r.kv_heads != r.heads:
            cols = _(" (head {h} uses {qspan} of {q} and {kspan} of {k})").format(
                h=c.h + 1, qspan=_span(lo, r.d_head), q=qn, kspan=_span(kv, r.d_head), k=kn
            )
        else:
            cols = _(" (head {h} uses {span} of {q} and {k})").format(
                h=c.h + 1, span=_span(lo, r.d_head), q=qn, k=kn)  # fmt: skip
    elif qn != "Q":
        cols = _(" (q{sub}, k{sub2}: rows of {qn} and {kn})").format(
            sub=sub(i), sub2=sub(j), qn=qn, kn=kn
        )
    if r.options.similarity == "cosine":
        qf, kf = [float(a) for a in q], [float(b) for b in k]
        dot = sum(a * b for a, b in zip(qf, kf))
        nq, nk = math.hypot(*qf), math.hypot(*kf)  # a² would overflow for long rows
        terms, shown = dot_line(qf, kf, dot, fmt)

        def make(places: int) -> tuple[Any, Decimal]:
            parts = (fmt.at(nq, places), fmt.at(nk, places))
            return parts, dec(shown) / (dec(parts[0]) * dec(parts[1]))

        (a, b), _places = fitted(make, float(value), fmt)
        product = fmt.at(float(dec(a) * dec(b)), len(a.split(".")[-1]) * 2 if "." in a else 0)
        return [
            f"scores[{i + 1},{j + 1}] = cos(q{sub(i)}, k{sub(j)}) = q{sub(i)}·k{sub(j)} / (|q{sub(i)}|·|k{sub(j)}|)"
            f" = ({terms}) / ({a}·{b}) = {shown} / {product} = {fmt(value)}{cols}"
        ]
    terms, shown = dot_line(q, k, value, fmt)
    return [f"scores[{i + 1},{j + 1}] = q{sub(i)}·k{sub(j)} = {terms} = {shown}{cols}"]


def _normed(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    """RMSNorm of one row of Q or K (per head, or over the row), then its weight."""
    from .options import RMS_NORM_EPS

    r, o = c.r, c.r.options
    which = name[0]
    value = float(c.internal[name][c.b][i, j])
    cell = f"{name}[{i + 1},{j + 1}]"
    if which == "K" and i < r.past:
        return [_("{cell} = K[{i},{j}] = {value} (row {i} is c{i}, a cached key: it was normed " "when it was cached)").format(cell=cell, i=i + 1, j=j + 1, value=fmt(value))]  # fmt: skip
    row = [float(x) for x in c.internal[which][c.b][i]]
    heads = r.heads if which == "Q" else r.kv_heads
    width = len(row) // heads if o.qk_norm == "head" else len(row)
    lo = (j // width) * width
    xs = row[lo : lo + width]
    eps = RMS_NORM_EPS if o.rms_norm_eps is None else o.rms_norm_eps
    wname = "q_norm" if which == "Q" else "k_norm"
    w = r.arrays.get(wname)
    k = j - lo if o.qk_norm == "head" else j
    g = 1.0 if w is None else float(w[k]) + (1.0 if o.rms_norm_unit_offset else 0.0)
    span = f"{which}[{i + 1},{lo + 1}…{lo + width}]"
    scope = (_("per head: head {lo} is columns {lo2}–{lo3}").format(lo=lo // width + 1, lo2=lo + 1, lo3=lo + width)
             if o.qk_norm == "head" and heads > 1 else
             _("per head") if o.qk_norm == "head" else _("over the whole row"))  # fmt: skip
    if w is None:
        weight, times = "", ""
    elif o.rms_norm_unit_offset:
        weight = f" · (1 + {wname}[{k + 1}])"
        times = f" × (1 + {paren(fmt.given(float(w[k])))})"
    else:
        weight = f" · {wname}[{k + 1}]"
        times = f" × {paren(fmt.given(float(w[k])))}"
    eps_s = _plain_dec(Decimal(repr(float(eps))))  # 0.000001, as a calculator takes it

    def make(places: int) -> tuple[Any, Decimal]:
        shown = [_short(x, places, fmt) for x in xs]
        ms = sum((dec(x) * dec(x) for x in shown), Decimal(0)) / width
        ms = ms.quantize(Decimal(1).scaleb(-(places + 2))).normalize()
        rms = (ms + dec(eps_s)).sqrt().quantize(Decimal(1).scaleb(-(places + 2)))
        return (shown, ms, rms), dec(shown[j - lo]) / rms * dec(fmt.given(g))

    (shown, ms, rms), _places = fitted(make, value, fmt)
    squares = " + ".join(f"{paren(x)}²" for x in shown)
    return [
        f"{cell} = {which}[{i + 1},{j + 1}] / rms{weight}, rms = √(mean({span}²) + eps) ({scope})",
        f"  mean({span}²) = ({squares}) / {width} = {_plain_dec(ms)}",
        f"  rms = √({_plain_dec(ms)} + {eps_s}) = {_plain_dec(rms)}",
        f"  {cell} = {paren(shown[j - lo])} / {_plain_dec(rms)}{times} = {fmt(value)}",
    ]


def _rotated(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    """One pair of RoPE: the angle at the token's position, cos and sin, the turned feature."""
    import numpy as np

    from .attention import rope_base, rope_pairs

    r, o = c.r, c.r.options
    which = name[0]
    src = f"{which}_normed" if f"{which}_normed" in c.t.stages else which
    value = float(c.internal[name][c.b][i, j])
    cell = f"{name}[{i + 1},{j + 1}]"
    before = f"{src}[{i + 1},{j + 1}]"
    if which == "K" and i < r.past:
        counted = "position_ids" not in r.problem.matrices and o.position_offset is None
        at = (
            _("position {i}").format(i=i) if counted else _("its own position")
        )  # the cache holds tokens 0 … P − 1
        return [_("{cell} = {before} = {value} (row {i} is c{i}, a cached key: it was rotated at " "{at} when it was cached)").format(cell=cell, before=before, value=fmt(value), i=i + 1, at=at)]  # fmt: skip
    d, dim = r.d_head, r.rotary_dim
    lo, f = (j // d) * d, j % d
    heads = r.heads if which == "Q" else r.kv_heads
    of_head = _(" of head {j}").format(j=j // d + 1) if heads > 1 else ""
    if f >= dim:
        factor = o.partial_rotary_factor or 1.0
        return [_("{cell} = {before} = {value}: feature {f}{of_head} is not rotated " "(partial_rotary_factor {factor:g} rotates the first {dim} of the {d} features " "of each head)").format(cell=cell, before=before, value=fmt(value), f=f + 1, of_head=of_head, factor=factor, dim=dim, d=d)]  # fmt: skip
    first, second = (list(np.arange(dim)[s]) for s in rope_pairs(o.rope, dim))
    if f in first:
        p, partner, sign = first.index(f), second[first.index(f)], "−"
    else:
        p, partner, sign = second.index(f), first[second.index(f)], "+"
    assert r.positions is not None
    at = r.positions[min(c.b, r.positions.shape[0] - 1)]
    pos = int(at[i - (r.past if which == "K" else 0)])
    pairing = (_("half: feature i turns with feature i + d/2") if o.rope == "half"
               else _("interleaved: features 2i − 1 and 2i turn together"))  # fmt: skip
    lines = [
        _(
            "{cell}: column {j} is feature {f}{of_head}, which turns with feature {partner} "
            "(column {lo}) by the angle of pair {p} of {dim} ({pairing}), at position {pos}"
        ).format(
            cell=cell,
            j=j + 1,
            f=f + 1,
            of_head=of_head,
            partner=partner + 1,
            lo=lo + partner + 1,
            p=p + 1,
            dim=dim // 2,
            pairing=pairing,
            pos=pos,
        )
    ]
    mine = float(c.internal[src][c.b][i, j])
    other = float(c.internal[src][c.b][i, lo + partner])
    pair = f"{src}[{i + 1},{lo + partner + 1}]"
    if pos == 0:
        lines.append(_("  θ = 0 at position 0: cos θ = 1, sin θ = 0, so {cell} = {before} = {value}").format(cell=cell, before=before, value=fmt(value)))  # fmt: skip
        return lines
    base = rope_base(o)
    inv = base ** (-2.0 * p / dim)

    def make(places: int) -> tuple[Any, Decimal]:
        inv_s = "1" if p == 0 else np.format_float_positional(
            inv, precision=places + 1, unique=False, fractional=False, trim="-")  # fmt: skip
        angle = dec(inv_s) * pos
        unit = Decimal(1).scaleb(-(places + 1))
        cos = Decimal(repr(math.cos(float(angle)))).quantize(unit)
        sin = Decimal(repr(math.sin(float(angle)))).quantize(unit)
        x, y = _short(mine, places, fmt), _short(other, places, fmt)
        got = dec(x) * cos - dec(y) * sin if sign == "−" else dec(x) * cos + dec(y) * sin
        return (inv_s, angle, cos, sin, x, y), got

    (inv_s, angle, cos, sin, x, y), _places = fitted(make, value, fmt)
    lines += [
        _("  θ = position × {base}^(−2·{p}/{dim}) = {pos} × {inv_s} = {plain_dec}").format(
            base=fmt.given(base), p=p, dim=dim, pos=pos, inv_s=inv_s, plain_dec=_plain_dec(angle)
        ),
        f"  cos θ = {_plain_dec(cos)}, sin θ = {_plain_dec(sin)}",
        f"  {cell} = {before}·cos θ {sign} {pair}·sin θ = {paren(x)}·{paren(_plain_dec(cos))} "
        f"{sign} {paren(y)}·{paren(_plain_dec(sin))} = {fmt(value)}",
    ]
    return lines


def _span(lo: int, width: int) -> str:
    """``columns 3–4`` or ``column 3`` (1-based)."""
    return (
        _("column {lo}").format(lo=lo + 1)
        if width == 1
        else _("columns {lo}–{lo2}").format(lo=lo + 1, lo2=lo + width)
    )


def _scale_words(c: Cell, fmt: Numbers) -> tuple[str, Any]:
    """The scale as written (``1/√3``) and its value (exact in an exact run)."""
    from .describe import factor, scale_text

    r = c.r
    o = r.options
    value = factor(r)
    words = scale_text(r)
    if o.temperature != 1:
        words = f"{words} / {o.temperature:g}"
    return words, value


def _bias_parts(c: Cell, i: int, j: int, fmt: Numbers) -> tuple[list[str], list[tuple[str, float]]]:
    """What is added to logit (i, j): ALiBi's working, and the terms ``[(words, value)]``."""
    r = c.r
    rules = r.rules
    lines: list[str] = []
    parts: list[tuple[str, float]] = []
    if rules.bias is not None:
        b = rules.bias[min(c.b, rules.bias.shape[0] - 1), min(c.h, rules.bias.shape[1] - 1)]
        parts.append((f"attn_bias[{i + 1},{j + 1}]", float(b[i, j])))
    if rules.slopes is not None:
        m = float(rules.slopes[c.h])
        at = i + rules.q0  # the query's index among the keys
        d = j - at
        slopes = ", ".join(fmt.given(float(x)) for x in rules.slopes)
        where = (
            _(", query {i} is key {at} of the sequence").format(i=i + 1, at=at + 1)
            if rules.q0
            else ""
        )
        value = m * d
        lines.append(
            _(
                "ALiBi of head {h}: m{sub} = {m} (the slopes of {heads} head{v}: "
                "{slopes}){where}; m{sub}·(j − i) = {m}·({j} − {at}) = {m}·{paren} = {term}"
            ).format(
                h=c.h + 1,
                sub=sub(c.h),
                m=fmt.given(m),
                heads=r.heads,
                v="s" * (r.heads != 1),
                slopes=slopes,
                where=where,
                j=j + 1,
                at=at + 1,
                paren=paren(str(d).replace("-", "−")),
                term=_term(value, fmt),
            )
        )
        parts.append(("ALiBi", value))
    return lines, parts


def _term(v: float, fmt: Numbers) -> str:
    """A bias term as printed: as it is when short (−0.125), else to 10 decimals."""
    given = fmt.given(v)
    return given if len(given) < 12 else fmt.at(v, 10).rstrip("0")


def _bias_text(parts: list[tuple[str, float]], fmt: Numbers) -> str:
    """`` + attn_bias[2,1] (0.5) + ALiBi (−0.125)``."""
    return "".join(f" + {words} ({_term(v, fmt)})" for words, v in parts)


def _bias_sum(parts: list[tuple[str, float]], fmt: Numbers) -> Decimal:
    """The bias terms added up as printed."""
    return sum((dec(_term(v, fmt)) for _, v in parts), Decimal(0))


def _scaled(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    from .exact import is_exact

    lines = _scores(c, "scores", i, j, fmt)
    s = c.stage("scores")[i, j]
    words, factor = _scale_words(c, fmt)
    value = c.stage("scaled")[i, j]
    capped = "capped" in c.t.stages  # the bias is added to the capped logits, not here
    extra_lines, parts = ([], []) if capped else _bias_parts(c, i, j, fmt)
    lines += extra_lines
    line = f"scaled[{i + 1},{j + 1}] = scores[{i + 1},{j + 1}] × {words}"
    if any(not math.isfinite(v) for _, v in parts) or is_exact(value) or is_exact(factor):
        line += f" = {fmt.factor(s)} × {fmt(factor)}"
    else:
        extra = _bias_sum(parts, fmt)

        def make(places: int) -> tuple[Any, Decimal]:
            x, f = _short(float(s), places, fmt), _short(float(factor), places, fmt)
            return (x, f), dec(x) * dec(f) + extra

        (shown_s, f), _ = fitted(make, float(value), fmt)
        line += f" = {paren(shown_s)} × {f}"
    line += _bias_text(parts, fmt)
    lines.append(f"{line} = {fmt.approx(value)}")
    return lines


def _capped(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    lines = _scaled(c, "scaled", i, j, fmt)
    cap = float(c.r.options.attn_logit_softcapping)
    x = float(c.stage("scaled")[i, j])
    value = float(c.stage("capped")[i, j])
    extra_lines, parts = _bias_parts(c, i, j, fmt)
    lines += extra_lines
    cell = f"capped[{i + 1},{j + 1}]"
    cs = fmt.given(cap)
    head = f"{cell} = {cs}·tanh(scaled[{i + 1},{j + 1}] / {cs})"
    if any(not math.isfinite(v) for _, v in parts):
        lines.append(f"{head}{_bias_text(parts, fmt)} = {fmt.approx(value)}")
        return lines
    extra = _bias_sum(parts, fmt)

    def make(places: int) -> tuple[Any, Decimal]:
        z = _short(x, places, fmt)
        t = Decimal(repr(math.tanh(float(dec(z)) / cap))).quantize(Decimal(1).scaleb(-(places + 1)))
        return (z, t), dec(cs) * t + extra

    (z, t), _ = fitted(make, value, fmt)
    mid = f"{cs}·tanh({z} / {cs})" if cap != 1 else f"tanh({z})"
    lines.append(
        f"{head}{_bias_text(parts, fmt)} = {mid}{_bias_text(parts, fmt)}"
        f" = {cs} × {_plain_dec(t)}{_bias_text(parts, fmt)} = {fmt(value)}"
    )
    return lines


def _logits(c: Cell) -> str:
    """The logit stage before the mask: ``capped`` when soft-capped, else ``scaled``."""
    return "capped" if "capped" in c.t.stages else "scaled"


def _allowed(c: Cell, i: int, j: int) -> bool:
    r = c.r
    a = r.rules.allowed(slice(i, i + 1), slice(j, j + 1), c.b, c.h)
    ok = a is None or bool(a[0, 0])
    return ok and math.isfinite(float(c.stage(_logits(c))[i, j]))


def _reasons(c: Cell, i: int, j: int) -> list[str]:
    """Why each rule of a sliding window, chunks or a decode step blocks or keeps (i, j)."""
    rules = c.r.rules
    if rules.window is None and rules.chunk is None and not rules.q0:
        return []
    at = i + rules.q0  # the query's index among the keys
    q = _("query {i}").format(i=i + 1) + (
        _(" (key {at} of the sequence)").format(at=at + 1) if rules.q0 else ""
    )
    out = []
    if rules.causal is not None:
        last = i + rules.causal
        keep = j <= last
        cached = _(", after the {q0} cached").format(q0=rules.q0) if rules.q0 else ""
        out.append(_("  causal: {q} sees keys 1…{last}{cached}; key {j} ").format(q=q, last=last + 1, cached=cached, j=j + 1)
                   + (_("is among them, kept") if keep else _("comes later, blocked")))  # fmt: skip
    if rules.window is not None:
        W = rules.window
        lo, keep = max(at - W + 1, 0), at - W < j <= at
        out.append(_("  sliding window {W}: {q} sees keys {lo}…{at} (i − {W} < j ≤ i); key {j} is ").format(W=W, q=q, lo=lo + 1, at=at + 1, j=j + 1) + (_("inside, kept") if keep else _("outside, blocked")))  # fmt: skip
    if rules.chunk is not None:
        C = rules.chunk
        qa, kb = at // C, j // C
        lo, hi = qa * C, min(qa * C + C, c.r.m)
        out.append(_("  chunks of {C}: {q} is in chunk {qa} (keys {lo}…{hi}, ⌊i/{C}⌋ = ⌊j/{C}⌋), key " "{j} in chunk {kb}: ").format(C=C, q=q, qa=qa + 1, lo=lo + 1, hi=hi, j=j + 1, kb=kb + 1)
                   + (_("the same, kept") if qa == kb else _("another, blocked")))  # fmt: skip
    return out


def _masked(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    src = _logits(c)
    lines = (_capped if src == "capped" else _scaled)(c, src, i, j, fmt) + _reasons(c, i, j)
    if _allowed(c, i, j):
        lines.append(
            _("masked[{i},{j}] = {src}[{i},{j}] = {stage} (query {i} may attend key {j})").format(
                i=i + 1, j=j + 1, src=src, stage=fmt.approx(c.stage(src)[i, j])
            )
        )
    else:
        lines.append(
            _("masked[{i},{j}] = −∞ (the mask blocks key {j} for query {i})").format(
                i=i + 1, j=j + 1
            )
        )
    return lines


def _weights(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    masked = "masked" in c.t.stages
    src = "masked" if masked else _logits(c)
    lines = {"masked": _masked, "capped": _capped, "scaled": _scaled}[src](c, src, i, j, fmt)
    row = c.stage(src)[i]
    w = float(c.stage("weights")[i, j])
    cell = f"weights[{i + 1},{j + 1}]"
    if c.r.options.normalize == "sigmoid":
        x = row[j]
        if not math.isfinite(float(x)):
            lines.append(
                _("{cell} = 0: key {j} is masked, so it gets no weight").format(cell=cell, j=j + 1)
            )
        else:
            lines += _sigmoid(cell, src, i, j, x, w, fmt)
        return lines
    sinks = c.r.arrays.get("sinks")
    sink = None if sinks is None else float(sinks[c.h])
    live = [k for k in range(len(row)) if math.isfinite(float(row[k]))]
    if j not in live:
        lines.append(
            _("{cell} = 0: key {j} is masked, so it gets no weight").format(cell=cell, j=j + 1)
        )
        return lines
    from .exact import is_exact

    top = max(live, key=lambda k: float(row[k]))
    dead = _left_out([k for k in range(len(row)) if k not in live])
    weights = [float(x) for x in c.stage("weights")[i]]
    shown = [fmt(x) for x in weights]
    total = sum((dec(x) for x in shown), Decimal(0))
    if sink is None:
        lines.append(
            _(
                "{cell} = e^{{{src}[{i},{j}] − m}} / Σₖ e^{{{src}[{i},k] − m}}, where m = "
                "{src}[{i},{top}], the largest in row {i}"
            ).format(cell=cell, src=src, i=i + 1, j=j + 1, top=top + 1)
            + dead
        )
        rounded = "" if total == 1 else _(", 1 before rounding")
        lines.append(
            _("  (row {i} of weights sums to 1: {items} = {plain_dec}{rounded})").format(
                i=i + 1, items=" + ".join(shown), plain_dec=_plain_dec(total), rounded=rounded
            )
        )
    else:
        biggest = (_("m = {src}[{i},{top}], the largest in row {i}").format(src=src, i=i + 1, top=top + 1)
                   if float(row[top]) >= sink else _("m = {sink}, the sink, larger than every logit of row {i}").format(sink=fmt.given(sink), i=i + 1))  # fmt: skip
        lines.append(
            _(
                "{cell} = e^{{{src}[{i},{j}] − m}} / (Σₖ e^{{{src}[{i},k] − m}} + e^{{sink − "
                "m}}), where {biggest}; head {h}'s sink is {sink}"
            ).format(
                cell=cell,
                src=src,
                i=i + 1,
                j=j + 1,
                biggest=biggest,
                h=c.h + 1,
                sink=fmt.given(sink),
            )
            + dead
        )
        lines.append(
            _("  (row {i} of weights sums to less than 1: {items} = {plain_dec})").format(
                i=i + 1, items=" + ".join(shown), plain_dec=_plain_dec(total)
            )
        )
    if sink is None and all(is_exact(row[k]) for k in live):
        lines += _exact_softmax(row, live, j, top, w, fmt)
    else:
        lines += _float_softmax(row, live, j, top, w, fmt, sink)
    return lines


def _float_softmax(
    row: Any, live: list[int], j: int, top: int, w: float, fmt: Numbers, sink: float | None = None
) -> list[str]:
    """The softmax of one row, shifted by its maximum, every number printed so that it redoes.

    A sink (gpt-oss) is the last term of the denominator, shown as such, and
    the shift is the largest of the row's logits and the sink.
    """
    values = [float(row[k]) for k in live] + ([] if sink is None else [sink])
    mine = live.index(j)
    peak = live.index(top) if sink is None or float(row[top]) >= sink else len(live)

    def make(places: int) -> tuple[Any, Decimal]:
        z = [_short(v, places, fmt) for v in values]
        d = [dec(x) - dec(z[peak]) for x in z]
        e = [
            Decimal(repr(math.exp(float(x)))).quantize(Decimal(1).scaleb(-(places + 2))) for x in d
        ]
        e = [Decimal(1) if x == 0 else y for x, y in zip(d, e)]
        total = sum(e, Decimal(0))
        return (z, d, e, total), e[mine] / total

    (z, d, e, total), _places = fitted(make, w, fmt)
    m = z[peak]
    lines = [
        f"  = e^{{{z[mine]} − {m}}} / ({' + '.join(f'e^{{{x} − {paren(m)}}}' for x in z)})",
        f"  = e^{{{_plain_dec(d[mine])}}} / ({' + '.join(f'e^{{{_plain_dec(x)}}}' for x in d)})",
        f"  = {_plain_dec(e[mine])} / ({' + '.join(_plain_dec(x) for x in e)})"
        f" = {_plain_dec(e[mine])} / {_plain_dec(total)}",
        f"  = {fmt(w)}",
    ]
    if sink is not None:
        share = e[-1] / total
        lines[0] += _(" (the last term is the sink's)")
        lines.insert(0, _("  the sink takes e^{{{plain_dec}}} / {plain_dec2} = {plain_dec3} / {plain_dec2} " "= {float} of the row, a weight no value gets").format(plain_dec=_plain_dec(d[-1]), plain_dec2=_plain_dec(total), plain_dec3=_plain_dec(e[-1]), float=fmt(float(share))))  # fmt: skip
    return lines


def _exact_softmax(
    row: Any, live: list[int], j: int, top: int, w: float, fmt: Numbers
) -> list[str]:
    """The softmax of one row in exact forms: e-powers of surds, shifted by the maximum."""
    from .exact import text

    z = [row[k] for k in live]
    mine, peak = live.index(j), live.index(top)
    d = [_minus(x, z[peak]) for x in z]
    e = [math.exp(float(x)) for x in d]

    def make(places: int) -> tuple[Any, Decimal]:  # significant digits that make the line redo
        terms = [f"{x:.{places + 2}g}" for x in e]
        total = sum((Decimal(t) for t in terms), Decimal(0))
        shown = f"{float(total):.{places + 2}g}"
        return (terms, shown), Decimal(terms[mine]) / Decimal(shown)

    (terms, total), _ = fitted(make, w, fmt)
    return [
        f"  = e^{{{text(z[mine])} − {text(z[peak])}}} / "
        f"({' + '.join(f'e^{{{text(x)} − {text(z[peak])}}}' for x in z)})",
        f"  = e^{{{text(d[mine])}}} / ({' + '.join(f'e^{{{text(x)}}}' for x in d)})",
        f"  ≈ {terms[mine]} / ({' + '.join(terms)}) ≈ {terms[mine]} / {total}",
        f"  = {fmt(w)}",
    ]


def _minus(a: Any, b: Any) -> Any:
    """a − b for exact values of mixed kinds (a fraction minus a surd: −(surd − fraction))."""
    try:
        return a - b
    except TypeError:
        return -(b - a)


def _sigmoid(cell: str, src: str, i: int, j: int, x: Any, w: float, fmt: Numbers) -> list[str]:
    """σ(x) = 1 / (1 + e^{−x}), printed so that it redoes."""
    xv = float(x)

    def make(places: int) -> tuple[Any, Decimal]:
        z = _short(-xv, places, fmt)
        e = Decimal(repr(math.exp(float(dec(z))))).quantize(Decimal(1).scaleb(-(places + 2)))
        return (z, e), 1 / (1 + e)

    (z, e), _ = fitted(make, w, fmt)
    return [
        f"{cell} = σ({src}[{i + 1},{j + 1}]) = 1 / (1 + e^{{{z}}}) = 1 / (1 + {_plain_dec(e)})"
        f" = 1 / {_plain_dec(1 + e)} = {fmt(w)}"
    ]


def _plain_dec(d: Decimal) -> str:
    """A Decimal as printed: no exponent, no trailing zeros, ``−`` for minus."""
    text = format(d.normalize(), "f") if d != 0 else "0"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace("-", "−")


def _left_out(dead: list[int]) -> str:
    """`` (keys 2, 3 masked, left out)`` or nothing."""
    if not dead:
        return ""
    return ngettext(" (key {items} masked, left out)", " (keys {items} masked, left out)",
                    len(dead)).format(items=", ".join(str(k + 1) for k in dead))  # fmt: skip


def _weighted_sum(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    r = c.r
    weights = [float(x) for x in c.stage("weights")[i]]
    v = c.head_cols("V", r.dv_head, True)[:, j]
    if name == "head_outputs":
        value = c.stage("head_outputs")[i, j]
    else:
        value = c.internal[name][c.b][i, j]
    col = c.group * r.dv_head + j  # V's column as the user's V numbers them
    target = f"{name}[{i + 1},{j + 1}]"
    terms, shown = dot_line(weights, [float(x) for x in v], float(value), fmt)
    places = max((len(t.split(".")[1].rstrip(")")) for t in terms.split(" + ") for t in t.split("·")[:1]
                  if "." in t), default=fmt.precision)  # fmt: skip
    listed = ", ".join(_short(x, max(places, fmt.precision), fmt) for x in weights)
    lines = [f"weights[{i + 1},·] = ({listed})"]
    if r.multihead:
        lo = c.group * r.dv_head
        lines.append(_("head {h} uses {span} of V").format(h=c.h + 1, span=_span(lo, r.dv_head)))
    lines.append(f"{target} = Σⱼ weights[{i + 1},j]·V[j,{col + 1}] = {terms} = {shown}")
    return lines


def _concat(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    r = c.r
    h, jj = divmod(j, r.dv_head)
    inner = Cell(r, c.t, c.b, h)
    value = c.internal["concat"][c.b][i, j]
    lines = [
        _(
            "concat[{i},{j}] = head_outputs[head {h}][{i},{jj}] = {value} (column {j} of "
            "concat is column {jj} of head {h})"
        ).format(i=i + 1, j=j + 1, h=h + 1, jj=jj + 1, value=fmt(value))
    ]
    return lines + _weighted_sum(inner, "head_outputs", i, jj, fmt)


def _output(c: Cell, name: str, i: int, j: int, fmt: Numbers) -> list[str]:
    r = c.r
    if "W_O" not in r.arrays:
        if r.multihead:
            last = f"output[{i + 1},{j + 1}] = concat[{i + 1},{j + 1}]"
            return [*_concat(c, "concat", i, j, fmt), last]
        return _weighted_sum(c, "output", i, j, fmt)
    row = list(c.internal["concat"][c.b][i])
    w = _exact_row(r, r.arrays["W_O"][:, j])
    value = c.internal["output"][c.b][i, j]
    bias = _exact_row(r, r.arrays["b_O"])[j] if "b_O" in r.arrays else None
    target = float(value) - (0.0 if bias is None else float(bias))
    terms, _shown = dot_line([float(x) for x in row], [float(x) for x in w], target, fmt)
    line = f"output[{i + 1},{j + 1}] = concat{sub(i)} · ({_w_line(r, j, 'O')}) = {terms}"
    if bias is not None:
        line += f" + {paren(fmt.given(bias))}"
    return [f"{line} = {fmt(value)}"]
