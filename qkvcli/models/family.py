"""What a model family gives qkv: each layer's attention as a problem, and the rest of the layer.

A family (`bert.Bert`, `llama.Llama`) turns
a layer's input hidden states into the matrices and settings of qkv's own
attention pipeline (`LayerAttention`), and computes everything around it:
the embeddings before the first layer, and after each attention the
residuals, norms and MLP that give the next layer's input.

>>> setting({"hidden_size": 384}, "hidden_size", "m")
384
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputError
from ..i18n import _

if TYPE_CHECKING:
    import numpy as np

    from .tokens import Tokens


@dataclass
class LayerAttention:
    """One layer's attention in qkv's terms.

    ``matrices``: X (the attention's input rows), W_Q, W_K, W_V, W_O and the
    biases, as a `Problem` holds them; ``sources``: the tensor each came from;
    ``settings``: `Options` fields (heads, kv_heads, weights_layout, scale,
    rope …); ``mask``: ``causal`` for a decoder, as a problem file names it.
    """

    matrices: dict[str, np.ndarray]
    sources: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None


class Family(Protocol):
    """A model family: a config and weights, computed layer by layer in numpy."""

    #: The family's config name (``model_type``), e.g. ``bert``.
    kind: str
    layers: int
    heads: int
    #: Key/value heads (fewer than ``heads`` under grouped-query attention).
    kv_heads: int
    d_model: int
    #: How the weights are stored when not as floats (``Q4_1, Q8_0``: dequantized), else "".
    stored: str
    #: The most tokens the model has positions for (None: no limit).
    positions: int | None

    def embed(self, tokens: Tokens, dtype: str) -> np.ndarray:
        """The first layer's input, (n, d_model): ``hidden_states[0]``."""
        ...

    def attention(self, layer: int, hidden: np.ndarray, dtype: str) -> LayerAttention:
        """Layer ``layer`` (0-based)'s attention on its input ``hidden`` (n, d_model)."""
        ...

    def rest(self, layer: int, hidden: np.ndarray, attended: np.ndarray, dtype: str) -> np.ndarray:
        """The layer's output (the next layer's input) from its input and its attention output."""
        ...


def setting(config: dict[str, Any], key: str, model: str, kind: type = int) -> Any:
    """A config value of the right type; `InputError` naming the key when it is missing or wrong."""
    value = config.get(key)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise InputError(
            _("model {model}: config.json {key} must be {v}, not {value!r}").format(
                model=model,
                key=key,
                v=_("a number") if kind is float else _("a whole number"),
                value=value,
            )
        )
    return float(value) if kind is float else value
