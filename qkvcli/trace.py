"""The result of one attention run: its stages in order, and what was assumed.

Stage names are a public contract, the same in tables, JSON keys, ``--stage``,
``check`` answer files and ``explain`` cell references.

>>> STAGES[:4]
('Q', 'K', 'V', 'scores')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import OptionError

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved

STAGES = (
    "Q",
    "K",
    "V",
    "scores",
    "scaled",
    "masked",
    "weights",
    "head_outputs",
    "concat",
    "output",
)

#: Stages computed once per head (the others hold every head side by side).
PER_HEAD = ("scores", "scaled", "masked", "weights", "head_outputs")
#: Stages with one value per (query, key) pair.
SQUARE = ("scores", "scaled", "masked", "weights")
#: How −∞ (a masked logit) is written in text.
NEG_INF = "−∞"

#: What the rows and columns of each stage are indexed by, in row layout.
AXES = {
    "Q": ("queries", "features"),
    "K": ("keys", "features"),
    "V": ("keys", "features"),
    "scores": ("queries", "keys"),
    "scaled": ("queries", "keys"),
    "masked": ("queries", "keys"),
    "weights": ("queries", "keys"),
    "head_outputs": ("queries", "features"),
    "concat": ("queries", "features"),
    "output": ("queries", "features"),
}


@dataclass
class Stage:
    """One step of the computation.

    ``array`` has the public shape: ``[batch,] [head,] rows, cols`` — the batch
    axis only when the input had one, the head axis only for per-head stages
    of a multi-head run. ``rows``/``cols`` say what the axes index
    (``queries``, ``keys`` or ``features``).
    """

    name: str
    formula: str
    array: np.ndarray
    per_head: bool
    rows: str
    cols: str

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one matrix of this stage (last two axes)."""
        return tuple(self.array.shape[-2:])


@dataclass
class Trace:
    """Every stage of a run, in pipeline order, with the settings that produced it."""

    stages: dict[str, Stage]
    meta: dict[str, Any]
    tokens: list[str] | None = None
    kv_tokens: list[str] | None = None
    batched: bool = False
    heads: int = 1
    notes: list[str] = field(default_factory=list)
    #: Per query row, when streamed: ``row_logsumexp`` = log Σⱼ exp(logitᵢⱼ) (the softmax's normaliser).
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    def labels(self, axis: str, count: int, short: bool = False) -> list[str]:
        """Labels for rows/columns: tokens for queries and keys, else 1-based numbers.

        ``short`` numbers queries and keys ``q1 q2 …`` / ``k1 k2 …`` instead.

        >>> t = Trace({}, {}, tokens=["a", "b"])
        >>> t.labels("queries", 2), t.labels("keys", 2), t.labels("keys", 2, short=True)
        (['a', 'b'], ['1', '2'], ['k1', 'k2'])
        """
        names = {"queries": self.tokens, "keys": self.kv_tokens}.get(axis)
        if names is not None and len(names) == count:
            return list(names)
        if short and axis in ("queries", "keys"):
            return [f"{axis[0]}{i}" for i in range(1, count + 1)]
        return [str(i) for i in range(1, count + 1)]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.stages[name].array

    def select(self, names: list[str] | None) -> list[Stage]:
        """The stages asked for, in pipeline order; every stage when ``names`` is empty.

        Raises `OptionError` for a name that is not a stage of this run.
        """
        if not names:
            return list(self.stages.values())
        for name in names:
            if name not in self.stages:
                why = "" if name in STAGES else " stage"
                raise OptionError(f"no{why} {name!r} in this run; stages: {', '.join(self.stages)}")
        return [s for s in self.stages.values() if s.name in names]


def stage_names(r: Resolved) -> list[str]:
    """The stages a run has, in pipeline order (``masked`` only when something masks)."""
    names = ["Q", "K", "V", "scores", "scaled"] + (["masked"] if r.masked else []) + ["weights"]
    if r.multihead:
        names += ["head_outputs", "concat"]
    elif "W_O" in r.arrays:
        names += ["concat"]
    return [*names, "output"]


def to_public(r: Resolved, name: str, a: np.ndarray) -> np.ndarray:
    """A stage in the evaluators' shape → the shape tables, JSON and answers have.

    Internal: (B, n, h·d) for Q, K, V, concat, output; (B, h, n, m) per head.
    Public: the batch axis only when the input had one, the head axis only
    for per-head stages of a multi-head run, features first in columns layout.
    """
    if name in PER_HEAD and not r.multihead:
        a = a[:, 0]
    if not r.batched:
        a = a[0]
    if r.options.layout == "columns" and "features" in AXES[name]:
        a = a.swapaxes(-1, -2)
    return a


def to_internal(r: Resolved, name: str, public: np.ndarray) -> np.ndarray:
    """The inverse of `to_public`: a stage as the user sees it → the evaluators' shape."""
    import numpy as np

    a = np.asarray(public)
    a = a if a.dtype == object else a.astype(float)
    if r.options.layout == "columns" and "features" in AXES[name]:
        a = a.swapaxes(-1, -2)
    if not r.batched:
        a = a[None]
    if name in PER_HEAD and not r.multihead:
        a = a[:, None]
    return a
