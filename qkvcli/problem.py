"""What the user asked for: the matrices (`Problem`) and the settings (`Options`).

`resolve` checks that the shapes fit together and brings everything to one
canonical form — rows are tokens, ``Q = X·W_Q + b_Q`` with W as
d_model × d_k, a batch axis and a head axis always present — so that
`attention.run` has one path for every layout and variant.

>>> import numpy as np
>>> p = Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.ones((2, 3))})
>>> r = resolve(p, Options())
>>> r.n, r.m, r.d_head, round(r.scale, 4)
(2, 2, 2, 0.7071)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import OptionError, ShapeError, shape_str

if TYPE_CHECKING:
    import numpy as np

LAYOUTS = ("rows", "columns")
WEIGHTS_LAYOUTS = ("in-out", "out-in")
MASK_KINDS = ("causal", "causal-lower-right")
POLARITIES = ("attend", "block")
EMPTY_ROWS = ("error", "nan", "zero", "uniform")
SIMILARITIES = ("dot", "cosine")
NORMALIZERS = ("softmax", "sigmoid")
DTYPES = ("float64", "float32")
SCORES_RULES = ("QKt", "QK", "KQt")
SOFTMAX_AXES = ("keys", "queries")

#: Every matrix a problem can hold, by its canonical name.
MATRICES = (
    "X", "X_kv", "Q", "K", "V", "W_Q", "W_K", "W_V", "W_O",
    "b_Q", "b_K", "b_V", "b_O", "mask", "attn_bias", "valid_lens", "key_padding_mask",
)  # fmt: skip


@dataclass
class Problem:
    """The matrices as the user gave them, with where each one came from.

    ``sources`` maps a canonical name to what was read (``"w_query"`` or
    ``"WQ.csv"``); ``origin`` names the input file.
    """

    matrices: dict[str, np.ndarray]
    tokens: list[str] | None = None
    kv_tokens: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    origin: str = "<input>"
    mask_kind: str | None = None  # "causal" | "causal-lower-right" when given by name
    torch_key: str | None = None  # a PyTorch state-dict key read: weights are (out, in)


@dataclass(frozen=True)
class Options:
    """How to compute: scale, layouts, heads, masks, similarity, normaliser.

    ``scale`` is ``"sqrt"`` (1/√d_k, per head), ``"none"`` or a number.
    """

    scale: str | float = "sqrt"
    layout: str = "rows"
    weights_layout: str = "in-out"
    heads: int | None = None
    kv_heads: int | None = None
    mask: str | None = None
    mask_polarity: str = "attend"
    empty_rows: str = "error"
    similarity: str = "dot"
    normalize: str = "softmax"
    temperature: float = 1.0
    dtype: str = "float64"
    # Exact arithmetic (exact.py) and the variants that reproduce common mistakes
    # (mistakes.py); a correct run leaves these at their defaults.
    exact: bool = False  # fractions for the linear stages, the scale kept as a surd
    scores_rule: str = "QKt"  # Q·Kᵀ; "QK" = K not transposed; "KQt" = (Q·Kᵀ)ᵀ
    softmax_axis: str = "keys"  # "queries" = softmax down each column
    skip_softmax: bool = False  # weights = the (masked) scaled scores themselves
    weights_transposed: bool = False  # head output = weightsᵀ·V
    round_to: int | None = None  # round each intermediate stage to this many decimals

    def merged(self, settings: dict[str, Any]) -> Options:
        """These options with ``settings`` (already validated values) on top."""
        return replace(self, **{k: v for k, v in settings.items() if v is not None})


@dataclass
class Resolved:
    """A problem in canonical form, shapes checked. Arrays carry (batch, …) axes."""

    problem: Problem
    options: Options
    arrays: dict[str, np.ndarray]  # canonical, batch axis first: X (B,n,d) W_Q (d,dq)
    batched: bool  # the user gave a batch axis
    B: int
    n: int
    m: int
    heads: int
    kv_heads: int
    d_head: int
    dv_head: int
    scale: float
    allowed: np.ndarray | None  # (B|1, h|1, n, m) bool: True = may attend
    bias: np.ndarray | None  # (B|1, h|1, n, m) additive
    multihead: bool = False  # head stages shown per head
    per_head_given: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def cross(self) -> bool:
        """True when keys and values come from a second sequence."""
        return "X_kv" in self.arrays or self.n != self.m


def parse_scale(text: str | float | int) -> str | float:
    """Read a scale setting: ``sqrt``, ``none`` or a positive number.

    >>> parse_scale("0.5"), parse_scale("SQRT"), parse_scale(2)
    (0.5, 'sqrt', 2.0)
    """
    if isinstance(text, bool):
        raise OptionError(f"scale must be sqrt, none or a number, not {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in ("sqrt", "none"):
            return word
        try:
            value = float(word)
        except ValueError:
            raise OptionError(f"scale must be sqrt, none or a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise OptionError(f"scale must be a positive finite number, not {text!r}")
    return value


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``allowed`` and return it.

    >>> choice("layout", "rows", LAYOUTS)
    'rows'
    """
    if not isinstance(value, str) or value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    """Check a count such as ``heads``.

    >>> positive_int("heads", 2)
    2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive whole number, not {value!r}")
    return value


def validate_options(o: Options) -> Options:
    """Check every setting of ``o``; raise `OptionError` naming the bad one."""
    choice("layout", o.layout, LAYOUTS)
    choice("weights_layout", o.weights_layout, WEIGHTS_LAYOUTS)
    choice("mask_polarity", o.mask_polarity, POLARITIES)
    choice("empty_rows", o.empty_rows, EMPTY_ROWS)
    choice("similarity", o.similarity, SIMILARITIES)
    choice("normalize", o.normalize, NORMALIZERS)
    choice("dtype", o.dtype, DTYPES)
    choice("scores_rule", o.scores_rule, SCORES_RULES)
    choice("softmax_axis", o.softmax_axis, SOFTMAX_AXES)
    if o.exact and o.similarity != "dot":
        raise OptionError("exact arithmetic works with dot-product similarity, not cosine")
    if o.round_to is not None and (isinstance(o.round_to, bool) or not isinstance(o.round_to, int)):
        raise OptionError(f"round_to must be a whole number, not {o.round_to!r}")
    if o.mask is not None:
        choice("mask", o.mask, MASK_KINDS)
    for name in ("heads", "kv_heads"):
        if getattr(o, name) is not None:
            positive_int(name, getattr(o, name))
    t = o.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise OptionError(f"temperature must be a positive finite number, not {t!r}")
    return replace(o, scale=parse_scale(o.scale))


def _t(a: np.ndarray) -> np.ndarray:
    """Swap the last two axes."""
    return a.swapaxes(-1, -2)


def _with_batch(a: np.ndarray, name: str) -> np.ndarray:
    """Give a token matrix a leading batch axis: (n, d) → (1, n, d)."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        return a
    raise ShapeError(f"{name} must be a matrix or a list of matrices (a batch), not {a.ndim}-D")


