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
