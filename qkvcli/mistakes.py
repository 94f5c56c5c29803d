"""The common mistakes of a hand computation, each a variant of the one pipeline.

A variant changes what the user gave (a setting, the problem's mask) or swaps
one of the pipeline's stage functions (`attention.Steps`): W_Q for the keys,
the mask after the softmax, the heads in the wrong order, W_Oᵀ — and for
today's models RoPE's other pairing (a setting), the soft-cap before the
scale (``scale`` and ``cap``), another head's ALiBi slope (``bias``), QK-norm
without its weights (``norm``), RoPE forgotten (``rotate``). `MISTAKES`
is the list, by family; to add one, write a function that yields
``(label, problem, options, steps)`` for the variants that apply to a problem
and decorate it with `mistake`. ``check`` recomputes the problem from the
student's own earlier stages under each variant and names those that
reproduce a wrong stage — every one that does, so that it never names one
when another fits as well.

`roundings` are not mistakes: they reproduce a hand computation that rounded
its intermediate values, which ``check`` marks as consistent.

>>> [m.key for m in MISTAKES][:3]
['weights-times-x', 'weights-times-k', 'q-times-q']
>>> sorted({m.family for m in MISTAKES})[:4]
['alibi', 'article', 'chunk', 'decode']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .attention import (
    STEPS,
    Steps,
    merge_heads,
    project,
    qk_norm,
    rotary,
    share,
    sigmoid_terms,
    softcap,
    softmax,
)
from .describe import factor, sqrt_text
from .i18n import N_, _, ngettext
from .i18n import _ as tr

if TYPE_CHECKING:
    import numpy as np

    from .options import Options
    from .problem import Problem, Resolved

Variants = Iterator[tuple[str, "Problem", "Options", Steps]]


@dataclass(frozen=True)
class Mistake:
    """A kind of mistake: a key, its family, a one-line summary and the variants it yields."""

    key: str
    family: str
    summary: str
    make: Callable[[Problem, Options, Resolved], Variants]


@dataclass(frozen=True)
class Variant:
    """One concrete variant: the problem, options and stage functions that reproduce the mistake."""

    key: str
    label: str
    problem: Problem
    options: Options
    steps: Steps = STEPS
    summary: str = ""


MISTAKES: list[Mistake] = []


def mistake(
    key: str, family: str, summary: str
) -> Callable[[Callable[..., Variants]], Callable[..., Variants]]:
    """Register a mistake in `MISTAKES` (in definition order)."""

    def add(make: Callable[..., Variants]) -> Callable[..., Variants]:
        MISTAKES.append(Mistake(key, family, summary, make))
        return make

    return add


#: The two slips the source articles make themselves (../shared/seeds): the mistake's key →
#: what the article says, and why it is wrong. `article_note` says it beside the diagnosis.
ARTICLE_SLIPS = {
    "divided-by-dk": N_(
        'This is the slip "divide by the dimension" that the article makes ("再除以K的维度", '
        "divide by the dimension of K): the formula divides by √d_k, the square root of the "
        "dimension, not by d_k. A dot product of d_k terms spreads like √d_k, so dividing by √d_k "
        "keeps the scores near 1 whatever d_k is; dividing by d_k shrinks them d_k/√d_k = √d_k "
        "times more and flattens the softmax."
    ),
    "cosine-as-scaled": N_(
        "This is the article's claim that dividing by √d gives cosine similarity (\"再除以一个"
        '缩小因子…就可以得到对应向量之间的余弦相似度"): it does not. Cosine similarity divides '
        "q·k by the lengths |q|·|k|, which differ from pair to pair; √d_k is one constant for "
        "every pair, so the scaled scores are still dot products, only smaller (and not "
        "bounded by ±1)."
    ),
}


def article_note(keys: list[str]) -> str:
    """The article's own words for a mistake it makes, and why they are wrong; else ``""``.

    >>> article_note(["divided-by-dk"]).startswith('This is the slip "divide by the dimension"')
    True
    >>> article_note(["argmax"])
    ''
    """
    return next((tr(ARTICLE_SLIPS[k]) for k in keys if k in ARTICLE_SLIPS), "")


def variants(p: Problem, o: Options, r: Resolved) -> Iterator[Variant]:
    """Every variant of every mistake that applies to this problem, in list order."""
    for m in MISTAKES:
        for label, problem, options, steps in m.make(p, o, r):
            yield Variant(m.key, label, problem, options, steps, m.summary)


def _sqrt_scale(o: Options) -> bool:
    return o.scale == "sqrt"


def _swap(**changes: Any) -> Steps:
    return replace(STEPS, **changes)


def _self_attention(r: Resolved) -> bool:
    return "X_kv" not in r.arrays and r.n == r.m


def _softmax(logits: np.ndarray, rr: Resolved, empty: str | None = None) -> np.ndarray:
    """A softmax as the run takes it: with its sinks (gpt-oss) in every denominator."""
    sinks = rr.arrays.get("sinks")
    if sinks is not None:
        sinks = sinks.astype(float)[None, :, None, None]  # (1, h, 1, 1)
    return softmax(logits, empty or rr.options.empty_rows, None, sinks)


# ---------------------------------------------------------------- wrong operand


@mistake("weights-times-x", "operand", N_("weights·X instead of weights·V"))
def _weights_x(p: Problem, o: Options, r: Resolved) -> Variants:
    src = "X_kv" if "X_kv" in r.arrays else "X"
    if src in r.arrays and "V" not in r.arrays:
        x = r.arrays[src].astype(float)[:, None]  # (B, 1, m, d_model)

        def mix(w: np.ndarray, v: np.ndarray) -> np.ndarray:
            return w @ x  # (B, h, n, m) @ (B, 1, m, d_model)

        yield (
            _("output computed as weights·{src} instead of weights·V").format(src=src),
            p,
            o,
            _swap(mix=mix),
        )


@mistake("weights-times-k", "operand", N_("weights·K instead of weights·V"))
def _weights_k(p: Problem, o: Options, r: Resolved) -> Variants:
    def heads(Q: np.ndarray, K: np.ndarray, V: np.ndarray, r: Resolved) -> tuple[np.ndarray, ...]:
        q, k, _ = STEPS.heads(Q, K, V, r)
        return q, k, k

    yield _("output computed as weights·K instead of weights·V"), p, o, _swap(heads=heads)


@mistake("q-times-q", "operand", N_("Q·Qᵀ instead of Q·Kᵀ"))
def _q_q(p: Problem, o: Options, r: Resolved) -> Variants:
    if r.n == r.m and o.similarity == "dot":

        def heads(
            Q: np.ndarray, K: np.ndarray, V: np.ndarray, r: Resolved
        ) -> tuple[np.ndarray, ...]:
            q, _, v = STEPS.heads(Q, K, V, r)
            return q, q, v

        yield _("scores computed as Q·Qᵀ instead of Q·Kᵀ"), p, o, _swap(heads=heads)


@mistake("no-projection", "operand", N_("X used as Q, K or V (no projection)"))
def _no_projection(p: Problem, o: Options, r: Resolved) -> Variants:
    if "X" not in r.arrays:
        return
    for names in (("Q",), ("K",), ("V",), ("Q", "K", "V")):
        if not all(f"W_{n}" in r.arrays for n in names):
            continue
        if any(r.arrays[f"W_{n}"].shape[0] != r.arrays[f"W_{n}"].shape[1] for n in names):
            continue  # X has another width: no stage lines up

        def proj(a: dict[str, np.ndarray], name: str, names: tuple[str, ...] = names) -> np.ndarray:
            if name not in names:
                return project(a, name)
            src = a["X_kv"] if name != "Q" and "X_kv" in a else a["X"]
            return src  # (B, rows, d_model): no projection

        what = _("Q, K and V") if len(names) == 3 else names[0]
        label = _("{what} taken as X itself (no projection by W)").format(what=what)
        yield label, p, o, _swap(project=proj)


@mistake("wrong-weight", "operand", N_("the wrong W for Q, K or V (e.g. W_Q for the keys)"))
def _wrong_weight(p: Problem, o: Options, r: Resolved) -> Variants:
    a = r.arrays
    for stage, used in (("K", "Q"), ("Q", "K"), ("V", "Q"), ("V", "K"), ("K", "V"), ("Q", "V")):
        w, u = f"W_{stage}", f"W_{used}"
        if w not in a or u not in a or a[w].shape != a[u].shape:
            continue
        if (stage == "Q") != (used == "Q") and "X_kv" in a:
            continue  # Q comes from X, K and V from X_kv

        def proj(
            arrays: dict[str, np.ndarray], name: str, s: str = stage, u: str = used
        ) -> np.ndarray:
            if name != s:
                return project(arrays, name)
            swapped = {**arrays, f"W_{s}": arrays[f"W_{u}"]}
            swapped.pop(f"b_{s}", None)
            if f"b_{u}" in arrays:
                swapped[f"b_{s}"] = arrays[f"b_{u}"]
            return project(swapped, name)

        yield (
            _("{stage} computed with W_{used} instead of W_{stage}").format(stage=stage, used=used),
            p,
            o,
            _swap(project=proj),
        )


@mistake("k-not-transposed", "operand", N_("K instead of Kᵀ, or Q·Kᵀ transposed"))
def _k_not_transposed(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.similarity != "dot":
        return
    if r.d_head == r.m:
        yield _("scores computed as Q·K (K not transposed) instead of Q·Kᵀ"), p, o, _QK
    if r.n == r.m:
        yield _("scores transposed (K·Qᵀ instead of Q·Kᵀ)"), p, o, _KQT


@mistake("weights-layout", "operand", N_("W in the other layout: X·Wᵀ instead of X·W"))
def _weights_layout(p: Problem, o: Options, r: Resolved) -> Variants:
    a = r.arrays
    how = _("X·Wᵀ instead of X·W") if o.weights_layout == "in-out" else _("X·W instead of X·Wᵀ")
    square = [n for n in "QKV" if f"W_{n}" in a and a[f"W_{n}"].shape[0] == a[f"W_{n}"].shape[1]]
    if o.layout != "rows" or not square:
        return
    for names in [tuple(square)] + ([(n,) for n in square] if len(square) > 1 else []):

        def proj(
            arrays: dict[str, np.ndarray], name: str, names: tuple[str, ...] = names
        ) -> np.ndarray:
            if name not in names:
                return project(arrays, name)
            return project({**arrays, f"W_{name}": arrays[f"W_{name}"].T}, name)

        which = _("every W") if len(names) > 1 else f"W_{names[0]}"
        yield (
            _("{which} used in the other layout ({how})").format(which=which, how=how),
            p,
            o,
            _swap(project=proj),
        )


@mistake("weights-transposed", "operand", N_("weightsᵀ·V instead of weights·V"))
def _weights_transposed(p: Problem, o: Options, r: Resolved) -> Variants:
    if r.n == r.m:
        yield _("output computed as weightsᵀ·V instead of weights·V"), p, o, _TRANSPOSED_MIX


# ---------------------------------------------------------------- masks


def _allowed(r: Resolved) -> np.ndarray | None:
    """Which pairs may attend, from the masks and −∞ in the bias: (B|1, h|1, n, m)."""
    allowed = r.rules.allowed()
    if r.rules.bias is not None:
        open_ = r.rules.bias != -math.inf
        allowed = open_ if allowed is None else (allowed & open_)
    return allowed


def _causal_kind(p: Problem, o: Options) -> str | None:
    return o.mask or p.mask_kind


@mistake("mask-after-softmax", "mask", N_("the mask applied after the softmax, not renormalised"))
def _mask_after_softmax(p: Problem, o: Options, r: Resolved) -> Variants:
    if not r.rules.masked_by_rule or o.normalize != "softmax":
        return
    allowed = _allowed(r)

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        import numpy as np

        w = _softmax(logits, rr)  # (B, h, n, m) over every key
        return np.where(allowed, w, 0.0)

    label = _("mask applied after the softmax (masked weights set to 0, rows not renormalised)")
    yield label, p, o, _swap(mask=lambda s, a: s, weights=weights)


@mistake("mask-zero", "mask", N_("masked entries set to 0 instead of −∞"))
def _mask_zero(p: Problem, o: Options, r: Resolved) -> Variants:
    if not r.rules.masked_by_rule:
        return

    def mask(s: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        import numpy as np

        return s if allowed is None else np.where(allowed, s, 0.0)  # (B, h, n, m)

    yield _("masked entries set to 0 instead of −∞ (e⁰ = 1 still counts)"), p, o, _swap(mask=mask)


def _with_grid(p: Problem, grid: np.ndarray) -> Problem:
    shifted = replace(p, matrices={**p.matrices, "mask": grid})
    shifted.mask_kind = None
    return shifted


@mistake("causal-upper", "mask", N_("causal mask as the upper triangle, or inverted"))
def _causal_upper(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    kind = _causal_kind(p, o)
    if kind is None or "mask" in p.matrices or r.n != r.m:
        return
    plain = replace(o, mask=None, mask_polarity="attend")
    upper = np.triu(np.ones((r.n, r.m)))  # (n, m) 1 = may attend: key j ≥ query i
    yield (
        _("causal mask as the upper triangle (each query saw itself and the later keys)"),
        _with_grid(p, upper),
        plain,
        STEPS,
    )
    strict = np.triu(np.ones((r.n, r.m)), 1)  # the causal mask inverted: the future only
    yield (
        _("causal mask inverted (each query saw only the later keys)"),
        _with_grid(p, strict),
        replace(plain, empty_rows="nan"),
        STEPS,
    )


@mistake("mask-polarity", "mask", N_("inverted mask polarity"))
def _mask_polarity(p: Problem, o: Options, r: Resolved) -> Variants:
    if "mask" in p.matrices or "key_padding_mask" in p.matrices:
        flip = "block" if o.mask_polarity == "attend" else "attend"
        meaning = _("1 = blocked") if flip == "block" else _("1 = may attend")
        yield (
            _("mask polarity inverted (the mask read as {meaning})").format(meaning=meaning),
            p,
            replace(o, mask_polarity=flip),
            STEPS,
        )


@mistake("mask-forgotten", "mask", N_("causal mask (or mask) forgotten"))
def _mask_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if not r.rules.masked_by_rule:
        return
    drop = ("mask", "key_padding_mask", "valid_lens")
    bare = replace(p, matrices={k: v for k, v in p.matrices.items() if k not in drop})
    bare.mask_kind = None
    explicit = any(k in p.matrices for k in drop)
    what = _("the causal mask") if _causal_kind(p, o) and not explicit else _("the mask")
    yield _("{what} was forgotten").format(what=what), bare, replace(o, mask=None), STEPS


@mistake("causal-misaligned", "mask", N_("causal mask misaligned"))
def _causal_misaligned(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    kind = _causal_kind(p, o)
    if kind is None or "mask" in p.matrices:
        return
    n, m = r.n, r.m
    if n != m:
        other = "causal-lower-right" if kind == "causal" else "causal"
        where = _("the last key") if other == "causal-lower-right" else _("the first key")
        yield (
            _("causal mask aligned to {where} instead").format(where=where),
            p,
            replace(o, mask=other),
            STEPS,
        )
    offset = 0 if kind == "causal" else m - n
    for shift, label in (
        (1, _("causal mask off by one (each query also saw the next key)")),
        (-1, _("causal mask off by one (each query missed its own key)")),
    ):
        grid = np.tri(n, m, offset + shift)  # (n, m) 1 = may attend
        yield label, _with_grid(p, grid), replace(o, mask=None, mask_polarity="attend"), STEPS


# ---------------------------------------------------------------- normalisation


def _finite(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.isfinite(logits)


@mistake(
    "softmax-columns", "normalisation", N_("softmax over columns (queries) instead of rows (keys)")
)
def _softmax_columns(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize == "softmax":
        yield _("softmax taken down each column instead of along each row"), p, o, _COLUMNS


@mistake("softmax-whole", "normalisation", N_("softmax over the whole matrix instead of each row"))
def _softmax_whole(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize != "softmax" or r.n < 2:
        return

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        B, h, n, m = logits.shape
        flat = logits.reshape(B, h, 1, n * m)  # one row per head
        return _softmax(flat, rr, "error").reshape(B, h, n, m)

    yield (
        _("softmax over the whole matrix (every entry of a head sums to 1)"),
        p,
        o,
        _swap(weights=weights),
    )


@mistake("exp-not-normalised", "normalisation", N_("e^x not divided by the row sum"))
def _exp_only(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize != "softmax":
        return

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        import numpy as np

        return np.exp(logits)  # (B, h, n, m): e^{−∞} = 0

    yield (
        _("e^x not normalised (the weights are e^{scaled}, not divided by their row sum)"),
        p,
        o,
        _swap(weights=weights),
    )


@mistake("row-sum", "normalisation", N_("scores divided by their row sum instead of a softmax"))
def _row_sum(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize != "softmax":
        return

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        import numpy as np

        x = np.where(_finite(logits), logits, 0.0)  # (B, h, n, m)
        total = x.sum(axis=-1, keepdims=True)  # (B, h, n, 1)
        if np.any(total == 0):
            raise ValueError("a row sums to 0")
        return x / total

    yield _("scores divided by their row sum instead of a softmax"), p, o, _swap(weights=weights)


@mistake("argmax", "normalisation", N_("argmax (one-hot weights) instead of softmax"))
def _argmax(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize != "softmax":
        return

    def one_hot(split: bool) -> Callable[[np.ndarray, Resolved], np.ndarray]:
        def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
            import numpy as np

            top = logits.max(axis=-1, keepdims=True)  # (B, h, n, 1)
            hit = np.isclose(logits, top, rtol=1e-12, atol=1e-12)  # ties
            if not split:
                first = np.cumsum(hit, axis=-1) == 1
                hit = hit & first
            return hit / hit.sum(axis=-1, keepdims=True)

        return weights

    yield (
        _("argmax instead of softmax (one-hot weights: 1 for the largest score)"),
        p,
        o,
        _swap(weights=one_hot(False)),
    )
    yield (
        _("argmax instead of softmax (weight shared by the largest scores)"),
        p,
        o,
        _swap(weights=one_hot(True)),
    )


@mistake("sigmoid-for-softmax", "normalisation", N_("sigmoid instead of softmax (or the reverse)"))
def _sigmoid(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize == "softmax":
        yield (
            _("sigmoid of each score instead of a softmax of the row"),
            p,
            o,
            _swap(weights=lambda x, rr: sigmoid_terms(x)),
        )
    else:
        yield (
            _("softmax of each row instead of the sigmoid of each score"),
            p,
            replace(o, normalize="softmax"),
            STEPS,
        )


@mistake("no-softmax", "normalisation", N_("forgot the softmax"))
def _no_softmax(p: Problem, o: Options, r: Resolved) -> Variants:
    yield _("forgot the softmax (the scaled scores were used as weights)"), p, o, _NO_SOFTMAX


# ---------------------------------------------------------------- scale


@mistake("no-scaling", "scale", N_("no scaling: the scores were not divided by √d_k"))
def _no_scaling(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.scale != "none":
        yield (
            _("no scaling (the scores were not divided by √d_k)"),
            p,
            replace(o, scale="none"),
            STEPS,
        )


@mistake("divided-by-dk", "scale", N_("divided by d_k instead of √d_k"))
def _divided_by_dk(p: Problem, o: Options, r: Resolved) -> Variants:
    d = r.d_head
    if _sqrt_scale(o) and d > 1:
        label = _("divided by d_k = {d} instead of √d_k = {sqrt_text}").format(
            d=d, sqrt_text=sqrt_text(d)
        )
        yield label, p, replace(o, scale=1 / d), STEPS


@mistake("scale-twice", "scale", N_("the scale applied twice"))
def _scale_twice(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.scale != "none" and r.scale != 1:
        label = _("the scale applied twice (scores × scale × scale)")
        yield label, p, o, _swap(scale=lambda x, c: x * c * c)


@mistake("scale-after-softmax", "scale", N_("the scale applied after the softmax"))
def _scale_after(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.scale == "none" or r.scale == 1 or o.normalize != "softmax":
        return
    c = factor(r)

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        return _softmax(logits, rr) * c  # (B, h, n, m)

    label = _("the scale applied after the softmax (softmax(scores) × scale)")
    yield label, p, o, _swap(scale=lambda x, cc: x, weights=weights)


@mistake("times-sqrt-dk", "scale", N_("multiplied by √d_k instead of divided"))
def _times_sqrt(p: Problem, o: Options, r: Resolved) -> Variants:
    d = r.d_head
    if _sqrt_scale(o) and d > 1:
        label = _("multiplied by √d_k = {sqrt_text} instead of divided by it").format(
            sqrt_text=sqrt_text(d)
        )
        yield label, p, replace(o, scale=math.sqrt(d)), STEPS


@mistake("dk-squared", "scale", N_("divided by d_k² instead of √d_k"))
def _dk_squared(p: Problem, o: Options, r: Resolved) -> Variants:
    d = r.d_head
    if _sqrt_scale(o) and d > 1:
        label = _("divided by d_k² = {d} instead of √d_k = {sqrt_text}").format(
            d=d * d, sqrt_text=sqrt_text(d)
        )
        yield label, p, replace(o, scale=1 / (d * d)), STEPS


@mistake("sqrt-other", "scale", N_("divided by √ of another size: d_v, n, d_model, all heads' d_k"))
def _sqrt_other(p: Problem, o: Options, r: Resolved) -> Variants:
    if not _sqrt_scale(o):
        return
    d = r.d_head
    widths: dict[int, list[str]] = {}

    def add(width: int, what: str) -> None:
        if width != d and width > 0:
            widths.setdefault(width, []).append(what)

    if "X" in r.arrays:
        add(int(r.arrays["X"].shape[-1]), "d_model")
    if r.heads > 1:
        add(r.heads * r.d_head, _("all heads' d_k together"))
    add(r.dv_head, "d_v")
    add(r.n, _("the number of tokens n") if r.n == r.m else _("the number of queries"))
    if r.m != r.n:
        add(r.m, _("the number of keys"))
    for width, what in widths.items():
        label = _("divided by √{width} ({items}) instead of √d_k = {sqrt_text}").format(
            width=width, items=" = ".join(what), sqrt_text=sqrt_text(d)
        )
        yield label, p, replace(o, scale=1 / math.sqrt(width)), STEPS


# ---------------------------------------------------------------- multi-head


@mistake("heads-order", "multi-head", N_("heads concatenated in the wrong order"))
def _heads_order(p: Problem, o: Options, r: Resolved) -> Variants:
    if r.heads < 2:
        return

    def merge(a: np.ndarray) -> np.ndarray:
        return merge_heads(a[:, ::-1])  # (B, n, h·dv), head h first

    yield _("heads concatenated in the wrong order (the last head first)"), p, o, _swap(merge=merge)


@mistake("heads-interleaved", "multi-head", N_("heads split interleaved instead of in blocks"))
def _heads_interleaved(p: Problem, o: Options, r: Resolved) -> Variants:
    if r.heads < 2:
        return

    def split(a: np.ndarray, h: int) -> np.ndarray:
        B, n, hd = a.shape
        return a.reshape(B, n, hd // h, h).transpose(0, 3, 1, 2)  # head i: columns i, i+h, …

    def heads(Q: np.ndarray, K: np.ndarray, V: np.ndarray, rr: Resolved) -> tuple[np.ndarray, ...]:
        h = rr.heads
        k = share(split(K, rr.kv_heads), h)
        return split(Q, h), k, share(split(V, rr.kv_heads), h)

    def merge(a: np.ndarray) -> np.ndarray:
        B, h, n, d = a.shape
        return a.transpose(0, 2, 3, 1).reshape(B, n, d * h)  # back to interleaved columns

    label = _("heads split interleaved (head i took columns i, i+h, …) instead of in blocks")
    yield label, p, o, _swap(heads=heads)
    yield label + _(", and merged back the same way"), p, o, _swap(heads=heads, merge=merge)


@mistake("wo-forgotten", "multi-head", N_("W_O forgotten (output = concat)"))
def _wo_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if "W_O" in r.arrays:
        yield (
            _("W_O forgotten (the output is the concatenated heads)"),
            p,
            o,
            _swap(out=lambda c, a: c),
        )


@mistake("wo-transposed", "multi-head", N_("concat·W_Oᵀ instead of concat·W_O"))
def _wo_transposed(p: Problem, o: Options, r: Resolved) -> Variants:
    w = r.arrays.get("W_O")
    if w is not None and w.shape[0] == w.shape[1]:

        def out(c: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
            b = a.get("b_O")
            y = c @ a["W_O"].T  # (B, n, d_out)
            return y if b is None else y + b

        yield _("output computed with W_Oᵀ instead of W_O"), p, o, _swap(out=out)


# ---------------------------------------------------------------- the source articles' slips


@mistake("cosine-as-scaled", "article", N_("cosine similarity used as the scaled dot product"))
def _cosine(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    from .attention import heads, inputs, transform_rows, with_cache

    if o.similarity != "dot":
        return
    a = inputs(r)
    Q = project(a, "Q").astype(float)
    K, V = (with_cache(a, n, project(a, n)).astype(float) for n in "KV")
    q, k, _v = heads(*transform_rows(Q, K, a, r), V, r)  # the rows the scores read
    norms = np.linalg.norm(q, axis=-1)[..., :, None] * np.linalg.norm(k, axis=-1)[..., None, :]
    if np.all(norms > 0):  # (B, h, n, m): |q_i|·|k_j|
        yield (
            _("cosine similarity used as the scaled dot product (scaled = q·k / (|q|·|k|))"),
            p,
            o,
            _swap(scale=lambda x, c: x / norms),
        )
    yield (
        _("cosine similarity for the scores, used unscaled (scores = scaled = cos(q, k))"),
        p,
        replace(o, similarity="cosine", scale="none"),
        STEPS,
    )
    if o.scale != "none":
        yield (
            _("cosine similarity used for the dot product, then scaled"),
            p,
            replace(o, similarity="cosine"),
            STEPS,
        )


# ---------------------------------------------------------------- QK-norm


def _norm_weights(p: Problem) -> bool:
    return "q_norm" in p.matrices or "k_norm" in p.matrices


@mistake("qk-norm-forgotten", "qk-norm", N_("QK-norm forgotten (Q and K used as projected)"))
def _qk_norm_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.qk_norm is not None:
        label = _("QK-norm forgotten (Q_normed and K_normed are Q and K as projected)")
        yield label, p, o, _swap(norm=lambda x, w, heads, oo, skip=0: x)


@mistake("qk-norm-weight", "qk-norm", N_("QK-norm without its weights (q_norm, k_norm)"))
def _qk_norm_weight(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.qk_norm is None or not _norm_weights(p):
        return

    def norm(x: np.ndarray, w: np.ndarray | None, heads: int, oo: Options, skip: int = 0):
        return qk_norm(x, None, heads, replace(oo, rms_norm_unit_offset=False), skip)

    label = _(
        "QK-norm without its weights (each row divided by its RMS, not multiplied by q_norm / k_norm)"
    )
    yield label, p, o, _swap(norm=norm)


@mistake("qk-norm-offset", "qk-norm", N_("Gemma's weights as w instead of 1 + w (or the reverse)"))
def _qk_norm_offset(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.qk_norm is None or not _norm_weights(p):
        return
    if o.rms_norm_unit_offset:
        label = _("QK-norm weights used as w instead of Gemma's 1 + w")
    else:
        label = _("QK-norm weights used as 1 + w (Gemma's form) instead of w")
    yield label, p, replace(o, rms_norm_unit_offset=not o.rms_norm_unit_offset), STEPS


@mistake(
    "qk-norm-scope",
    "qk-norm",
    N_("QK-norm over the whole row instead of per head (or the reverse)"),
)
def _qk_norm_scope(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if o.qk_norm is None or max(r.heads, r.kv_heads) < 2:
        return
    other = "all" if o.qk_norm == "head" else "head"

    def norm(x: np.ndarray, w: np.ndarray | None, heads: int, oo: Options, skip: int = 0):
        if w is not None:  # the same weights, laid out for the other scope
            w = np.tile(w, heads) if other == "all" else w.reshape(heads, -1)  # (H·d,) | (H, d)
        return qk_norm(x, w, heads, replace(oo, qk_norm=other), skip)

    label = (_("QK-norm over each whole row (all heads together) instead of per head") if other == "all"
             else _("QK-norm per head instead of over each whole row (all heads together)"))  # fmt: skip
    yield label, p, o, _swap(norm=norm)


@mistake("qk-norm-l2", "qk-norm", N_("QK-norm dividing by the row's length instead of its RMS"))
def _qk_norm_l2(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.qk_norm is None:
        return

    def norm(x: np.ndarray, w: np.ndarray | None, heads: int, oo: Options, skip: int = 0):
        y = qk_norm(x, w, heads, replace(oo, rms_norm_eps=0.0), skip)  # no eps by hand
        width = x.shape[-1] // heads if oo.qk_norm == "head" else x.shape[-1]
        y[:, skip:] = y[:, skip:] / math.sqrt(width)  # x / |x| = x / (√d · rms)
        return y

    label = _("QK-norm dividing each row by its length √(Σx²) instead of its RMS √(mean x²)")
    yield label, p, o, _swap(norm=norm)


# ---------------------------------------------------------------- rotary positions


def _identity_rotation(x: np.ndarray, r: Resolved, heads: int, skip: int = 0) -> np.ndarray:
    return x


def _with_positions(p: Problem, positions: np.ndarray) -> Problem:
    return replace(p, matrices={**p.matrices, "position_ids": positions})


@mistake(
    "rope-pairing",
    "rope",
    N_("RoPE's pairs taken the other way (half: i, i + d/2; interleaved: 2i, 2i + 1)"),
)
def _rope_pairing(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.rope is None or r.rotary_dim < 4:
        return  # with one pair per head both pairings are the same
    if o.rope == "half":
        label = _("RoPE pairs taken interleaved (2i, 2i + 1) instead of half (i, i + d/2)")
    else:
        label = _("RoPE pairs taken half (i, i + d/2) instead of interleaved (2i, 2i + 1)")
    yield label, p, replace(o, rope="interleaved" if o.rope == "half" else "half"), STEPS


@mistake("rope-forgotten", "rope", N_("RoPE forgotten (Q and K not rotated)"))
def _rope_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.rope is not None:
        label = _("RoPE forgotten (Q_rotated and K_rotated are the unrotated rows)")
        yield label, p, o, _swap(rotate=_identity_rotation)


@mistake(
    "rope-positions",
    "rope",
    N_("RoPE at the wrong positions: off by one, or from 0 in a decode step"),
)
def _rope_positions(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if o.rope is None or r.positions is None:
        return
    pos = r.positions  # (B|1, n)
    given = "position_ids" in p.matrices or o.position_offset is not None
    wrong: list[tuple[str, np.ndarray]] = [
        (_("RoPE positions off by one (each token rotated one position later)"), pos + 1)
    ]
    if pos.min() >= 1:
        wrong.append(
            (_("RoPE positions off by one (each token rotated one position earlier)"), pos - 1)
        )
    zero = np.broadcast_to(np.arange(r.n), pos.shape)
    if r.past and not given:
        wrong.append((_("RoPE positions counted from 0 in a decode step instead of from the cache's length {past}").format(past=r.past), zero))  # fmt: skip
    elif given:
        wrong.append((_("RoPE positions counted 0, 1, 2 … instead of the positions given"), zero))
    if r.past and not given:
        wrong.append((_("RoPE positions counted from 1 in a decode step instead of from the cache's length {past}").format(past=r.past), zero + 1))  # fmt: skip
    seen = [pos]
    plain = replace(o, position_offset=None)
    for label, at in wrong:
        if any(a.shape == at.shape and np.array_equal(a, at) for a in seen):
            continue
        seen.append(at)
        yield label, _with_positions(p, np.array(at)), plain, STEPS


@mistake("rope-on-v", "rope", N_("RoPE applied to V as well"))
def _rope_on_v(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.rope is None or r.dv_head != r.d_head:
        return

    def proj(a: dict[str, np.ndarray], name: str) -> np.ndarray:
        x = project(a, name)
        return rotary(x, r, r.kv_heads) if name == "V" else x

    def split(Q: np.ndarray, K: np.ndarray, V: np.ndarray, rr: Resolved) -> tuple[np.ndarray, ...]:
        return STEPS.heads(Q, K, rotary(V, rr, rr.kv_heads, rr.past), rr)

    yield _("RoPE applied to V as well (V rotated like K)"), p, o, _swap(project=proj)
    yield _("RoPE applied to V as well, before weights·V"), p, o, _swap(heads=split)


# ---------------------------------------------------------------- the decode step


@mistake("cache-forgotten", "decode", N_("the KV cache left out (only the new tokens' keys)"))
def _cache_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if not r.past or r.rules.biased:
        return
    P, rules = r.past, r.rules
    new = replace(
        rules, m=r.n, q0=0, causal=None if rules.causal is None else 0,
        padding=None if rules.padding is None else rules.padding[:, P:],
        grid=None if rules.grid is None else rules.grid[..., P:],
    )  # fmt: skip
    allowed = new.allowed()  # (B|1, h|1, n, n): the new tokens among themselves

    def split(Q: np.ndarray, K: np.ndarray, V: np.ndarray, rr: Resolved) -> tuple[np.ndarray, ...]:
        return STEPS.heads(Q, K[:, P:], V[:, P:], rr)  # the cache's rows dropped

    def mask(s: np.ndarray, a: np.ndarray | None) -> np.ndarray:
        return s if allowed is None else np.where(allowed, s, -np.inf)

    label = _("the KV cache left out (the new tokens attended only to each other)")
    yield label, p, o, _swap(heads=split, mask=mask)


@mistake("cache-again", "decode", N_("the cached keys normed or rotated again"))
def _cache_again(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if not r.past:
        return
    if o.qk_norm is not None:

        def norm(x: np.ndarray, w: np.ndarray | None, heads: int, oo: Options, skip: int = 0):
            return qk_norm(x, w, heads, oo)  # every row, the cache's too

        label = _("the cached keys normed again (past_key holds them already normed)")
        yield label, p, o, _swap(norm=norm)
    if o.rope is not None and r.positions is not None:
        B = r.positions.shape[0]
        cached = np.broadcast_to(np.arange(r.past), (B, r.past))
        every = replace(r, positions=np.concatenate([cached, r.positions], axis=1))  # (B|1, m)

        def rotate(x: np.ndarray, rr: Resolved, heads: int, skip: int = 0) -> np.ndarray:
            return rotary(x, every if skip else rr, heads)

        label = _("the cached keys rotated again (past_key holds them already rotated)")
        yield label, p, o, _swap(rotate=rotate)


@mistake(
    "decode-causal", "decode", N_("a decode step's causal mask counted from the first cached key")
)
def _decode_causal(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if not r.past:
        return
    first = np.tri(r.n, r.m, 0, dtype=bool)  # (n, m): query i saw keys 1 … i only
    rest = _others(r, causal=None)
    allowed = first if rest is None else first & rest

    def mask(s: np.ndarray, a: np.ndarray | None) -> np.ndarray:
        return np.where(allowed, s, -np.inf)  # (B, h, n, m)

    label = _("the causal mask counted from the first cached key (new query i saw keys 1 … i)")
    yield label, p, replace(o, empty_rows="nan"), _swap(mask=mask)


# ---------------------------------------------------------------- sliding windows and chunks


def _others(r: Resolved, **dropped: Any) -> np.ndarray | None:
    """Which pairs the run's other masks (and −∞ in its bias) allow: (B|1, h|1, n, m) or None."""
    return _allowed(replace(r, rules=replace(r.rules, **dropped)))


