"""The pieces of a transformer layer around attention, in numpy: linear maps, norms, activations.

Each works in the dtype of its input (float32 as the model computes, or
float64 to recompute) and matches PyTorch's definition: ``linear`` is
``nn.Linear`` (weights stored ``(out, in)``), ``layer_norm`` is
``nn.LayerNorm`` (biased variance), ``gelu`` is the exact erf form of
``nn.GELU()`` that BERT uses; ``rms_norm`` is Llama's RMSNorm (the same
function as QK-norm's in `attention`) and ``silu`` is ``nn.SiLU``.

>>> import numpy as np
>>> x = np.array([[1.0, 2.0, 3.0]])
>>> layer_norm(x, np.ones(3), np.zeros(3), 0.0).round(4).tolist()
[[-1.2247, 0.0, 1.2247]]
>>> gelu(np.array([-1.0, 0.0, 1.0])).round(6).tolist()
[-0.158655, 0.0, 0.841345]
>>> silu(np.array([-1.0, 0.0, 1.0])).round(6).tolist()
[-0.268941, 0.0, 0.731059]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError
from ..i18n import _

if TYPE_CHECKING:
    import numpy as np


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x·Wᵀ + b with W as stored by nn.Linear: (n, in) @ (in, out) → (n, out)."""
    y = x @ w.T  # (n, in) @ (in, out) → (n, out)
    return y if b is None else y + b


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """(x − mean) / √(var + eps) · w + b over the last axis (the population variance)."""
    import numpy as np

    mean = x.mean(axis=-1, keepdims=True)  # (n, 1)
    centred = x - mean  # (n, d)
    var = (centred * centred).mean(axis=-1, keepdims=True)  # (n, 1)
    return centred / np.sqrt(var + x.dtype.type(eps)) * w + b  # (n, d)


def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """x / √(mean(x²) + eps) · w over the last axis (Llama's RMSNorm)."""
    from ..attention import rms_norm as norm

    return norm(x, w, eps, False)


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + e^−x), as PyTorch computes SiLU (an overflowing e^−x gives −0: the limit)."""
    import numpy as np

    with np.errstate(over="ignore"):
        return x / (1 + np.exp(-x))


def gelu(x: np.ndarray) -> np.ndarray:
    """x·Φ(x) = x/2 · (1 + erf(x/√2)), with math.erf in float64, rounded to x's dtype."""
    import numpy as np

    erf = np.frompyfunc(math.erf, 1, 1)
    wide = x.astype(np.float64)
    return (0.5 * wide * (1.0 + erf(wide / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """The tanh approximation of GELU (``gelu_new``, ``gelu_pytorch_tanh``)."""
    import numpy as np

    c = x.dtype.type(math.sqrt(2.0 / math.pi))
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x**3)))


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    import numpy as np

    return np.maximum(x, 0)


#: Activations by their Hugging Face config name (``hidden_act``).
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
}


def activation(name: object, model: str) -> Callable[[np.ndarray], np.ndarray]:
    """The activation a config names; `InputError` for one qkv does not compute."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise InputError(
            _("model {model}: hidden_act {name!r} is not one qkv computes ({join})").format(
                model=model, name=name, join=", ".join(ACTIVATIONS)
            )
        )
    return ACTIVATIONS[name]
