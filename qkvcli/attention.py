"""Scaled dot-product attention as a few named numpy functions.

One pipeline: multi-head, grouped-query, masks, biases, cross-attention,
cosine similarity and sigmoid weights are all parameters of `run`.

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> t = run(resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options()))
>>> t["weights"].round(4).tolist()
[[0.6698, 0.3302], [0.3302, 0.6698]]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import ComputeError
from .trace import AXES, Stage, Trace

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved


def split_heads(a: np.ndarray, h: int) -> np.ndarray:
    """(B, n, h·d) → (B, h, n, d): head i holds columns i·d … (i+1)·d − 1."""
    B, n, hd = a.shape
    return a.reshape(B, n, h, hd // h).swapaxes(1, 2)  # (B, h, n, d)


def merge_heads(a: np.ndarray) -> np.ndarray:
    """(B, h, n, d) → (B, n, h·d): the heads side by side."""
    B, h, n, d = a.shape
    return a.swapaxes(1, 2).reshape(B, n, h * d)  # (B, n, h·d)


def cosine(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """cos(q_i, k_j) for every pair: (…, n, d), (…, m, d) → (…, n, m)."""
    return unit_rows(q, "Q") @ unit_rows(k, "K").swapaxes(-1, -2)  # (…, n, m)


def unit_rows(a: np.ndarray, name: str) -> np.ndarray:
    """Each row divided by its length; a zero row has no direction (`ComputeError`)."""
    import numpy as np

    norms = np.linalg.norm(a, axis=-1, keepdims=True)  # (…, rows, 1)
    if np.any(norms == 0):
        index = np.argwhere(norms[..., 0] == 0)[0]
        head = f" in head {index[-2] + 1}" if a.ndim == 4 and a.shape[1] > 1 else ""
        raise ComputeError(
            f"{name} row {index[-1] + 1}{head} is all zeros: its cosine similarity is undefined"
        )
    return a / norms  # (…, rows, d)


def softmax_rows(x: np.ndarray, allowed: np.ndarray | None, empty: str) -> np.ndarray:
    """Softmax over the last axis, max-subtracted, masked entries excluded.

    A row with no allowed entry has no softmax: ``empty`` says what to do —
    ``error`` raises, ``nan`` / ``zero`` / ``uniform`` fill the row.
    """
    import numpy as np

    if allowed is None:
        allowed = np.ones(x.shape, dtype=bool)
    allowed = np.broadcast_to(allowed, x.shape)
    live = allowed.any(axis=-1, keepdims=True)  # (…, n, 1)
    if not live.all() and empty == "error":
        raise empty_row_error(_place(np.argwhere(~live[..., 0])[0]))
    safe = np.where(allowed, x, -np.inf)  # (…, n, m)
    top = np.max(safe, axis=-1, keepdims=True, initial=-np.inf)  # (…, n, 1)
    top = np.where(live, top, 0.0)
    e = np.where(allowed, np.exp(safe - top), 0.0)  # (…, n, m)
    total = e.sum(axis=-1, keepdims=True)  # (…, n, 1)
    w = e / np.where(live, total, 1.0)  # (…, n, m)
    if not live.all():
        fill = {"nan": np.nan, "zero": 0.0, "uniform": 1.0 / x.shape[-1]}[empty]
        w = np.where(live, w, fill)
    return w


def sigmoid(x: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Element-wise logistic weights, 0 where masked (rows need not sum to 1)."""
    import numpy as np

    w = np.exp(-np.logaddexp(0.0, -x))  # σ(x) without overflow
    return w if allowed is None else np.where(allowed, w, 0.0)


def _place(index: np.ndarray) -> str:
    """Name a (B, h, n) index the way people do: 1-based, batch/head only if >0."""
    b, h, i = (int(v) for v in index)
    parts = [f"query row {i + 1}"]
    if h:
        parts.append(f"head {h + 1}")
    if b:
        parts.append(f"batch item {b + 1}")
    return ", ".join(parts)


def run(r: Resolved, given: dict[str, np.ndarray] | None = None) -> Trace:
    """Compute every stage of attention for a resolved problem.

    ``given`` maps stage names to arrays in the internal shape (Q: (B, n, h·d),
    per-head stages: (B, h, n, m)) that replace the computed ones, so later
    stages follow from them (``check`` follows a student's own values through).
    Overflow is never a warning: it is reported as a `ComputeError` naming the stage.
    """
    import numpy as np

    with np.errstate(all="ignore"):
        return _run(r, given or {})


