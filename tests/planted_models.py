"""Students' answers to problems with today's variants, one planted mistake each, in plain numpy.

The variants (RoPE, QK-norm, soft-cap, sinks, ALiBi, sliding windows,
chunks, the decode step with a KV cache) are written out here from their
formulas, and every mistake as the wrong computation itself, without
qkvcli's pipeline or its mistake variants: the tests of ``check`` compare
its verdicts and diagnoses with this independent account.

    RoPE (Su et al.; Hugging Face's rotate_half and GPT-J's rotate_every_two):
        pair (a, b) of a head's features turns by θ = position · base^(−2p/dim):
        a' = a·cos θ − b·sin θ, b' = b·cos θ + a·sin θ
        half: pairs (p, p + dim/2); interleaved: pairs (2p, 2p + 1)
    QK-norm: x / √(mean(x²) + eps) · w (Gemma: · (1 + w)), per head or over the row
    soft-cap (Gemma 2): c·tanh(s / c), after the scale, before the bias and the mask
    sinks (gpt-oss): w_j = e^{z_j} / (Σ_k e^{z_k} + e^{sink_h})
    ALiBi (BLOOM): + m_h·(j − i), slopes 2^(−8h/H) for a power of two H
    window W: i − W < j ≤ i; chunks C: ⌊i/C⌋ = ⌊j/C⌋ (i = the query's index among the keys)
    decode: keys and values = [cache; new], the new tokens at positions P, P + 1, …
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PER_HEAD = ("scores", "scaled", "capped", "masked", "weights", "head_outputs")


def slopes_of(H: int) -> np.ndarray:
    """ALiBi's slopes as BLOOM's build_alibi_tensor computes them (any H)."""
    closest = 2 ** math.floor(math.log2(H))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    out = [base**k for k in range(1, closest + 1)]
    if closest != H:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        out += [extra**k for k in range(1, 2 * (H - closest), 2)]
    return np.array(out)


@dataclass
class ModelCase:
    """A random problem with some of today's variants (row layout, in-out weights)."""

    X: np.ndarray  # the new tokens' rows
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    heads: int = 1
    causal: bool = False
    rope: str | None = None
    theta: float = 10000.0
    factor: float = 1.0
    offset: int | None = None  # position_offset, when given
    qk_norm: str | None = None
    q_norm: np.ndarray | None = None
    k_norm: np.ndarray | None = None
    unit_offset: bool = False
    eps: float = 1e-6
    cap: float | None = None
    sinks: np.ndarray | None = None
    alibi: bool = False
    window: int | None = None
    chunk: int | None = None
    past_key: np.ndarray | None = None
    past_value: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def past(self) -> int:
        return 0 if self.past_key is None else self.past_key.shape[0]

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
        if self.causal:
            doc["mask"] = "causal"
        if self.rope:
            doc["rope"] = self.rope
            doc["rope_theta"] = self.theta
            if self.factor != 1:
                doc["partial_rotary_factor"] = self.factor
            if self.offset is not None:
                doc["position_offset"] = self.offset
        if self.qk_norm:
            doc["qk_norm"] = self.qk_norm
            doc["rms_norm_eps"] = self.eps
            if self.unit_offset:
                doc["rms_norm_unit_offset"] = True
            for name in ("q_norm", "k_norm"):
                if getattr(self, name) is not None:
                    doc[name] = getattr(self, name).tolist()
        if self.cap is not None:
            doc["attn_logit_softcapping"] = self.cap
        if self.sinks is not None:
            doc["sinks"] = self.sinks.tolist()
        if self.alibi:
            doc["alibi"] = True
        if self.window is not None:
            doc["sliding_window"] = self.window
        if self.chunk is not None:
            doc["attention_chunk_size"] = self.chunk
        if self.past_key is not None:
            doc["past_key"] = self.past_key.tolist()
            doc["past_value"] = self.past_value.tolist()
        return doc


# ---------------------------------------------------------------- the formulas, by hand


def rms(x: np.ndarray, w: np.ndarray | None, eps: float, unit: bool, l2: bool = False, rnd=None):
    """RMSNorm of each row of x (…, d); ``l2``: divided by the length instead (a mistake);
    ``rnd``: how a hand computation rounds the RMS before dividing by it."""
    rnd = rnd or (lambda v: v)
    if l2:
        y = x / np.sqrt((x * x).sum(axis=-1, keepdims=True))
    else:
        y = x / rnd(np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps))
    if w is None:
        return y
    return y * (1 + w) if unit else y * w


