"""Attention in blocks, with an online softmax: memory O(n·d), never n×n.

A second way to evaluate the same resolved problem as `attention.run`: the
same projections, cache, QK-norm, rotary positions, heads, masks (windows
and chunks as rules), bias (ALiBi as a rule), scale, soft-cap, similarity,
sinks and normaliser, but the logits are made one block of queries × keys at
a time and folded into a running weighted sum of values and its normaliser
(the "online softmax" of FlashAttention). It yields the stages that are not
n×n — Q, K, V, Q_normed … K_rotated, head_outputs, concat, output — plus,
per query row, the log of the softmax normaliser, log Σⱼ exp(logitᵢⱼ)
(``Trace.stats["row_logsumexp"]``; with sinks the sink's e^sink is in it).

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> r = resolve(Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}), Options())
>>> t = run(r)
>>> list(t.stages), t["output"].round(4).tolist()
(['Q', 'K', 'V', 'output'], [[0.6698, 0.3302], [0.3302, 0.6698]])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .attention import (
    add_bias,
    biased_words,
    bounded,
    check_output,
    check_projections,
    dot_scores,
    empty_row_error,
    fill_value,
    inputs,
    logit_stage,
    mask,
    merge_heads,
    out_project,
    overflow_error,
    prepare,
    project,
    row_norms,
    scale,
    sigmoid_terms,
    softcap,
    softmax_terms,
    split_heads,
    transform_rows,
    with_cache,
)
from .blas import cores, single_threaded
from .describe import build, factor, row_stat
from .errors import OptionError
from .i18n import _

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved
    from .trace import Trace

#: Bytes in one block of logits, per thread (1 MiB: 128 × 1024 in float64, 256 × 1024 in
#: float32): big enough for fast matrix products, small enough for a core's cache, and
#: memory O(n·d). Twice as much was no faster here and cost 2 MiB more at the peak.
BLOCK_BYTES = 2**20
#: Elements in one block of logits in float32 (`blocks`' default).
BLOCK = BLOCK_BYTES // 4
#: Keys per block; longer key sequences are folded in block by block.
KEY_BLOCK = 1024

Progress = Callable[[int, int], None]


def blocks(n: int, m: int, block: int = BLOCK) -> tuple[int, int]:
    """Queries and keys per block for an n×m problem.

    >>> blocks(8192, 8192), blocks(10, 3)
    ((256, 1024), (10, 3))
    """
    bk = max(1, min(m, KEY_BLOCK))
    return max(1, min(n, block // bk)), bk


def run(r: Resolved, block: int | None = None, progress: Progress | None = None) -> Trace:
    """The non-n×n stages of attention for ``r``, computed in blocks.

    ``block``: elements in a block of logits (default: as many as fill `BLOCK_BYTES`).
    ``progress(done, total)`` is called after each block of query rows.
    """
    import numpy as np

    o = r.options
    block = block or BLOCK_BYTES // np.dtype(o.dtype).itemsize
    if o.exact:
        raise OptionError(_("exact arithmetic is not computed in blocks: drop --exact or --stream"))
    h, g = r.heads, r.kv_heads
    a = inputs(r)
    rows: dict[str, np.ndarray] = {}

    def keep(name: str, x: np.ndarray) -> np.ndarray:
        rows[name] = x
        return x

    with np.errstate(over="ignore", invalid="ignore"):
        Q = project(a, "Q")  # (B, n, h·d)
        K = with_cache(a, "K", project(a, "K"))  # (B, m, g·d): cache rows first
        V = with_cache(a, "V", project(a, "V"))  # (B, m, g·dv)
        check_projections(Q, K, V)
    Qr, Kr = transform_rows(Q, K, a, r, keep)  # QK-norm, RoPE: O(n·d)
    q = split_heads(Qr, h)  # (B|1, h, n, dk)
    k = split_heads(Kr, g)  # (B|1, g, m, dk): GQA heads are shared by index, not copied
    v = split_heads(V, g)  # (B|1, g, m, dv)
    q, k = prepare(q, k, o)
    c = factor(r)
    if not bounded(r, q, k, c):
        _check_overflow(r, q, k, c)
    B, n, dv = r.B, r.n, r.dv_head
    heads_out = np.empty((B, h, n, dv), dtype=o.dtype)  # (B, h, n, dv)
    lse = np.empty((B, h, n), dtype=o.dtype)  # (B, h, n)
    total, done, lock = B * h * n, 0, threading.Lock()

    def tick(rows: int) -> None:
        nonlocal done
        with lock:
            done += rows
            if progress is not None:
                progress(done, total)

    with single_threaded() as ok, ThreadPoolExecutor(cores() if ok else 1) as pool:
        for b in range(B):
            for hh in range(h):
                kv = hh // (h // g)  # GQA: query heads share key/value heads
                qh = q[b if q.shape[0] > 1 else 0, hh]  # (n, dk)
                kh = k[b if k.shape[0] > 1 else 0, kv]  # (m, dk)
                vh = v[b if v.shape[0] > 1 else 0, kv]  # (m, dv)
                out = heads_out[b, hh]  # (n, dv)
                lse[b, hh] = attend_head(r, b, hh, qh, kh, vh, c, out, block, tick, pool)
                if o.normalize == "softmax":
                    _empty_rows(r, b, hh, lse[b, hh], vh, out)
    concat = merge_heads(heads_out)  # (B, n, h·dv)
    with np.errstate(over="ignore", invalid="ignore"):
        output = out_project(concat, a)  # (B, n, d_out)
        check_output(output, o)
    arrays = {"Q": Q, "K": K, "V": V, **rows, "head_outputs": heads_out, "concat": concat}
    trace = build(r, arrays | {"output": output})
    if o.normalize == "softmax":
        trace.stats = {"row_logsumexp": row_stat(r, lse)}
    return trace


def attend_head(
    r: Resolved,
    b: int,
    hh: int,
    q: np.ndarray,  # (n, dk)
    k: np.ndarray,  # (m, dk)
    v: np.ndarray,  # (m, dv)
    c: float,
    out: np.ndarray,  # (n, dv), filled with the head's output
    block: int = BLOCK,
    tick: Callable[[int], None] | None = None,
    pool: Executor | None = None,
) -> np.ndarray:
    """One head of batch item ``b``: fill ``out`` and return log Σⱼ exp(logitᵢⱼ) per row (n,).

    Key blocks are taken in turn; for each, every block of query rows (on
    ``pool``'s threads) adds p·[v | 1] of its logits to its rows' running sums,
    held in ``out`` and a row total — so memory beyond the inputs and the
    output is a few blocks. Softmax rows are shifted by a bound on their
    largest logit: ‖c·qᵢ‖·maxⱼ‖kⱼ‖ (Cauchy–Schwarz; for a negative scale c
    too), at most the soft-cap, plus what ALiBi can add to the row, and at
    least the row's sink — unless every row's bound is small enough for
    e^logit to be summed as it is (`unshifted`), the usual case; then c
    scales the keys. Otherwise, without a soft-cap, the shift is folded into
    the product as an extra column. A row whose shifted sum is too small to trust
    is done again with its exact running maximum, as are all rows when an
    attn_bias grid is added. Sigmoid rows are not normalised: their value is NaN.
    """
    import numpy as np

    n, m, dk, dv = q.shape[0], k.shape[0], q.shape[1], v.shape[1]
    dt = np.dtype(r.options.dtype)
    cap = r.options.attn_logit_softcapping
    sinks = r.arrays.get("sinks")
    sink = None if sinks is None else float(sinks[hh])
    bq, bk = blocks(n, m, block)
    with np.errstate(over="ignore", invalid="ignore"):  # |q| of 1e200 squared is inf: rows redone
        kmax = float(np.max(row_norms(k), initial=0.0))
        shift = row_norms(q) * dt.type(abs(c) * kmax)  # (n,) ≥ every logit of the row
    if cap is not None:
        shift = np.minimum(shift, dt.type(cap))  # cap·tanh(x/cap) ≤ min(x, cap) for x ≥ 0
    shift = (shift + r.rules.bias_ceiling(hh)).astype(dt)  # ALiBi can lift a row by this much
    if sink is not None:
        shift = np.maximum(shift, dt.type(sink))  # the sink is one more logit of every row
    mode = "sigmoid" if r.options.normalize == "sigmoid" else "bound"
    if mode == "bound" and r.rules.bias is not None:
        mode = "exact"  # an attn_bias grid can lift a logit above the bound
    if mode == "bound" and unshifted(shift, v, m):
        shift = np.zeros_like(shift)  # e^logit neither overflows nor underflows more than shifted
    sums = Sums(out, np.zeros(n, dtype=dt), np.full(n, -np.inf, dtype=dt))  # (n, dv), (n,), (n,)
    if mode == "exact" and sink is not None:
        sums.top[:], sums.total[:] = sink, 1.0  # the sink: e^(sink − sink) in the sum, no value
    out[:] = 0.0
    kernel = Kernel(r, b, hh, q, k, v, dt.type(c), shift, mode, sink)
    local = threading.local()
    starts = range(0, n, bq)

    def rows_from(i0: int, cols: slice) -> None:
        rows = slice(i0, min(n, i0 + bq))
        if not hasattr(local, "buf"):
            local.buf = Buffers(bq, bk, dk, dv, dt)  # one set per thread, reused
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            kernel.add(rows, cols, local.buf, sums)

    for j0 in range(0, m, bk):
        cols = slice(j0, min(m, j0 + bk))
        kernel.keys(cols)
        if pool is None:
            for i0 in starts:
                rows_from(i0, cols)
        else:
            list(pool.map(lambda i0, cols=cols: rows_from(i0, cols), starts))  # row blocks apart
        if tick is not None:
            tick(n * (cols.stop - j0) // m)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return kernel.finish(sums, bq, bk)


@dataclass
class Sums:
    """A head's running sums per query row: Σ p·v (``out``), Σ p (``total``), the shift (``top``)."""

    out: np.ndarray  # (n, dv)
    total: np.ndarray  # (n,)
    top: np.ndarray  # (n,): the running maximum (exact mode)


class Buffers:
    """One thread's scratch arrays: a block of logits, q's rows with their shift, p·[v | 1]."""

    def __init__(self, bq: int, bk: int, dk: int, dv: int, dt: Any) -> None:
        import numpy as np

        self.logits = np.empty((bq, bk), dtype=dt)  # (bq, bk)
        self.q = np.empty((bq, dk + 1), dtype=dt)  # (bq, dk + 1): c·q and −shift
        self.pv = np.empty((bq, dv + 1), dtype=dt)  # (bq, dv + 1)


class Kernel:
    """The blocked attention of one head: `keys` readies a block of keys, `add` folds a
    block of query rows against it into the running `Sums`, `finish` normalises."""

    def __init__(
        self, r: Resolved, b: int, hh: int, q: Any, k: Any, v: Any, c: Any, shift: Any,
        mode: str, sink: float | None,
    ) -> None:  # fmt: skip
        self.r, self.b, self.hh, self.q, self.k, self.v, self.c = r, b, hh, q, k, v, c
        self.shift, self.mode, self.sink = shift, mode, sink
        self.cap = r.options.attn_logit_softcapping
        self.unshifted = not shift.any()  # `unshifted`: e^logit summed as it is
        self.fold = mode == "bound" and self.cap is None and not self.unshifted  # −shift, a column
        self.scaled_keys = not self.fold  # c·k in the key block (else c·q in each row block)
        self.kv: tuple[Any, Any] | None = None  # [k | 1] and [v | 1] of the key block, reused

    def keys(self, cols: slice) -> None:
        """Ready keys ``cols``: [k | 1] (the shift's column) or c·k, and [v | 1] (p·[v | 1] sums p)."""
        import numpy as np

        k, v, dk, dv = self.k[cols], self.v[cols], self.k.shape[1], self.v.shape[1]
        count = k.shape[0]
        if self.kv is None or self.kv[0].shape[0] < count:
            self.kv = (np.empty((count, dk + 1), dtype=k.dtype),  # (bk, dk + 1)
                       np.empty((count, dv + 1), dtype=v.dtype))  # (bk, dv + 1)  # fmt: skip
        self.kb, self.vb = self.kv[0][:count], self.kv[1][:count]  # reused from block to block
        if self.scaled_keys:
            np.multiply(k, self.c, out=self.kb[:, :dk])  # c·q·k = q·(c·k)
        else:
            self.kb[:, :dk], self.kb[:, dk] = k, 1.0
        self.vb[:, :dv], self.vb[:, dv] = v, 1.0
        self.cols = cols

    def add(
        self,
        rows: slice | np.ndarray,
        cols: slice,
        buf: Buffers,
        sums: Sums,
        mode: str | None = None,
    ) -> None:
        """Fold the logits of ``rows`` × ``cols`` into ``sums`` (rows of the head, or of a redo)."""
        import numpy as np

        mode = mode or self.mode
        rules = self.r.rules
        allowed = rules.allowed(rows, cols, self.b, self.hh)  # (bq, bk) or None
        if allowed is not None and not allowed.any():
            return  # every pair masked (above a causal diagonal): adds nothing
        q = self.q[rows]  # (bq, dk)
        count, dk, width = q.shape[0], q.shape[1], cols.stop - cols.start
        fold = self.fold and mode == "bound"
        if self.scaled_keys:
            qb = q  # the scale is in the keys
        else:
            qb = buf.q[:count] if fold else buf.q[:count, :dk]  # (bq, dk [+ 1])
            np.multiply(q, self.c, out=qb[:, :dk])  # c·q·k = c·(q·k): the scale, applied to q
        if fold:
            qb[:, dk] = -self.shift[rows]
        kb = self.kb if fold else self.kb[:, :dk]
        s = dot_scores(qb, kb, out=buf.logits[:count, :width])  # (bq, bk) logits [− shift]
        if self.cap is not None:
            softcap(s, self.cap, out=s)
            if mode == "bound" and not self.unshifted:
                s -= self.shift[rows][:, None]
        bias = rules.added(rows, cols, self.b, self.hh)
        if bias is not None:
            add_bias(s, bias, out=s)
            if rules.bias is not None:
                open_ = bias != -np.inf  # −∞ in the bias blocks
                allowed = open_ if allowed is None else (allowed & open_)
        if mode == "exact":
            mask(s, allowed, out=s)  # −∞: the running maximum is of the open pairs
        out, total, top = sums.out[rows], sums.total[rows], sums.top[rows]
        if mode == "sigmoid":
            sigmoid_terms(s, out=s)
        elif mode == "exact":
            new = np.maximum(top, s.max(axis=1))  # (bq,)
            shift = np.where(new == -np.inf, 0.0, new)  # a fully masked block adds 0
            rescale = np.exp(top - shift)  # (bq,): what came before, under the new shift
            out *= rescale[:, None]
            total *= rescale
            top[:] = new
            softmax_terms(s, shift[:, None], out=s)
        else:
            softmax_terms(s, None, out=s)  # the shift is already in the product
        if mode != "exact" and allowed is not None:
            np.copyto(s, 0.0, where=~allowed)  # masked after exp: e^−∞ is numpy's slow path
        pv = np.matmul(s, self.vb, out=buf.pv[:count])  # (bq, dv + 1): p·[v | 1]
        out += pv[:, :-1]
        total += pv[:, -1]
        if isinstance(rows, np.ndarray):  # a redo works on copies of its rows
            sums.out[rows], sums.total[rows], sums.top[rows] = out, total, top

    def finish(self, sums: Sums, bq: int, bk: int) -> np.ndarray:
        """Redo the rows whose shifted sum is too small to trust, normalise; log-sums (n,)."""
        import numpy as np

        n, dt = sums.out.shape[0], sums.out.dtype
        if self.mode == "sigmoid":
            return np.full(n, np.nan, dtype=dt)
        if self.mode == "bound":
            sums.top[:] = self.shift
            low = ~(sums.total > TINY[dt.name])  # (n,) shifted too far to trust
            if self.sink is not None:
                sums.total[~low] += np.exp(self.sink - sums.top[~low])  # the sink's term
            fix = np.flatnonzero(low)
            if len(fix):
                self.redo(fix, sums, bq, bk)
        total = sums.total
        sums.out /= np.where(total > 0, total, 1.0)[:, None]
        return sums.top + np.log(total)

    def redo(self, fix: np.ndarray, sums: Sums, bq: int, bk: int) -> None:
        """The online softmax with an exact running maximum, for rows ``fix``."""
        import numpy as np

        dt = sums.out.dtype
        sums.out[fix], sums.total[fix], sums.top[fix] = 0.0, 0.0, -np.inf
        if self.sink is not None:
            sums.top[fix], sums.total[fix] = self.sink, 1.0
        buf = Buffers(bq, bk, self.q.shape[1], self.v.shape[1], dt)
        for j0 in range(0, self.k.shape[0], bk):
            cols = slice(j0, min(self.k.shape[0], j0 + bk))
            self.keys(cols)
            for i0 in range(0, len(fix), bq):
                self.add(fix[i0 : i0 + bq], cols, buf, sums, "exact")


def unshifted(shift: np.ndarray, v: np.ndarray, m: int) -> bool:
    """True when rows whose logits are bounded by ``shift`` (n,) need no shift at all.

    Every bound between 0 and `PLAIN` (e^PLAIN·m·max|v| far from overflow):
    then e^logit ≤ e^shift cannot overflow, and a term shifted by a bound ≥ 0
    is smaller than the term itself, so nothing underflows that would not.

    >>> import numpy as np
    >>> unshifted(np.array([3.0, 12.0]), np.ones((4, 2)), 4), unshifted(np.array([900.0]), np.ones((4, 2)), 4)
    (True, False)
    """
    import numpy as np

    dt = shift.dtype
    if not len(shift) or not bool(np.all((shift >= 0) & (shift <= PLAIN[dt.name]))):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        vmax = max(
            1.0, float(np.max(v, initial=0.0)), -float(np.min(v, initial=0.0))
        )  # no |v| copy
    room = np.log(float(np.finfo(dt).max)) - 4.0  # e^-4: room for rounding
    return bool(np.isfinite(vmax) and float(shift.max()) + np.log(m) + np.log(vmax) < room)


#: The largest row bound summed without a shift: e^±PLAIN is far inside the dtype's range.
PLAIN = {"float64": 500.0, "float32": 60.0}
#: Shifted row sums below this are redone with the exact maximum (their terms may underflow).
TINY = {"float64": 1e-200, "float32": 1e-20}


def _check_overflow(r: Resolved, q: np.ndarray, k: np.ndarray, c: float) -> None:
    """With huge inputs: find the first overflowing score exactly as `attention.run` reports it.

    The dense path checks scores, then scaled, then scaled + attn_bias, each
    over every head before the next; so does this, a block at a time.
    """
    import numpy as np

    h, g = r.heads, r.kv_heads
    bq, bk = blocks(r.n, r.m, BLOCK_BYTES // q.dtype.itemsize)
    checks = [("scores", "Q·Kᵀ"), ("scaled", "scores × scale")]
    if r.rules.biased:
        checks.append((logit_stage(r), biased_words(r)))
    cap = r.options.attn_logit_softcapping
    for step, (name, what) in enumerate(checks):
        for b in range(r.B):
            for hh in range(h):
                qh = q[b if q.shape[0] > 1 else 0, hh]
                kh = k[b if k.shape[0] > 1 else 0, hh // (h // g)]
                for i0 in range(0, r.n, bq):
                    rows = slice(i0, min(r.n, i0 + bq))
                    first = None  # (row, column) of the first non-finite value in these rows
                    for j0 in range(0, r.m, bk):
                        cols = slice(j0, min(r.m, j0 + bk))
                        with np.errstate(over="ignore", invalid="ignore"):
                            s = dot_scores(qh[rows], kh[cols])  # (bq, bk)
                            if step:
                                s = scale(s, c)
                            if step == 2:
                                if cap is not None:
                                    s = softcap(s, cap)
                                bias = r.rules.added(rows, cols, b, hh)
                                s = np.where(bias != -np.inf, add_bias(s, bias), 0.0)
                        bad = np.argwhere(~np.isfinite(s))
                        if len(bad):
                            at = (int(bad[0][0]) + i0, int(bad[0][1]) + j0)
                            first = at if first is None else min(first, at)
                    if first is not None:
                        raise overflow_error(name, what, (b, hh, *first))


def _empty_rows(
    r: Resolved, b: int, hh: int, lse: np.ndarray, v: np.ndarray, out: np.ndarray
) -> None:
    """Rows where every key is masked (log-sum −∞): raise, or fill as ``--empty-rows`` says."""
    import numpy as np

    dead = lse == -np.inf  # (n,)
    if not dead.any():
        return
    if r.options.empty_rows == "error":
        raise empty_row_error(r.where_row(b, hh, int(np.argmax(dead))))
    out[dead] = fill_value(r.options.empty_rows, r.m) * v.sum(axis=0)  # each weight is the fill
