"""The common mistakes of a hand computation, each a variant of the one pipeline.

A variant changes what the user gave (a setting, the problem) or swaps one
of the pipeline's stage functions (`attention.Steps`): K for Kᵀ, the softmax
down the columns, weightsᵀ·V, rounding too early. `MISTAKES` is the list, in
the order they are tried; to add one, write a function that yields
``(label, problem, options, steps)`` for the variants that apply to a
problem and decorate it with `mistake`. ``check`` recomputes the problem
under each variant and names the first that reproduces a wrong stage.

>>> [m.key for m in MISTAKES][:3]
['no-scaling', 'divided-by-dk', 'sqrt-d-model']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .attention import STEPS, Steps, softmax
from .describe import sqrt_text

if TYPE_CHECKING:
    import numpy as np

    from .options import Options
    from .problem import Problem, Resolved

Variants = Iterator[tuple[str, "Problem", "Options", Steps]]


@dataclass(frozen=True)
class Mistake:
    """A kind of mistake: a key, a one-line summary and the variants it yields."""

    key: str
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


MISTAKES: list[Mistake] = []


def mistake(key: str, summary: str) -> Callable[[Callable[..., Variants]], Callable[..., Variants]]:
    """Register a mistake in `MISTAKES` (in definition order)."""

    def add(make: Callable[..., Variants]) -> Callable[..., Variants]:
        MISTAKES.append(Mistake(key, summary, make))
        return make

    return add


def variants(p: Problem, o: Options, r: Resolved) -> Iterator[Variant]:
    """Every variant of every mistake that applies to this problem, in list order."""
    for m in MISTAKES:
        for label, problem, options, steps in m.make(p, o, r):
            yield Variant(m.key, label, problem, options, steps)


def _sqrt_scale(o: Options) -> bool:
    return o.scale == "sqrt"


@mistake("no-scaling", "no scaling: the scores were not divided by √d_k")
def _no_scaling(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.scale != "none":
        yield "no scaling (the scores were not divided by √d_k)", p, replace(o, scale="none"), STEPS


@mistake("divided-by-dk", "divided by d_k instead of √d_k")
def _divided_by_dk(p: Problem, o: Options, r: Resolved) -> Variants:
    d = r.d_head
    if _sqrt_scale(o) and d > 1:
        label = f"divided by d_k = {d} instead of √d_k = {sqrt_text(d)}"
        yield label, p, replace(o, scale=1 / d), STEPS


@mistake("sqrt-d-model", "scaled by √d_model instead of the per-head √d_k")
def _sqrt_d_model(p: Problem, o: Options, r: Resolved) -> Variants:
    if not _sqrt_scale(o):
        return
    widths = {}
    if "X" in r.arrays:
        widths[int(r.arrays["X"].shape[-1])] = "d_model"
    widths.setdefault(r.heads * r.d_head, "all heads' d_k together")
    d = r.d_head
    for width, what in widths.items():
        if width != d:
            label = f"divided by √{width} ({what}) instead of the per-head √d_k = {sqrt_text(d)}"
            yield label, p, replace(o, scale=1 / math.sqrt(width)), STEPS


@mistake("softmax-columns", "softmax over columns (queries) instead of rows (keys)")
def _softmax_columns(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.normalize == "softmax":
        yield "softmax taken down each column instead of along each row", p, o, _COLUMNS


@mistake("weights-transposed", "weightsᵀ·V instead of weights·V")
def _weights_transposed(p: Problem, o: Options, r: Resolved) -> Variants:
    if r.n == r.m:
        yield "output computed as weightsᵀ·V instead of weights·V", p, o, _TRANSPOSED_MIX


@mistake("k-not-transposed", "K instead of Kᵀ, or Q·Kᵀ transposed")
def _k_not_transposed(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.similarity != "dot":
        return
    if r.d_head == r.m:
        yield "scores computed as Q·K (K not transposed) instead of Q·Kᵀ", p, o, _QK
    if r.n == r.m:
        yield "scores transposed (K·Qᵀ instead of Q·Kᵀ)", p, o, _KQT


@mistake("weights-layout", "W in the other layout: X·Wᵀ instead of X·W")
def _weights_layout(p: Problem, o: Options, r: Resolved) -> Variants:
    if o.layout == "rows" and any(f"W_{n}" in r.arrays for n in "QKV"):
        other = "out-in" if o.weights_layout == "in-out" else "in-out"
        how = "X·Wᵀ instead of X·W" if other == "out-in" else "X·W instead of X·Wᵀ"
        yield f"W in the other layout ({how})", p, replace(o, weights_layout=other), STEPS


@mistake("no-softmax", "forgot the softmax")
def _no_softmax(p: Problem, o: Options, r: Resolved) -> Variants:
    yield "forgot the softmax (the scaled scores were used as weights)", p, o, _NO_SOFTMAX


@mistake("mask-polarity", "inverted mask polarity")
def _mask_polarity(p: Problem, o: Options, r: Resolved) -> Variants:
    if "mask" in p.matrices or "key_padding_mask" in p.matrices:
        flip = "block" if o.mask_polarity == "attend" else "attend"
        meaning = "1 = blocked" if flip == "block" else "1 = may attend"
        yield (
            f"mask polarity inverted (the mask read as {meaning})",
            p,
            replace(o, mask_polarity=flip),
            STEPS,
        )


def _causal_kind(p: Problem, o: Options) -> str | None:
    return o.mask or p.mask_kind


@mistake("mask-forgotten", "causal mask (or mask) forgotten")
def _mask_forgotten(p: Problem, o: Options, r: Resolved) -> Variants:
    if not r.rules.masked_by_rule:
        return
    drop = ("mask", "key_padding_mask", "valid_lens")
    bare = replace(p, matrices={k: v for k, v in p.matrices.items() if k not in drop})
    bare.mask_kind = None
    explicit = any(k in p.matrices for k in drop)
    what = "the causal mask" if _causal_kind(p, o) and not explicit else "the mask"
    yield f"{what} was forgotten", bare, replace(o, mask=None), STEPS


@mistake("causal-misaligned", "causal mask misaligned")
def _causal_misaligned(p: Problem, o: Options, r: Resolved) -> Variants:
    import numpy as np

    kind = _causal_kind(p, o)
    if kind is None or "mask" in p.matrices:
        return
    n, m = r.n, r.m
    if n != m:
        other = "causal-lower-right" if kind == "causal" else "causal"
        where = "the last key" if other == "causal-lower-right" else "the first key"
        yield f"causal mask aligned to {where} instead", p, replace(o, mask=other), STEPS
    offset = 0 if kind == "causal" else m - n
    for shift, label in (
        (1, "causal mask off by one (each query also saw the next key)"),
        (-1, "causal mask off by one (each query missed its own key)"),
    ):
        grid = np.tri(n, m, offset + shift)  # (n, m) 1 = may attend
        shifted = replace(p, matrices={**p.matrices, "mask": grid})
        shifted.mask_kind = None
        yield label, shifted, replace(o, mask=None, mask_polarity="attend"), STEPS


@mistake("rounded-early", "intermediate results rounded too early")
def _rounded_early(p: Problem, o: Options, r: Resolved) -> Variants:
    for k in (2, 1, 0, 3):
        places = "decimal" if k == 1 else "decimals"
        steps = replace(STEPS, keep=lambda name, x, k=k: _rounded(x, k))
        yield f"intermediate results rounded to {k} {places} too early", p, o, steps


def _rounded(x: np.ndarray, places: int) -> np.ndarray:
    import numpy as np

    return np.round(x, places)


# ---------------------------------------------------------------- swapped stage functions


def _columns_softmax(logits: np.ndarray, r: Resolved) -> np.ndarray:
    """Softmax down each column (over the queries) instead of along each row."""
    return softmax(logits.swapaxes(-1, -2), r.options.empty_rows).swapaxes(-1, -2)


def _no_softmax(logits: np.ndarray, r: Resolved) -> np.ndarray:
    """The (masked) scaled scores used as weights, 0 where masked."""
    import numpy as np

    return np.where(np.isfinite(logits), logits, 0.0)  # (B, h, n, m)


_COLUMNS = replace(STEPS, weights=_columns_softmax)
_NO_SOFTMAX = replace(STEPS, weights=_no_softmax)
_TRANSPOSED_MIX = replace(STEPS, mix=lambda w, v: w.swapaxes(-1, -2) @ v)  # weightsᵀ·V (n = m)
_QK = replace(STEPS, scores=lambda q, k: q @ k)  # K not transposed (d_k = m)
_KQT = replace(STEPS, scores=lambda q, k: k @ q.swapaxes(-1, -2))  # (Q·Kᵀ)ᵀ (n = m)
