"""The Llama family (``model_type: llama``, e.g. SmolLM2), a causal decoder, layer by layer in numpy.

    hidden_0 = embed_tokens[ids]
    per layer l:
      X        = RMSNorm(hidden_l) · input_layernorm       the attention's input
      attended = attention(X)      qkv's pipeline: Q = X·W_Qᵀ, K = X·W_Kᵀ, V = X·W_Vᵀ (K, V: the KV
                                   heads, shared by groups of query heads), RoPE (rotate-half pairs,
                                   θ = rope_theta) on Q and K, causal mask, output = concat·W_Oᵀ
      h        = hidden_l + attended
      hidden_{l+1} = h + down(SiLU(gate(a)) ⊙ up(a)),  a = RMSNorm(h) · post_attention_layernorm

This is transformers' ``LlamaModel`` in eval mode with one sentence, no
padding and no cache. The weights come from a folder (safetensors, Hugging
Face names) or a GGUF file (`gguf_file.GgufWeights`, dequantized to
float32, W_Q and W_K back in Hugging Face's row order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..i18n import _
from .family import LayerAttention, setting
from .layers import linear, rms_norm, silu

if TYPE_CHECKING:
    import numpy as np

    from .source import Folder
    from .tokens import Tokens

#: A tensor every Llama checkpoint has; the part of its key before this is the prefix.
ANCHOR = "embed_tokens.weight"
PROJECTIONS = {"W_Q": "q_proj", "W_K": "k_proj", "W_V": "v_proj", "W_O": "o_proj"}


class Llama:
    """A Llama model's config and weights; see the module docstring for what each step computes."""

    kind = "llama"

    def __init__(self, folder: Folder, config: dict[str, Any]) -> None:
        name = folder.name
        self.name = name
        self.layers = setting(config, "num_hidden_layers", name)
        self.heads = setting(config, "num_attention_heads", name)
        self.d_model = setting(config, "hidden_size", name)
        self.kv_heads = (
            setting(config, "num_key_value_heads", name)
            if config.get("num_key_value_heads") is not None
            else self.heads
        )
        self.head_dim = (
            setting(config, "head_dim", name)
            if config.get("head_dim") is not None
            else self.d_model // self.heads
        )
        self.positions = (
            setting(config, "max_position_embeddings", name)
            if "max_position_embeddings" in config
            else None
        )
        self.eps = (
            setting(config, "rms_norm_eps", name, float) if "rms_norm_eps" in config else 1e-6
        )
        self.theta, self.rotary = rope_settings(config, name)
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise InputError(
                _("model {name}: hidden_act {act!r}: qkv computes Llama's silu MLP only").format(
                    name=name, act=act
                )
            )
        if self.heads % self.kv_heads:
            raise InputError(
                _(
                    "model {name}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
                ).format(name=name, heads=self.heads, kv_heads=self.kv_heads)
            )
        self.bias = bool(config.get("attention_bias", False))
        self.mlp_bias = bool(config.get("mlp_bias", False))
        if folder.gguf:
            from .gguf_file import GgufWeights

            self.weights: Any = GgufWeights(folder, self.heads, self.kv_heads)
            self.stored = ", ".join(self.weights.types())
        else:
            from .weights import Weights

            self.weights = Weights(folder, ANCHOR)
            self.stored = ""

    def _w(self, name: str, dtype: str) -> np.ndarray:
        return self.weights.tensor(name).astype(dtype, copy=False)

    def embed(self, tokens: Tokens, dtype: str) -> np.ndarray:
        """The token embeddings, (n, d_model): no positions (RoPE turns Q and K instead)."""
        return self.weights.rows(ANCHOR, tokens.ids).astype(dtype)  # (n, d)

    def attention(self, layer: int, hidden: np.ndarray, dtype: str) -> LayerAttention:
        """Layer ``layer``'s self-attention: X = RMSNorm of its input, nn.Linear weights (out, in)."""
        p = f"layers.{layer}."
        norm = p + "input_layernorm.weight"
        x = rms_norm(hidden, self._w(norm, dtype), self.eps)  # (n, d)
        names = {k: f"self_attn.{v}.weight" for k, v in PROJECTIONS.items()}
        if self.bias:
            names |= {"b" + k[1:]: f"self_attn.{v}.bias" for k, v in PROJECTIONS.items()}
        matrices = {"X": x} | {k: self._w(p + v, dtype) for k, v in names.items()}
        sources = {"X": f"RMSNorm(hidden_states[{layer}]) × {self.weights.key(norm)}"}
        sources |= {k: self.weights.key(p + v) for k, v in names.items()}
        settings: dict[str, Any] = {
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "weights_layout": "out-in",
            "scale": "sqrt",
            "rope": "half",
            "rope_theta": self.theta,
        }
        if self.rotary != 1.0:
            settings["partial_rotary_factor"] = self.rotary
        return LayerAttention(matrices, sources, settings, mask="causal")

    def rest(self, layer: int, hidden: np.ndarray, attended: np.ndarray, dtype: str) -> np.ndarray:
        """The residual, then RMSNorm, the SwiGLU MLP and the residual: hidden_states[layer + 1]."""
        p = f"layers.{layer}."

        def w(name: str) -> np.ndarray | None:
            if name.endswith(".bias") and not self.mlp_bias:
                return None
            return self._w(p + name, dtype)

        h = hidden + attended  # (n, d)
        a = rms_norm(h, w("post_attention_layernorm.weight"), self.eps)  # (n, d)
        gate = linear(a, w("mlp.gate_proj.weight"), w("mlp.gate_proj.bias"))  # (n, f)
        up = linear(a, w("mlp.up_proj.weight"), w("mlp.up_proj.bias"))  # (n, f)
        return h + linear(silu(gate) * up, w("mlp.down_proj.weight"), w("mlp.down_proj.bias"))


def rope_settings(config: dict[str, Any], model: str) -> tuple[float, float]:
    """θ and the rotated fraction of each head, from ``rope_theta`` or ``rope_parameters``.

    >>> rope_settings({"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}, "m")
    (100000.0, 1.0)
    """
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise InputError(
            _("model {model}: config.json rope_parameters must be an object").format(model=model)
        )
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind != "default":
        raise InputError(
            _(
                "model {model}: rope_type {kind!r}: qkv computes plain RoPE only (rope_type default)"
            ).format(model=model, kind=kind)
        )
    merged = {**config, **params}
    theta = setting(merged, "rope_theta", model, float) if "rope_theta" in merged else 10000.0
    factor = (
        setting(merged, "partial_rotary_factor", model, float)
        if "partial_rotary_factor" in merged
        else 1.0
    )
    return theta, factor
