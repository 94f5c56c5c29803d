"""The BERT family (``model_type: bert``, e.g. all-MiniLM-L6-v2), layer by layer in numpy.

    hidden_0 = LayerNorm(word[ids] + token_type[types] + position[0 … n−1])
    per layer l:
      attended = attention(hidden_l)             qkv's pipeline: Q = X·W_Qᵀ + b_Q …, output = concat·W_Oᵀ + b_O
      a        = LayerNorm(attended + hidden_l)   attention.output.LayerNorm
      hidden_{l+1} = LayerNorm(GELU(a·W_1ᵀ + b_1)·W_2ᵀ + b_2 + a)

This is transformers' ``BertModel`` in eval mode (dropout off), with one
sentence and no padding, so its attention mask adds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..i18n import _
from .family import LayerAttention, setting
from .layers import activation, layer_norm, linear
from .weights import Weights

if TYPE_CHECKING:
    import numpy as np

    from .source import Folder
    from .tokens import Tokens

#: A tensor every BERT checkpoint has; the part of its key before this is the prefix.
ANCHOR = "embeddings.word_embeddings.weight"


class Bert:
    """A BERT model's config and weights; see the module docstring for what each step computes."""

    kind = "bert"
    stored = ""

    def __init__(self, folder: Folder, config: dict[str, Any]) -> None:
        name = folder.name
        self.name = name
        self.layers = setting(config, "num_hidden_layers", name)
        self.heads = setting(config, "num_attention_heads", name)
        self.kv_heads = self.heads
        self.d_model = setting(config, "hidden_size", name)
        self.positions = setting(config, "max_position_embeddings", name)
        self.eps = (
            setting(config, "layer_norm_eps", name, float) if "layer_norm_eps" in config else 1e-12
        )
        self.act = activation(config.get("hidden_act", "gelu"), name)
        kind = config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise InputError(
                _(
                    "model {name}: position_embedding_type {kind!r}: qkv computes absolute positions only"
                ).format(name=name, kind=kind)
            )
        if self.d_model % self.heads:
            raise InputError(
                _(
                    "model {name}: hidden_size {d_model} is not a multiple of num_attention_heads {heads}"
                ).format(name=name, d_model=self.d_model, heads=self.heads)
            )
        self.weights = Weights(folder, ANCHOR)

    def _w(self, name: str, dtype: str) -> np.ndarray:
        return self.weights.tensor(name).astype(dtype, copy=False)

    def embed(self, tokens: Tokens, dtype: str) -> np.ndarray:
        """word + token type + position embeddings, then LayerNorm: (n, d_model)."""

        e = "embeddings."
        w = self.weights
        words = w.rows(e + "word_embeddings.weight", tokens.ids).astype(dtype)  # (n, d)
        types = w.rows(e + "token_type_embeddings.weight", tokens.type_ids).astype(dtype)  # (n, d)
        places = w.rows(e + "position_embeddings.weight", list(range(tokens.n))).astype(dtype)
        x = words + types  # (n, d): in transformers' order of additions
        x = x + places  # (n, d)
        ln = e + "LayerNorm."
        return layer_norm(x, self._w(ln + "weight", dtype), self._w(ln + "bias", dtype), self.eps)

    def attention(self, layer: int, hidden: np.ndarray, dtype: str) -> LayerAttention:
        """The self-attention of layer ``layer``: X = its input, nn.Linear weights (out, in)."""
        at = f"encoder.layer.{layer}.attention."
        names = {
            "W_Q": "self.query.weight", "b_Q": "self.query.bias",
            "W_K": "self.key.weight", "b_K": "self.key.bias",
            "W_V": "self.value.weight", "b_V": "self.value.bias",
            "W_O": "output.dense.weight", "b_O": "output.dense.bias",
        }  # fmt: skip
        matrices = {"X": hidden} | {k: self._w(at + v, dtype) for k, v in names.items()}
        sources = {"X": f"hidden_states[{layer}]"}
        sources |= {k: self.weights.key(at + v) for k, v in names.items()}
        settings = {"heads": self.heads, "weights_layout": "out-in", "scale": "sqrt"}
        return LayerAttention(matrices, sources, settings)

    def rest(self, layer: int, hidden: np.ndarray, attended: np.ndarray, dtype: str) -> np.ndarray:
        """Residual + LayerNorm, the GELU MLP, residual + LayerNorm: hidden_states[layer + 1]."""
        p = f"encoder.layer.{layer}."

        def w(name: str) -> np.ndarray:
            return self._w(p + name, dtype)

        ln1 = "attention.output.LayerNorm."
        a = layer_norm(attended + hidden, w(ln1 + "weight"), w(ln1 + "bias"), self.eps)  # (n, d)
        mid = self.act(linear(a, w("intermediate.dense.weight"), w("intermediate.dense.bias")))
        out = linear(mid, w("output.dense.weight"), w("output.dense.bias"))  # (n, d)
        return layer_norm(
            out + a, w("output.LayerNorm.weight"), w("output.LayerNorm.bias"), self.eps
        )
