"""What the user gave (`Problem`) and the same in canonical form (`Resolved`).

`resolve` checks that the shapes fit together and brings everything to one
canonical form — rows are tokens, ``Q = X·W_Q + b_Q`` with W as
d_model × d_k, a batch axis and a head axis always present, masks as
`masks.Rules` — so that the evaluators have one path for every layout and
variant.

>>> import numpy as np
>>> p = Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.ones((2, 3))})
>>> r = resolve(p, Options())
>>> r.n, r.m, r.d_head, round(r.scale, 4)
(2, 2, 2, 0.7071)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import i18n
from .errors import OptionError, ShapeError, counted, placed, shape_str
from .i18n import _, ngettext
from .masks import (
    Rules,
    alibi_slopes,
    causal_offset,
    check_binary,
    grid,
    padding_keep,
    valid_lens,
)
from .notes import note
from .options import Options, needs, said, validate_options

if TYPE_CHECKING:
    import numpy as np

#: Every matrix a problem can hold, by its canonical name.
MATRICES = (
    "X", "X_kv", "Q", "K", "V", "W_Q", "W_K", "W_V", "W_O",
    "b_Q", "b_K", "b_V", "b_O", "mask", "attn_bias", "valid_lens", "key_padding_mask",
    "position_ids", "q_norm", "k_norm", "sinks", "past_key", "past_value",
)  # fmt: skip


@dataclass(eq=False)  # arrays inside: compared by identity
class Problem:
    """The matrices as the user gave them, with where each one came from.

    ``sources`` maps a canonical name to what was read (``"w_query"`` or
    ``"WQ.csv"``); ``origin`` names the input file; ``setting_names`` maps each
    setting given to how it was given, for messages: an option (``--heads``)
    or the file's key as typed (``num_heads``).
    """

    matrices: dict[str, np.ndarray]
    tokens: list[str] | None = None
    kv_tokens: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    origin: str = "<input>"
    mask_kind: str | None = None  # "causal" | "causal-lower-right" when given by name
    torch_key: str | None = None  # a PyTorch state-dict key read: weights are (out, in)
    setting_names: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)  # arrays inside: compared by identity
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
    rules: Rules  # masks and the additive bias
    multihead: bool = False  # head stages shown per head
    per_head_given: bool = False
    notes: list[str] = field(default_factory=list)
    past: int = 0  # rows of the KV cache (past_key, past_value) before the new keys
    positions: np.ndarray | None = None  # (B|1, n) RoPE positions of the new rows
    rotary_dim: int = 0  # features of each head that RoPE rotates (the first ones)

    @property
    def cross(self) -> bool:
        """True when keys and values come from a second sequence."""
        return "X_kv" in self.arrays or (self.n != self.m and not self.past)

    @property
    def masked(self) -> bool:
        """True when the run has a ``masked`` stage (a mask or an additive bias)."""
        return self.rules.masks

    def where_row(self, b: int, hh: int, i: int) -> str:
        """``query row 2 (x2), head 1, batch item 2``: a row named as the user sees it."""
        tokens = self.problem.tokens
        where = _("query row {i}").format(i=i + 1) + (f" ({tokens[i]})" if tokens else "")
        if self.multihead:
            where += _(", ").join(["", _("head {h}").format(h=hh + 1)])
        if self.batched:
            where += _(", ").join(["", _("batch item {b}").format(b=b + 1)])
        return where


def _t(a: np.ndarray) -> np.ndarray:
    """Swap the last two axes."""
    return a.swapaxes(-1, -2)


def _with_batch(a: np.ndarray, name: str) -> np.ndarray:
    """Give a token matrix a leading batch axis: (n, d) → (1, n, d)."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        return a
    raise ShapeError(
        _("{name} must be a matrix or a list of matrices (a batch), not {ndim}-D").format(
            name=name, ndim=a.ndim
        )
    )


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
        raise ShapeError(
            _("{name} must be a matrix or a list of per-head matrices, not {ndim}-D").format(
                name=name, ndim=w.ndim
            )
        )
    blocks = list(w) if w.ndim == 3 else [w]
    if d_in is not None:
        fits = blocks[0].shape[1 if out_in else 0] == d_in
        if not fits:
            shape = shape_str(blocks[0].shape)
            what = "rows" if o.layout == "columns" else "columns"
            msg = _("{name} is {shape} but {src} has {count}").format(
                name=typed(p, name),
                shape=shape,
                src=typed(p, src),
                count=counted(d_in, what[:-1], what),
            )
            if o.layout == "columns":
                msg += _(" (layout columns: {name} must be d_k×{d})").format(name=name, d=d_in)
            elif out_in:
                msg += _(" (weights layout out-in: {name} must be d_k×{d})").format(
                    name=name, d=d_in
                )
            if blocks[0].shape[0 if out_in else 1] == d_in:
                msg += transpose_hint(p, o, name, ": ")
            raise ShapeError(msg)
    axis = 0 if name == "W_O" else -1
    return np.concatenate([b.T if out_in else b for b in blocks], axis=axis)


