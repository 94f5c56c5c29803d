"""Plain machine formats: JSON (every stage, full precision), CSV/TSV (one stage), NPZ.

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
        values = s.array.astype(np.float64).tolist()
        doc[s.name] = values if np.all(np.isfinite(s.array)) else _plain(values)
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


def to_npz(trace: Trace, stages: list[Stage], path: str) -> None:
    """Write the chosen stages to an ``.npz`` file, each under its stage name.

    Streamed runs add ``row_max`` and ``row_sum`` (per query row); ``meta``
    holds the run's settings as JSON text (no pickles: ``np.load`` reads it
    with ``allow_pickle=False``).
    """
    import numpy as np

    from ..errors import OptionError

    arrays = {s.name: s.array for s in stages} | dict(trace.stats)
    meta = trace.meta | {"tokens": trace.tokens, "kv_tokens": trace.kv_tokens}
    arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False))
    try:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as e:
        raise OptionError(f"--output {path}: cannot write: {e.strerror or e}") from None