def norm_rows(c: ModelCase, x: np.ndarray, w, count: int, scope: str, unit: bool,
              l2: bool = False, rnd=None):  # fmt: skip
    """QK-norm of x (rows, count·d) per head, or over each whole row."""
    if scope == "all":
        ww = None if w is None else (w if w.shape[0] == x.shape[1] else np.tile(w, count))
        return rms(x, ww, c.eps, unit, l2, rnd)
    d = x.shape[1] // count
    ww = None if w is None else (w if w.shape[0] == d else w.reshape(count, d))
    out = rms(x.reshape(x.shape[0], count, d), ww, c.eps, unit, l2, rnd)
    return out.reshape(x.shape)


def rotate(x: np.ndarray, positions, pairing: str, dim: int, theta: float, count: int, rnd=None):
    """RoPE of x (rows, count·d) at one position per row, feature pair by feature pair;
    ``rnd``: how a hand computation rounds cos θ and sin θ."""
    rnd = rnd or (lambda v: v)
    rows, width = x.shape
    d = width // count
    out = x.astype(float).copy()
    for r in range(rows):
        for h in range(count):
            for p in range(dim // 2):
                a, b = (p, p + dim // 2) if pairing == "half" else (2 * p, 2 * p + 1)
                angle = positions[r] * theta ** (-2 * p / dim)
                xa, xb = x[r, h * d + a], x[r, h * d + b]
                cos, sin = rnd(math.cos(angle)), rnd(math.sin(angle))
                out[r, h * d + a] = xa * cos - xb * sin
                out[r, h * d + b] = xb * cos + xa * sin
    return out


def allowed_grid(
    c: ModelCase, n: int, m: int, q0: int, bug: str | None = None
) -> np.ndarray | None:
    """Which keys each query may attend: causal, window, chunks (query i at index i + q0)."""
    if not (c.causal or q0 or c.window or c.chunk or bug == "cache-forgotten"):
        return None
    window, chunk = c.window, c.chunk
    window = {"window+1": window and window + 1, "window-1": window and window - 1,
              "window-forgotten": None}.get(bug, window)  # fmt: skip
    chunk = {"chunk+1": chunk and chunk + 1, "chunk-1": chunk and chunk - 1,
             "chunk-forgotten": None}.get(bug, chunk)  # fmt: skip
    shift = {"chunk-early": 1, "chunk-late": -1}.get(bug, 0)
    causal = c.causal or q0 > 0 or c.window is not None or bug == "cache-forgotten"
    ok = np.ones((n, m), dtype=bool)
    for i in range(n):
        at = i + q0
        for j in range(m):
            if causal:
                ok[i, j] &= j <= (i if bug == "decode-causal" else at)
            if window is not None:
                ok[i, j] &= at - window < j <= at
            if chunk is not None:
                ok[i, j] &= (at + shift) // chunk == (j + shift) // chunk
    return ok


def softmax_row(z: np.ndarray, sink: float | None, bug: str | None = None) -> np.ndarray:
    live = np.isfinite(z)
    if not live.any():
        return np.zeros(len(z)) if sink is not None else np.full(len(z), np.nan)
    if bug == "sink-added-to-logits" and sink is not None:
        z = z + sink
    top = max(z[live].max(), -np.inf if sink is None else sink) if live.any() else sink
    e = np.where(live, np.exp(np.where(live, z, 0) - top), 0.0)
    s = 0.0 if sink is None else math.exp(sink - top)
    if bug == "sink-in-numerators":
        return np.where(live, e + s, 0.0) / (e.sum() + s)
    return e / (e.sum() + s)


def stages(c: ModelCase, bug: str | None = None) -> dict[str, np.ndarray]:
    """Every stage of the case, computed with the planted ``bug`` (None: the truth)."""
    H, P, n = c.heads, c.past, c.n
    f = 1 / math.sqrt(c.d_k)
    dim = int(c.d_k * c.factor)
    start = P if c.offset is None else c.offset
    positions = start + np.arange(n)
    if bug == "rope-pos+1":
        positions = positions + 1
    if bug == "rope-pos-1":
        positions = positions - 1
    if bug == "rope-pos-zero":
        positions = np.arange(n)
    pairing = c.rope
    if bug == "rope-pairing":
        pairing = "interleaved" if c.rope == "half" else "half"
    Q, K_new, V_new = c.X @ c.W_Q, c.X @ c.W_K, c.X @ c.W_V
    if bug == "rope-on-v":
        V_new = rotate(V_new, positions, pairing, dim, c.theta, H)
    cache_k = np.zeros((0, K_new.shape[1])) if c.past_key is None else c.past_key
    cache_v = np.zeros((0, V_new.shape[1])) if c.past_value is None else c.past_value
    if bug == "cache-forgotten":  # only the new tokens, at their own positions
        cache_k, cache_v, P = cache_k[:0], cache_v[:0], 0
    out = {"Q": Q, "K": np.vstack([cache_k, K_new]), "V": np.vstack([cache_v, V_new])}
    q_rows, k_rows = Q, K_new
    if c.qk_norm:
        scope = c.qk_norm
        if bug == "qk-norm-scope":
            scope = "all" if scope == "head" else "head"
        unit = c.unit_offset != (bug == "qk-norm-offset")
        qw, kw = (None, None) if bug == "qk-norm-weight" else (c.q_norm, c.k_norm)
        if bug == "qk-norm-weight":
            unit = False
        l2 = bug == "qk-norm-l2"
        if bug == "qk-norm-forgotten":
            q_rows, k_rows = Q, K_new
            cached = cache_k
        else:
            q_rows = norm_rows(c, Q, qw, H, scope, unit, l2)
            k_rows = norm_rows(c, K_new, kw, H, scope, unit, l2)
            cached = cache_k
            if bug == "cache-again-norm":
                cached = norm_rows(c, cache_k, kw, H, scope, unit)
        out["Q_normed"], out["K_normed"] = q_rows, np.vstack([cached, k_rows])
        cache_k = cached
    if c.rope:
        if bug != "rope-forgotten":
            q_rows = rotate(q_rows, positions, pairing, dim, c.theta, H)
            k_rows = rotate(k_rows, positions, pairing, dim, c.theta, H)
            if bug == "cache-again-rope":
                cache_k = rotate(cache_k, np.arange(P), pairing, dim, c.theta, H)
        out["Q_rotated"], out["K_rotated"] = q_rows, np.vstack([cache_k, k_rows])
    K_all = np.vstack([cache_k, k_rows])
    V_all = out["V"]
    if bug == "rope-on-v-late":
        V_all = np.vstack([cache_v, rotate(V_new, positions, pairing, dim, c.theta, H)])
    m = K_all.shape[0]
    allowed = allowed_grid(c, n, m, P, bug)
    slopes = slopes_of(H) if c.alibi else None
    if slopes is not None:
        if bug == "alibi-reversed":
            slopes = slopes[::-1]
        if bug == "alibi-sign":
            slopes = -slopes
        if bug == "alibi-plain":
            slopes = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
        if bug == "alibi-forgotten":
            slopes = None
    sinks = c.sinks
    if bug == "sinks-forgotten":
        sinks = None
    if bug == "sink-reversed":
        sinks = sinks[::-1]
    per = {s: [] for s in PER_HEAD}
    d, dv = c.d_k, c.d_v
    for h in range(H):
        q, k = q_rows[:, h * d : (h + 1) * d], K_all[:, h * d : (h + 1) * d]
        v = V_all[:, h * dv : (h + 1) * dv]
        scores = q @ k.T
        scaled = scores * f
        if bug == "softcap-before-scale-2":
            scaled = c.cap * np.tanh(scores / c.cap)
        bias = 0.0
        if slopes is not None:
            q0 = 0 if bug == "alibi-position" else P
            bias = slopes[h] * (np.arange(m)[None, :] - (np.arange(n)[:, None] + q0))
        logits = scaled + bias
        capped = None
        if c.cap is not None:
            capped = {
                "softcap-before-scale": f * c.cap * np.tanh(scores / c.cap),
                "softcap-before-scale-2": scaled * f,
                "softcap-forgotten": scaled,
                "softcap-no-c": np.tanh(scaled / c.cap),
                "softcap-no-divide": c.cap * np.tanh(scaled),
            }.get(bug, c.cap * np.tanh(scaled / c.cap)) + bias
            logits = capped
        masked = logits if allowed is None else np.where(allowed, logits, -np.inf)
        sink = None if sinks is None else float(sinks[h])
        weights = np.array([softmax_row(row, sink, bug) for row in masked])
        head = weights @ v
        shown = logits if c.cap is None else scaled  # without a cap, scaled holds the bias
        for name, val in zip(PER_HEAD, (scores, shown, capped, masked, weights, head)):
            per[name].append(val)
    for name in PER_HEAD:
        if per[name][0] is None:
            continue
        out[name] = np.array(per[name]) if H > 1 else per[name][0]
    if allowed is None:
        del out["masked"]
    out["concat"] = np.concatenate(per["head_outputs"], axis=1)
    out["output"] = out["concat"]
    if H == 1:
        out.pop("head_outputs")
        out.pop("concat")
    return out


# ---------------------------------------------------------------- random problems


def random_model_case(rng: np.random.Generator, variants: set[str], **want) -> ModelCase:
    """A small problem with the ``variants`` in force (rope, rope-interleaved, partial,
    qk-norm, qk-norm-all, gemma, softcap, sinks, alibi, window, chunk, causal, decode),
    sizes drawn unless given; the logits kept readable, as a teacher would pick."""
    while True:
        heads = want.get("heads", int(rng.choice([1, 2])))
        rotary = {"rope", "rope-interleaved", "partial"} & variants
        d_k = want.get("d_k", 4 if rotary else int(rng.choice([2, 4])))
        n_all = want.get("n", int(rng.integers(4, 6)))
        d_model = want.get("d_model", int(rng.integers(3, 5)))
        X = rng.integers(-1, 3, (n_all, d_model)).astype(float)
        W = [rng.integers(-1, 2, (d_model, heads * d_k)).astype(float) for _ in range(3)]
        if any(np.all(w == 0, axis=0).any() for w in W) or np.all(X == 0, axis=1).any():
            continue
        c = ModelCase(X, *W, heads=heads)
        if "causal" in variants:
            c.causal = True
        if variants & {"rope", "rope-interleaved", "partial"}:
            c.rope = "interleaved" if "rope-interleaved" in variants else "half"
            c.theta = float(rng.choice([100.0, 10000.0]))
            c.factor = 0.5 if "partial" in variants else 1.0
            if "offset" in variants:
                c.offset = int(rng.integers(1, 4))
        if variants & {"qk-norm", "qk-norm-all", "gemma"}:
            c.qk_norm = "all" if "qk-norm-all" in variants else "head"
            width = d_k if c.qk_norm == "head" else heads * d_k
            c.q_norm = rng.choice([0.5, 1.0, 1.5, 2.0], width)
            c.k_norm = rng.choice([0.5, 1.0, 1.5, 2.0], width)
            if "gemma" in variants:
                c.unit_offset = True
                c.q_norm, c.k_norm = c.q_norm - 1, c.k_norm - 1
        if "softcap" in variants:
            c.cap = want.get("cap", float(rng.choice([1.0, 2.0, 3.0])))
        if "sinks" in variants:
            c.sinks = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], heads, replace=False)
        if "alibi" in variants:
            c.alibi = True
        if "window" in variants:
            c.window = int(rng.integers(2, 4))
        if "chunk" in variants:
            c.chunk = int(rng.integers(2, 4))
        if "decode" in variants:
            P = int(rng.integers(2, n_all - 1))
            full = ModelCase(**{**c.__dict__, "causal": True})
            prefix = stages(full)
            last = "K_rotated" if c.rope else "K_normed" if c.qk_norm else "K"
            c.past_key = prefix[last][:P]
            c.past_value = prefix["V"][:P]
            c.X = X[P:]
            c.causal = False
        truth = stages(c)
        logits = truth.get("capped", truth["scaled"])
        if np.abs(logits).max() <= 6 and np.abs(truth["scaled"]).max() <= 8:
            return c


def text(v: float, places: int = 4) -> str:
    """A value as a student writes it."""
    if np.isneginf(v):
        return "-inf"
    return f"{v:.{places}f}"


def sheet(values: dict[str, np.ndarray], names: list[str], places: int = 4) -> dict:
    """An answer sheet (JSON-ready) of the named stages, written to ``places`` decimals."""
    return {n: np.vectorize(lambda v: text(v, places), otypes=[object])(values[n]).tolist()
            for n in names if n in values}  # fmt: skip