def transpose_hint(p: Problem, o: Options, name: str, sep: str) -> str:
    """What to try when W ``name`` fits only transposed: the other weights layout, if every
    W fits in it, else transposing this one W (the layout option turns every W at once)."""
    if o.layout == "columns":
        return sep + _("did you mean its transpose?")
    other = "in-out" if o.weights_layout == "out-in" else "out-in"
    now = o.weights_layout
    as_they_are = [n for n in ("W_Q", "W_K", "W_V")
                   if n != name and _fits(p, n, now) and _fits(p, n, other) is False]  # fmt: skip
    option = p.setting_names.get("weights_layout", "--weights-layout")
    switch = f'"{option}": "{other}"' if not option.startswith("--") else f"{option} {other}"
    if not as_they_are:
        return sep + _("did you mean its transpose ({switch})?").format(switch=switch)
    return sep + _(
        "it fits transposed, but {others} fit as they are: transpose "
        "{name} itself ({switch} would turn every W)"
    ).format(others=_and(as_they_are), name=name, switch=switch)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _fits(p: Problem, name: str, weights_layout: str) -> bool | None:
    """Whether W_Q, W_K or W_V fits its input (X, or X_kv) in ``weights_layout``; None if unknown."""
    w = p.matrices.get(name)
    kv = name != "W_Q" and "X_kv" in p.matrices
    src = p.matrices.get("X_kv" if kv else "X")
    if w is None or src is None or w.ndim not in (2, 3):
        return None
    block = w[0] if w.ndim == 3 else w
    return block.shape[1 if weights_layout == "out-in" else 0] == src.shape[-1]


def typed(p: Problem, name: str) -> str:
    """A matrix or label list named as the user gave it: ``--tokens``, or `label`'s ``W_Q (w_query)``.

    >>> typed(Problem({}, sources={"tokens": "--tokens"}), "tokens")
    '--tokens'
    """
    source = p.sources.get(name, "")
    return source if source.startswith("--") else label(p, name)


