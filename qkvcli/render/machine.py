"""Plain machine formats: JSON (every stage, full precision) and CSV/TSV (one stage).

No colour, no markup. Floats are written with ``repr`` so they round-trip
exactly; masked (−∞) and undefined (NaN) cells are ``null`` in JSON.

>>> to_delimited([[0.5, 0.25]], ",")
'0.5,0.25\\n'
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..trace import Stage, Trace


def _plain(x: Any) -> Any:
    """Nested lists with non-finite floats turned into ``None``."""
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x if math.isfinite(x) else None


def to_json(trace: Trace, stages: list[Stage]) -> str:
    """One JSON object: ``meta`` and the chosen stages as nested lists."""
    import numpy as np

    doc: dict[str, Any] = {
        "meta": trace.meta | {"tokens": trace.tokens, "kv_tokens": trace.kv_tokens}
    }
    for s in stages:
        a = s.array.astype(np.float64)  # exact runs hold fractions: written as floats
        values = a.tolist()
        doc[s.name] = values if np.all(np.isfinite(a)) else _plain(values)
    return json.dumps(doc, allow_nan=False, ensure_ascii=False) + "\n"


def to_delimited(array: Any, sep: str) -> str:
    """Rows of a stage as text; leading batch/head axes become 1-based index columns."""
    import numpy as np

    a = np.asarray(array, dtype=np.float64)
    lead = a.shape[:-2]
    lines = []
    for idx in np.ndindex(*lead):
        for row in a[idx]:
            cells = [str(i + 1) for i in idx] + [repr(float(v)) for v in row]
            lines.append(sep.join(cells))
    return "\n".join(lines) + "\n"
