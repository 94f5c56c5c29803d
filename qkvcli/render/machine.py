"""Plain machine formats: JSON (every stage, full precision), CSV/TSV (one stage), NPZ.

No colour, no markup. Floats are written with ``repr`` so they round-trip
exactly; masked (−∞) and undefined (NaN) cells are ``null`` in JSON.

>>> to_delimited([[0.5, 0.25]], ",")
'0.5,0.25\\n'
"""

from __future__ import annotations

import io
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
    out = io.StringIO()
    write_delimited(out, array, sep)
    return out.getvalue()


def write_delimited(out: Any, array: Any, sep: str, precision: int | None = None) -> None:
    """`to_delimited`, written a block of rows at a time (memory stays small for long stages).

    Every digit by default (``repr``, which round-trips); ``precision`` decimals when given.
    """
    import numpy as np

    text = repr if precision is None else (lambda v: f"{v:.{precision}f}")
    a = np.asarray(array)
    lead = a.shape[:-2]
    for idx in np.ndindex(*lead):
        prefix = "".join(f"{i + 1}{sep}" for i in idx)
        rows = a[idx]
        for start in range(0, rows.shape[0], 1024):
            block = rows[start : start + 1024].astype(np.float64).tolist()
            out.write("".join(prefix + sep.join(map(text, row)) + "\n" for row in block))


def to_npz(trace: Trace, stages: list[Stage], path: str) -> None:
    """Write the chosen stages to an ``.npz`` file, each under its stage name.

    Streamed runs add ``row_max`` and ``row_sum`` (per query row); ``meta``
    holds the run's settings as JSON text (no pickles: ``np.load`` reads it
    with ``allow_pickle=False``).
    """
    import numpy as np

    # Plain float arrays (an exact run's fractions too), so np.load(..., allow_pickle=False) reads them.
    arrays = {s.name: np.asarray(s.array, dtype=np.float64) for s in stages} | dict(trace.stats)
    meta = trace.meta | {"tokens": trace.tokens, "kv_tokens": trace.kv_tokens}
    arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False))
    from ..atomic import atomic_file

    with atomic_file(path, "--output", binary=True) as fh:
        np.savez(fh, **arrays)
