"""Scaled dot-product attention, one named numpy function per stage of the formula.

    Q, K, V      = X·W_Q + b_Q, X·W_K + b_K, X·W_V + b_V   project
    K, V         = [past_key; K], [past_value; V] (decode)  with_cache
    Q_normed …   = RMSNorm of Q and K's rows (QK-norm)      qk_norm
    Q_rotated …  = Q and K turned by their positions (RoPE)  rotary
    q, k, v      = Q, K, V split into heads (GQA: k, v shared)  heads
    q, k         = row transforms before any score (cosine)   prepare
    scores       = q·kᵀ                                       dot_scores
    scaled       = scores × scale / temperature + attn_bias   scale, add_bias
    capped       = c·tanh(scaled / c) + attn_bias (soft-cap)  softcap, add_bias
    masked       = scaled, −∞ where a mask blocks             mask
    weights      = softmax(masked) per row (or sigmoid)       normalise (sinks: softmax)
    head_outputs = weights·v                                  mix
    concat       = [head_1 … head_h]                          merge_heads
    output       = concat·W_O + b_O                           out_project

The bias (attn_bias, ALiBi) is added to the last logit stage before the
mask: ``capped`` when the logits are soft-capped, else ``scaled``.

`run` applies them to whole matrices (every stage, the dense path);
`stream.run` applies the same functions to blocks of queries × keys. A run's
`Steps` name the functions that may be swapped: the homework side replaces
one to reproduce a mistake of a hand computation.

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> t = run(resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options()))
>>> t["weights"].round(4).tolist()
[[0.6698, 0.3302], [0.3302, 0.6698]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .describe import build, factor, row_stat
from .errors import ComputeError
from .i18n import _

if TYPE_CHECKING:
    import numpy as np

    from .options import Options
    from .problem import Resolved
    from .trace import Trace


# ---------------------------------------------------------------- the stage functions


def inputs(r: Resolved) -> dict[str, np.ndarray]:
    """The run's matrices in its dtype, or as exact fractions in an exact run."""
    if r.options.exact:
        from .exact import exact_array

        return {k: exact_array(v) for k, v in r.arrays.items()}  # fractions, as written
    return {k: v.astype(r.options.dtype, copy=False) for k, v in r.arrays.items()}


