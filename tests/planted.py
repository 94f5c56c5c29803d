"""Students' answers with one planted mistake, computed here in plain numpy.

Nothing here uses qkvcli's pipeline or its mistake variants: each mistake is
written out as the wrong computation itself, on random problems, so that the
tests of ``check`` compare its verdicts with an independent account.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PER_HEAD = ("scores", "scaled", "masked", "weights", "head_outputs")


@dataclass
class Case:
    """A random problem: matrices (row layout, in-out weights), heads, mask."""

    X: np.ndarray
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    heads: int = 1
    W_O: np.ndarray | None = None
    mask: str | None = None  # None | "causal" | "explicit"
    grid: np.ndarray | None = None  # the explicit 0/1 mask (1 = may attend)
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d_model(self) -> int:
        return self.X.shape[1]

    @property
    def d_k(self) -> int:
        return self.W_Q.shape[1] // self.heads

    @property
    def d_v(self) -> int:
        return self.W_V.shape[1] // self.heads

    def document(self) -> dict:
        doc = {"X": self.X.tolist(), "W_Q": self.W_Q.tolist(), "W_K": self.W_K.tolist(),
               "W_V": self.W_V.tolist()}  # fmt: skip
        if self.heads > 1:
            doc["heads"] = self.heads
        if self.W_O is not None:
            doc["W_O"] = self.W_O.tolist()
        if self.mask == "causal":
            doc["mask"] = "causal"
        elif self.mask == "explicit":
            doc["mask"] = self.grid.tolist()
        return doc

    def allowed(self) -> np.ndarray | None:
        if self.mask == "causal":
            return np.tri(self.n, dtype=bool)
        if self.mask == "explicit":
            return self.grid.astype(bool)
        return None


def random_case(rng: np.random.Generator, **want) -> Case:
    """A small problem with whole entries, its sizes drawn unless given."""
    heads = want.get("heads", int(rng.choice([1, 1, 2])))
    n = want.get("n", int(rng.integers(3, 5)))
    d_model = want.get("d_model", int(rng.integers(3, 6)))
    d_k = want.get("d_k", int(rng.integers(2, 4)))
    d_v = want.get("d_v", d_k)
    low = want.get("low", -1)
    while True:
        X = rng.integers(low, 3, (n, d_model)).astype(float)
        W = [rng.integers(low, 2, (d_model, heads * d)).astype(float) for d in (d_k, d_k, d_v)]
        if any(np.all(w == 0, axis=0).any() for w in W) or np.all(X == 0, axis=1).any():
            continue
        case = Case(X, *W, heads=heads)
        if want.get("W_O", False):
            d_out = want.get("d_out", heads * d_v)
            case.W_O = rng.integers(-1, 2, (heads * d_v, d_out)).astype(float)
        mask = want.get("mask")
        if mask == "explicit":
            grid = rng.integers(0, 2, (n, n))
            grid[np.arange(n), rng.integers(0, n, n)] = 1  # every row keeps a key
            case.mask, case.grid = "explicit", grid
        elif mask:
            case.mask = mask
        scaled = stages(case)["scaled"]
        if np.abs(scaled).max() <= 6:  # readable weights, as a teacher would pick
            return case


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = np.max(np.where(np.isfinite(x), x, -np.inf), axis=axis, keepdims=True)
    e = np.where(np.isfinite(x), np.exp(np.where(np.isfinite(x), x, 0.0) - top), 0.0)
    return e / e.sum(axis=axis, keepdims=True)


def stages(c: Case, bug: str | None = None) -> dict[str, np.ndarray]:
    """Every stage of the case, computed with the planted ``bug`` (None: the truth)."""
    X = c.X
    Wq, Wk, Wv = c.W_Q, c.W_K, c.W_V
    if bug == "layout-all":
        Wq, Wk, Wv = Wq.T, Wk.T, Wv.T
    if bug == "layout-k":
        Wk = Wk.T
    if bug == "k-from-wq":
        Wk = Wq
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    if bug == "q-is-x":
        Q = X.copy()
    if bug == "v-is-x":
        V = X.copy()
    h = c.heads
    dk = Q.shape[1] // h
    dv = V.shape[1] // h
    allowed = c.allowed()
    if bug == "mask-forgotten":
        allowed = None
    if bug == "causal-upper":
        allowed = np.triu(np.ones((c.n, c.n), dtype=bool))
    if bug == "causal+1":
        allowed = np.tri(c.n, c.n, 1, dtype=bool)
    if bug == "mask-polarity":
        allowed = ~allowed
    out: dict[str, np.ndarray] = {"Q": Q, "K": K, "V": V}
    per: dict[str, list] = {s: [] for s in PER_HEAD}
    for i in range(h):
        if bug == "heads-interleaved":
            q, k, v = Q[:, i::h], K[:, i::h], V[:, i::h]
        else:
            q, k = Q[:, i * dk : (i + 1) * dk], K[:, i * dk : (i + 1) * dk]
            v = V[:, i * dv : (i + 1) * dv]
        if bug == "weights-times-k":
            v = k
        if bug == "weights-times-x":
            v = X
        scores = q @ k.T
        if bug == "q-times-q":
            scores = q @ q.T
        if bug == "qk":
            scores = q @ k
        if bug == "kqt":
            scores = k @ q.T
        if bug == "cosine":
            scores = q @ k.T  # written right; the cosine is used as the scaled score
        factor = {
            "no-scaling": 1.0,
            "divided-by-dk": 1 / dk,
            "scale-twice": 1 / dk,
            "times-sqrt-dk": math.sqrt(dk),
            "dk-squared": 1 / dk**2,
            "sqrt-dv": 1 / math.sqrt(dv),
            "sqrt-n": 1 / math.sqrt(c.n),
            "sqrt-d-model": 1 / math.sqrt(c.d_model),
            "scale-after-softmax": 1.0,
        }.get(bug, 1 / math.sqrt(dk))
        scaled = scores * factor
        if bug == "cosine":
            scaled = scores / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(k, axis=1))
        masked = scaled
        if allowed is not None and bug != "mask-after-softmax":
            fill = 0.0 if bug == "mask-zero" else -np.inf
            masked = np.where(allowed, scaled, fill)
        if bug == "softmax-columns":
            weights = softmax(masked, axis=0)
        elif bug == "softmax-whole":
            weights = softmax(masked.reshape(1, -1)).reshape(masked.shape)
        elif bug == "exp-only":
            weights = np.where(
                np.isfinite(masked), np.exp(np.where(np.isfinite(masked), masked, 0)), 0
            )
        elif bug == "row-sum":
            z = np.where(np.isfinite(masked), masked, 0.0)
            weights = z / z.sum(axis=1, keepdims=True)
        elif bug == "argmax":
            weights = (masked == masked.max(axis=1, keepdims=True)).astype(float)
            weights /= weights.sum(axis=1, keepdims=True)
        elif bug == "sigmoid":
            weights = np.where(np.isfinite(masked), 1 / (1 + np.exp(-masked)), 0.0)
        elif bug == "no-softmax":
            weights = np.where(np.isfinite(masked), masked, 0.0)
        else:
            weights = softmax(masked)
        if bug == "mask-after-softmax":
            weights = np.where(c.allowed(), weights, 0.0)
        if bug == "scale-after-softmax":
            weights = weights / math.sqrt(dk)
        head = (weights.T if bug == "weights-transposed" else weights) @ v
        for name, val in zip(PER_HEAD, (scores, scaled, masked, weights, head)):
            per[name].append(val)
    for name in PER_HEAD:
        out[name] = np.array(per[name]) if h > 1 else per[name][0]
    if allowed is None and c.mask is None:
        del out["masked"]
    heads = per["head_outputs"][::-1] if bug == "heads-order" else per["head_outputs"]
    out["concat"] = np.concatenate(heads, axis=1)
    if bug == "heads-interleaved":
        pass  # merged in blocks, as the heads were computed
    out["output"] = out["concat"]
    if c.W_O is not None:
        out["output"] = {
            "wo-forgotten": out["concat"],
            "wo-transposed": out["concat"] @ c.W_O.T,
        }.get(bug, out["concat"] @ c.W_O)
    if c.mask is None:
        out.pop("masked", None)
    if h == 1:
        out.pop("head_outputs")
        if c.W_O is None:
            out.pop("concat")
    return out


def text(v: float, places: int = 4) -> str:
    """A value as a student writes it."""
    if np.isneginf(v):
        return "-inf"
    return f"{v:.{places}f}"


def sheet(values: dict[str, np.ndarray], names: list[str], places: int = 4) -> dict:
    """An answer sheet (JSON-ready) of the named stages, written to ``places`` decimals."""
    return {n: np.vectorize(lambda v: text(v, places), otypes=[object])(values[n]).tolist()
            for n in names if n in values}  # fmt: skip


def check_verdicts(report, truth: dict, wrong: dict, names: list[str], places: int = 4) -> str:
    """Every cell: right where the student's number is the truth as rounded, wrong at the
    first stage that departs, consistent after it."""
    first = next(
        n
        for n in names
        if n in wrong
        and (truth[n].shape != wrong[n].shape or not same_text(truth[n], wrong[n], places))
    )
    order = list(truth)
    for cell in report.cells:
        if truth[cell.stage].shape != wrong[cell.stage].shape:  # e.g. weights·X: another shape
            assert cell.verdict == "wrong", cell
            assert cell.stage in {first, *report.findings[0].more}, cell
            continue
        t, w = truth[cell.stage][cell.index], wrong[cell.stage][cell.index]
        coarse = cell.written.decimals is not None and cell.written.decimals < places
        if text(t, places) == text(w, places):
            assert cell.verdict == "right", cell
        elif abs(w - t) > 0.02 * max(1.0, abs(t)) and not coarse:  # "0.8700" is marked as 0.87
            if order.index(cell.stage) < order.index(first):
                raise AssertionError(f"{cell} departs before {first}")
            want = "wrong" if cell.stage == first else ("consistent", "wrong")
            assert cell.verdict in ((want,) if isinstance(want, str) else want), cell
            if cell.stage == first:
                continue
            if cell.stage not in {first, *report.findings[0].more}:
                assert cell.verdict == "consistent", cell
    return first


def visible(truth: dict, wrong: dict) -> bool:
    """Does some stage show the mistake clearly (beyond 2% of a value)?"""
    for name, t in truth.items():
        w = wrong[name]
        if t.shape != w.shape:
            return True
        both = np.isfinite(t) & np.isfinite(w)
        if np.any(np.isfinite(t) != np.isfinite(w)):
            return True
        with np.errstate(invalid="ignore"):
            far = np.abs(w - t) > 0.02 * np.maximum(1.0, np.abs(t))
        if np.any(far & both):
            return True
    return False


def same_text(a: np.ndarray, b: np.ndarray, places: int) -> bool:
    """Do two stages read the same when written to ``places`` decimals?"""
    if a.shape != b.shape:
        return False
    return np.array_equal(np.vectorize(lambda v: text(v, places))(a),
                          np.vectorize(lambda v: text(v, places))(b))  # fmt: skip
