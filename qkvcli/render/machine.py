"""Plain machine formats: JSON (every stage, full precision), CSV/TSV (one stage), NPZ.

No colour, no markup. Floats are written with ``repr`` so they round-trip
exactly; masked (−∞) and undefined (NaN) cells are ``null`` in JSON.

>>> to_delimited([[0.5, 0.25]], ",")
'0.5,0.25\\n'
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

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

    from .text import write_out

    text = repr if precision is None else (lambda v: f"{v:.{precision}f}")
    a = np.asarray(array)
    lead = a.shape[:-2]
    for idx in np.ndindex(*lead):
        prefix = "".join(f"{i + 1}{sep}" for i in idx)
        rows = a[idx]
        for start in range(0, rows.shape[0], 1024):
            block = rows[start : start + 1024].astype(np.float64).tolist()
            write_out(out, "".join(prefix + sep.join(map(text, row)) + "\n" for row in block))


def to_npz(
    trace: Trace, stages: list[str], path: str, tick: Callable[[int, int], None] | None = None
) -> None:
    """Write the chosen stages to an ``.npz`` file, each under its stage name.

    Streamed runs, and n×n stages written by rows, add ``row_logsumexp`` (per query row); ``meta`` holds the
    run's settings as JSON text (no pickles: ``np.load`` reads it with
    ``allow_pickle=False``). An n×n stage the run did not hold (``trace.later``)
    is computed and written a block of query rows at a time, so memory stays
    at one block whatever its size (``tick(done, total)`` counts its rows, for a progress
    bar). The layout is ``np.savez``'s: one
    ``NAME.npy`` per array in a stored (uncompressed) zip.
    """
    import zipfile

    import numpy as np

    from ..atomic import atomic_file

    meta = trace.meta | {"tokens": trace.tokens, "kv_tokens": trace.kv_tokens}
    stats = dict(trace.stats)  # row_logsumexp: from the streamed run, or from the blocks written
    later = [s for s in stages if s not in trace.stages]
    n = trace.meta["n_queries"]
    if trace.later:
        meta["stages"] = [s for s in (*trace.stages, *trace.later) if s in stages or not stages]
        meta["shapes"] = meta["shapes"] | {
            s: later_shape(trace) for s in trace.later if s in stages
        }
    with (
        atomic_file(path, "--output", binary=True) as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for name in stages:
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                if name in trace.stages:
                    # Plain floats (an exact run's fractions too): np.load(..., allow_pickle=False) reads them.
                    a = np.asarray(trace.stages[name].array, dtype=np.float64)
                    write_npy(out, a)
                else:
                    k = later.index(name)  # the k-th pass over the rows
                    step = (
                        None
                        if tick is None
                        else lambda done, k=k: tick(k * n + done, len(later) * n)
                    )
                    got = write_rows(out, trace, name, step)
                    stats = stats or got
        extra = [*stats.items(), ("meta", np.array(json.dumps(meta, ensure_ascii=False)))]
        for name, a in extra:
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asarray(a), allow_pickle=False)


def write_npy(out: Any, a: np.ndarray) -> None:
    """``a`` as ``.npy`` bytes, as `np.lib.format.write_array` writes them, but a contiguous
    array straight from its memory (write_array copies it, 16 MiB at a time, into a zip)."""
    import numpy as np

    if not a.flags.c_contiguous or a.dtype.hasobject:
        np.lib.format.write_array(out, a, allow_pickle=False)
        return
    np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(a))
    data = _raw(a)
    for start in range(0, len(data), 2**24):
        out.write(data[start : start + 2**24])


def _raw(a: np.ndarray) -> memoryview:
    """A contiguous array's bytes, not copied."""
    return memoryview(a.reshape(-1).view("u1"))


#: Values of an n×n stage computed at once when it is written by blocks of rows (32 MiB).
ROW_BLOCK = 2**22


def later_shape(trace: Trace) -> list[int]:
    """The public shape of an n×n stage written by blocks of rows: [batch,] [head,] n, m."""
    meta = trace.meta
    lead = [meta["batch"]] * trace.batched + [trace.heads] * (trace.heads > 1)
    return [*lead, meta["n_queries"], meta["n_keys"]]


def write_rows(
    out: Any, trace: Trace, name: str, tick: Callable[[int], None] | None = None
) -> dict[str, np.ndarray]:
    """An n×n stage as ``.npy`` bytes, computed a block of query rows at a time (``trace.rows_of``).

    Worker threads compute the next blocks (one per core, OpenBLAS on one
    thread each) while this one is written. With batch or head axes the rows
    of each matrix are not next to each other in the file, so blocks go to
    their places in a temporary file first. Returns the blocks' per-row
    statistics (``row_logsumexp``), joined. ``tick(rows)`` is told the rows written so far.
    """
    import tempfile
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ..blas import cores, single_threaded

    *lead, n, m = later_shape(trace)
    count = max(1, ROW_BLOCK // (m * max(1, int(np.prod(lead)))))
    stats: dict[str, list[np.ndarray]] = {}

    def block(i0: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        part = trace.rows_of(np.arange(i0, min(n, i0 + count)))  # type: ignore[misc]
        return np.ascontiguousarray(part[name], dtype=np.float64), part.stats  # (*lead, rows, m)

    np.lib.format.write_array_header_2_0(
        out, {"descr": "<f8", "fortran_order": False, "shape": (*lead, n, m)}
    )
    with (
        single_threaded() as ok,
        ThreadPoolExecutor(workers := cores() if ok else 1) as pool,
        tempfile.TemporaryFile() if lead else contextlib.nullcontext() as tmp,
    ):
        if tmp is not None:
            tmp.truncate(int(np.prod(lead)) * n * m * 8)
        starts = iter(range(0, n, count))
        ahead = deque(pool.submit(block, i0) for i0 in itertools.islice(starts, workers))
        for i0 in range(0, n, count):
            rows, got = ahead.popleft().result()  # (*lead, rows, m)
            ahead.extend(pool.submit(block, i) for i in itertools.islice(starts, 1))
            for key, a in got.items():
                stats.setdefault(key, []).append(a)  # (*lead, rows)
            if tmp is None:
                out.write(_raw(rows))
            else:
                for idx in np.ndindex(*lead):
                    tmp.seek((np.ravel_multi_index(idx, lead) * n + i0) * m * 8)
                    tmp.write(_raw(np.ascontiguousarray(rows[idx])))
            if tick is not None:
                tick(min(n, i0 + count))
        if tmp is not None:
            tmp.seek(0)
            while chunk := tmp.read(2**24):
                out.write(chunk)
    return {key: np.concatenate(parts, axis=-1) for key, parts in stats.items()}