def _bias(p: Problem, name: str, width: int, of: str) -> np.ndarray | None:
    b = p.matrices.get(name)
    if b is None:
        return None
    b = b.reshape(-1)  # per-head lists are joined
    if b.shape[0] != width:
        raise ShapeError(
            _("{name} has {count} but {of} has {count2}").format(
                name=typed(p, name),
                count=counted(b.shape[0], "value", "values"),
                of=of,
                count2=counted(width, "column", "columns"),
            )
        )
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

    Shape errors are prefixed with the input's name, and so are errors about
    settings unless they name options as typed (``--heads 2 …``).
    """
    try:
        return _resolve(p, o)
    except ShapeError as e:
        if p.origin == Problem.origin:
            raise
        raise ShapeError(placed(p.origin, e)) from None
    except OptionError as e:
        if p.origin == Problem.origin or "--" in str(e):
            raise  # about options as typed: the file is not what is wrong
        raise OptionError(placed(p.origin, e)) from None


def _resolve(p: Problem, o: Options) -> Resolved:
    o = validate_options(o, p.setting_names)
    names = p.setting_names
    mats = p.matrices
    if "past_key" in mats or "past_value" in mats:
        if "past_key" not in mats or "past_value" not in mats:
            given, other = ("past_key", "past_value")[:: 1 if "past_key" in mats else -1]
            raise ShapeError(
                _("{given} is given but {other} is missing: a KV cache holds both").format(
                    given=typed(p, given), other=other
                )
            )
        if "X_kv" in mats:
            raise ShapeError(
                _("past_key is the self-attention cache of the same sequence: not with X_kv")
            )
    for name in ("Q", "K", "V"):
        if name in mats and f"W_{name}" in mats:
            raise ShapeError(
                _("both {name} and W_{name} are given: give one or the other").format(name=name)
            )
    need_x = any(f"W_{n}" in mats for n in "QKV") and not all(n in mats for n in "QKV")
    arrays: dict[str, np.ndarray] = {}
    x = _direct(p, "X", o)
    x_kv = _direct(p, "X_kv", o)
    if x_kv is not None and x is None:
        raise ShapeError(_("X_kv (memory) is given but X is missing: queries come from X"))
    missing = [n for n in "QKV" if n not in mats and f"W_{n}" not in mats]
    if missing:
        names = _(", ").join(_("W_{n} (or {n})").format(n=n) for n in missing)
        raise ShapeError(_("missing matrix: {names}").format(names=names))
    if need_x and x is None:
        raise ShapeError(_("missing matrix: X (W_Q, W_K, W_V project the rows of X)"))
    rows_word = "rows" if o.layout == "rows" else "columns"
    cols_word = "columns" if o.layout == "rows" else "rows"

    if p.torch_key is not None and o.weights_layout != "out-in":
        raise OptionError(
            _("{torch_key} holds PyTorch (out, in) weights: not with {weights_layout}").format(
                torch_key=p.torch_key,
                weights_layout=said(names, "weights_layout", o.weights_layout),
            )
        )

    def project(n: str, src: np.ndarray | None, src_name: str) -> tuple[int, ...]:
        """Record W_n/b_n (or n itself) and return the shape n will have."""
        direct = _direct(p, n, o)
        if direct is not None:
            if f"b_{n}" in mats:
                raise ShapeError(
                    _("b_{n} is given but W_{n} is missing ({n} is given directly)").format(n=n)
                )
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
        raise ShapeError(
            _("X has {v} batch items but X_kv has {v2}").format(v=x.shape[0], v2=kv_src.shape[0])
        )
    q, k, v = project("Q", x, "X"), project("K", kv_src, kv_name), project("V", kv_src, kv_name)
    # Per-head weight lists say how many heads there are.
    listed = {
        n: len(mats[f"W_{n}"])
        for n in "QKV"
        if mats.get(f"W_{n}") is not None and mats[f"W_{n}"].ndim == 3
    }
    heads = o.heads or listed.get("Q") or 1
    if "Q" in listed and listed["Q"] != heads:
        raise ShapeError(
            _("W_Q lists {q} heads but {heads}").format(
                q=listed["Q"], heads=said(names, "heads", heads)
            )
        )
    kv_heads = o.kv_heads or listed.get("K") or heads
    for n in "KV":
        if n in listed and listed[n] != kv_heads:
            given = said(names, "kv_heads" if o.kv_heads else "heads", kv_heads)
            raise ShapeError(
                _("W_{n} lists {v} heads but {given}").format(n=n, v=listed[n], given=given)
            )
    if p.torch_key is not None and o.heads is None and not listed:
        note(
            _(
                '{origin}: a PyTorch state dict does not say how many heads it has: computed as 1 head; give nn.MultiheadAttention\'s num_heads as --heads N (or "heads": N)'
            ).format(origin=p.origin)
        )
    unused = [
        n for n, by in (("X", "QKV"), ("X_kv", "KV")) if n in mats and all(c in mats for c in by)
    ]
    if unused:
        given = _("Q, K and V are") if "X" in unused else _("K and V are")
        note(
            _(
                "{origin}: {join} not used: {given} given directly (drop {join}, or give the weights instead)"
            ).format(origin=p.origin, join=_(" and ").join(unused), given=given)
        )
    B = max(a[0] for a in (q, k, v))
    for name, a in (("Q", q), ("K", k), ("V", v)):
        if a[0] not in (1, B):
            raise ShapeError(
                _("{name} has {v} batch items but another matrix has {b}").format(
                    name=name, v=a[0], b=B
                )
            )
    if k[-2] != v[-2]:
        raise ShapeError(
            _("K has {count} but V has {v}: every key needs one value").format(
                count=counted(k[-2], rows_word[:-1], rows_word), v=v[-2]
            )
        )
    past = _cache(p, o, arrays, k, v, B)
    n, m, dq, dv = q[-2], past + k[-2], q[-1], v[-1]
    h_said = said(names, "heads", heads)
    kv_said = said(names, "kv_heads", kv_heads) if o.kv_heads else None
    if dq % heads:
        raise ShapeError(
            _("{h_said} does not divide d_k={dq} (Q has {count})").format(
                h_said=h_said, dq=dq, count=counted(dq, cols_word[:-1], cols_word)
            )
        )
    if heads % kv_heads:
        raise ShapeError(
            _("{v} does not divide {h_said}").format(v=kv_said or kv_heads, h_said=h_said)
        )
    d_head = dq // heads
    if k[-1] != kv_heads * d_head:
        if kv_heads == heads:
            raise ShapeError(
                _(
                    "Q is {shape} but K is {shape2}: Q·Kᵀ needs Q and K to have the same number of {cols_word}"
                ).format(
                    shape=shape_str(q[1:]), shape2=shape_str(k[1:]), cols_word=i18n._(cols_word)
                )
            )
        raise ShapeError(
            _("K has {count} but {v2} with d_k={d_head} per head needs {v3}").format(
                count=counted(k[-1], cols_word[:-1], cols_word),
                v2=kv_said or kv_heads,
                d_head=d_head,
                v3=kv_heads * d_head,
            )
        )
    if dv % kv_heads:
        if kv_said is None:
            raise ShapeError(
                _(
                    "{h_said} does not divide d_v={dv} (V has {count}; K and V have as many heads as Q unless kv_heads says otherwise)"
                ).format(h_said=h_said, dv=dv, count=counted(dv, cols_word[:-1], cols_word))
            )
        raise ShapeError(
            _("{kv_said} does not divide d_v={dv} (V has {count})").format(
                kv_said=kv_said, dv=dv, count=counted(dv, cols_word[:-1], cols_word)
            )
        )
    dv_head = dv // kv_heads

    w_o = _weight(p, "W_O", o, None, "concat")
    if w_o is not None:
        width = heads * dv_head
        if w_o.shape[0] != width:
            user = p.matrices["W_O"].shape
            need = "columns" if o.weights_layout == "out-in" or o.layout == "columns" else "rows"
            msg = _(
                "{w_o} is {shape} but concat has {count} (heads × d_v = {heads}×{dv}): "
                "W_O needs {need}"
            ).format(
                w_o=typed(p, "W_O"),
                shape=shape_str(user),
                count=counted(width, cols_word[:-1], cols_word),
                heads=heads,
                dv=dv_head,
                need=counted(width, need[:-1], need),
            )
            if p.matrices["W_O"].ndim == 2 and w_o.shape[1] == width:
                msg += transpose_hint(p, o, "W_O", "; ")
            raise ShapeError(msg)
        arrays["W_O"] = w_o
        b_o = _bias(p, "b_O", w_o.shape[1], "W_O")
        if b_o is not None:
            arrays["b_O"] = b_o
    elif "b_O" in mats:
        raise ShapeError(_("b_O is given but W_O is missing"))

    for attr, count, one, many in (
        ("tokens", n, "query", "queries"),
        ("kv_tokens", m, "key", "keys"),
    ):
        given = getattr(p, attr)
        if given is not None and len(given) != count:
            raise ShapeError(
                ngettext(
                    "{attr} has {count} but there is {there}",
                    "{attr} has {count} but there are {there}",
                    count,
                ).format(
                    attr=typed(p, attr),
                    count=counted(len(given), "label", "labels"),
                    there=counted(count, one, many),
                )
            )

    scale = {"sqrt": 1 / math.sqrt(d_head), "none": 1.0}.get(o.scale, o.scale)  # type: ignore[arg-type]
    _norms(p, o, arrays, heads, kv_heads, d_head)
    if "sinks" in mats:
        sinks = mats["sinks"].reshape(-1)
        if sinks.shape[0] != heads:
            raise ShapeError(
                ngettext(
                    "{sinks} has {count} but there is {heads} (one sink logit per query head)",
                    "{sinks} has {count} but there are {heads} (one sink logit per query head)",
                    heads,
                ).format(
                    sinks=typed(p, "sinks"),
                    count=counted(sinks.shape[0], "value", "values"),
                    heads=counted(heads, "head", "heads"),
                )
            )
        if o.normalize == "sigmoid":
            raise OptionError(
                _("{sinks} adds a sink to the softmax's denominator: not with {sigmoid}").format(
                    sinks=typed(p, "sinks"), sigmoid=said(p.setting_names, "normalize", "sigmoid")
                )
            )
        arrays["sinks"] = sinks
    rotary_dim, positions = _rotary(p, o, B, n, k[-2], d_head, past, "X_kv" in arrays)
    rules = _rules(p, o, B, heads, n, m, past)
    batched = any(mats[k].ndim == 3 for k in ("X", "Q", "K", "V") if k in mats)
    return Resolved(
        problem=p, options=o, arrays=arrays, batched=batched, B=B, n=n, m=m,
        heads=heads, kv_heads=kv_heads, d_head=d_head, dv_head=dv_head, scale=float(scale),
        rules=rules, multihead=heads > 1, per_head_given=bool(listed), past=past,
        positions=positions, rotary_dim=rotary_dim,
    )  # fmt: skip


def _cache(
    p: Problem, o: Options, arrays: dict, k: tuple[int, ...], v: tuple[int, ...], B: int
) -> int:
    """Check past_key and past_value against the new keys and values; return the cache's rows."""
    if "past_key" not in p.matrices:
        return 0
    cols = "columns" if o.layout == "rows" else "rows"
    past = {}
    for name, new, of in (("past_key", k, "K"), ("past_value", v, "V")):
        a = _direct(p, name, o)
        assert a is not None
        if a.shape[-1] != new[-1]:
            raise ShapeError(
                _(
                    "{name} has {v} {cols} but {of} has {v2}: the cache holds {of}'s rows of earlier tokens, every head side by side"
                ).format(name=typed(p, name), v=a.shape[-1], cols=cols, of=of, v2=new[-1])
            )
        if a.shape[0] not in (1, B):
            raise ShapeError(
                _("{name} has {v} batch items but X has {b}").format(
                    name=typed(p, name), v=a.shape[0], b=B
                )
            )
        past[name] = a
    if past["past_key"].shape[1] != past["past_value"].shape[1]:
        raise ShapeError(
            _(
                "past_key has {v} rows but past_value has {v2}: every cached key needs its value"
            ).format(v=past["past_key"].shape[1], v2=past["past_value"].shape[1])
        )
    arrays.update(past)
    return int(past["past_key"].shape[1])


