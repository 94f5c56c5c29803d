"""The words of a run: each stage's formula, the settings in force (meta), the scale as text.

Kept apart from the arithmetic: the evaluators compute arrays, `build` turns
them into a `Trace` with the formulas and meta the renderers print.

>>> sqrt_text(4), sqrt_text(3)
('2', '√3')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .i18n import _
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
            f[n] = _("{name} (given)").format(name=n)
        else:
            f[n] = f"{n} = W_{n}·{src}" if cols else f"{n} = {src}·W_{n}{wt}"
            if f"b_{n}" in a:
                f[n] += f" + b_{n}"
        if r.past and n != "Q":
            cache = "past_key" if n == "K" else "past_value"
            given = f[n].removeprefix(f"{n} = ")
            f[n] = f"{n} = [{cache}; {given}]" + _(" ({past} cached rows first)").format(
                past=r.past
            )
    f |= row_formulas(r)
    sim = "cos(Q, K)" if o.similarity == "cosine" else ("Qᵀ·K" if cols else "Q·Kᵀ")
    f["scores"] = f"scores = {sim}"
    words = scale_text(r)
    scaled = "scores" if words == "1" else f"scores × {words}"
    if o.temperature != 1:
        scaled += f" / {o.temperature:g}"
    bias = (" + attn_bias" if r.rules.bias is not None else "") + (" + ALiBi" if o.alibi else "")
    cap = o.attn_logit_softcapping
    if cap is None:
        f["scaled"] = f"scaled = {scaled}{bias}"
    else:
        f["scaled"] = f"scaled = {scaled}"
        f["capped"] = f"capped = {cap:g}·tanh(scaled / {cap:g}){bias}"
    logits = "scaled" if cap is None else "capped"
    f["masked"] = f"masked = {logits}" + _(", −∞ where the mask blocks")
    src = "masked" if r.masked else logits
    per = _(" per entry") if o.normalize == "sigmoid" else _(" per row")
    f["weights"] = f"weights = {o.normalize}({src}){per}"
    if "sinks" in a:
        f["weights"] += _(", a sink in each denominator: e^x / (Σ e^x + e^sink), rows sum to < 1")
    f["head_outputs"] = "head_outputs = weights·V" + _(" per head")
    f["concat"] = "concat = [head_1 … head_h]" if r.multihead else "concat = weights·V"
    if "W_O" in a:
        out = "W_O·concat" if cols else f"concat·W_O{wt}"
        f["output"] = f"output = {out}" + (" + b_O" if "b_O" in a else "")
    elif r.multihead:
        f["output"] = "output = concat"
    else:
        f["output"] = "output = V·weightsᵀ" if cols else "output = weights·V"
    return f


def positions_text(r: Resolved) -> str:
    """The RoPE positions of the new rows: ``positions 0…5``, or ``position_ids`` when given.

    >>> import numpy as np
    >>> from .problem import Problem, Options, resolve
    >>> r = resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options(rope="half"))
    >>> positions_text(r)
    'positions 0…1'
    """
    if "position_ids" in r.problem.matrices:
        return "position_ids"
    assert r.positions is not None
    first = int(r.positions[0, 0])
    if r.n > 1:
        return _("positions {first}…{last}").format(first=first, last=first + r.n - 1)
    return _("position {first}").format(first=first)


def row_formulas(r: Resolved) -> dict[str, str]:
    """The formulas of QK-norm's and RoPE's stages (``Q_normed`` … ``K_rotated``)."""
    from .options import RMS_NORM_EPS, ROPE_THETA

    o = r.options
    f: dict[str, str] = {}
    cache = _(", the {past} cached rows as given").format(past=r.past) if r.past else ""
    if o.qk_norm is not None:
        over = _("per head") if o.qk_norm == "head" else _("over all heads")
        eps = RMS_NORM_EPS if o.rms_norm_eps is None else o.rms_norm_eps
        for n, w in (("Q", "q_norm"), ("K", "k_norm")):
            weight = f" · (1 + {w})" if o.rms_norm_unit_offset else f" · {w}"
            if w not in r.arrays:
                weight = ""  # no weights given: 1 (Gemma stores 0 for 1 + 0)
            tail = cache if n == "K" else ""
            f[f"{n}_normed"] = f"{n}_normed = RMSNorm({n}) {over}{weight} (eps {eps:g}{tail})"
    if o.rope is not None:
        theta = ROPE_THETA if o.rope_theta is None else o.rope_theta
        pairs = "(i, i + d/2)" if o.rope == "half" else "(2i, 2i + 1)"
        part = (
            _(", the first {rotary} of {d} features").format(rotary=r.rotary_dim, d=r.d_head)
            if r.rotary_dim < r.d_head
            else ""
        )
        for n in "QK":
            src = f"{n}_normed" if o.qk_norm is not None else n
            tail = cache if n == "K" else ""
            f[f"{n}_rotated"] = (
                f"{n}_rotated = RoPE({src}) "
                + _("at {positions}, θ = {theta}, pairs {pairs}").format(
                    positions=positions_text(r), theta=f"{theta:g}", pairs=pairs
                )
                + part
                + tail
            )
    return f


def build(
    r: Resolved, arrays: dict[str, np.ndarray | None], rows: np.ndarray | None = None
) -> Trace:
    """A `Trace` of the stages this run has (those in ``arrays``), in public shape.

    ``rows``: the query rows the per-query stages hold, when not all were computed.
    """
    f = formulas(r)
    cols = r.options.layout == "columns"
    stages: dict[str, Stage] = {}
    for name in stage_names(r):
        x = arrays.get(name)
        if x is None:
            continue  # the streamed evaluation has no n×n stages
        rows_ax, cols_ax = AXES[name]
        if cols and "features" in (rows_ax, cols_ax):
            rows_ax, cols_ax = cols_ax, rows_ax
        per_head = name in PER_HEAD and r.multihead
        stage = Stage(name, f[name], to_public(r, name, x), per_head, rows_ax, cols_ax)
        if rows is not None and AXES[name][0] == "queries":
            stage.index, stage.total = rows, r.n
        stages[name] = stage
    p = r.problem
    return Trace(
        stages=stages,
        meta=meta(r, stages),
        tokens=p.tokens,
        kv_tokens=p.kv_tokens
        if p.kv_tokens is not None
        else (p.tokens if not r.cross and not r.past else None),
        batched=r.batched,
        heads=r.heads,
        past=r.past,
    )


def row_stat(r: Resolved, a: np.ndarray) -> np.ndarray:
    """A per-row statistic (B, h, n) in public shape: [batch,] [head,] rows.

    >>> import numpy as np
    >>> from .problem import Problem, Options, resolve
    >>> r = resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options())
    >>> row_stat(r, np.zeros((1, 1, 2))).shape
    (2,)
    """
    if not r.multihead:
        a = a[:, 0]  # (B, n)
    return a if r.batched else a[0]


def variant_meta(r: Resolved) -> dict[str, Any]:
    """The variants of today's models, under their Hugging Face names (None / false = off)."""
    from .options import RMS_NORM_EPS, ROPE_THETA

    o, a = r.options, r.arrays
    rope = o.rope is not None
    qk = o.qk_norm is not None
    positions = None
    if rope and "position_ids" in r.problem.matrices:
        assert r.positions is not None
        positions = r.positions.tolist()
    slopes = r.rules.slopes
    return {
        "rope": o.rope,
        "rope_theta": (ROPE_THETA if o.rope_theta is None else o.rope_theta) if rope else None,
        "partial_rotary_factor": (o.partial_rotary_factor or 1.0) if rope else None,
        "rotary_dim": r.rotary_dim if rope else None,
        "position_offset": int(r.positions[0, 0]) if rope and positions is None else None,  # type: ignore[index]
        "position_ids": positions,
        "sliding_window": o.sliding_window,
        "attention_chunk_size": o.attention_chunk_size,
        "qk_norm": o.qk_norm,
        "rms_norm_eps": (RMS_NORM_EPS if o.rms_norm_eps is None else o.rms_norm_eps)
        if qk
        else None,
        "rms_norm_unit_offset": o.rms_norm_unit_offset if qk else None,
        "attn_logit_softcapping": o.attn_logit_softcapping,
        "sinks": a["sinks"].tolist() if "sinks" in a else None,
        "alibi": o.alibi,
        "alibi_slopes": slopes.tolist() if slopes is not None else None,
        "past_length": r.past,
    }


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
        **variant_meta(r),
        "shapes": {name: [*s.array.shape[:-2], *s.shape] for name, s in stages.items()},
        "stages": list(stages),
    }