def _weight(p: Problem, name: str, o: Options, d_in: int | None, src: str) -> np.ndarray | None:
    """W as d_in × d_out (in-out), per-head lists joined.

    Per-head W_Q/W_K/W_V blocks sit side by side (head i = column block i);
    per-head W_O blocks are stacked (head i's output = row block i).
    """
    w = p.matrices.get(name)
    if w is None:
        return None
    import numpy as np

    out_in = o.weights_layout == "out-in" or o.layout == "columns"
    if w.ndim not in (2, 3):
        raise ShapeError(f"{name} must be a matrix or a list of per-head matrices, not {w.ndim}-D")
    blocks = list(w) if w.ndim == 3 else [w]
    if d_in is not None:
        fits = blocks[0].shape[1 if out_in else 0] == d_in
        if not fits:
            shape = shape_str(blocks[0].shape)
            what = "rows" if o.layout == "columns" else "columns"
            msg = f"{label(p, name)} is {shape} but {label(p, src)} has {d_in} {what}"
            if o.layout == "columns":
                msg += f" (layout columns: {name} must be d_k×{d_in})"
            elif out_in:
                msg += f" (weights layout out-in: {name} must be d_k×{d_in})"
            if blocks[0].shape[0 if out_in else 1] == d_in:
                msg += ": did you mean " + _transpose_hint(o)
            raise ShapeError(msg)
    axis = 0 if name == "W_O" else -1
    return np.concatenate([b.T if out_in else b for b in blocks], axis=axis)


def _transpose_hint(o: Options) -> str:
    """What to try when a W fits only transposed."""
    if o.layout == "columns":
        return "its transpose?"
    other = "in-out" if o.weights_layout == "out-in" else "out-in"
    return f"its transpose (--weights-layout {other})?"


def _bias(p: Problem, name: str, width: int, of: str) -> np.ndarray | None:
    b = p.matrices.get(name)
    if b is None:
        return None
    b = b.reshape(-1)  # per-head lists are joined
    if b.shape[0] != width:
        raise ShapeError(f"{label(p, name)} has {b.shape[0]} values but {of} has {width} columns")
    return b


