"""The result of one attention run: its stages in order, and what was assumed.

Stage names are a public contract, the same in tables, JSON keys, ``--stage``,
``check`` answer files and ``explain`` cell references.

>>> STAGES[:4], STAGES[7:10]
(('Q', 'K', 'V', 'Q_normed'), ('scores', 'scaled', 'capped'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import OptionError, did_you_mean
from .i18n import N_, _

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved

STAGES = (
    "Q",
    "K",
    "V",
    "Q_normed",
    "K_normed",
    "Q_rotated",
    "K_rotated",
    "scores",
    "scaled",
    "capped",
    "masked",
    "weights",
    "head_outputs",
    "concat",
    "output",
)

#: Stages computed once per head (the others hold every head side by side).
PER_HEAD = ("scores", "scaled", "capped", "masked", "weights", "head_outputs")
#: Stages with one value per (query, key) pair.
SQUARE = ("scores", "scaled", "capped", "masked", "weights")
#: How −∞ (a masked logit) is written in text.
NEG_INF = "−∞"

#: What each stage is, in words: shown before its name in titles in a language other than English.
WORDS = {
    "Q": N_("query"),
    "K": N_("key"),
    "V": N_("value"),
    "Q_normed": N_("normed query"),
    "K_normed": N_("normed key"),
    "Q_rotated": N_("rotated query"),
    "K_rotated": N_("rotated key"),
    "scores": N_("attention scores"),
    "scaled": N_("scaled scores"),
    "capped": N_("soft-capped scores"),
    "masked": N_("masked scores"),
    "weights": N_("attention weights"),
    "head_outputs": N_("head outputs"),
    "concat": N_("concatenated heads"),
    "output": N_("output"),
}


#: Each stage's Chinese names, in the articles' words (the stage, its matrix, its vectors).
CHINESE = {
    "Q": ("查询", "查询矩阵", "查询向量", "q矩阵"),
    "K": ("键", "键矩阵", "键向量", "k矩阵"),
    "V": ("值", "值矩阵", "值向量", "v矩阵"),
    "Q_normed": ("归一化后的查询", "归一化查询"),
    "K_normed": ("归一化后的键", "归一化键"),
    "Q_rotated": ("旋转后的查询", "旋转查询"),
    "K_rotated": ("旋转后的键", "旋转键"),
    "scores": ("分数", "注意力分数", "得分", "注意力得分", "相似度分数", "点积"),
    "scaled": ("缩放", "缩放后的分数", "缩放分数", "缩放后分数", "缩放后的得分"),
    "capped": ("软上限", "软上限后的分数", "截断后的分数"),
    "masked": ("掩码", "掩码后的分数", "掩码分数", "掩码后分数"),
    "weights": ("权重", "注意力权重", "权值", "注意力权值", "权重矩阵", "注意力矩阵"),
    "head_outputs": ("各头输出", "每个头的输出", "头输出"),
    "concat": ("拼接", "拼接后", "拼接结果"),
    "output": ("输出", "注意力输出", "输出矩阵", "结果"),
}
#: A Chinese name → the stage it names (``--stage``, answer keys, explain's cells).
ALIASES = {word: stage for stage, words in CHINESE.items() for word in words}


def canonical(name: str) -> str:
    """A stage named as typed, Chinese included: ``权重`` → ``weights``; other names as they are.

    >>> canonical("权重"), canonical("Q"), canonical("weight")
    ('weights', 'Q', 'weight')
    """
    return ALIASES.get(name.strip(), name)


def titled(name: str) -> str:
    """A stage's name as a title shows it: ``weights`` in English, ``注意力权重 weights`` in Chinese.

    The name itself (a public contract: ``--stage``, JSON keys) is never translated.

    >>> titled("weights")
    'weights'
    """
    from .i18n import language

    if language() == "en" or name not in WORDS:
        return name
    from . import i18n

    return f"{i18n._(WORDS[name])} {name}"


#: What the rows and columns of each stage are indexed by, in row layout.
AXES = {
    "Q": ("queries", "features"),
    "K": ("keys", "features"),
    "V": ("keys", "features"),
    "Q_normed": ("queries", "features"),
    "K_normed": ("keys", "features"),
    "Q_rotated": ("queries", "features"),
    "K_rotated": ("keys", "features"),
    "scores": ("queries", "keys"),
    "scaled": ("queries", "keys"),
    "capped": ("queries", "keys"),
    "masked": ("queries", "keys"),
    "weights": ("queries", "keys"),
    "head_outputs": ("queries", "features"),
    "concat": ("queries", "features"),
    "output": ("queries", "features"),
}


@dataclass(eq=False)  # arrays inside: compared by identity
class Stage:
    """One step of the computation.

    ``array`` has the public shape: ``[batch,] [head,] rows, cols`` — the batch
    axis only when the input had one, the head axis only for per-head stages
    of a multi-head run. ``rows``/``cols`` say what the axes index
    (``queries``, ``keys`` or ``features``). ``index``: when only some query
    rows were computed (for a summarised table), which ones, of ``total``.
    """

    name: str
    formula: str
    array: np.ndarray
    per_head: bool
    rows: str
    cols: str
    index: np.ndarray | None = None
    total: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one matrix of this stage (last two axes), every row counted."""
        rows, cols = self.array.shape[-2:]
        return (rows if self.index is None else self.total, cols)


