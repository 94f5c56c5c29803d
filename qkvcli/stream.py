"""Attention in blocks, with an online softmax: memory O(n·d), never n×n.

A second way to evaluate the same resolved problem as `attention.run`: the
same projections, heads, masks, bias, scale, similarity and normaliser, but
the scores are made one block of queries × keys at a time and folded into a
running row maximum, normaliser and weighted sum of values (the "online
softmax" of FlashAttention). It yields the stages that are not n×n — Q, K, V,
head_outputs, concat, output — plus, per query row, the maximum of the logits
and the normaliser Σ exp(logit − max) (`Trace.stats`).

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> r = resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options())
>>> t = run(r)
>>> list(t.stages), t["output"].round(4).tolist()
(['Q', 'K', 'V', 'output'], [[0.6698, 0.3302], [0.3302, 0.6698]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .attention import _finite, _place, _trace, combine, project, split_heads, unit_rows
from .errors import ComputeError

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved
    from .trace import Trace

#: Elements in one block of scores (16 MiB in float64): big enough for fast
#: matrix products, small enough that memory stays O(n·d).
BLOCK = 2**21
#: Keys per block; longer key sequences are folded in with the online softmax.
KEY_BLOCK = 4096

Progress = Callable[[int, int], None]


def blocks(n: int, m: int, block: int = BLOCK) -> tuple[int, int]:
    """Queries and keys per block for an n×m problem.

    >>> blocks(8192, 8192), blocks(10, 3)
    ((512, 4096), (10, 3))
    """
    bk = max(1, min(m, KEY_BLOCK))
    return max(1, min(n, block // bk)), bk


def run(r: Resolved, block: int = BLOCK, progress: Progress | None = None) -> Trace:
    """The non-n×n stages of attention for ``r``, computed in blocks.

    ``progress(done, total)`` is called after each block of query rows.
    """
    import numpy as np

    o = r.options
    h, g = r.heads, r.kv_heads
    a, Q, K, V = project(r)
    q = split_heads(Q, h)  # (B|1, h, n, dk)
    k = split_heads(K, g)  # (B|1, g, m, dk)
    v = split_heads(V, g)  # (B|1, g, m, dv)
    if o.similarity == "cosine":
        q, k = unit_rows(q, "Q"), unit_rows(k, "K")
    c = r.scale / o.temperature
    if not _bounded(q, k, c):
        _check_overflow(r, q, k, c)
    B, n, dv = r.B, r.n, r.dv_head
    heads_out = np.empty((B, h, n, dv), dtype=o.dtype)  # (B, h, n, dv)
    row_max = np.empty((B, h, n), dtype=o.dtype)  # (B, h, n)
    row_sum = np.empty((B, h, n), dtype=o.dtype)  # (B, h, n)
    total, done = B * h * n, 0
    for b in range(B):
        for hh in range(h):
            kv = hh // (h // g)  # GQA: query heads share key/value heads
            qh = np.ascontiguousarray(q[b if q.shape[0] > 1 else 0, hh]) * q.dtype.type(c)
            kh = np.ascontiguousarray(k[b if k.shape[0] > 1 else 0, kv])  # (m, dk)
            vh = v[b if v.shape[0] > 1 else 0, kv]  # (m, dv)

            def tick(rows: int) -> None:
                nonlocal done
                done += rows
                if progress is not None:
                    progress(done, total)

            out = attend_head(r, b, hh, qh, kh, vh, block, tick)
            heads_out[b, hh], row_max[b, hh], row_sum[b, hh] = out
            if o.normalize == "softmax":
                _empty_rows(r, b, hh, row_max[b, hh], vh, heads_out[b, hh])
    concat, output = combine(heads_out, a)
    arrays = {"Q": Q, "K": K, "V": V, "head_outputs": heads_out, "concat": concat}
    trace = _trace(r, arrays | {"output": output})
    if o.normalize == "softmax":
        trace.stats = _public({"row_max": row_max, "row_sum": row_sum}, r)
    return trace


def attend_head(
    r: Resolved,
    b: int,
    hh: int,
    q: np.ndarray,  # (n, dk), already × scale / temperature
    k: np.ndarray,  # (m, dk)
    v: np.ndarray,  # (m, dv)
    block: int = BLOCK,
    tick: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One head of one batch item: output (n, dv), row max (n,), normaliser (n,).

    For sigmoid weights the rows are not normalised: max and normaliser are NaN.
    """
    import numpy as np

    n, m, dv = q.shape[0], k.shape[0], v.shape[1]
    dt = q.dtype
    sigmoid = r.options.normalize == "sigmoid"
    bq, bk = blocks(n, m, block)
    va = np.empty((m, dv + 1), dtype=dt)  # (m, dv + 1): V and a column of ones
    va[:, :dv], va[:, dv] = v, 1.0  # p·[V | 1] gives the weighted sum and Σp at once
    out = np.empty((n, dv), dtype=dt)  # (n, dv)
    top = np.empty(n, dtype=dt)  # (n,)
    norm = np.empty(n, dtype=dt)  # (n,)
    buf = np.empty((bq, bk), dtype=dt)  # (bq, bk): one block of logits, reused
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i0 in range(0, n, bq):
            i1 = min(n, i0 + bq)
            rows = slice(i0, i1)
            mx = np.full(i1 - i0, -np.inf, dtype=dt)  # (bq,) running max
            acc = np.zeros((i1 - i0, dv + 1), dtype=dt)  # (bq, dv + 1) Σ p·[V | 1]
            for j0 in range(0, m, bk):
                j1 = min(m, j0 + bk)
                cols = slice(j0, j1)
                s = buf[: i1 - i0, : j1 - j0]  # (bq, bk)
                np.matmul(q[rows], k[cols].T, out=s)  # scaled scores
                allowed = _tile(r.allowed, b, hh, rows, cols)
                if r.bias is not None:
                    s += _tile(r.bias, b, hh, rows, cols)
                    finite = np.isfinite(s)
                    allowed = finite if allowed is None else (allowed & finite)
                if allowed is not None:
                    np.copyto(s, -np.inf, where=~allowed)
                if sigmoid:
                    np.logaddexp(0.0, -s, out=s)
                    np.negative(s, out=s)
                    np.exp(s, out=s)  # σ(s), 0 where masked
                    acc += s @ va[cols]
                    continue
                new = np.maximum(mx, s.max(axis=1))  # (bq,)
                shift = np.where(new == -np.inf, 0.0, new)  # a fully masked block adds 0
                s -= shift[:, None]
                np.exp(s, out=s)  # p = exp(logit − running max)
                acc *= np.exp(mx - shift)[:, None]  # rescale what came before
                acc += s @ va[cols]  # (bq, dv + 1)
                mx = new
            if sigmoid:
                out[rows], top[rows], norm[rows] = acc[:, :dv], np.nan, np.nan
            else:
                total = acc[:, dv]  # (bq,)
                out[rows] = acc[:, :dv] / np.where(total > 0, total, 1.0)[:, None]
                top[rows], norm[rows] = mx, total
            if tick is not None:
                tick(i1 - i0)
    return out, top, norm