@mistake("window-off-by-one", "window", N_("sliding window off by one (i − W ≤ j, or W − 1 keys)"))
def _window_off(p: Problem, o: Options, r: Resolved) -> Variants:
    W = o.sliding_window
    if W is None:
        return
    yield (
        _("sliding window off by one (i − {W} ≤ j: each query also saw the key {W} back)").format(W=W),
        p, replace(o, sliding_window=W + 1), STEPS,
    )  # fmt: skip
    if W > 1:
        yield (
            _("sliding window off by one (i − {W} + 1 < j: each query saw only {W2} keys)").format(W=W, W2=W - 1),
            p, replace(o, sliding_window=W - 1), STEPS,
        )  # fmt: skip


@mistake("window-forgotten", "window", N_("the sliding window forgotten"))
def _window_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.sliding_window is not None:
        kept = replace(o, sliding_window=None)
        if o.mask is None and p.mask_kind is None and not r.past:
            kept = replace(kept, mask="causal")  # a window is causal: what is left of it
        yield _("the sliding window forgotten (every earlier key kept)"), p, kept, STEPS


@mistake("chunk-off-by-one", "chunk", N_("chunk boundaries off by one (or chunks of C ± 1)"))
def _chunk_off(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    C = o.attention_chunk_size
    if C is None:
        return
    rest = _others(r, chunk=None)  # the other masks, as they are
    at = np.arange(r.n)[:, None] + r.rules.q0  # (n, 1): each query's index among the keys
    j = np.arange(r.m)[None, :]  # (1, m)
    for shift, when in ((1, _("one token early")), (-1, _("one token late"))):
        same = (at + shift) // C == (j + shift) // C  # (n, m)
        allowed = same if rest is None else same & rest

        def mask(s: np.ndarray, a: np.ndarray | None, allowed: np.ndarray = allowed) -> np.ndarray:
            return np.where(allowed, s, -np.inf)  # (B, h, n, m)

        label = _("chunk boundaries off by one (each chunk of {C} starting {when})").format(
            C=C, when=when
        )
        yield label, p, replace(o, empty_rows="nan"), _swap(mask=mask)
    for size in (C + 1, C - 1):
        if size >= 1:
            label = _("chunks of {size} instead of {C}").format(size=size, C=C)
            yield label, p, replace(o, attention_chunk_size=size), STEPS


@mistake("chunk-forgotten", "chunk", N_("the chunks forgotten"))
def _chunk_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.attention_chunk_size is not None:
        label = _("the chunks forgotten (keys of earlier chunks kept)")
        yield label, p, replace(o, attention_chunk_size=None), STEPS


# ---------------------------------------------------------------- logit soft-capping


@mistake("softcap-before-scale", "softcap", N_("soft-cap applied before the scale"))
def _softcap_before_scale(p: Problem, o: Options, r: Resolved) -> Variants:
    cap = o.attn_logit_softcapping
    if cap is None or r.scale == 1:
        return
    f = float(factor(r))

    def cap_scores(x: np.ndarray, c: float) -> np.ndarray:
        return softcap(x / f, c) * f  # c·tanh(scores / c) × scale, from the scaled scores

    yield (
        _("soft-cap applied before the scale (capped = {cap:g}·tanh(scores / {cap:g}) × scale)").format(cap=cap),
        p, o, _swap(cap=cap_scores),
    )  # fmt: skip
    yield (
        _("soft-cap applied before the scale (scaled = {cap:g}·tanh(scores / {cap:g}), " "capped = scaled × scale)").format(cap=cap),
        p, o, _swap(scale=lambda x, c: softcap(x, cap), cap=lambda x, c: x * f),
    )  # fmt: skip


@mistake("softcap-forgotten", "softcap", N_("soft-cap forgotten (capped = scaled)"))
def _softcap_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.attn_logit_softcapping is not None:
        yield (
            _("soft-cap forgotten (the scaled scores used as they are)"),
            p,
            o,
            _swap(cap=lambda x, c: x),
        )


@mistake("softcap-formula", "softcap", N_("soft-cap as tanh(s / c) or c·tanh(s)"))
def _softcap_formula(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    cap = o.attn_logit_softcapping
    if cap is None or cap == 1:
        return
    yield (_("soft-cap without the factor {cap:g} (tanh(scaled / {cap:g}))").format(cap=cap), p, o,
           _swap(cap=lambda x, c: np.tanh(x / c)))  # fmt: skip
    yield (_("soft-cap without dividing by {cap:g} ({cap:g}·tanh(scaled))").format(cap=cap), p, o,
           _swap(cap=lambda x, c: c * np.tanh(x)))  # fmt: skip


@mistake("softcap-after-bias", "softcap", N_("soft-cap applied after ALiBi instead of before"))
def _softcap_after_bias(p: Problem, o: Options, r: Resolved) -> Variants:
    cap = o.attn_logit_softcapping
    if cap is None or not o.alibi or r.rules.bias is not None:
        return

    def bias(s: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        return softcap(s + b, cap)  # (B, h, n, m)

    label = _("soft-cap applied after ALiBi ({cap:g}·tanh((scaled + ALiBi) / {cap:g}))").format(
        cap=cap
    )
    yield label, p, o, _swap(cap=lambda x, c: x, bias=bias)


# ---------------------------------------------------------------- sinks


@mistake("sinks-forgotten", "sinks", N_("the sinks left out (each row of weights sums to 1)"))
def _sinks_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if "sinks" in p.matrices:
        bare = replace(p, matrices={k: v for k, v in p.matrices.items() if k != "sinks"})
        yield _("the sinks left out of the softmax (each row of weights sums to 1)"), bare, o, STEPS


@mistake("sink-in-numerators", "sinks", N_("e^sink added to the numerators as well"))
def _sink_in_numerators(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if "sinks" not in r.arrays:
        return
    sink = r.arrays["sinks"].astype(float)[None, :, None, None]  # (1, h, 1, 1)

    def weights(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        live = np.isfinite(logits)
        top = np.maximum(np.max(logits, axis=-1, keepdims=True), sink)  # (B, h, n, 1)
        e = np.where(live, np.exp(np.where(live, logits, 0.0) - top), 0.0)  # (B, h, n, m)
        s = np.exp(sink - top)  # (B, h, n, 1)
        return np.where(live, e + s, 0.0) / (e.sum(axis=-1, keepdims=True) + s)

    def shifted(logits: np.ndarray, rr: Resolved) -> np.ndarray:
        return _softmax(logits + sink, rr)  # e^{x + sink} / (Σ e^{x + sink} + e^{sink})

    yield (_("e^{sink} added to each numerator as well as to the denominator"), p, o,
           _swap(weights=weights))  # fmt: skip
    yield (
        _("the sink added to every logit (e^{x + sink} / (Σ e^{x + sink} + e^{sink}))"),
        p,
        o,
        _swap(weights=shifted),
    )


@mistake("sink-wrong-head", "sinks", N_("another head's sink"))
def _sink_wrong_head(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    sinks = r.arrays.get("sinks")
    if sinks is None or r.heads < 2:
        return
    seen = [sinks]
    for label, other in ((_("the sinks taken in reverse head order"), sinks[::-1]),
                         (_("each head took the next head's sink"), np.roll(sinks, -1))):  # fmt: skip
        if any(np.array_equal(other, s) for s in seen):
            continue
        seen.append(other)
        yield label, replace(p, matrices={**p.matrices, "sinks": other.copy()}), o, STEPS


# ---------------------------------------------------------------- ALiBi


def _alibi_bias(r: Resolved, slopes: np.ndarray, q0: int | None = None) -> np.ndarray:
    """The bias (attn_bias and ALiBi) with other slopes: (B|1, h|1, n, m)."""
    rules = replace(r.rules, slopes=slopes, q0=r.rules.q0 if q0 is None else q0)
    out = rules.added()
    assert out is not None
    return out


@mistake("alibi-forgotten", "alibi", N_("ALiBi forgotten"))
def _alibi_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.alibi:
        yield _("ALiBi forgotten (no m_h·(j − i) added)"), p, replace(o, alibi=False), STEPS


@mistake("alibi-slope", "alibi", N_("ALiBi with another head's slope"))
def _alibi_slope(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    if not o.alibi or r.heads < 2:
        return
    m = r.rules.slopes
    assert m is not None
    H = r.heads
    plain = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)  # the power-of-two rule for any H
    seen = [m]
    for label, other in (
        (_("ALiBi slopes in reverse head order (head h took the slope of head H + 1 − h)"), m[::-1]),
        (_("ALiBi slopes shifted by one head (head h took the slope of head h + 1)"), np.roll(m, -1)),
        (_("ALiBi slopes shifted by one head (head h took the slope of head h − 1)"), np.roll(m, 1)),
        (_("ALiBi slopes 2^(−8h/{H}) for every head (the rule for a power of two, but {H} " "is not one)").format(H=H), plain),
    ):  # fmt: skip
        if any(np.allclose(other, s, rtol=0, atol=0) for s in seen):
            continue
        seen.append(other)
        bias = _alibi_bias(r, other)
        yield label, p, o, _swap(bias=lambda s, b, bias=bias: s + bias)


@mistake("alibi-sign", "alibi", N_("ALiBi with the wrong sign: m_h·(i − j)"))
def _alibi_sign(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.alibi and r.rules.slopes is not None:
        bias = _alibi_bias(r, -r.rules.slopes)
        label = _("ALiBi with the wrong sign (m_h·(i − j): the far keys raised, not lowered)")
        yield label, p, o, _swap(bias=lambda s, b: s + bias)


@mistake("alibi-position", "alibi", N_("ALiBi's distance from the query's row, not its position"))
def _alibi_position(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.alibi and r.rules.slopes is not None and r.past:
        bias = _alibi_bias(r, r.rules.slopes, q0=0)
        label = (_("ALiBi's distance j − i counted from the new query's row, not its position (the " "cache's {past} rows come first)").format(past=r.past))  # fmt: skip
        yield label, p, o, _swap(bias=lambda s, b: s + bias)


# ---------------------------------------------------------------- swapped stage functions


def _columns_softmax(logits: np.ndarray, r: Resolved) -> np.ndarray:
    """Softmax down each column (over the queries) instead of along each row."""
    return _softmax(logits.swapaxes(-1, -2), r).swapaxes(-1, -2)


def _scaled_as_weights(logits: np.ndarray, r: Resolved) -> np.ndarray:
    """The (masked) scaled scores used as weights, 0 where masked."""
    import numpy as np

    return np.where(np.isfinite(logits), logits, 0.0)  # (B, h, n, m)


_COLUMNS = _swap(weights=_columns_softmax)
_NO_SOFTMAX = _swap(weights=_scaled_as_weights)
_TRANSPOSED_MIX = _swap(mix=lambda w, v: w.swapaxes(-1, -2) @ v)  # weightsᵀ·V (n = m)
_QK = _swap(scores=lambda q, k: q @ k)  # K not transposed (d_k = m)
_KQT = _swap(scores=lambda q, k: k @ q.swapaxes(-1, -2))  # (Q·Kᵀ)ᵀ (n = m)


# ---------------------------------------------------------------- rounding (not a mistake)

#: The stages a hand computation may round before going on (the others are copies or inputs).
ROUNDED = ("Q", "K", "V", "Q_normed", "K_normed", "Q_rotated", "K_rotated", "scores", "scaled",
           "capped", "masked", "weights", "head_outputs", "concat")  # fmt: skip


@dataclass(frozen=True)
class Rounding:
    """Intermediate values rounded to ``places`` decimals: every stage, or only ``stage``.

    ``at`` holds the first stages a rounded factor changes (the scale:
    ``scaled``; RoPE's cos θ and sin θ: ``Q_rotated``, ``K_rotated``; …), and
    is empty for rounded stages.
    """

    places: int
    stage: str | None
    steps: Steps
    at: tuple[str, ...] = ()

    @property
    def words(self) -> str:
        """``weights rounded to 2 decimals`` / ``every intermediate value rounded to 1 decimal``."""
        if self.stage is None:
            what = _("every intermediate value")
        elif self.stage.endswith(EVERY):
            what = _("{what} and every value").format(what=tr(self.stage[: -len(EVERY)]))
        else:
            what = tr(self.stage) if self.at else self.stage
        return ngettext(
            "{what} rounded to {n} decimal", "{what} rounded to {n} decimals", self.places
        ).format(what=what, n=self.places)


#: How a rounded factor's words say that every value was rounded as well.
EVERY = " and every value"


def roundings() -> Iterator[Rounding]:
    """Hand computations that round as they go: finest first, every stage before one stage."""
    import numpy as np

    for places in (3, 2, 1, 0):

        def every(name: str, x: np.ndarray, k: int = places) -> np.ndarray:
            return np.round(x, k)

        def scale(x: np.ndarray, c: Any, k: int = places) -> np.ndarray:
            return x * round(float(c), k)

        yield Rounding(places, None, replace(STEPS, keep=every))
        if places:
            for what, at, change in _factors(places):
                yield Rounding(places, what, replace(STEPS, **change), at)
                yield Rounding(places, what + EVERY,
                               replace(STEPS, keep=every, **change), at)  # fmt: skip
        for stage in ROUNDED:

            def one(name: str, x: np.ndarray, k: int = places, s: str = stage) -> np.ndarray:
                return np.round(x, k) if name == s else x

            yield Rounding(places, stage, replace(STEPS, keep=one))


def _factors(k: int) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """The factors a hand computation works out and rounds before it multiplies by them:
    (words, the first stages they change, the stage functions that round them)."""
    import numpy as np

    from .attention import rope_angles

    def scale(x: np.ndarray, c: Any) -> np.ndarray:
        return x * round(float(c), k)

    def angles(positions: np.ndarray, dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = rope_angles(positions, dim, theta)
        return np.round(cos, k), np.round(sin, k)

    def rotate(x: np.ndarray, r: Resolved, heads: int, skip: int = 0) -> np.ndarray:
        return rotary(x, r, heads, skip, angles)

    def root(rms: np.ndarray) -> np.ndarray:
        return np.where(np.round(rms, k) == 0, rms, np.round(rms, k))  # a zero row's √eps: kept

    def norm(x: np.ndarray, w: np.ndarray | None, heads: int, o: Options, skip: int = 0):
        return qk_norm(x, w, heads, o, skip, root)

    def cap(x: np.ndarray, c: float) -> np.ndarray:
        return np.round(np.tanh(x / c), k) * c

    return [
        (N_("the scale"), ("scaled",), dict(scale=scale)),
        (N_("cos θ and sin θ"), ("Q_rotated", "K_rotated"), dict(rotate=rotate)),
        (N_("each RMS"), ("Q_normed", "K_normed"), dict(norm=norm)),
        (N_("each tanh"), ("capped",), dict(cap=cap)),
    ]
