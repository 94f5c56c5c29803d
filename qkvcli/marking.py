"""The marking model: how close a written value must be to count.

A value is compared with the truth at the precision the student wrote it
(trailing zeros carry none), never coarser than the problem's precision — by
default 2 decimals (``--decimals``, ``--sig-figs``, ``--rel-tol`` or the
problem file's ``precision``). Its window is half a unit in that last place,
widened by what carrying that precision through the earlier steps can move it
(a scale 1/√3 carried as 0.5774, weights carried at 4 decimals): so correct
hand work is right, an exact truth (integer scores from integer inputs) must
be written exactly, and writing fewer digits never earns more credit.

>>> p = Precision()
>>> w = written("0.43"); round(window(w, 0.4319, p), 6)
0.005
>>> agrees(written("0"), 0.3177, window(written("0"), 0.3177, p))
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .answers import Written, written
from .errors import OptionError
from .i18n import N_, _, ngettext
from .i18n import _ as tr

#: Where a marking model came from, when it is said in words (else an option, or a file).
SOURCES = (N_("the default"), N_("default"))

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved

__all__ = ["Cells", "Precision", "agrees", "agrees_many", "bounds", "halves_many",
           "parse_precision", "window", "windows", "written"]  # fmt: skip

#: How coarsely values not written are assumed carried, at most: 3 decimals (1/√3 as 0.577).
#: Hand work carried more coarsely is "consistent with rounding", with a note, not "right".
CARRY = 5e-4


@dataclass(frozen=True)
class Precision:
    """The problem's precision: the coarsest a written value is compared at.

    One of ``decimals``, ``sig_figs``, ``rel_tol`` (a fraction of the
    truth), or ``tolerance`` (``--tolerance``: a flat absolute window that
    replaces the model).
    """

    decimals: int | None = 2
    sig_figs: int | None = None
    rel_tol: float | None = None
    tolerance: float | None = None
    source: str = "default"

    def floor(self, true: float) -> float:
        """The widest half-window the problem allows at this truth."""
        if self.sig_figs is not None:
            if true == 0 or not math.isfinite(true):
                return 0.5 * 10.0 ** -(self.sig_figs + 3)
            return 0.5 * 10.0 ** (math.floor(math.log10(abs(true))) - self.sig_figs + 1)
        if self.rel_tol is not None:
            return self.rel_tol * abs(true)
        return 0.5 * 10.0 ** -(self.decimals if self.decimals is not None else 2)

    def describe(self) -> str:
        """The model in one line, as ``check`` prints it."""
        if self.tolerance is not None:
            return _(
                "marking: right within ±{tolerance} of the true value (--tolerance), "
                "or of what follows from your own earlier values"
            ).format(tolerance=f"{self.tolerance:g}")
        if self.sig_figs is not None:
            least = ngettext("at least {n} significant figure", "at least {n} significant figures",
                             self.sig_figs).format(n=self.sig_figs)  # fmt: skip
        elif self.rel_tol is not None:
            least = _("never coarser than {rel} of the value").format(rel=f"{self.rel_tol:g}")
        else:
            d = self.decimals if self.decimals is not None else 2
            least = ngettext("at least {n} decimal", "at least {n} decimals", d).format(n=d)
        source = tr(self.source) if self.source in SOURCES else self.source
        return _(
            "marking: each value at the decimals you wrote, {least} ({source}); "
            "±½ in the last place plus what carrying that precision through earlier steps can add; "
            "exact values must be exact"
        ).format(least=least, source=source)


def parse_precision(value: Any, where: str) -> Precision:
    """A problem file's ``precision``: N decimals, or ``{"sig_figs": N}`` / ``{"rel_tol": X}``.

    >>> parse_precision(3, "p.json").decimals, parse_precision({"sig_figs": 3}, "p.json").sig_figs
    (3, 3)
    """
    source = _("precision in {where}").format(where=where)
    if isinstance(value, dict) and len(value) == 1:
        ((key, v),) = value.items()
        key = str(key).lower().replace("-", "_").replace(" ", "_")
        if key in ("decimals", "sig_figs", "significant_figures", "rel_tol"):
            if key == "rel_tol":
                return Precision(None, rel_tol=_fraction(v, where), source=source)
            n = _count(v, where)
            if key == "decimals":
                return Precision(n, source=source)
            return Precision(None, sig_figs=max(n, 1), source=source)
    if isinstance(value, dict):
        raise OptionError(
            _('{where}: precision must be N (decimals) or one of {{"decimals": N}}, '
              '{{"sig_figs": N}}, {{"rel_tol": X}}').format(where=where)
        )  # fmt: skip
    return Precision(_count(value, where), source=source)


def _count(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 15:
        raise OptionError(
            _("{where}: precision must be a whole number of digits from 0 to 15, not {v!r}").format(
                where=where, v=v
            )
        )
    return v


def _fraction(v: Any, where: str) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not 0 < v < 1:
        raise OptionError(
            _("{where}: rel_tol must be a number between 0 and 1, not {v!r}").format(
                where=where, v=v
            )
        )
    return float(v)


def half(w: Written, true: float, p: Precision) -> float:
    """Half a unit in the last place the value is compared at (0 for an exact form)."""
    if p.tolerance is not None:
        return p.tolerance
    if w.decimals is None:
        return 0.0
    return min(0.5 * 10.0**-w.decimals, p.floor(true))


def window(
    w: Written, true: float, p: Precision, carried: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
) -> float:
    """How far ``w`` may be from ``true`` and still agree.

    ``carried`` = (u, c, a, o): what earlier steps add, per unit of the
    precision values not written are carried at (u; at most `CARRY`), per
    unit of the scale factor's rounding (c), in absolute terms from the
    student's own written earlier values (a), and per unit of this value's
    half-unit from the e-terms of a softmax rounded on the way (o).
    """
    if p.tolerance is not None:
        return p.tolerance
    h = half(w, true, p)
    u, c, a, o = (*carried, 0.0)[:4] if len(carried) == 3 else carried
    width = h + (u + c) * min(h, CARRY) + a + o * h
    return width * (1 + 1e-9) + 1e-12 * max(1.0, abs(true))


def agrees(w: Written, true: float, width: float) -> bool:
    """Is ``w`` within ``width`` of ``true``? −∞ (a masked cell) only as −∞ or a sentinel (−1e9)."""
    if math.isnan(true):
        return w.form == "nan"
    if math.isinf(true):
        return w.sentinel if true < 0 else w.value == true
    if not math.isfinite(w.value):
        return False
    return abs(w.value - true) <= width


# ---------------------------------------------------------------- many cells at once


@dataclass(frozen=True, eq=False)
class Cells:
    """Written cells as arrays, to be marked at once (`windows`, `agrees_many`).

    ``index`` selects them from a stage (``a[cells.index]``); ``unit`` is
    half a unit in each one's last written place (NaN for an exact form).

    >>> c = Cells.of([((0, 1), written("0.43")), ((1, 0), written("-inf"))], 2)
    >>> c.index[1].tolist(), c.unit.tolist()
    ([1, 0], [0.005, 0.5])
    """

    index: tuple[np.ndarray, ...]
    value: np.ndarray  # (k,) the values as written
    unit: np.ndarray  # (k,) 0.5·10^-decimals, NaN for an exact form
    nan: np.ndarray  # (k,) written as NaN
    sentinel: np.ndarray  # (k,) −∞, or a large negative number standing for it

    @classmethod
    def of(cls, cells: list[tuple[tuple[int, ...], Written]], ndim: int) -> Cells:
        """From (index, written) pairs of a stage with ``ndim`` axes."""
        import numpy as np

        from .answers import SENTINEL

        ws = [w for _, w in cells]
        places = [w.decimals for w in ws]
        # Python's own 10.0 ** -d, as `half` has it
        units = {d: math.nan if d is None else 0.5 * 10.0**-d for d in set(places)}
        index = np.array([i for i, _ in cells], dtype=np.intp)
        index = index.reshape(len(cells), ndim)  # (k, ndim)
        value = np.array([w.value for w in ws], dtype=float)  # (k,)
        forms = [w.form for w in ws]
        decimal = np.array([f == "decimal" for f in forms], dtype=bool)  # (k,)
        return cls(
            tuple(index.T),
            value,
            np.array([units[d] for d in places], dtype=float),
            np.array([f == "nan" for f in forms], dtype=bool),
            (value == -math.inf) | (decimal & (value <= SENTINEL)),  # as `Written.sentinel`
        )


def windows(
    cells: Cells, true: np.ndarray, p: Precision, carried: tuple[np.ndarray, ...] = ()
) -> np.ndarray:
    """`window` of every cell at once, to the last bit: ``true`` and ``carried`` are per cell.

    >>> c = Cells.of([((0,), written("0.43"))], 1)
    >>> windows(c, [0.4319], Precision()).tolist() == [window(written("0.43"), 0.4319, Precision())]
    True
    """
    import numpy as np

    true = np.asarray(true, dtype=float)  # (k,)
    if p.tolerance is not None:
        return np.full(true.shape, p.tolerance)
    with np.errstate(all="ignore"):
        h = halves_many(cells, true, p)
        zero = np.zeros(true.shape)
        u, c, a, o = (*carried, zero)[:4] if len(carried) == 3 else (carried or (zero,) * 4)
        width = h + (u + c) * np.where(h > CARRY, CARRY, h) + a + o * h
        abs_true = np.abs(true)
        return width * (1 + 1e-9) + 1e-12 * np.where(abs_true > 1.0, abs_true, 1.0)


def halves_many(cells: Cells, true: np.ndarray, p: Precision) -> np.ndarray:
    """`half` of every cell at once.

    >>> halves_many(Cells.of([((0,), written("0.4")), ((1,), written("7/2"))], 1), [0.4, 3.5], Precision()).tolist()
    [0.005, 0.0]
    """
    import numpy as np

    true = np.asarray(true, dtype=float)  # (k,)
    if p.tolerance is not None:
        return np.full(true.shape, p.tolerance)
    with np.errstate(all="ignore"):
        if p.sig_figs is not None:
            floor = np.array([p.floor(t) for t in true.tolist()], dtype=float)
        elif p.rel_tol is not None:
            floor = p.rel_tol * np.abs(true)
        else:
            floor = np.full(true.shape, p.floor(0.0))
    h = np.where(floor < cells.unit, floor, cells.unit)  # min(unit, floor), as Python's min
    return np.where(np.isnan(cells.unit), 0.0, h)  # an exact form: no half-unit


def agrees_many(cells: Cells, true: np.ndarray, width: np.ndarray) -> np.ndarray:
    """`agrees` for every cell at once: a boolean per cell.

    >>> c = Cells.of([((0,), written("0.43")), ((1,), written("masked"))], 1)
    >>> agrees_many(c, [0.4319, -math.inf], [0.005, 0.0]).tolist()
    [True, True]
    """
    import numpy as np

    true = np.asarray(true, dtype=float)  # (k,)
    with np.errstate(all="ignore"):
        ok = (np.abs(cells.value - true) <= width) & np.isfinite(cells.value)
    ok = np.where(np.isinf(true), np.where(true < 0, cells.sentinel, cells.value == true), ok)
    return np.where(np.isnan(true), cells.nan, ok)


# ---------------------------------------------------------------- carried rounding


def bounds(
    r: Resolved, values: dict[str, np.ndarray], given: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, tuple[np.ndarray, ...]]:
    """What carrying rounded values through the earlier steps can add to each cell of each stage.

    ``values`` are the stages in the evaluators' (internal) shape; ``given``
    maps a stage the student wrote to (where they wrote it, the half-unit of
    each written cell). Returns, per stage, three arrays (u, c, a) for
    `window`: the first-order bound of the error each cell inherits when
    every value not written is carried at the cell's own precision, the
    scale factor to 4 decimals or so, and the written ones as written.
    A stage's own rounding is not included (the cell's half-unit is).
    """
    import numpy as np

    from .attention import heads, merge_heads

    out: dict[str, tuple[np.ndarray, ...]] = {}
    carry: dict[str, tuple[np.ndarray, ...]] = {}

    def settle(
        name: str, x: np.ndarray, inherited: tuple[np.ndarray, ...], own: bool = True
    ) -> None:
        """Record what a stage inherits, and what it passes on once the student rounds it."""
        u, c, a, o = (np.broadcast_to(t, x.shape).astype(float) for t in inherited)
        out[name] = (u, c, a, o)
        passed_u = u + o  # what this stage's own e-terms cost is carried on like a rounding
        if own:
            rough = (
                ~_whole(x) | (u > 0) | (c > 0) | (a > 0) | (o > 0)
            )  # an exact integer stays exact
            passed_u = passed_u + rough
        fin = np.isfinite(x)
        passed = (np.where(fin, passed_u, 0.0), np.where(fin, c, 0.0), np.where(fin, a, 0.0),
                  np.zeros(x.shape))  # fmt: skip
        if name in given:
            where, h = given[name]
            passed = (np.where(where, 0.0, passed[0]), np.where(where, 0.0, passed[1]),
                      np.where(where, h, passed[2]), passed[3])  # fmt: skip
        carry[name] = passed

    zero = np.zeros(1)
    for name in ("Q", "K", "V"):
        x = values[name]
        direct = name in r.arrays  # copied from the problem: exact as given
        settle(name, x, (zero, zero, zero, zero), own=not direct)
    rows = {"Q": "Q", "K": "K"}  # the last row stage of Q and K: what the scores read
    for name, src, step in (("Q_normed", "Q", _norm_bound), ("K_normed", "K", _norm_bound),
                            ("Q_rotated", "Q", _rotation_bound),
                            ("K_rotated", "K", _rotation_bound)):  # fmt: skip
        if name in values:
            settle(name, values[name], step(r, name[0], values[rows[src]], carry[rows[src]]))
            rows[src] = name
    qv = heads(values[rows["Q"]], values[rows["K"]], values["V"], r)
    qe = [heads(carry[rows["Q"]][t], carry[rows["K"]][t], carry["V"][t], r) for t in range(4)]
    q, k, v = (np.abs(np.nan_to_num(t)) for t in qv)
    scores = values["scores"]
    inherited = tuple(
        qe[t][0] @ k.swapaxes(-1, -2) + q @ qe[t][1].swapaxes(-1, -2) for t in range(4)
    )
    if r.options.similarity == "cosine":
        nq = np.linalg.norm(q, axis=-1, keepdims=True)
        nk = np.linalg.norm(k, axis=-1, keepdims=True)
        inherited = tuple(2 * t / np.maximum(nq * nk.swapaxes(-1, -2), 1e-300) for t in inherited)
    settle("scores", scores, inherited)
    s_carry = carry["scores"]
    f = float(factor_of(r))
    rough_factor = abs(f * 1e4 - round(f * 1e4)) > 1e-6
    scaled = values["scaled"]
    u, c, a, o = (abs(f) * t for t in s_carry)
    if rough_factor:
        c = c + np.abs(np.nan_to_num(scores))
    settle("scaled", scaled, (u, c, a, o))
    logits_name = "scaled"
    if "capped" in values:
        cap = float(r.options.attn_logit_softcapping)
        unbiased = np.tanh(
            np.asarray(scaled, float) / cap
        )  # capped = cap·tanh(scaled / cap) + bias
        slope = np.nan_to_num(1 - unbiased**2)  # d capped / d scaled
        u, c, a, o = (slope * t for t in carry["scaled"])
        c = c + cap  # tanh(scaled / cap) worked out by hand and rounded, then × cap
        settle("capped", values["capped"], (u, c, a, o))
        logits_name = "capped"
    if "masked" in values:
        masked = values["masked"]
        settle("masked", masked, carry[logits_name], own=False)
        logits_name = "masked"
    z_carry = carry[logits_name]
    z = values[logits_name]
    w = np.nan_to_num(values["weights"])
    sinks = r.arrays.get("sinks")
    sink = None if sinks is None else sinks.astype(float)[None, :, None, None]  # (1, h, 1, 1)
    if r.options.normalize == "sigmoid":
        slope = w * (1 - w)
        inherited = tuple(slope * t for t in z_carry)
    else:
        # δw_i = w_i((1 − w_i)·δz_i − Σ_{j≠i} w_j·δz_j), bounded term by term
        inherited = tuple(
            w * ((1 - w) * t + (w * t).sum(axis=-1, keepdims=True) - w * t) for t in z_carry
        )
        live = np.isfinite(z)
        top = np.max(np.where(live, z, -np.inf), axis=-1, keepdims=True)
        if sink is not None:
            top = np.maximum(top, sink)  # the sink is a logit of every row
        top = np.where(np.isfinite(top), top, 0.0)
        zz = np.where(live, z, 0.0)
        shifted = np.where(live, np.exp(zz - top), 0.0).sum(axis=-1, keepdims=True)  # ≥ 1
        rounded = live & (zz < top)  # every e^{z − max} but the largest's e⁰ = 1 is rounded
        others = (rounded * 1.0).sum(axis=-1, keepdims=True) - rounded
        if sink is not None:
            shifted = shifted + np.exp(sink - top)  # e^{sink − max} joins the denominator
            others = others + (sink < top)  # and is rounded like the others
        terms = np.where(rounded, 1 - w, 0.0) + w * others  # δw_i = (δe_i − w_i·Σδe)/S
        terms = terms / shifted
        inherited = (*inherited[:3], inherited[3] + np.where(live, terms, 0.0))
    settle("weights", w, inherited)
    w_carry = carry["weights"]
    # What the weights inherit sums to 0 along a row (they are renormalised), so it moves
    # weights·v by at most Σ|δw|·|v − mid|; their own rounding and written values by Σ|δw|·|v|.
    vals = qv[2]
    mid = (np.nanmax(vals, axis=-2, keepdims=True) + np.nanmin(vals, axis=-2, keepdims=True)) / 2
    centred = np.abs(np.nan_to_num(vals - mid))  # (B, h, m, dv)
    if sink is not None:  # a row with a sink need not keep its sum: no centring
        centred = np.abs(np.nan_to_num(vals))
    free = [np.where(w_carry[t] > out["weights"][t], w_carry[t] - out["weights"][t], 0.0)
            if t == 0 else np.zeros_like(w) for t in range(4)]  # fmt: skip
    if "weights" in given:
        where = given["weights"][0]
        zero_sum = [np.where(where, 0.0, out["weights"][t]) for t in range(4)]
        free = [np.where(where, w_carry[t], free[t]) for t in range(4)]
    else:
        zero_sum = [out["weights"][t] for t in range(4)]
    zero_sum = [np.where(np.isfinite(z), zs, 0.0) for zs in zero_sum]
    zero_sum[0] = zero_sum[0] + zero_sum[3]  # the e-terms' cost, carried on
    zero_sum[3] = np.zeros_like(w)
    inherited = tuple(zero_sum[t] @ centred + free[t] @ v + w @ qe[t][2] for t in range(4))
    if "head_outputs" in values:
        settle("head_outputs", values["head_outputs"], inherited)
        inherited = carry["head_outputs"]
    inherited = tuple(merge_heads(t) for t in inherited)  # (B, n, h·dv)
    if "concat" in values:
        settle("concat", values["concat"], inherited, own="head_outputs" not in values)
        inherited = carry["concat"]
    if "W_O" in r.arrays:
        wo = np.abs(r.arrays["W_O"].astype(float))  # (h·dv, d_out)
        inherited = tuple(t @ wo for t in inherited)
    settle("output", values["output"], inherited)
    return out


def _norm_bound(
    r: Resolved, which: str, x: np.ndarray, carried: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """What QK-norm's rows inherit: Σⱼ |∂yᵢ/∂xⱼ|·δxⱼ for y = g·x / √(mean(x²) + eps).

    ∂yᵢ/∂xⱼ = gᵢ/ρ·(δᵢⱼ − xᵢxⱼ/(d·ρ²)), per head (``head``) or over the row
    (``all``); ρ worked out by hand and rounded adds |y|/ρ per unit of that
    rounding (the second array, as the scale factor's); the cache's rows
    (K in a decode step) are copied.
    """
    import numpy as np

    from .options import RMS_NORM_EPS

    o = r.options
    eps = RMS_NORM_EPS if o.rms_norm_eps is None else o.rms_norm_eps
    w = r.arrays.get("q_norm" if which == "Q" else "k_norm")
    skip = r.past if which == "K" else 0
    x = np.asarray(x, float)
    B, rows, hd = x.shape
    groups = (r.heads if which == "Q" else r.kv_heads) if o.qk_norm == "head" else 1
    d = hd // groups
    g = np.ones(d if o.qk_norm == "head" else hd) if w is None else w.astype(float)
    g = np.abs(1 + g if o.rms_norm_unit_offset else g).reshape(-1, d)  # (1|groups, d)
    xs = x.reshape(B, rows, groups, d)  # (B, rows, G, d)
    rho = np.sqrt(np.mean(xs * xs, axis=-1, keepdims=True) + eps)  # (B, rows, G, 1)
    J = np.eye(d) - xs[..., :, None] * xs[..., None, :] / (d * rho[..., None] ** 2)  # (…, d, d)
    J = np.abs(J) * (g[:, :, None] / rho[..., None])  # (B, rows, G, d, d)
    by_hand = np.abs(xs) * g / rho**2  # (B, rows, G, d): |y|/ρ per unit of ρ's rounding
    out = []
    for k, t in enumerate(carried):
        t = np.broadcast_to(t, x.shape).reshape(B, rows, groups, d)
        y = np.einsum("brgij,brgj->brgi", J, t)  # (B, rows, G, d)
        y = (y + by_hand if k == 1 else y).reshape(B, rows, hd)  # (B, rows, H·d)
        if skip:
            y[:, :skip] = t.reshape(B, rows, hd)[:, :skip]
        out.append(y)
    return tuple(out)


def _rotation_bound(
    r: Resolved, which: str, x: np.ndarray, carried: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    """What RoPE's rows inherit: |δy₁| ≤ |cos θ|·δx₁ + |sin θ|·δx₂ for each pair.

    cos θ and sin θ worked out by hand are rounded like the scale factor:
    each adds |x₁| + |x₂| per unit of that rounding (the second array), but
    not at θ = 0. Features beyond partial_rotary_factor and the cache's rows
    are copied.
    """
    import numpy as np

    from .attention import rope_angles, rope_base, rope_pairs

    dim = r.rotary_dim
    assert r.positions is not None
    cos, sin = rope_angles(r.positions, dim, rope_base(r.options))  # (B|1, n, dim/2)
    c, s = np.abs(cos)[:, :, None, :], np.abs(sin)[:, :, None, :]  # (B|1, n, 1, dim/2)
    turned = (s > 0) * 1.0
    first, second = rope_pairs(r.options.rope, dim)
    skip = r.past if which == "K" else 0
    x = np.abs(np.nan_to_num(np.asarray(x, float)))
    B, rows, hd = x.shape
    H = hd // (r.d_head)
    xs = x[:, skip:].reshape(B, rows - skip, H, r.d_head)  # (B, n, H, d)
    out = []
    for k, t in enumerate(carried):
        t = np.array(np.broadcast_to(t, x.shape), dtype=float)  # (B, rows, H·d)
        ts = t[:, skip:].reshape(B, rows - skip, H, r.d_head)
        y = ts.copy()
        y1, y2 = ts[..., first], ts[..., second]  # (B, n, H, dim/2)
        y[..., first] = c * y1 + s * y2
        y[..., second] = c * y2 + s * y1
        if k == 1:  # the factors' own rounding, per unit
            both = (xs[..., first] + xs[..., second]) * turned  # (B, n, H, dim/2)
            y[..., first] += both
            y[..., second] += both
        t[:, skip:] = y.reshape(B, rows - skip, hd)
        out.append(t)
    return tuple(out)


def _whole(x: np.ndarray) -> np.ndarray:
    """Where a value is a whole number (exactly as a hand computation would have it)."""
    import numpy as np

    y = np.nan_to_num(x, posinf=0.0, neginf=0.0)
    return np.abs(y - np.round(y)) <= 1e-9 * np.maximum(1.0, np.abs(y))


def factor_of(r: Resolved) -> float:
    """The scale factor the scores are multiplied by, as a float."""
    from .describe import factor

    return float(factor(r))