def _run(r: Resolved, given: dict[str, np.ndarray]) -> Trace:
    import numpy as np

    o = r.options
    h, g = r.heads, r.kv_heads
    a, Q, K, V = project(r)
    if o.exact:
        from .exact import exact_scale

        factor: Any = exact_scale(r)  # 1/√d_k kept as a surd
    else:
        factor = r.scale / o.temperature
    shown: dict[str, Any] = {"masked": None}

    def stage(name: str, x: np.ndarray) -> np.ndarray:
        """Record a stage (or its given replacement); later stages use it rounded if asked."""
        shown[name] = x = given.get(name, x)
        return x if o.round_to is None or name in given else np.round(x, o.round_to)

    Q, K, V = stage("Q", Q), stage("K", K), stage("V", V)  # (B, n, h·dk) (B, m, g·dk) (B, m, g·dv)
    for name, x in (("Q", Q), ("K", K), ("V", V)):
        _finite(x, name, f"the projection {name}")
    q = split_heads(Q, h)  # (B, h, n, dk)
    k = np.repeat(split_heads(K, g), h // g, axis=1)  # (B, h, m, dk): GQA shares K heads
    v = np.repeat(split_heads(V, g), h // g, axis=1)  # (B, h, m, dv)
    _fits(o, q, k)
    if o.similarity == "cosine":
        scores = cosine(q, k)  # (B, h, n, m)
    elif o.scores_rule == "QK":
        scores = q @ k  # (B, h, n, dk) @ (B, h, dk=m, …): the mistake K for Kᵀ
    elif o.scores_rule == "KQt":
        scores = k @ q.swapaxes(-1, -2)  # (B, h, m=n, n): the mistake (Q·Kᵀ)ᵀ
    else:
        scores = q @ k.swapaxes(-1, -2)  # (B, h, n, m)
    scores = stage("scores", scores)
    _finite(scores, "scores", "Q·Kᵀ")
    scaled = scores * factor  # (B, h, n, m)
    _finite(scaled, "scaled", "scores × scale")
    allowed = r.allowed
    if r.bias is not None:
        open_ = r.bias != -np.inf  # (B|1, h|1, n, m): −∞ in the bias blocks
        scaled = scaled + r.bias  # (B, h, n, m) additive mask / ALiBi-style bias
        _finite(np.where(open_, _real(scaled), 0.0), "scaled", "scores × scale + attn_bias")
        allowed = open_ if allowed is None else (allowed & open_)
    scaled = stage("scaled", scaled)
    masked = None
    if allowed is not None:
        masked = stage("masked", np.where(allowed, scaled, -np.inf))  # (B, h, n, m)
        if "masked" in given:
            allowed = np.isfinite(_real(masked))  # a given masked stage says what is masked
    logits = _real(scaled if masked is None else masked)
    if o.skip_softmax:
        weights = logits if allowed is None else np.where(allowed, logits, 0.0)  # the mistake
    elif o.softmax_axis == "queries":
        cols = None if allowed is None else np.broadcast_to(allowed, logits.shape).swapaxes(-1, -2)
        weights = softmax_rows(logits.swapaxes(-1, -2), cols, o.empty_rows).swapaxes(-1, -2)
    elif o.normalize == "sigmoid":
        weights = sigmoid(logits, allowed)  # (B, h, n, m)
    else:
        if allowed is not None and o.empty_rows == "error":
            _no_empty_rows(r, np.broadcast_to(allowed, logits.shape))
        weights = softmax_rows(logits, allowed, o.empty_rows)  # (B, h, n, m)
    weights = stage("weights", weights)
    if o.weights_transposed:
        heads_out = weights.swapaxes(-1, -2) @ v  # (B, h, m=n, n) @ (B, h, m, dv): the mistake
    else:
        heads_out = weights @ v  # (B, h, n, dv)
    heads_out = stage("head_outputs", heads_out)
    concat = stage("concat", merge_heads(heads_out))  # (B, n, h·dv)
    output = out_project(concat, a)  # (B, n, d_out)
    out = _real(output)
    if o.empty_rows == "nan":  # NaN rows were asked for; only overflow is an error
        out = np.nan_to_num(out, nan=0.0, posinf=np.inf, neginf=-np.inf)
    _finite(out, "output", "the output")
    return _trace(r, shown | {"output": output if "W_O" in a else shown["concat"]})


def project(r: Resolved) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The arrays in the run's dtype (fractions when exact), and Q (B, n, h·dk), K, V."""
    if r.options.exact:
        from .exact import exact_array

        a = {k: exact_array(v) for k, v in r.arrays.items()}  # fractions, as written
    else:
        a = {k: v.astype(r.options.dtype, copy=False) for k, v in r.arrays.items()}

    def one(name: str, src: str) -> np.ndarray:
        if name in a:
            return a[name]  # given directly: (B, rows, d)
        out = a[src] @ a[f"W_{name}"]  # (B, rows, d_model) @ (d_model, d) → (B, rows, d)
        return out + a[f"b_{name}"] if f"b_{name}" in a else out

    kv_src = "X_kv" if "X_kv" in a else "X"
    return a, one("Q", "X"), one("K", kv_src), one("V", kv_src)


def combine(heads_out: np.ndarray, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """concat (B, n, h·dv) of the heads, and the output: concat·W_O + b_O when W_O is given."""
    concat = merge_heads(heads_out)  # (B, n, h·dv)
    return concat, out_project(concat, a)


def out_project(concat: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    """The output: concat·W_O + b_O when W_O is given, else concat itself."""
    output = concat
    if "W_O" in a:
        output = concat @ a["W_O"]  # (B, n, h·dv) @ (h·dv, d_out) → (B, n, d_out)
        if "b_O" in a:
            output = output + a["b_O"]
    return output


def _real(x: np.ndarray) -> np.ndarray:
    """Floats for the functions that need them (exact runs carry fractions)."""
    return x.astype(float) if x.dtype == object else x


def _fits(o: Any, q: np.ndarray, k: np.ndarray) -> None:
    """Check the shapes a mistake variant needs (a correct run always fits)."""
    n, m, dk = q.shape[-2], k.shape[-2], q.shape[-1]
    if o.scores_rule == "QK" and dk != m:
        raise ComputeError(f"Q·K needs d_k ({dk}) to equal the number of keys ({m})")
    if (o.scores_rule == "KQt" or o.weights_transposed) and n != m:
        raise ComputeError(f"this variant needs as many queries ({n}) as keys ({m})")


def _no_empty_rows(r: Resolved, allowed: np.ndarray) -> None:
    """Raise `ComputeError` naming the first query row whose every key is masked."""
    import numpy as np

    empty = ~allowed.any(axis=-1)  # (B, h, n)
    if empty.any():
        raise empty_row_error(where_row(r, *(int(v) for v in np.argwhere(empty)[0])))


def where_row(r: Resolved, b: int, hh: int, i: int) -> str:
    """``query row 2 (x2), head 1, batch item 2``: a row named as the user sees it."""
    tokens = r.problem.tokens
    where = f"query row {i + 1}" + (f" ({tokens[i]})" if tokens else "")
    if r.multihead:
        where += f", head {hh + 1}"
    if r.batched:
        where += f", batch item {b + 1}"
    return where


def empty_row_error(where: str) -> ComputeError:
    """The one message for a row whose every key is masked."""
    return ComputeError(
        f"every key is masked for {where}: softmax over no keys is undefined "
        "(--empty-rows nan|zero|uniform fills such rows as frameworks do)"
    )


def _finite(x: np.ndarray, name: str, what: str) -> None:
    """Raise `ComputeError` at the first infinite or NaN cell of a stage."""
    import numpy as np

    bad = ~np.isfinite(_real(x))
    if bad.any():
        *lead, i, j = (int(v) for v in np.argwhere(bad)[0])
        where = f"{name}[{i + 1},{j + 1}]"
        if len(lead) == 2 and lead[1]:
            where += f" (head {lead[1] + 1})"
        if lead and lead[0]:
            where += f" (batch item {lead[0] + 1})"
        raise ComputeError(f"{what} overflows the float range at {where}: the inputs are too large")


def scale_text(r: Resolved) -> str:
    """How the scale was chosen, e.g. ``1/√3``.

    The exact value is in ``meta['scale']``.
    """
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
    factor = scale_text(r)
    scaled = "scores" if factor == "1" else f"scores × {factor}"
    if o.temperature != 1:
        scaled += f" / {o.temperature:g}"
    if r.bias is not None:
        scaled += " + attn_bias"
    f["scaled"] = f"scaled = {scaled}"
    f["masked"] = "masked = scaled, −∞ where the mask blocks"
    src = "masked" if r.allowed is not None or r.bias is not None else "scaled"
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


def _trace(r: Resolved, arrays: dict[str, np.ndarray | None]) -> Trace:
    """Keep the stages this run has, in public shape and the user's layout."""
    cols = r.options.layout == "columns"
    masked = r.allowed is not None or r.bias is not None
    keep = ["Q", "K", "V", "scores", "scaled"] + (["masked"] if masked else []) + ["weights"]
    if r.multihead:
        keep += ["head_outputs", "concat"]
    elif "W_O" in r.arrays:
        keep += ["concat"]
    keep += ["output"]
    keep = [name for name in keep if arrays.get(name) is not None]  # streaming has no n×n stages
    f = formulas(r)
    stages: dict[str, Stage] = {}
    for name in keep:
        x = arrays[name]
        per_head = name in ("scores", "scaled", "masked", "weights", "head_outputs")
        if per_head and not r.multihead:
            x = x[:, 0]
        if not r.batched:
            x = x[0]
        rows, cols_ax = AXES[name]
        if cols and "features" in (rows, cols_ax):
            x = x.swapaxes(-1, -2)
            rows, cols_ax = cols_ax, rows
        stages[name] = Stage(name, f[name], x, per_head and r.multihead, rows, cols_ax)
    return Trace(
        stages=stages,
        meta=meta(r, stages),
        tokens=r.problem.tokens,
        kv_tokens=r.problem.kv_tokens
        if r.problem.kv_tokens is not None
        else (r.problem.tokens if not r.cross else None),
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


def sqrt_text(d: int) -> str:
    """√d, written as an integer when d is a perfect square.

    >>> sqrt_text(4), sqrt_text(3)
    ('2', '√3')
    """
    root = math.isqrt(d)
    return str(root) if root * root == d else f"√{d}"