def project(a: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Q, K or V: given directly, or the source rows times W (plus b).

    Q comes from X; K and V from X_kv in cross-attention, else from X.
    """
    if name in a:
        return a[name]  # (B, rows, d)
    src = a["X_kv"] if name != "Q" and "X_kv" in a else a["X"]  # (B, rows, d_model)
    out = src @ a[f"W_{name}"]  # (B, rows, d_model) @ (d_model, d) → (B, rows, d)
    return out + a[f"b_{name}"] if f"b_{name}" in a else out


def with_cache(a: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    """K or V of a decode step: the cache's rows (past_key / past_value) first, then x's.

    The cache holds keys as the scores use them (already normed and rotated).
    """
    import numpy as np

    past = a.get("past_key" if name == "K" else "past_value")
    if past is None:
        return x  # (B, m, d)
    B = max(past.shape[0], x.shape[0])
    past = np.broadcast_to(past, (B, *past.shape[1:]))  # (B, P, d)
    x = np.broadcast_to(x, (B, *x.shape[1:]))  # (B, n, d)
    return np.concatenate([past, x], axis=1)  # (B, P + n, d)


def rms_norm(
    x: np.ndarray,
    w: np.ndarray | None,
    eps: float,
    unit_offset: bool,
    rounded: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """RMSNorm over the last axis: x / √(mean(x²) + eps) · w, or · (1 + w) (Gemma).

    ``rounded`` (the homework side) rounds the root before dividing, as by hand.

    >>> import numpy as np
    >>> rms_norm(np.array([[3.0, 4.0]]), None, 0.0, False).round(4).tolist()
    [[0.8485, 1.1314]]
    """
    import numpy as np

    ms = np.mean(x * x, axis=-1, keepdims=True)  # (…, 1)
    root = np.sqrt(ms + eps) if rounded is None else rounded(np.sqrt(ms + eps))  # (…, 1)
    y = x * (1.0 / root)  # (…, d)
    if w is None:
        return y
    return y * (1.0 + w) if unit_offset else y * w


def qk_norm(
    x: np.ndarray,
    w: np.ndarray | None,
    heads: int,
    o: Options,
    skip: int = 0,
    rounded: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """QK-norm of Q or K (B, rows, H·d): RMSNorm per head (``head``) or over the row (``all``).

    Rows before ``skip`` (the cache) are kept: they were normed when cached.
    """
    import numpy as np

    from .options import RMS_NORM_EPS

    eps = RMS_NORM_EPS if o.rms_norm_eps is None else o.rms_norm_eps
    B, rows, hd = x.shape
    new = x[:, skip:]  # (B, rows − skip, H·d)
    if o.qk_norm == "head":
        split = new.reshape(B, rows - skip, heads, hd // heads)  # (B, n, H, d)
        y = rms_norm(split, w, eps, o.rms_norm_unit_offset, rounded).reshape(B, rows - skip, hd)
    else:
        y = rms_norm(new, w, eps, o.rms_norm_unit_offset, rounded)  # (B, n, H·d)
    return np.concatenate([x[:, :skip], y], axis=1) if skip else y


def rope_angles(positions: np.ndarray, dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of RoPE's angles, position × θ^(−2i/dim), as (B|1, n, dim/2), in float64.

    >>> import numpy as np
    >>> c, s = rope_angles(np.array([[0, 1]]), 2, 10000.0)
    >>> c.round(4).tolist(), s.round(4).tolist()
    ([[[1.0], [0.5403]]], [[[0.0], [0.8415]]])
    """
    import numpy as np

    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))  # (dim/2,)
    angles = positions[..., None].astype(np.float64) * inv_freq  # (B|1, n, dim/2)
    return np.cos(angles), np.sin(angles)


def rope_base(o: Options) -> float:
    """RoPE's base θ: ``rope_theta``, else 10000."""
    from .options import ROPE_THETA

    return ROPE_THETA if o.rope_theta is None else o.rope_theta