def _norms(p: Problem, o: Options, arrays: dict, heads: int, kv_heads: int, d_head: int) -> None:
    """Check the QK-norm weights: d_k values per head, or one per column of Q / K (``all``)."""
    given = [name for name in ("q_norm", "k_norm") if name in p.matrices]
    if o.qk_norm is None:
        if given:
            raise OptionError(needs(typed(p, given[0]), "qk_norm"))
        return
    for name, count in (("q_norm", heads), ("k_norm", kv_heads)):
        if name not in p.matrices:
            continue
        w = p.matrices[name].reshape(-1)
        width = d_head if o.qk_norm == "head" else count * d_head
        if w.shape[0] != width:
            what = f"d_k = {d_head}" if o.qk_norm == "head" else f"{count} heads × d_k {d_head}"
            raise ShapeError(
                _("{name} has {count} but qk_norm {qk_norm} needs {width} ({what})").format(
                    name=typed(p, name),
                    count=counted(w.shape[0], "value", "values"),
                    qk_norm=o.qk_norm,
                    width=width,
                    what=what,
                )
            )
        arrays[name] = w


def _rotary(
    p: Problem, o: Options, B: int, n: int, new_keys: int, d_head: int, past: int, cross: bool
) -> tuple[int, np.ndarray | None]:
    """RoPE's rotated features per head and the positions (B|1, n) of the new rows."""
    import numpy as np

    if o.rope is None:
        if "position_ids" in p.matrices:
            raise OptionError(needs(typed(p, "position_ids"), "rope"))
        return 0, None
    if cross:
        raise ShapeError(_("rope rotates a sequence against itself: not with X_kv"))
    if new_keys != n:
        raise ShapeError(
            _(
                "rope gives each token one position for its query and its key, but there are {n} queries and {new_keys} new keys"
            ).format(n=n, new_keys=new_keys)
        )
    factor = 1.0 if o.partial_rotary_factor is None else o.partial_rotary_factor
    dim = int(d_head * factor)  # as Hugging Face: int(head_dim × partial_rotary_factor)
    if dim < 2 or dim % 2:
        raise ShapeError(
            _(
                "rope rotates pairs of features: partial_rotary_factor {factor:g} × d_k {d_head} gives {dim}, not an even number ≥ 2"
            ).format(factor=factor, d_head=d_head, dim=dim)
        )
    if "position_ids" in p.matrices:
        pos = p.matrices["position_ids"]
        where = typed(p, "position_ids")
        if pos.ndim == 1:
            pos = pos[None]
        if pos.ndim != 2 or pos.shape[1] != n or pos.shape[0] not in (1, B):
            raise ShapeError(
                _(
                    "{where} is {shape} but needs one position per query ({n}), or a row of them per batch item ({b}×{n})"
                ).format(where=where, shape=shape_str(p.matrices["position_ids"].shape), n=n, b=B)
            )
        if np.any(pos != np.round(pos)) or np.any(pos < 0):
            raise ShapeError(_("{where} must hold whole numbers ≥ 0").format(where=where))
        if o.position_offset is not None:
            raise OptionError(
                _("{position_ids} and {position_offset} are both given: give one").format(
                    position_ids=typed(p, "position_ids"),
                    position_offset=said(p.setting_names, "position_offset"),
                )
            )
        return dim, pos.astype(np.int64)
    start = past if o.position_offset is None else o.position_offset
    return dim, (start + np.arange(n, dtype=np.int64))[None]  # (1, n)


