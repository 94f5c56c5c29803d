"""Scaled dot-product attention, one named numpy function per stage of the formula.

    Q, K, V      = X·W_Q + b_Q, X·W_K + b_K, X·W_V + b_V   project
    q, k, v      = Q, K, V split into heads (GQA: k, v shared)  split_heads, share
    q, k         = row transforms before any score (cosine)   prepare
    scores       = q·kᵀ                                       dot_scores
    scaled       = scores × scale / temperature + attn_bias   scale, add_bias
    masked       = scaled, −∞ where a mask blocks             mask
    weights      = softmax(masked) per row (or sigmoid)       normalise
    head_outputs = weights·v                                  mix
    concat       = [head_1 … head_h]                          merge_heads
    output       = concat·W_O + b_O                           out_project

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

from .describe import build, factor
from .errors import ComputeError

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


def split_heads(a: np.ndarray, h: int) -> np.ndarray:
    """(B, n, h·d) → (B, h, n, d): head i holds columns i·d … (i+1)·d − 1."""
    B, n, hd = a.shape
    return a.reshape(B, n, h, hd // h).swapaxes(1, 2)  # (B, h, n, d)


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
        head = f" in head {index[-2] + 1}" if a.ndim == 4 and a.shape[1] > 1 else ""
        raise ComputeError(
            f"{name} row {index[-1] + 1}{head} is all zeros: its cosine similarity is undefined"
        )
    return a / norms  # (…, rows, d)


def dot_scores(q: np.ndarray, k: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """scores = q·kᵀ: (…, n, d), (…, m, d) → (…, n, m); into ``out`` when given."""
    import numpy as np

    return np.matmul(q, k.swapaxes(-1, -2), out=out)  # (…, n, m)


def scale(x: np.ndarray, c: Any) -> np.ndarray:
    """x × c: the scores times scale / temperature (the streamed path scales q, the same thing)."""
    return x * c


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
    logits: np.ndarray, empty: str = "error", where: Callable[..., str] | None = None
) -> np.ndarray:
    """Softmax over the last axis, max-subtracted, masked (−∞) entries excluded.

    A row with no allowed entry has no softmax: ``empty`` says what to do —
    ``error`` raises (naming the row by ``where(b, h, i)``), ``nan`` /
    ``zero`` / ``uniform`` fill the row.
    """
    import numpy as np

    top = np.max(logits, axis=-1, keepdims=True, initial=-np.inf)  # (…, n, 1)
    live = top > -np.inf  # (…, n, 1): rows with some key
    if not live.all() and empty == "error":
        raise empty_row_error((where or _place)(*(int(v) for v in np.argwhere(~live[..., 0])[0])))
    e = softmax_terms(logits, np.where(live, top, 0.0))  # (…, n, m)
    total = e.sum(axis=-1, keepdims=True)  # (…, n, 1)
    w = e / np.where(live, total, 1.0)  # (…, n, m)
    if not live.all():
        w = np.where(live, w, fill_value(empty, logits.shape[-1]))
    return w


def normalise(logits: np.ndarray, r: Resolved) -> np.ndarray:
    """weights: softmax of each row of logits, or the sigmoid of each entry."""
    if r.options.normalize == "sigmoid":
        return sigmoid_terms(logits)  # (B, h, n, m): rows need not sum to 1
    return softmax(logits, r.options.empty_rows, r.where_row)  # (B, h, n, m)


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
    from .exact import floats

    return floats(x) if x.dtype == object else x


def finite(x: np.ndarray, name: str, what: str) -> None:
    """Raise `ComputeError` at the first infinite or NaN cell of a stage (internal shape)."""
    import numpy as np

    bad = ~np.isfinite(real(x))
    if bad.any():
        raise overflow_error(name, what, tuple(int(v) for v in np.argwhere(bad)[0]))


def overflow_error(name: str, what: str, index: tuple[int, ...]) -> ComputeError:
    """``Q·Kᵀ overflows the float range at scores[5,3] (head 2)``: one message for both paths."""
    *lead, i, j = index
    where = f"{name}[{i + 1},{j + 1}]"
    if len(lead) == 2 and lead[1]:
        where += f" (head {lead[1] + 1})"
    if lead and lead[0]:
        where += f" (batch item {lead[0] + 1})"
    return ComputeError(f"{what} overflows the float range at {where}: the inputs are too large")


def check_projections(Q: np.ndarray, K: np.ndarray, V: np.ndarray) -> None:
    """Q, K and V must be finite (huge inputs or weights overflow here first)."""
    for name, x in (("Q", Q), ("K", K), ("V", V)):
        finite(x, name, f"the projection {name}")


def check_output(output: np.ndarray, o: Options) -> None:
    """The output must be finite; NaN rows asked for with ``--empty-rows nan`` are not errors."""
    import numpy as np

    out = real(output)
    if o.empty_rows == "nan":
        out = np.nan_to_num(out, nan=0.0, posinf=np.inf, neginf=-np.inf)
    finite(out, "output", "the output")


def empty_row_error(where: str) -> ComputeError:
    """The one message for a row whose every key is masked."""
    return ComputeError(
        f"every key is masked for {where}: softmax over no keys is undefined "
        "(--empty-rows nan|zero|uniform fills such rows as frameworks do)"
    )


def _place(b: int, h: int, i: int) -> str:
    """A (batch, head, row) index named 1-based, batch and head only when not the first."""
    parts = [f"query row {i + 1}"] + [f"head {h + 1}"] * bool(h) + [f"batch item {b + 1}"] * bool(b)
    return ", ".join(parts)


# ---------------------------------------------------------------- the dense evaluation


@dataclass(frozen=True)
class Steps:
    """The stage functions a run may swap; a correct run uses `STEPS`.

    ``keep(name, x)`` gives what flows on from each computed stage (the
    homework side rounds there). The others have the signatures of
    `dot_scores`, `normalise` and `mix`.
    """

    scores: Callable[[np.ndarray, np.ndarray], np.ndarray] = dot_scores
    weights: Callable[[np.ndarray, Resolved], np.ndarray] = normalise
    mix: Callable[[np.ndarray, np.ndarray], np.ndarray] = mix
    keep: Callable[[str, np.ndarray], np.ndarray] | None = None


STEPS = Steps()


def run(r: Resolved, given: dict[str, np.ndarray] | None = None, steps: Steps = STEPS) -> Trace:
    """Every stage of attention for a resolved problem, on whole matrices.

    ``given`` maps stage names to arrays in the internal shape (Q: (B, n, h·d),
    per-head stages: (B, h, n, m)) that replace the computed ones, so later
    stages follow from them (``check`` follows a student's own values through).
    Overflow is never a warning: it is reported as a `ComputeError` naming the stage.
    """
    import numpy as np

    with np.errstate(all="ignore"):
        return build(r, _stages(r, given or {}, steps))


def _stages(r: Resolved, given: dict[str, np.ndarray], steps: Steps) -> dict[str, np.ndarray]:
    import numpy as np

    o, h = r.options, r.heads
    shown: dict[str, np.ndarray] = {}

    def stage(name: str, x: np.ndarray) -> np.ndarray:
        """Record a stage (or its given replacement) and return what flows on from it."""
        shown[name] = x = given.get(name, x)
        return x if steps.keep is None or name in given else steps.keep(name, x)

    a = inputs(r)
    Q = stage("Q", project(a, "Q"))  # (B, n, h·dk)
    K = stage("K", project(a, "K"))  # (B, m, g·dk)
    V = stage("V", project(a, "V"))  # (B, m, g·dv)
    check_projections(Q, K, V)
    q = split_heads(Q, h)  # (B, h, n, dk)
    k = share(split_heads(K, r.kv_heads), h)  # (B, h, m, dk)
    v = share(split_heads(V, r.kv_heads), h)  # (B, h, m, dv)
    q, k = prepare(q, k, o)
    scores = stage("scores", steps.scores(q, k))  # (B, h, n, m)
    finite(scores, "scores", "Q·Kᵀ")
    scaled = scale(scores, factor(r))  # (B, h, n, m)
    finite(scaled, "scaled", "scores × scale")
    rules = r.rules
    allowed = rules.allowed()  # (B|1, h|1, n, m) or None
    if rules.bias is not None:
        open_ = rules.bias != -np.inf  # −∞ in the bias blocks
        scaled = add_bias(scaled, rules.bias)  # (B, h, n, m)
        finite(np.where(open_, real(scaled), 0.0), "scaled", "scores × scale + attn_bias")
        allowed = open_ if allowed is None else (allowed & open_)
    scaled = stage("scaled", scaled)
    logits = scaled
    if r.masked:
        logits = stage("masked", mask(scaled, allowed))  # (B, h, n, m)
    weights = stage("weights", steps.weights(real(logits), r))  # (B, h, n, m)
    heads_out = stage("head_outputs", steps.mix(weights, v))  # (B, h, n, dv)
    concat = stage("concat", merge_heads(heads_out))  # (B, n, h·dv)
    output = out_project(concat, a)  # (B, n, d_out)
    check_output(output, o)
    return shown | {"output": output}