def rope_pairs(pairing: str | None, dim: int) -> tuple[slice, slice]:
    """The features of each pair RoPE turns together: pair i is (first[i], second[i]).

    >>> rope_pairs("half", 4), rope_pairs("interleaved", 4)
    ((slice(0, 2, None), slice(2, 4, None)), (slice(0, 4, 2), slice(1, 4, 2)))
    """
    if pairing == "half":
        return slice(0, dim // 2), slice(dim // 2, dim)  # (i, i + dim/2): Llama's rotate_half
    return slice(0, dim, 2), slice(1, dim, 2)  # (2i, 2i + 1): GPT-J


def rotary(
    x: np.ndarray,
    r: Resolved,
    heads: int,
    skip: int = 0,
    angles: Callable[..., tuple[np.ndarray, np.ndarray]] = rope_angles,
) -> np.ndarray:
    """RoPE on Q or K (B, rows, H·d): the first ``r.rotary_dim`` features of each head turned.

    Pairs are (i, i + dim/2) for ``half`` (Llama's rotate_half) or (2i, 2i + 1)
    for ``interleaved`` (GPT-J); pair i turns by position × θ^(−2i/dim).
    Rows before ``skip`` (the cache) are kept: they were rotated when cached.
    ``angles`` gives cos and sin (the homework side rounds them, as by hand).
    """
    import numpy as np

    o, dim = r.options, r.rotary_dim
    assert r.positions is not None
    cos, sin = angles(r.positions, dim, rope_base(o))  # (B|1, n, dim/2)
    c = cos.astype(x.dtype)[:, :, None, :]  # (B|1, n, 1, dim/2)
    s = sin.astype(x.dtype)[:, :, None, :]
    _, rows, hd = x.shape
    new = x[:, skip:].reshape(x.shape[0], rows - skip, heads, hd // heads)  # (B, n, H, d)
    B = max(new.shape[0], c.shape[0])
    out = np.array(np.broadcast_to(new, (B, *new.shape[1:])))  # (B, n, H, d)
    first, second = rope_pairs(o.rope, dim)
    x1, x2 = new[..., first], new[..., second]  # (B, n, H, dim/2)
    out[..., first] = x1 * c - x2 * s
    out[..., second] = x2 * c + x1 * s
    out = out.reshape(B, rows - skip, hd)  # (B, n, H·d)
    if not skip:
        return out
    return np.concatenate([np.broadcast_to(x[:, :skip], (B, skip, hd)), out], axis=1)


def transform_rows(
    Q: np.ndarray,
    K: np.ndarray,
    a: dict[str, np.ndarray],
    r: Resolved,
    keep: Callable[[str, np.ndarray], np.ndarray] | None = None,
    norm: Callable[..., np.ndarray] = qk_norm,
    rotate: Callable[..., np.ndarray] = rotary,
) -> tuple[np.ndarray, np.ndarray]:
    """QK-norm, then RoPE, on Q (B, n, h·d) and K (B, m, g·d): the stages before any score.

    ``keep(name, x)`` records each stage (``Q_normed`` …) and returns what flows on;
    ``norm`` and ``rotate`` are the stage functions (`Steps` may swap them).
    """
    keep = keep or (lambda name, x: x)
    o, skip = r.options, r.past
    if o.qk_norm is not None:
        Q = keep("Q_normed", norm(Q, a.get("q_norm"), r.heads, o))
        K = keep("K_normed", norm(K, a.get("k_norm"), r.kv_heads, o, skip))
    if o.rope is not None:
        Q = keep("Q_rotated", rotate(Q, r, r.heads))
        K = keep("K_rotated", rotate(K, r, r.kv_heads, skip))
    return Q, K


def split_heads(a: np.ndarray, h: int) -> np.ndarray:
    """(B, n, h·d) → (B, h, n, d): head i holds columns i·d … (i+1)·d − 1."""
    B, n, hd = a.shape
    return a.reshape(B, n, h, hd // h).swapaxes(1, 2)  # (B, h, n, d)


def heads(Q: np.ndarray, K: np.ndarray, V: np.ndarray, r: Resolved) -> tuple[np.ndarray, ...]:
    """q, k, v: Q, K and V split into heads, K and V shared by groups of query heads (GQA)."""
    h = r.heads
    k = share(split_heads(K, r.kv_heads), h)  # (B, h, m, dk)
    return split_heads(Q, h), k, share(split_heads(V, r.kv_heads), h)  # (B, h, n|m, d)


def share(kv: np.ndarray, h: int) -> np.ndarray:
    """(B, g, m, d) → (B, h, m, d): each group of h/g query heads shares one K/V head (GQA)."""
    import numpy as np

    g = kv.shape[1]
    return kv if g == h else np.repeat(kv, h // g, axis=1)  # (B, h, m, d)


def prepare(q: np.ndarray, k: np.ndarray, o: Options) -> tuple[np.ndarray, np.ndarray]:
    """What acts on the rows of q and k before any score: cosine similarity's unit rows."""
    if o.similarity == "cosine":
        return unit_rows(q, "Q"), unit_rows(k, "K")  # cos(q, k) = q̂·k̂
    return q, k


def unit_rows(a: np.ndarray, name: str) -> np.ndarray:
    """Each row divided by its length; a zero row has no direction (`ComputeError`)."""
    import numpy as np

    peak = np.max(np.abs(a), axis=-1, keepdims=True)  # (…, rows, 1)
    a = a / np.where(peak == 0, 1, peak)  # guard (issue 12): a length past 1e154 overflowed to ∞
    norms = np.linalg.norm(a, axis=-1, keepdims=True)  # (…, rows, 1)
    if np.any(norms == 0):
        index = np.argwhere(norms[..., 0] == 0)[0]
        head = _(" in head {h}").format(h=index[-2] + 1) if a.ndim == 4 and a.shape[1] > 1 else ""
        raise ComputeError(
            _("{name} row {v}{head} is all zeros: its cosine similarity is undefined").format(
                name=name, v=index[-1] + 1, head=head
            )
        )
    return a / norms  # (…, rows, d)


def dot_scores(q: np.ndarray, k: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """scores = q·kᵀ: (…, n, d), (…, m, d) → (…, n, m); into ``out`` when given."""
    import numpy as np

    return np.matmul(q, k.swapaxes(-1, -2), out=out)  # (…, n, m)


def scale(x: np.ndarray, c: Any, out: np.ndarray | None = None) -> np.ndarray:
    """x × c: the scores times scale / temperature (the streamed path scales q, the same thing);
    into ``out`` when given."""
    import numpy as np

    return x * c if out is None else np.multiply(x, c, out=out)


def softcap(x: np.ndarray, cap: float, out: np.ndarray | None = None) -> np.ndarray:
    """Logit soft-capping (Gemma 2): cap·tanh(x / cap), into ``out`` when given."""
    import numpy as np

    y = np.divide(x, cap, out=out)
    np.tanh(y, out=y)
    return np.multiply(y, cap, out=y)


def add_bias(s: np.ndarray, bias: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """s + attn_bias (ALiBi, a float mask); into ``out`` when given."""
    import numpy as np

    if bias is None:
        return s
    return np.add(s, bias, out=out)


def mask(s: np.ndarray, allowed: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """s where the pair may attend, −∞ where a mask blocks it; into ``out`` when given.

    Masking excludes entries: an added −1e9 would not mask in float64.
    """
    import numpy as np

    if allowed is None:
        return s
    if out is None:
        return np.where(allowed, s, -np.inf)  # (…, n, m)
    np.copyto(out, -np.inf, where=~allowed)
    return out


def softmax_terms(logits: np.ndarray, shift: Any, out: np.ndarray | None = None) -> np.ndarray:
    """The softmax numerators e^{logit − shift}; a masked logit (−∞) gives 0.

    ``shift`` None: the logits are already shifted (the streamed path folds
    the shift into its product).
    """
    import numpy as np

    if shift is None:
        return np.exp(logits, out=out)
    shifted = np.subtract(logits, shift, out=out)  # (…, n, m)
    return np.exp(shifted, out=shifted)


def sigmoid_terms(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(logit) = 1 / (1 + e^{−logit}), without overflow; a masked logit (−∞) gives 0."""
    import numpy as np

    t = np.logaddexp(0.0, -logits, out=out)  # log(1 + e^{−x})
    np.negative(t, out=t)
    return np.exp(t, out=t)


def fill_value(empty: str, m: int) -> float:
    """The weight every key of a fully masked row gets under ``--empty-rows``."""
    return {"nan": float("nan"), "zero": 0.0, "uniform": 1.0 / m}[empty]


def softmax(
    logits: np.ndarray,
    empty: str = "error",
    where: Callable[..., str] | None = None,
    sinks: np.ndarray | None = None,
    lse: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax over the last axis, max-subtracted, masked (−∞) entries excluded.

    A row with no allowed entry has no softmax: ``empty`` says what to do —
    ``error`` raises (naming the row by ``where(b, h, i)``), ``nan`` /
    ``zero`` / ``uniform`` fill the row. ``sinks`` (broadcast to (…, n, 1),
    gpt-oss): one more logit per row in the denominator, whose weight is
    dropped, so rows sum to less than 1 (and no row is empty). ``lse``
    (shape (…, n)), when given, receives each row's log Σⱼ e^logit (with the
    sink's e^sink), −∞ for a row with no key: the streamed path's ``row_logsumexp``.
    ``out``: where the weights go (``logits`` itself, when no one needs it after).

    >>> import numpy as np
    >>> out = np.empty(1)
    >>> softmax(np.log([[1.0, 3.0]]), lse=out).tolist(), np.exp(out).round(12).tolist()
    ([[0.25, 0.75]], [4.0])
    """
    import numpy as np

    top = np.max(logits, axis=-1, keepdims=True, initial=-np.inf)  # (…, n, 1)
    if sinks is not None:
        top = np.maximum(top, sinks)  # (…, n, 1): the sink is a logit of every row
    live = top > -np.inf  # (…, n, 1): rows with some key
    if not live.all() and empty == "error":
        raise empty_row_error((where or _place)(*(int(v) for v in np.argwhere(~live[..., 0])[0])))
    e = softmax_terms(logits, np.where(live, top, 0.0), out)  # (…, n, m)
    total = e.sum(axis=-1, keepdims=True)  # (…, n, 1)
    if sinks is not None:
        total = total + np.exp(sinks - top)  # (…, n, 1)
    if lse is not None:
        lse[...] = np.where(live, top + np.log(np.where(live, total, 1.0)), -np.inf)[..., 0]
    w = np.divide(e, np.where(live, total, 1.0), out=e)  # (…, n, m): e is this call's (or out)
    if not live.all():
        w = np.where(live, w, fill_value(empty, logits.shape[-1]))
    return w


def normalise(
    logits: np.ndarray,
    r: Resolved,
    where: Callable[..., str] | None = None,
    lse: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """weights: softmax of each row of logits, or the sigmoid of each entry.

    ``where(b, h, i)`` names an empty row (default ``r.where_row``); ``lse``, ``out``: see `softmax`.
    """
    if r.options.normalize == "sigmoid":
        return sigmoid_terms(logits, out)  # (B, h, n, m): rows need not sum to 1
    sinks = r.arrays.get("sinks")
    if sinks is not None:
        sinks = sinks.astype(logits.dtype)[None, :, None, None]  # (1, h, 1, 1)
    return softmax(
        logits, r.options.empty_rows, where or r.where_row, sinks, lse, out
    )  # (B, h, n, m)


def mix(weights: np.ndarray, v: np.ndarray) -> np.ndarray:
    """head_outputs = weights·v: (…, n, m) @ (…, m, d_v) → (…, n, d_v)."""
    return weights @ v


def merge_heads(a: np.ndarray) -> np.ndarray:
    """(B, h, n, d) → (B, n, h·d): the heads side by side."""
    B, h, n, d = a.shape
    return a.swapaxes(1, 2).reshape(B, n, h * d)  # (B, n, h·d)


def out_project(concat: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
    """The output: concat·W_O + b_O when W_O is given, else concat itself."""
    if "W_O" not in a:
        return concat
    output = concat @ a["W_O"]  # (B, n, h·dv) @ (h·dv, d_out) → (B, n, d_out)
    return output + a["b_O"] if "b_O" in a else output


# ---------------------------------------------------------------- checks shared by both paths


def real(x: np.ndarray) -> np.ndarray:
    """Floats for the functions that need them (exact runs carry fractions; too large: ±∞)."""
    if x.dtype != object:
        return x
    from .exact import floats  # only exact runs pay for importing fractions

    return floats(x)


def finite(x: np.ndarray, name: str, what: str, rows: np.ndarray | None = None) -> None:
    """Raise `ComputeError` at the first infinite or NaN cell of a stage (internal shape).

    ``rows``: the query rows ``x`` holds (a block of them), so the message names the row itself.
    """
    import numpy as np

    bad = ~np.isfinite(real(x))
    if bad.any():
        *lead, i, j = (int(v) for v in np.argwhere(bad)[0])
        raise overflow_error(name, what, (*lead, i if rows is None else int(rows[i]), j))


def overflow_error(name: str, what: str, index: tuple[int, ...]) -> ComputeError:
    """``Q·Kᵀ overflows the float range at scores[5,3] (head 2)``: one message for both paths."""
    *lead, i, j = index
    where = f"{name}[{i + 1},{j + 1}]"
    if len(lead) == 2 and lead[1]:
        where += _(" (head {h})").format(h=lead[1] + 1)
    if lead and lead[0]:
        where += _(" (batch item {b})").format(b=lead[0] + 1)
    return ComputeError(
        _("{what} overflows the float range at {where}: the inputs are too large").format(
            what=what, where=where
        )
    )


def row_norms(a: np.ndarray) -> np.ndarray:
    """‖row‖ of every row, (…, rows, d) → (…, rows), without an array of squares as big as ``a``.

    >>> import numpy as np
    >>> row_norms(np.array([[3.0, 4.0], [0.0, 1.0]])).tolist()
    [5.0, 1.0]
    """
    import numpy as np

    return np.sqrt(np.einsum("...i,...i->...", a, a))


def bounded(r: Resolved, q: np.ndarray, k: np.ndarray, c: float) -> bool:
    """True when no score, scaled score or biased score can overflow (Cauchy–Schwarz).

    >>> import numpy as np
    >>> from .problem import Problem, Options, resolve
    >>> r = resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options())
    >>> bounded(r, np.eye(2), np.eye(2), 0.7), bounded(r, np.eye(2) * 1e200, np.eye(2) * 1e200, 1.0)
    (True, False)
    """
    import numpy as np

    bias, slopes = r.rules.bias, r.rules.slopes
    with np.errstate(over="ignore", invalid="ignore"):
        qn = float(np.max(row_norms(q), initial=0.0))
        kn = float(np.max(row_norms(k), initial=0.0))
        bound = qn * kn * max(1.0, abs(c))
        if bias is not None:
            bound += float(np.max(np.abs(bias[np.isfinite(bias)]), initial=0.0))
        if slopes is not None:
            bound += float(np.max(slopes)) * (r.n + r.m)
    return bool(np.isfinite(bound) and bound < float(np.finfo(q.dtype).max) / 4)


def check_projections(Q: np.ndarray, K: np.ndarray, V: np.ndarray) -> None:
    """Q, K and V must be finite (huge inputs or weights overflow here first)."""
    for name, x in (("Q", Q), ("K", K), ("V", V)):
        finite(x, name, _("the projection {name}").format(name=name))


def logit_stage(r: Resolved) -> str:
    """The logit stage the bias is added to: ``capped`` with a soft-cap, else ``scaled``."""
    return "scaled" if r.options.attn_logit_softcapping is None else "capped"


def biased_words(r: Resolved) -> str:
    """What a biased logit is, for overflow messages: ``scores × scale + attn_bias``."""
    base = "scores × scale" if r.options.attn_logit_softcapping is None else "softcap(scaled)"
    parts = [base] + ["attn_bias"] * (r.rules.bias is not None) + ["ALiBi"] * r.options.alibi
    return " + ".join(parts)


def check_output(output: np.ndarray, o: Options, rows: np.ndarray | None = None) -> None:
    """The output must be finite; NaN rows asked for with ``--empty-rows nan`` are not errors."""
    import numpy as np

    out = real(output)
    if o.empty_rows == "nan":
        out = np.nan_to_num(out, nan=0.0, posinf=np.inf, neginf=-np.inf)
    finite(out, "output", _("the output"), rows)


def empty_row_error(where: str) -> ComputeError:
    """The one message for a row whose every key is masked."""
    return ComputeError(
        _(
            "every key is masked for {where}: softmax over no keys is undefined (--empty-rows nan|zero|uniform fills such rows as frameworks do)"
        ).format(where=where)
    )


def _place(b: int, h: int, i: int) -> str:
    """A (batch, head, row) index named 1-based, batch and head only when not the first."""
    parts = [_("query row {i}").format(i=i + 1)]
    parts += [_("head {h}").format(h=h + 1)] * bool(h)
    parts += [_("batch item {b}").format(b=b + 1)] * bool(b)
    return _(", ").join(parts)


# ---------------------------------------------------------------- the dense evaluation


@dataclass(frozen=True)
class Steps:
    """The stage functions a run may swap; a correct run uses `STEPS`.

    Each field has the signature of the function it defaults to; the homework
    side swaps one to reproduce a mistake of a hand computation (W_Q for the
    keys, the mask after the softmax, the heads in the wrong order, RoPE's
    other pairing, the soft-cap before the scale, ALiBi's slopes of another
    head, …).
    ``keep(name, x)`` gives what flows on from each computed stage (the
    homework side rounds there).
    """

    project: Callable[[dict[str, np.ndarray], str], np.ndarray] = project
    norm: Callable[..., np.ndarray] = qk_norm
    rotate: Callable[..., np.ndarray] = rotary
    heads: Callable[..., tuple[np.ndarray, ...]] = heads
    scores: Callable[[np.ndarray, np.ndarray], np.ndarray] = dot_scores
    scale: Callable[[np.ndarray, Any], np.ndarray] = scale
    cap: Callable[[np.ndarray, float], np.ndarray] = softcap
    bias: Callable[[np.ndarray, np.ndarray | None], np.ndarray] = add_bias
    mask: Callable[[np.ndarray, np.ndarray | None], np.ndarray] = mask
    weights: Callable[[np.ndarray, Resolved], np.ndarray] = normalise
    mix: Callable[[np.ndarray, np.ndarray], np.ndarray] = mix
    merge: Callable[[np.ndarray], np.ndarray] = merge_heads
    out: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray] = out_project
    keep: Callable[[str, np.ndarray], np.ndarray] | None = None


STEPS = Steps()


def run(
    r: Resolved,
    given: dict[str, np.ndarray] | None = None,
    steps: Steps = STEPS,
    rows: np.ndarray | None = None,
    keep: tuple[str, ...] | None = None,
) -> Trace:
    """Every stage of attention for a resolved problem, on whole matrices.

    ``given`` maps stage names to arrays in the internal shape (Q: (B, n, h·d),
    per-head stages: (B, h, n, m)) that replace the computed ones, so later
    stages follow from them (``check`` follows a student's own values through).
    ``rows`` (query indices) computes the per-query stages for those rows only
    — what a summarised table shows — in O(rows · m) memory. ``keep`` (a
    correct run of a block of rows, for n×n stages written a block at a time)
    stops after the weights and gives only the n×n stages named, with the
    rows' ``row_logsumexp``: the others are overwritten by the step after them.
    Overflow is never a warning: it is reported as a `ComputeError` naming the stage.
    """
    import numpy as np

    with np.errstate(all="ignore"):
        arrays = _stages(r, given or {}, steps, rows, keep)
    trace = build(r, arrays, rows)
    if "row_logsumexp" in arrays:  # a block of rows: its softmax normalisers, as streamed runs give
        trace.stats = {"row_logsumexp": row_stat(r, arrays["row_logsumexp"])}
    return trace


def _stages(
    r: Resolved,
    given: dict[str, np.ndarray],
    steps: Steps,
    rows: np.ndarray | None = None,
    keep: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    import numpy as np

    o = r.options
    shown: dict[str, np.ndarray] = {}
    mine = keep is not None and steps is STEPS  # the n×n stages not kept are overwritten

    def stage(name: str, x: np.ndarray) -> np.ndarray:
        """Record a stage (or its given replacement) and return what flows on from it."""
        shown[name] = x = given.get(name, x)
        return x if steps.keep is None or name in given else steps.keep(name, x)

    def into(name: str | None, x: np.ndarray, *operands: np.ndarray | None) -> np.ndarray | None:
        """Where the next step may put its result: over ``x`` (stage ``name``'s array, or a
        temporary when None) when no one keeps it and the result has its shape."""
        if not mine or name in (keep or ()):
            return None
        shapes = [x.shape, *(a.shape for a in operands if a is not None)]
        return x if np.broadcast_shapes(*shapes) == x.shape else None

    a = inputs(r)
    Q = stage("Q", steps.project(a, "Q"))  # (B, n, h·dk)
    K = stage("K", with_cache(a, "K", steps.project(a, "K")))  # (B, m, g·dk): cache rows first
    V = stage("V", with_cache(a, "V", steps.project(a, "V")))  # (B, m, g·dv)
    check_projections(Q, K, V)
    Q, K = transform_rows(Q, K, a, r, stage, steps.norm, steps.rotate)  # QK-norm, RoPE
    q, k, v = steps.heads(Q, K, V, r)  # (B, h, n, dk), (B, h, m, dk), (B, h, m, dv)
    q, k = prepare(q, k, o)
    sel = slice(None) if rows is None else rows
    q = q[:, :, sel]  # (B, h, n | rows, dk): the query rows asked for
    at = None if rows is None else np.asarray(rows)  # messages name a block's rows as the user's
    # A correct run on inputs too small to overflow anywhere skips the passes that look.
    sure = steps is STEPS and not given and q.dtype != object and bounded(r, q, k, factor(r))
    scores = stage("scores", steps.scores(q, k))  # (B, h, n, m)
    if not sure:
        finite(scores, "scores", "Q·Kᵀ", at)
    c = factor(r)
    # `into` is None unless a block of rows may overwrite the array before: then in place.
    out = into("scores", scores)
    logits = steps.scale(scores, c) if out is None else scale(scores, c, out)
    if not sure:
        finite(logits, "scaled", "scores × scale", at)
    name = logit_stage(r)
    if name == "capped":
        cap = o.attn_logit_softcapping
        logits = stage("scaled", logits)  # (B, h, n, m)
        out = into("scaled", logits)
        logits = steps.cap(logits, cap) if out is None else softcap(logits, cap, out)
    rules = r.rules
    allowed = rules.allowed(rows=sel)  # (B|1, h|1, n, m) or None
    if rules.biased:
        bias = rules.added(rows=sel)  # (B|1, h|1, n, m)
        open_ = bias != -np.inf  # −∞ in the bias blocks
        # (B, h, n, m): a new array, or (kept or not) the one scale or softcap just made
        out = into(None, logits, bias)
        logits = steps.bias(logits, bias) if out is None else add_bias(logits, bias, out)
        if not sure:
            finite(np.where(open_, real(logits), 0.0), name, biased_words(r), at)
        if rules.bias is not None:
            allowed = open_ if allowed is None else (allowed & open_)
    logits = stage(name, logits)
    if r.masked:
        out = into(name, logits, allowed)
        masked = steps.mask(logits, allowed) if out is None else mask(logits, allowed, out)
        logits = stage("masked", masked)  # (B, h, n, m)
    if at is None or steps.weights is not normalise:
        weights = stage("weights", steps.weights(real(logits), r))  # (B, h, n, m)
    else:  # a block of rows: an empty one named as the user counts, and the softmax normalisers
        lse = np.empty(logits.shape[:-1], dtype=logits.dtype)  # (B, h, rows)
        if o.normalize == "softmax":
            shown["row_logsumexp"] = lse
        where = lambda b, h, i: r.where_row(b, h, int(at[i]))  # noqa: E731
        out = into("masked" if r.masked else name, logits)
        weights = stage("weights", normalise(real(logits), r, where, lse, out))  # (B, h, rows, m)
    if keep is not None:
        return {s: x for s, x in shown.items() if s in keep or s == "row_logsumexp"}
    heads_out = stage("head_outputs", steps.mix(weights, v))  # (B, h, n, dv)
    concat = stage("concat", steps.merge(heads_out))  # (B, n, h·dv)
    output = steps.out(concat, a)  # (B, n, d_out)
    check_output(output, o, at)
    return shown | {"output": output}