def mask_kind(p: Problem, o: Options) -> str | None:
    """The named mask in force: the option's, else the file's.

    >>> mask_kind(Problem({}, mask_kind="causal"), Options())
    'causal'
    """
    return o.mask or p.mask_kind


def mask_sources(p: Problem, o: Options) -> list[str]:
    """Every mask in force, by name, e.g. ``['causal', 'valid_lens']``.

    A KV cache makes the run causal; ``sliding_window`` and
    ``attention_chunk_size`` are masks of their own.
    """
    kind = mask_kind(p, o) or ("causal" if "past_key" in p.matrices else None)
    given = [k for k in ("mask", "key_padding_mask", "valid_lens", "attn_bias") if k in p.matrices]
    if o.mask is not None and "mask" in given:
        given.remove("mask")
    rules = [k for k in ("sliding_window", "attention_chunk_size") if getattr(o, k) is not None]
    return ([kind] if kind else []) + rules + given


def _rules(p: Problem, o: Options, B: int, h: int, n: int, m: int, past: int = 0) -> Rules:
    """Every mask and bias given, as rules a block of the scores can ask.

    A decode step (``past`` cached rows) is causal: query i sits at index past + i.
    """
    kind = mask_kind(p, o)
    causal = None if kind is None else causal_offset(kind, n, m)
    if past:
        causal = past  # the new rows are the last of a causal pass
    block = o.mask_polarity == "block"
    explicit = None
    if "mask" in p.matrices and o.mask is None:  # a mask option replaces the file's mask
        g = grid(p.matrices["mask"], "mask", B, h, n, m)
        check_binary(g, "mask")
        explicit = (g == 0) if block else (g != 0)
    padding = None
    if "key_padding_mask" in p.matrices:
        kpm = p.matrices["key_padding_mask"]
        padding = padding_keep(kpm, block, B, m, kpm.shape)
    lens = None
    if "valid_lens" in p.matrices:
        lens = valid_lens(p.matrices["valid_lens"], B, n, m)
    bias = None
    if "attn_bias" in p.matrices:
        bias = grid(p.matrices["attn_bias"], "attn_bias", B, h, n, m)
    slopes = alibi_slopes(h) if o.alibi else None
    return Rules(
        B=B, h=h, n=n, m=m, causal=causal, lens=lens, padding=padding, grid=explicit,
        bias=bias, window=o.sliding_window, chunk=o.attention_chunk_size, slopes=slopes, q0=past,
    )  # fmt: skip