def _direct(p: Problem, name: str, o: Options) -> np.ndarray | None:
    a = p.matrices.get(name)
    if a is None:
        return None
    a = _with_batch(a, name)
    return _t(a) if o.layout == "columns" else a


def label(p: Problem, name: str) -> str:
    """A matrix's name as the user wrote it: ``W_Q (w_query)``.

    >>> label(Problem({}, sources={"W_Q": "w_query"}), "W_Q")
    'W_Q (w_query)'
    """
    source = p.sources.get(name, name)
    return name if source == name else f"{name} ({source})"


def resolve(p: Problem, o: Options) -> Resolved:
    """Check shapes and bring ``p`` to canonical form; see the module docstring.

    Shape errors are prefixed with the input's name.
    """
    try:
        return _resolve(p, o)
    except ShapeError as e:
        if p.origin == Problem.origin:
            raise
        raise ShapeError(f"{p.origin}: {e}") from None


def _resolve(p: Problem, o: Options) -> Resolved:
    o = validate_options(o)
    mats = p.matrices
    for name in ("Q", "K", "V"):
        if name in mats and f"W_{name}" in mats:
            raise ShapeError(f"both {name} and W_{name} are given: give one or the other")
    need_x = any(f"W_{n}" in mats for n in "QKV") and not all(n in mats for n in "QKV")
    arrays: dict[str, np.ndarray] = {}
    x = _direct(p, "X", o)
    x_kv = _direct(p, "X_kv", o)
    if x_kv is not None and x is None:
        raise ShapeError("X_kv (memory) is given but X is missing: queries come from X")
    missing = [n for n in "QKV" if n not in mats and f"W_{n}" not in mats]
    if missing:
        names = " and ".join(f"W_{n} (or {n})" for n in missing)
        raise ShapeError(f"missing matrix: {names}")
    if need_x and x is None:
        raise ShapeError("missing matrix: X (W_Q, W_K, W_V project the rows of X)")
    rows_word = "rows" if o.layout == "rows" else "columns"
    cols_word = "columns" if o.layout == "rows" else "rows"

    if p.torch_key is not None and o.weights_layout != "out-in":
        raise OptionError(
            f"{p.torch_key} holds PyTorch (out, in) weights: weights_layout must be out-in, "
            f"not {o.weights_layout}"
        )

    def project(n: str, src: np.ndarray | None, src_name: str) -> tuple[int, ...]:
        """Record W_n/b_n (or n itself) and return the shape n will have."""
        direct = _direct(p, n, o)
        if direct is not None:
            if f"b_{n}" in mats:
                raise ShapeError(f"b_{n} is given but W_{n} is missing ({n} is given directly)")
            arrays[n] = direct
            return direct.shape
        assert src is not None
        w = _weight(p, f"W_{n}", o, src.shape[-1], src_name)
        assert w is not None
        arrays[f"W_{n}"] = w
        b = _bias(p, f"b_{n}", w.shape[1], f"W_{n}")
        if b is not None:
            arrays[f"b_{n}"] = b
        return (*src.shape[:-1], w.shape[1])

    kv_src, kv_name = (x_kv, "X_kv") if x_kv is not None else (x, "X")
    if x is not None:
        arrays["X"] = x
    if x_kv is not None:
        arrays["X_kv"] = x_kv
    if x is not None and kv_src is not None and x.shape[0] != kv_src.shape[0]:
        raise ShapeError(f"X has {x.shape[0]} batch items but X_kv has {kv_src.shape[0]}")
    q, k, v = project("Q", x, "X"), project("K", kv_src, kv_name), project("V", kv_src, kv_name)
    # Per-head weight lists say how many heads there are.
    listed = {
        n: len(mats[f"W_{n}"])
        for n in "QKV"
        if mats.get(f"W_{n}") is not None and mats[f"W_{n}"].ndim == 3
    }
    heads = o.heads or listed.get("Q") or 1
    if "Q" in listed and listed["Q"] != heads:
        raise ShapeError(f"W_Q lists {listed['Q']} heads but heads is {heads}")
    kv_heads = o.kv_heads or listed.get("K") or heads
    for n in "KV":
        if n in listed and listed[n] != kv_heads:
            raise ShapeError(f"W_{n} lists {listed[n]} heads but kv_heads is {kv_heads}")
    B = max(a[0] for a in (q, k, v))
    for name, a in (("Q", q), ("K", k), ("V", v)):
        if a[0] not in (1, B):
            raise ShapeError(f"{name} has {a[0]} batch items but another matrix has {B}")
    if k[-2] != v[-2]:
        raise ShapeError(f"K has {k[-2]} {rows_word} but V has {v[-2]}: every key needs one value")
    n, m, dq, dv = q[-2], k[-2], q[-1], v[-1]
    if dq % heads:
        raise ShapeError(f"heads={heads} does not divide d_k={dq} (Q has {dq} {cols_word})")
    if heads % kv_heads:
        raise ShapeError(f"kv_heads={kv_heads} does not divide heads={heads}")
    d_head = dq // heads
    if k[-1] != kv_heads * d_head:
        if kv_heads == heads:
            raise ShapeError(
                f"Q is {shape_str(q[1:])} but K is {shape_str(k[1:])}: "
                f"Q·Kᵀ needs Q and K to have the same number of {cols_word}"
            )
        raise ShapeError(
            f"K has {k[-1]} {cols_word} but kv_heads={kv_heads} key heads "
            f"of d_k={d_head} need {kv_heads * d_head}"
        )
    if dv % kv_heads:
        raise ShapeError(f"kv_heads={kv_heads} does not divide d_v={dv} (V has {dv} {cols_word})")
    dv_head = dv // kv_heads

    w_o = _weight(p, "W_O", o, None, "concat")
    if w_o is not None:
        width = heads * dv_head
        if w_o.shape[0] != width:
            user = p.matrices["W_O"].shape
            need = "columns" if o.weights_layout == "out-in" or o.layout == "columns" else "rows"
            msg = (
                f"{label(p, 'W_O')} is {shape_str(user)} but concat has {width} {cols_word} "
                f"(heads × d_v = {heads}×{dv_head}): W_O needs {width} {need}"
            )
            if p.matrices["W_O"].ndim == 2 and w_o.shape[1] == width:
                msg += "; did you mean " + _transpose_hint(o)
            raise ShapeError(msg)
        arrays["W_O"] = w_o
        b_o = _bias(p, "b_O", w_o.shape[1], "W_O")
        if b_o is not None:
            arrays["b_O"] = b_o
    elif "b_O" in mats:
        raise ShapeError("b_O is given but W_O is missing")

    if p.tokens is not None and len(p.tokens) != n:
        raise ShapeError(f"tokens has {len(p.tokens)} labels but there are {n} queries")
    if p.kv_tokens is not None and len(p.kv_tokens) != m:
        raise ShapeError(f"kv_tokens has {len(p.kv_tokens)} labels but there are {m} keys")

    scale = {"sqrt": 1 / math.sqrt(d_head), "none": 1.0}.get(o.scale, o.scale)  # type: ignore[arg-type]
    allowed = _allowed(p, o, B, heads, n, m)
    bias = _attn_bias(p, B, heads, n, m)
    batched = any(mats[k].ndim == 3 for k in ("X", "Q", "K", "V") if k in mats)
    return Resolved(
        problem=p, options=o, arrays=arrays, batched=batched, B=B, n=n, m=m,
        heads=heads, kv_heads=kv_heads, d_head=d_head, dv_head=dv_head, scale=float(scale),
        allowed=allowed, bias=bias, multihead=heads > 1, per_head_given=bool(listed),
    )  # fmt: skip


