"""The words of a run: each stage's formula, the settings in force (meta), the scale as text.

Kept apart from the arithmetic: the evaluators compute arrays, `build` turns
them into a `Trace` with the formulas and meta the renderers print.

>>> sqrt_text(4), sqrt_text(3)
('2', '√3')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .trace import AXES, PER_HEAD, Stage, Trace, stage_names, to_public

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved


def sqrt_text(d: int) -> str:
    """√d, written as an integer when d is a perfect square."""
    root = math.isqrt(d)
    return str(root) if root * root == d else f"√{d}"


def factor(r: Resolved) -> Any:
    """What the scores are multiplied by: scale / temperature (exact in an exact run).

    >>> import numpy as np
    >>> from .problem import Problem, Options, resolve
    >>> r = resolve(Problem({"Q": np.eye(4), "K": np.eye(4), "V": np.eye(4)}), Options(temperature=2))
    >>> factor(r)
    0.25
    """
    o = r.options
    if o.exact:
        from .exact import exact_scale

        return exact_scale(r)  # 1/√d_k kept as a surd
    return r.scale / o.temperature


def scale_text(r: Resolved) -> str:
    """How the scale was chosen, e.g. ``1/√3``; the value is in ``meta['scale']``."""
    s = r.options.scale
    if s == "sqrt":
        return f"1/{sqrt_text(r.d_head)}"
    if s == "none":
        return "1"
    return f"{s:g}"


def formulas(r: Resolved) -> dict[str, str]:
    """The formula of every stage, in the user's layout and names."""
    o, a = r.options, r.arrays
    cols = o.layout == "columns"
    wt = "ᵀ" if o.weights_layout == "out-in" and not cols else ""
    kv = "X_kv" if "X_kv" in a else "X"
    f: dict[str, str] = {}
    for n, src in (("Q", "X"), ("K", kv), ("V", kv)):
        if n in a:
            f[n] = f"{n} (given)"
        else:
            f[n] = f"{n} = W_{n}·{src}" if cols else f"{n} = {src}·W_{n}{wt}"
            if f"b_{n}" in a:
                f[n] += f" + b_{n}"
    sim = "cos(Q, K)" if o.similarity == "cosine" else ("Qᵀ·K" if cols else "Q·Kᵀ")
    f["scores"] = f"scores = {sim}"
    words = scale_text(r)
    scaled = "scores" if words == "1" else f"scores × {words}"
    if o.temperature != 1:
        scaled += f" / {o.temperature:g}"
    if r.rules.bias is not None:
        scaled += " + attn_bias"
    f["scaled"] = f"scaled = {scaled}"
    f["masked"] = "masked = scaled, −∞ where the mask blocks"
    src = "masked" if r.masked else "scaled"
    per = "per entry" if o.normalize == "sigmoid" else "per row"
    f["weights"] = f"weights = {o.normalize}({src}) {per}"
    f["head_outputs"] = "head_outputs = weights·V per head"
    f["concat"] = "concat = [head_1 … head_h]" if r.multihead else "concat = weights·V"
    if "W_O" in a:
        out = "W_O·concat" if cols else f"concat·W_O{wt}"
        f["output"] = f"output = {out}" + (" + b_O" if "b_O" in a else "")
    elif r.multihead:
        f["output"] = "output = concat"
    else:
        f["output"] = "output = V·weightsᵀ" if cols else "output = weights·V"
    return f


def build(r: Resolved, arrays: dict[str, np.ndarray | None]) -> Trace:
    """A `Trace` of the stages this run has (those in ``arrays``), in public shape."""
    f = formulas(r)
    cols = r.options.layout == "columns"
    stages: dict[str, Stage] = {}
    for name in stage_names(r):
        x = arrays.get(name)
        if x is None:
            continue  # the streamed evaluation has no n×n stages
        rows, cols_ax = AXES[name]
        if cols and "features" in (rows, cols_ax):
            rows, cols_ax = cols_ax, rows
        per_head = name in PER_HEAD and r.multihead
        stages[name] = Stage(name, f[name], to_public(r, name, x), per_head, rows, cols_ax)
    p = r.problem
    return Trace(
        stages=stages,
        meta=meta(r, stages),
        tokens=p.tokens,
        kv_tokens=p.kv_tokens if p.kv_tokens is not None else (p.tokens if not r.cross else None),
        batched=r.batched,
        heads=r.heads,
    )


def meta(r: Resolved, stages: dict[str, Stage]) -> dict[str, Any]:
    """What the run assumed, for JSON output and table captions."""
    from .problem import mask_sources

    o = r.options
    d_model = r.arrays["X"].shape[-1] if "X" in r.arrays else None
    return {
        "input": r.problem.origin,
        "keys": dict(r.problem.sources),
        "layout": o.layout,
        "weights_layout": o.weights_layout,
        "n_queries": r.n,
        "n_keys": r.m,
        "d_model": d_model,
        "d_k": r.d_head,
        "d_v": r.dv_head,
        "heads": r.heads,
        "kv_heads": r.kv_heads,
        "batch": r.B if r.batched else None,
        "scale": r.scale,
        "scale_rule": scale_text(r) if o.scale in ("sqrt", "none") else "given",
        "temperature": o.temperature,
        "similarity": o.similarity,
        "normalize": o.normalize,
        "mask": mask_sources(r.problem, o),
        "mask_polarity": o.mask_polarity,
        "empty_rows": o.empty_rows,
        "dtype": o.dtype,
        "shapes": {name: list(s.array.shape) for name, s in stages.items()},
        "stages": list(stages),
    }