def _tile(a: np.ndarray | None, b: int, hh: int, rows: slice, cols: slice) -> np.ndarray | None:
    """The block of a (B|1, h|1, n|1, m|1) mask or bias that meets these rows and columns."""
    if a is None:
        return None
    a = a[b if a.shape[0] > 1 else 0, hh if a.shape[1] > 1 else 0]
    return a[rows if a.shape[0] > 1 else slice(None), cols if a.shape[1] > 1 else slice(None)]


def _bounded(q: np.ndarray, k: np.ndarray, c: float) -> bool:
    """True when no score (or scaled score) can overflow: |q·k| ≤ ‖q‖·‖k‖ (Cauchy–Schwarz)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        qn = float(np.max(np.linalg.norm(q, axis=-1), initial=0.0))
        kn = float(np.max(np.linalg.norm(k, axis=-1), initial=0.0))
        bound = qn * kn * max(1.0, c)
    return bool(np.isfinite(bound) and bound < float(np.finfo(q.dtype).max) / 4)


def _check_overflow(r: Resolved, q: np.ndarray, k: np.ndarray, c: float) -> None:
    """With huge inputs: find the first overflowing score exactly as `attention.run` reports it."""
    import numpy as np

    h, g = r.heads, r.kv_heads
    bq, bk = blocks(r.n, r.m)
    checks = [("scores", "Q·Kᵀ", 1.0)]
    if r.bias is None:
        checks.append(("scaled", "scores × scale", c))
    for name, what, factor in checks:
        for b in range(r.B):
            for hh in range(h):
                qh = q[b if q.shape[0] > 1 else 0, hh]
                kh = k[b if k.shape[0] > 1 else 0, hh // (h // g)]
                for i0 in range(0, r.n, bq):
                    first = None  # (row, column) of the first non-finite value in these rows
                    for j0 in range(0, r.m, bk):
                        with np.errstate(over="ignore", invalid="ignore"):
                            s = (qh[i0 : i0 + bq] @ kh[j0 : j0 + bk].T) * factor  # (bq, bk)
                        bad = np.argwhere(~np.isfinite(s))
                        if len(bad):
                            at = (int(bad[0][0]) + i0, int(bad[0][1]) + j0)
                            first = at if first is None else min(first, at)
                    if first is not None:
                        grid = np.full((1, 1, first[0] + 1, first[1] + 1), 0.0)
                        grid[0, 0, first[0], first[1]] = np.inf
                        try:
                            _finite(grid, name, what)
                        except ComputeError as e:
                            raise ComputeError(_where(str(e), b, hh)) from None


def _where(message: str, b: int, hh: int) -> str:
    """Add the head and batch item to an overflow message, as `attention._finite` does."""
    head = f" (head {hh + 1})" if hh else ""
    item = f" (batch item {b + 1})" if b else ""
    return message.replace(": the inputs", f"{head}{item}: the inputs")


def _empty_rows(
    r: Resolved, b: int, hh: int, top: np.ndarray, v: np.ndarray, out: np.ndarray
) -> None:
    """Rows where every key is masked: raise, or fill as ``--empty-rows`` says."""
    import numpy as np

    dead = top == -np.inf  # (n,)
    if not dead.any():
        return
    if r.options.empty_rows == "error":
        where = _place(np.array([b, hh, int(np.argmax(dead))]))
        raise ComputeError(
            f"every key is masked for {where}: its softmax is undefined "
            "(--empty-rows nan|zero|uniform picks what frameworks do)"
        )
    fill = {"nan": np.nan, "zero": 0.0, "uniform": 1.0 / r.m}[r.options.empty_rows]
    out[dead] = fill * v.sum(axis=0)  # the weights row is `fill` for every key


def _public(stats: dict[str, np.ndarray], r: Resolved) -> dict[str, np.ndarray]:
    """Per-row statistics in public shape: [batch,] [head,] rows."""
    out = {}
    for name, a in stats.items():
        if not r.multihead:
            a = a[:, 0]
        out[name] = a if r.batched else a[0]
    return out