def _grid(a: np.ndarray, name: str, B: int, h: int, n: int, m: int) -> np.ndarray:
    """Broadcast a mask-like (n,m) / (B,n,m) / (B,h,n,m) array to (B|1, h|1, n, m)."""
    import numpy as np

    if a.ndim < 2 or a.ndim > 4 or a.shape[-2:] != (n, m):
        raise ShapeError(
            f"{name} is {shape_str(a.shape)} but the scores are {n}×{m} (queries × keys)"
        )
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if a.shape[0] not in (1, B) or a.shape[1] not in (1, h):
        raise ShapeError(
            f"{name} is {shape_str(a.shape)} but the scores are {B}×{h}×{n}×{m} (batch × heads × queries × keys)"
        )
    return np.asarray(a)


def causal(n: int, m: int, k: int) -> np.ndarray:
    """``np.tri(n, m, k, dtype=bool)`` (key j ≤ query i + k) as a read-only view of n + m bytes.

    Row i is the same run of bytes as row i − 1, one place later, so a causal
    mask costs no n×m memory (the streamed evaluation relies on it).

    >>> import numpy as np
    >>> causal(3, 4, 0).astype(int).tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    >>> all((causal(n, m, k) == np.tri(n, m, k, dtype=bool)).all()
    ...     for n in (1, 5) for m in (1, 4) for k in (-6, -1, 0, 2, 7))
    True
    """
    import numpy as np

    line = np.arange(n + m - 1) - (n - 1) <= k  # line[t]: key − query = t − (n − 1)
    return np.lib.stride_tricks.as_strided(
        line[n - 1 :], shape=(n, m), strides=(-line.strides[0], line.strides[0]), writeable=False
    )


