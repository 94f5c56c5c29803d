"""Where each query looks: which keys were allowed, a row's ranking, its entropy.

Pure numpy helpers for the pictures (heatmaps and the token view); no rich.

>>> import numpy as np
>>> ranked(np.array([0.2, 0.5, 0.3]), None)
[1, 2, 0]
>>> round(entropy_bits(np.array([0.5, 0.5])), 12)
1.0
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from .trace import Trace


def allowed(trace: Trace) -> np.ndarray | None:
    """Which (query, key) pairs could attend, shaped like the weights; None = all.

    A pair was blocked exactly where the ``masked`` stage holds −∞.
    """
    import numpy as np

    stage = trace.stages.get("masked")
    if stage is None:
        return None
    return np.isfinite(
        stage.array.astype(np.float64)
    )  # exact runs hold fractions; same shape as weights: ([B,] [h,] n, m)


def blocked_cells(weights: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """Cells to show as masked: blocked keys whose weight is 0.

    A fully masked row filled by ``--empty-rows uniform`` keeps its weights
    visible, since they are used.
    """
    import numpy as np

    if allowed is None:
        return np.zeros(weights.shape, dtype=bool)
    return ~allowed & (weights == 0)


def ranked(row: np.ndarray, blocked: np.ndarray | None) -> list[int]:
    """Key indices of one row of weights, heaviest first, ties in key order, masked keys left out."""
    import numpy as np

    order = np.argsort(-row, kind="stable")
    return [int(j) for j in order if (blocked is None or not blocked[j]) and not math.isnan(row[j])]


def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy −Σ p·log₂ p of a row of weights that sums to 1, in bits (0·log 0 = 0)."""
    import numpy as np

    nz = p[p > 0]  # (k,)
    return float(-(nz * np.log2(nz)).sum()) + 0.0
