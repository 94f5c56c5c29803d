"""Which (query, key) pairs may attend, and what is added to their logits — as rules.

A `Rules` holds each mask the way it was given (a causal offset, a sliding
window, chunks, per-query lengths, a key-padding row, an explicit 0/1 grid)
and the additive bias (an explicit grid, ALiBi's slopes). Any block of
queries × keys asks it for its own piece, so the streamed evaluation never
builds an n×m array for a mask or bias that is a rule (causal, window,
chunk, lengths, padding, ALiBi); the dense one asks for the whole grid at once.

Query row i sits at index ``i + q0`` among the keys (``q0`` = the cache's
length in a decode step, else 0), as Hugging Face's masks count positions.

>>> import numpy as np
>>> rules = Rules(B=1, h=1, n=3, m=3, causal=0)
>>> rules.allowed().astype(int)[0, 0].tolist()
[[1, 0, 0], [1, 1, 0], [1, 1, 1]]
>>> rules.allowed(rows=slice(0, 2), cols=slice(0, 2), b=0, hh=0).astype(int).tolist()
[[1, 0], [1, 1]]
>>> rules.allowed(rows=slice(1, 3), cols=slice(0, 2), b=0, hh=0) is None  # every pair open
True
>>> Rules(B=1, h=1, n=4, m=4, window=2).allowed()[0, 0].astype(int).tolist()
[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
>>> Rules(B=1, h=1, n=4, m=4, chunk=2).allowed()[0, 0].astype(int).tolist()
[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
>>> Rules(B=1, h=1, n=3, m=3, slopes=np.array([0.5])).added()[0, 0].tolist()
[[0.0, 0.5, 1.0], [-0.5, 0.0, 0.5], [-1.0, -0.5, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ShapeError, shape_str
from .i18n import _

if TYPE_CHECKING:
    import numpy as np

ALL = slice(None)


@dataclass(frozen=True, eq=False)  # arrays inside: compared by identity
class Rules:
    """The masks and bias of a run, each kept in the form it was given.

    ``causal``: key j may attend query i iff j ≤ i + causal. ``window`` W
    (Hugging Face's ``sliding_window``): iff i' − W < j ≤ i', with i' = i + q0.
    ``chunk`` C (``attention_chunk_size``): iff ⌊i'/C⌋ = ⌊j/C⌋. ``lens``
    (B|1, n): iff j < lens[b, i]. ``padding`` (B|1, m): iff padding[b, j].
    ``grid`` (B|1, h|1, n, m): an explicit mask, True = may attend.
    ``bias`` (B|1, h|1, n, m): added to the scaled scores; −∞ blocks.
    ``slopes`` (h,): ALiBi, adds slopes[h]·(j − i') (0 on the diagonal,
    −m_h per token of distance into the past).
    """

    B: int
    h: int
    n: int
    m: int
    causal: int | None = None
    lens: np.ndarray | None = None
    padding: np.ndarray | None = None
    grid: np.ndarray | None = None
    bias: np.ndarray | None = None
    window: int | None = None
    chunk: int | None = None
    slopes: np.ndarray | None = None
    q0: int = 0

    @property
    def masks(self) -> bool:
        """True when some pair may be blocked (a mask, or a bias that may hold −∞)."""
        return self.masked_by_rule or self.bias is not None

    @property
    def masked_by_rule(self) -> bool:
        """True when a mask (not the bias) is in force."""
        rules = (self.causal, self.lens, self.padding, self.grid, self.window, self.chunk)
        return any(x is not None for x in rules)

    @property
    def biased(self) -> bool:
        """True when something is added to the logits (attn_bias or ALiBi)."""
        return self.bias is not None or self.slopes is not None

    def allowed(
        self,
        rows: slice | np.ndarray = ALL,
        cols: slice = ALL,
        b: int | None = None,
        hh: int | None = None,
    ) -> np.ndarray | None:
        """Which pairs of this block may attend (True), from the masks; None = every pair.

        With ``b`` and ``hh`` the block is (rows, cols) — or, when no pair of it
        may attend, a (1, 1) False that broadcasts; without, it keeps
        broadcastable batch and head axes: (B|1, h|1, rows, cols). −∞ in the
        bias is not included here: see `open`.
        """
        import numpy as np

        if not self.masked_by_rule:
            return None
        if b is not None:
            return self._block(rows, cols, b, hh)
        parts = []
        i = np.arange(self.n)[rows][:, None]  # (rows, 1)
        j = np.arange(self.m)[cols][None, :]  # (1, cols)
        at = i + self.q0  # (rows, 1): each query's index among the keys
        if self.causal is not None:
            parts.append((j <= i + self.causal)[None, None])  # (1, 1, rows, cols)
        if self.window is not None:
            parts.append(((j <= at) & (j > at - self.window))[None, None])
        if self.chunk is not None:
            parts.append(((j // self.chunk) == (at // self.chunk))[None, None])
        if self.lens is not None:
            parts.append((j < self.lens[:, rows][..., None])[:, None])  # (B|1, 1, rows, cols)
        if self.padding is not None:
            parts.append(self.padding[:, cols][:, None, None, :])  # (B|1, 1, 1, cols)
        if self.grid is not None:
            parts.append(self.grid[..., rows, :][..., cols])  # (B|1, h|1, rows, cols)
        out = parts[0]
        for part in parts[1:]:
            out = out & part
        return out

    def spans(self, rows: slice | np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The keys [lo, hi) each query row of batch item ``b`` may see under the masks that
        are intervals (causal, window, chunk, lengths); None when there are none.

        >>> [a.tolist() for a in Rules(B=1, h=1, n=4, m=4, causal=0, window=2).spans(slice(1, 3), 0)]
        [[0, 1], [2, 3]]
        """
        import numpy as np

        if self.causal is None and self.window is None and self.chunk is None and self.lens is None:
            return None
        i = np.arange(self.n)[rows]  # (rows,)
        at = i + self.q0  # (rows,): each query's index among the keys
        lo, hi = np.zeros_like(i), np.full_like(i, self.m)
        if self.causal is not None:
            hi = np.minimum(hi, i + self.causal + 1)
        if self.window is not None:
            lo, hi = np.maximum(lo, at - self.window + 1), np.minimum(hi, at + 1)
        if self.chunk is not None:
            start = at // self.chunk * self.chunk
            lo, hi = np.maximum(lo, start), np.minimum(hi, start + self.chunk)
        if self.lens is not None:
            lens = np.ceil(_item(self.lens, b)[rows]).astype(i.dtype)  # j < len ⇔ j < ⌈len⌉
            hi = np.minimum(hi, lens)
        return lo, hi

    def _block(self, rows: slice | np.ndarray, cols: slice, b: int, hh: int | None) -> Any:
        """`allowed` for one block: None when every pair may attend, (1, 1) False when none."""
        import numpy as np

        j0, j1, _ = cols.indices(self.m)
        shut = np.zeros((1, 1), dtype=bool)
        parts = []
        spans = self.spans(rows, b)
        if spans is not None:
            lo, hi = spans
            if not np.any((lo < j1) & (hi > j0) & (lo < hi)):
                return shut  # every row's keys lie outside the block
            j = np.arange(j0, j1)[None, :]  # (1, cols)
            if lo.max() > j0:
                parts.append(j >= lo[:, None])  # (rows, cols)
            if hi.min() < j1:
                parts.append(j < hi[:, None])  # (rows, cols)
        if self.padding is not None:
            pad = _item(self.padding, b)[cols]  # (cols,)
            if not pad.all():
                parts.append(pad[None, :])
        if self.grid is not None:
            parts.append(_item(_item(self.grid, b), hh)[rows][:, cols])
        if not parts:
            return None
        out = parts[0]
        for part in parts[1:]:
            out = out & part
        return out

    def added(
        self,
        rows: slice | np.ndarray = ALL,
        cols: slice = ALL,
        b: int | None = None,
        hh: int | None = None,
    ) -> np.ndarray | None:
        """The bias of this block (same axes as `allowed`): attn_bias plus ALiBi, or None."""
        import numpy as np

        out = None
        if self.bias is not None:
            a = self.bias if b is None else _item(_item(self.bias, b), hh)
            out = a[..., rows, :][..., cols]
        if self.slopes is not None:
            at = np.arange(self.n)[rows][:, None] + self.q0  # (rows, 1)
            dist = np.arange(self.m)[cols][None, :] - at  # (rows, cols): j − i'
            if b is None:
                alibi = self.slopes[None, :, None, None] * dist  # (1, h, rows, cols)
            else:
                alibi = self.slopes[hh] * dist  # (rows, cols)
            out = alibi if out is None else out + alibi
        return out

    def bias_ceiling(self, hh: int) -> np.ndarray | float:
        """An upper bound, per query row (n,), on what ALiBi adds to head ``hh``'s open pairs.

        Causal and windowed rows see no later key, so their ALiBi is ≤ 0; the
        streamed path adds this to its shift.
        """
        import numpy as np

        if self.slopes is None:
            return 0.0
        at = np.arange(self.n) + self.q0  # (n,)
        last = np.full(self.n, self.m - 1)  # (n,): the last key a row may see
        if self.causal is not None:
            last = np.minimum(last, np.arange(self.n) + self.causal)
        if self.window is not None:
            last = np.minimum(last, at)
        return float(self.slopes[hh]) * (last - at)  # (n,) slopes are ≥ 0


def _item(a: np.ndarray, k: int | None) -> np.ndarray:
    """Index the leading axis of a broadcastable array: item ``k``, or its only one."""
    return a[k if a.shape[0] > 1 else 0]


def alibi_slopes(heads: int) -> np.ndarray:
    """ALiBi's slopes m_h for ``heads`` heads, as BLOOM (and MPT) compute them, in float64.

    For a power of two H: 2^(−8/H), 2^(−16/H), …; otherwise the slopes of the
    closest lower power of two, then every other slope of twice that many.

    >>> alibi_slopes(4).tolist(), alibi_slopes(3).tolist()
    ([0.25, 0.0625, 0.015625, 0.00390625], [0.0625, 0.00390625, 0.25])
    """
    import numpy as np

    low = 2 ** math.floor(math.log2(heads))  # the closest power of two ≤ heads
    slopes = [2.0 ** (-8.0 * k / low) for k in range(1, low + 1)]  # (2^(−8/low))^k
    if low != heads:
        odd = range(1, 1 + 2 * min(low, heads - low), 2)
        slopes += [2.0 ** (-4.0 * k / low) for k in odd]  # (2^(−8/(2·low)))^k, k odd
    return np.array(slopes, dtype=np.float64)


def causal_offset(kind: str, n: int, m: int) -> int:
    """The offset of a named causal mask: top-left (0) or aligned to the last key (m − n).

    >>> causal_offset("causal", 3, 5), causal_offset("causal-lower-right", 3, 5)
    (0, 2)
    """
    return m - n if kind == "causal-lower-right" else 0


def grid(a: np.ndarray, name: str, B: int, h: int, n: int, m: int) -> np.ndarray:
    """Broadcast a mask-like (n,m) / (B,n,m) / (B,h,n,m) array to (B|1, h|1, n, m)."""
    import numpy as np

    if a.ndim < 2 or a.ndim > 4 or a.shape[-2:] != (n, m):
        raise ShapeError(
            _("{name} is {shape} but the scores are {n}×{m} (queries × keys)").format(
                name=name, shape=shape_str(a.shape), n=n, m=m
            )
        )
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if a.shape[0] not in (1, B) or a.shape[1] not in (1, h):
        raise ShapeError(
            _(
                "{name} is {shape} but the scores are {b}×{h}×{n}×{m} (batch × heads × queries × keys)"
            ).format(name=name, shape=shape_str(a.shape), b=B, h=h, n=n, m=m)
        )
    return np.asarray(a)


def check_binary(a: np.ndarray, name: str) -> None:
    """Raise `ShapeError` at the first entry of a 0/1 mask that is neither."""
    import numpy as np

    bad = np.argwhere((a != 0) & (a != 1))
    if len(bad):
        where = ", ".join(str(i + 1) for i in bad[0])
        raise ShapeError(
            _("{name}[{where}] is {v:g}: a mask holds only 0 and 1 (or true/false)").format(
                name=name, where=where, v=a[tuple(bad[0])]
            )
        )


def padding_keep(
    kpm: np.ndarray, block: bool, B: int, m: int, shown: tuple[int, ...]
) -> np.ndarray:
    """A key-padding mask (m,) or (B, m) as (B|1, m) bool, True = may attend."""
    if kpm.ndim == 1:
        kpm = kpm[None]
    if kpm.ndim != 2 or kpm.shape[1] != m or kpm.shape[0] not in (1, B):
        raise ShapeError(
            _("key_padding_mask is {shape} but there are {b} batch items × {m} keys").format(
                shape=shape_str(shown), b=B, m=m
            )
        )
    check_binary(kpm, "key_padding_mask")
    return (kpm == 0) if block else (kpm != 0)


def valid_lens(vl: np.ndarray, B: int, n: int, m: int) -> np.ndarray:
    """valid_lens as d2l uses them, as (B|1, n) whole numbers: key j < len may attend."""
    import numpy as np

    if np.any(vl != np.round(vl)) or np.any(vl < 0) or np.any(vl > m):
        raise ShapeError(
            _("valid_lens must be whole numbers from 0 to {m} (the number of keys)").format(m=m)
        )
    vl = vl.astype(int)
    if vl.ndim == 0:
        return np.broadcast_to(vl, (1, n))
    if vl.ndim == 1 and vl.shape[0] == B:  # one length per batch item (d2l), first
        return np.broadcast_to(vl[:, None], (B, n))
    if vl.ndim == 1 and vl.shape[0] == n:
        return vl[None]
    if vl.ndim == 2 and vl.shape == (B, n):
        return vl
    raise ShapeError(
        _(
            "valid_lens is {shape} but needs one length per batch item ({b}) or per query ({n})"
        ).format(shape=shape_str(vl.shape), b=B, n=n)
    )