def _allowed(p: Problem, o: Options, B: int, h: int, n: int, m: int) -> np.ndarray | None:
    """Which (query, key) pairs may attend, from every mask given; None = all."""
    parts: list[np.ndarray] = []
    kind = mask_kind(p, o)
    if kind == "causal":
        parts.append(causal(n, m, 0)[None, None])  # key j ≤ query i
    elif kind == "causal-lower-right":
        parts.append(causal(n, m, m - n)[None, None])  # aligned to the last key
    block = o.mask_polarity == "block"
    if "mask" in p.matrices and o.mask is None:  # a mask option replaces the file's mask
        grid = _grid(p.matrices["mask"], "mask", B, h, n, m)
        _check_binary(grid, "mask")
        parts.append((grid == 0) if block else (grid != 0))
    if "key_padding_mask" in p.matrices:
        kpm = p.matrices["key_padding_mask"]
        if kpm.ndim == 1:
            kpm = kpm[None]
        if kpm.ndim != 2 or kpm.shape[1] != m or kpm.shape[0] not in (1, B):
            raise ShapeError(
                f"key_padding_mask is {shape_str(p.matrices['key_padding_mask'].shape)} but there are {B} batch items × {m} keys"
            )
        _check_binary(kpm, "key_padding_mask")
        keep = (kpm == 0) if block else (kpm != 0)
        parts.append(keep[:, None, None, :])
    if "valid_lens" in p.matrices:
        parts.append(_valid_lens(p.matrices["valid_lens"], B, n, m))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out & part
    return out


def mask_kind(p: Problem, o: Options) -> str | None:
    """The named mask in force: the option's, else the file's.

    >>> mask_kind(Problem({}, mask_kind="causal"), Options())
    'causal'
    """
    return o.mask or p.mask_kind


def mask_sources(p: Problem, o: Options) -> list[str]:
    """Every mask in force, by name, e.g. ``['causal', 'valid_lens']``."""
    kind = mask_kind(p, o)
    given = [k for k in ("mask", "key_padding_mask", "valid_lens", "attn_bias") if k in p.matrices]
    if o.mask is not None and "mask" in given:
        given.remove("mask")
    return ([kind] if kind else []) + given


def _check_binary(a: np.ndarray, name: str) -> None:
    import numpy as np

    bad = np.argwhere((a != 0) & (a != 1))
    if len(bad):
        where = ", ".join(str(i + 1) for i in bad[0])
        raise ShapeError(
            f"{name}[{where}] is {a[tuple(bad[0])]:g}: a mask holds only 0 and 1 (or true/false)"
        )


def _valid_lens(vl: np.ndarray, B: int, n: int, m: int) -> np.ndarray:
    """valid_lens as d2l uses them: keys j < len may attend (per item or per query)."""
    import numpy as np

    if np.any(vl != np.round(vl)) or np.any(vl < 0) or np.any(vl > m):
        raise ShapeError(f"valid_lens must be whole numbers from 0 to {m} (the number of keys)")
    vl = vl.astype(int)
    if vl.ndim == 0:
        lens = np.broadcast_to(vl, (1, n))
    elif vl.ndim == 1 and vl.shape[0] == B:  # one length per batch item (d2l), first
        lens = np.broadcast_to(vl[:, None], (B, n))
    elif vl.ndim == 1 and vl.shape[0] == n:
        lens = vl[None]
    elif vl.ndim == 2 and vl.shape == (B, n):
        lens = vl
    else:
        raise ShapeError(
            f"valid_lens is {shape_str(vl.shape)} but needs one length per batch item ({B}) "
            f"or per query ({n})"
        )
    keys = np.arange(m)
    return keys[None, None, None, :] < lens[:, None, :, None]  # (B|1, 1, n, m)


def _attn_bias(p: Problem, B: int, h: int, n: int, m: int) -> np.ndarray | None:
    if "attn_bias" not in p.matrices:
        return None
    return _grid(p.matrices["attn_bias"], "attn_bias", B, h, n, m)