@dataclass(eq=False)  # arrays inside: compared by identity
class Trace:
    """Every stage of a run, in pipeline order, with the settings that produced it."""

    stages: dict[str, Stage]
    meta: dict[str, Any]
    tokens: list[str] | None = None
    kv_tokens: list[str] | None = None
    batched: bool = False
    heads: int = 1
    notes: list[str] = field(default_factory=list)
    #: Per query row, when streamed: ``row_logsumexp`` = log Σⱼ exp(logitᵢⱼ) (the softmax's
    #: normaliser; with sinks, log(Σⱼ exp(logitᵢⱼ) + exp(sink))).
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    #: When the n×n stages are too big to hold: the ones the run has (``later``),
    #: and ``rows_of(rows)``, a trace of the per-query stages of those query rows.
    later: tuple[str, ...] = ()
    rows_of: Callable[[np.ndarray], Trace] | None = None
    #: Rows of the KV cache: the first ``past`` keys are cached tokens (labelled c1 c2 …).
    past: int = 0

    def labels(self, axis: str, count: int, short: bool = False) -> list[str]:
        """Labels for rows/columns: tokens for queries and keys, else 1-based numbers.

        ``short`` numbers queries and keys ``q1 q2 …`` / ``k1 k2 …`` instead. In
        a decode step the cached keys are ``c1 c2 …`` and the new tokens are
        numbered from past + 1.

        >>> t = Trace({}, {}, tokens=["a", "b"])
        >>> t.labels("queries", 2), t.labels("keys", 2), t.labels("keys", 2, short=True)
        (['a', 'b'], ['1', '2'], ['k1', 'k2'])
        >>> Trace({}, {}, past=2).labels("keys", 3), Trace({}, {}, past=2).labels("queries", 1)
        (['c1', 'c2', '3'], ['3'])
        """
        names = {"queries": self.tokens, "keys": self.kv_tokens}.get(axis)
        if names is not None and len(names) == count:
            return list(names)
        first = 1
        head: list[str] = []
        if self.past and axis in ("queries", "keys"):
            if axis == "keys":
                head, count = [f"c{i}" for i in range(1, self.past + 1)], count - self.past
            if self.tokens is not None and len(self.tokens) == count:
                return head + list(self.tokens)
            first = self.past + 1
        if short and axis in ("queries", "keys"):
            return head + [f"{axis[0]}{i}" for i in range(first, first + count)]
        return head + [str(i) for i in range(first, first + count)]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.stages[name].array

    def select(self, names: list[str] | None) -> list[Stage]:
        """The stages asked for, in pipeline order; every stage when ``names`` is empty.

        Raises `OptionError` for a name that is not a stage of this run.
        """
        if not names:
            return list(self.stages.values())
        check_stages(names, [s for s in STAGES if s in self.stages or s in self.later])
        return [s for s in self.stages.values() if s.name in names]


def check_stages(asked: list[str], names: list[str], option: str = "--stage") -> None:
    """Raise `OptionError` for the first of ``asked`` that is not among ``names``, the run's stages.

    >>> check_stages(["weight"], ["Q", "K", "V", "scores", "scaled", "weights", "output"])
    Traceback (most recent call last):
    ...
    qkvcli.errors.OptionError: --stage weight: no such stage (did you mean weights?); this run's stages: Q, K, V, scores, scaled, weights, output
    """
    for name in asked:
        if name not in names:
            what = (
                _("this run has no {name} stage").format(name=name)
                if name in STAGES
                else _("no such stage")
            )
            raise OptionError(
                _("{option} {name}: {what}{hint}; this run's stages: {stages}").format(
                    option=option,
                    name=name,
                    what=what,
                    hint=did_you_mean(name, names),
                    stages=", ".join(names),
                )
            )


def stage_names(r: Resolved) -> list[str]:
    """The stages a run has, in pipeline order (``masked`` only when something masks)."""
    o = r.options
    names = ["Q", "K", "V"]
    names += ["Q_normed", "K_normed"] if o.qk_norm is not None else []
    names += ["Q_rotated", "K_rotated"] if o.rope is not None else []
    names += ["scores", "scaled"] + (["capped"] if o.attn_logit_softcapping is not None else [])
    names += (["masked"] if r.masked else []) + ["weights"]
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
