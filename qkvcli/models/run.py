"""Run a model on a sentence, layer by layer, with every attention computed by qkv's own pipeline.

Each layer's attention is a `Problem` and `Options` (`layer_problem`) that
`attention.run` evaluates — the same function ``qkv compute`` uses — and its
``output`` stage feeds the rest of the layer. So what the command shows for a
layer is exactly what the model computed there; tests compare it with
transformers' own ``output_attentions`` and hidden states.

`one_head` cuts a layer down to one head (its slices of W_Q, W_K, W_V and
W_O), the textbook single-head attention whose output is that head's share
of the layer's attention output.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import OptionError
from ..i18n import N_, Spoken, _
from ..options import Options
from ..problem import Problem

if TYPE_CHECKING:
    import numpy as np

    from ..trace import Trace
    from .family import Family, LayerAttention
    from .tokens import Tokens


@dataclass
class Layer:
    """One layer of a run: its attention as qkv's problem and trace, and the layer's output."""

    index: int  # 0-based
    problem: Problem
    options: Options
    trace: Trace
    output: np.ndarray  # (n, d_model): hidden_states[index + 1]


@dataclass
class Run:
    """A sentence through the first ``len(layers)`` layers of a model, in one dtype."""

    name: str
    tokens: Tokens
    dtype: str
    embedded: np.ndarray  # (n, d_model): hidden_states[0]
    layers: list[Layer]

    @property
    def hidden_states(self) -> list[np.ndarray]:
        """As transformers' ``output_hidden_states``: the embeddings, then each layer's output."""
        return [self.embedded] + [layer.output for layer in self.layers]


def layer_problem(
    name: str, family: Family, att: LayerAttention, layer: int, tokens: Tokens, dtype: str
) -> tuple[Problem, Options]:
    """A layer's attention as the problem and options ``qkv compute`` would read."""
    origin = Spoken(
        N_("{name} layer {layer} of {layers}"), name=name, layer=layer + 1, layers=family.layers
    )
    sources = att.sources | {"tokens": tokens.source}
    problem = Problem(
        dict(att.matrices),
        tokens=list(tokens.labels),
        sources=sources,
        origin=origin,
        mask_kind=att.mask,
    )
    return problem, Options().merged(att.settings | {"dtype": dtype})


def forward(name: str, family: Family, tokens: Tokens, upto: int, dtype: str) -> Run:
    """The first ``upto`` layers on ``tokens``; each attention by `attention.run`."""
    from ..attention import run
    from ..problem import resolve

    hidden = family.embed(tokens, dtype)  # (n, d_model)
    run_ = Run(name, tokens, dtype, hidden, [])
    for layer in range(upto):
        att = family.attention(layer, hidden, dtype)
        problem, options = layer_problem(name, family, att, layer, tokens, dtype)
        trace = run(resolve(problem, options))
        attended = trace["output"].astype(dtype, copy=False)  # (n, d_model)
        hidden = family.rest(layer, hidden, attended, dtype)  # (n, d_model)
        run_.layers.append(Layer(layer, problem, options, trace, hidden))
    return run_


def one_head(problem: Problem, options: Options, head: int) -> tuple[Problem, Options]:
    """Head ``head`` (1-based) of a layer alone: its rows (out-in) or columns (in-out) of W_Q, W_K,
    W_V (K and V by its group under grouped-query attention) and of W_O, without b_O.

    Its output is the head's share of the layer's attention output: the
    layer's output is the sum of every head's, plus b_O. Every other setting
    (the scale, RoPE, the mask) stays as the layer's.
    """
    heads = options.heads or 1
    if options.alibi or options.qk_norm:
        raise OptionError(
            _(
                "--head {head}: one head alone of a layer with ALiBi or QK-norm is not cut yet"
            ).format(head=head)
        )
    if not 1 <= head <= heads:
        raise OptionError(
            _("--head {head}: {origin} has {heads} heads (1…{heads})").format(
                head=head, origin=problem.origin, heads=heads
            )
        )
    kv_heads = options.kv_heads or heads
    group = (head - 1) // (heads // kv_heads)
    out_in = options.weights_layout == "out-in"
    m = problem.matrices
    mats = {"X": m["X"]}
    sources = {k: v for k, v in problem.sources.items() if k in ("X", "tokens")}
    width = {}
    for name, blocks, k in (("Q", heads, head - 1), ("K", kv_heads, group), ("V", kv_heads, group)):
        w = m[f"W_{name}"]
        width[name] = (w.shape[0] if out_in else w.shape[1]) // blocks
        cut = slice(k * width[name], (k + 1) * width[name])
        mats[f"W_{name}"] = w[cut] if out_in else w[:, cut]
        sources[f"W_{name}"] = _cut(problem.sources[f"W_{name}"], cut, out_in)
        if f"b_{name}" in m:
            mats[f"b_{name}"] = m[f"b_{name}"][cut]
            sources[f"b_{name}"] = _cut(problem.sources[f"b_{name}"], cut, True)
    if "W_O" in m:  # W_O's blocks follow the query heads: head i's output meets block i
        cut = slice((head - 1) * width["V"], head * width["V"])
        mats["W_O"] = m["W_O"][:, cut] if out_in else m["W_O"][cut]
        sources["W_O"] = _cut(problem.sources["W_O"], cut, not out_in)
    origin = Spoken(
        N_("{origin}, head {head} of {heads}"), origin=problem.origin, head=head, heads=heads
    )
    single = Problem(
        mats, tokens=problem.tokens, sources=sources, origin=origin, mask_kind=problem.mask_kind
    )
    return single, replace(options, heads=None, kv_heads=None)


def explainable(layer: Layer) -> tuple[Problem, Options]:
    """The layer's attention from Q and K as its scores use them (after RoPE), its V and W_O.

    Every per-head stage (scores … weights, head_outputs) and the output come
    out the same, bit for bit, with no RoPE left to apply: the form in which
    `explain` works a cell through (the interactive report explains cells
    this way). A layer without RoPE is returned as it is.
    """
    o, p, t = layer.options, layer.problem, layer.trace
    if o.rope is None:
        return p, o
    mats = {"Q": t["Q_rotated"], "K": t["K_rotated"], "V": t["V"]}
    sources = {"Q": "Q_rotated (RoPE of Q)", "K": "K_rotated (RoPE of K)", "V": "V"}
    for name in ("W_O", "b_O"):
        if name in p.matrices:
            mats[name], sources[name] = p.matrices[name], p.sources.get(name, name)
    sources["tokens"] = p.sources.get("tokens", "tokens")
    rotated = Problem(
        mats, tokens=p.tokens, sources=sources, origin=p.origin, mask_kind=p.mask_kind
    )
    return rotated, replace(o, rope=None, rope_theta=None, partial_rotary_factor=None)


def _cut(key: str, cut: slice, rows: bool) -> str:
    """``key[128:160]`` (rows) or ``key[:, 128:160]`` (columns)."""
    span = f"{cut.start}:{cut.stop}"
    return f"{key}[{span}]" if rows else f"{key}[:, {span}]"


def differences(a: Run, b: Run, layer: int) -> dict[str, float]:
    """The largest |a − b| of layer ``layer``'s weights, attention output and hidden output."""
    import numpy as np

    la, lb = a.layers[layer], b.layers[layer]

    def gap(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))

    return {
        "weights": gap(la.trace["weights"], lb.trace["weights"]),
        "output": gap(la.trace["output"], lb.trace["output"]),
        "hidden": gap(la.output, lb.output),
    }
