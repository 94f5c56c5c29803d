"""Practice problems with friendly numbers, and their answer keys in the ``check`` format.

Entries are small whole numbers drawn from a seeded `random.Random`, so the
same seed always gives the same problem (on any machine, any numpy).

>>> doc = practice(Spec(seed=7))
>>> doc == practice(Spec(seed=7)), len(doc["X"]), len(doc["W_Q"][0])
(True, 3, 4)
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import OptionError
from .i18n import _
from .options import choice

if TYPE_CHECKING:
    from .trace import Trace


@dataclass(frozen=True)
class Spec:
    """What to generate. ``d_k`` and ``d_v`` are per head; ``scale`` is sqrt, none or nice."""

    seed: int = 0
    tokens: int = 3
    d_model: int = 4
    d_k: int = 4
    d_v: int | None = None
    heads: int = 1
    scale: str = "sqrt"
    mask: str | None = None
    negative: bool = False


#: The bounds a practice problem keeps (see `friendly`).
MOST_SCALED = 6.0
MOST_WEIGHT = 0.95
#: How many draws before giving up on a size that cannot be made friendly.
DRAWS = 4000


def _check(spec: Spec) -> None:
    for name in ("tokens", "d_model", "d_k", "heads"):
        value = getattr(spec, name)
        if not 1 <= value <= 12:
            raise OptionError(
                _("--{option} must be from 1 to 12, not {value}").format(
                    option=name.replace("_", "-"), value=value
                )
            )
    if spec.d_v is not None and not 1 <= spec.d_v <= 12:
        raise OptionError(
            _("--{option} must be from 1 to 12, not {value}").format(option="d-v", value=spec.d_v)
        )
    choice("--scale", spec.scale, ("sqrt", "none", "nice"))  # a near miss gets "did you mean"
    if spec.scale == "nice" and math.isqrt(spec.d_k) ** 2 != spec.d_k:
        raise OptionError(
            _("--scale nice needs d_k a perfect square (1, 4, 9), so that 1/√d_k is 1, 1/2 or 1/3; "
              "--d-k {d} gives 1/√{d}").format(d=spec.d_k)
        )  # fmt: skip
    if spec.mask is not None:
        choice("--mask", spec.mask, ("causal",))
    if not 0 <= spec.seed < 2**63:
        raise OptionError(_("--seed must be from 0 to 2^63 − 1, not {seed}").format(seed=spec.seed))


Matrix = list[list[int]]


def practice(spec: Spec) -> dict[str, Any]:
    """A problem as a JSON-ready dict: tokens, X, W_Q, W_K, W_V and its settings.

    Friendly by construction (`friendly`): whole entries, no zero row or column
    anywhere, Q ≠ K in every head, every scaled score within ±6, no weight
    above 0.95 (but for a row that has one key only). Draws are seeded: the
    same spec gives the same problem on any machine. A size that cannot be
    made so is refused (`OptionError`).
    """
    _check(spec)
    rng = random.Random(spec.seed)
    low = -1 if spec.negative else 0
    dk, dv = spec.heads * spec.d_k, spec.heads * (spec.d_v or spec.d_k)

    def dense(rows: int, cols: int, high: int) -> Matrix:
        return [[rng.randint(low, high) for _ in range(cols)] for _ in range(rows)]

    def sparse(rows: int, cols: int) -> Matrix:
        """Each row one ±1 (every column at least one when there are rows enough)."""
        order = [j % cols for j in range(rows)]
        rng.shuffle(order)
        return [[(rng.choice((-1, 1)) if low else 1) if j == order[i] else 0 for j in range(cols)]
                for i in range(rows)]  # fmt: skip

    for attempt in range(DRAWS):
        level = 0 if attempt < 150 else 1 if attempt < 1500 else 2  # denser first, then sparser
        x = dense(spec.tokens, spec.d_model, 1 if level == 2 else 2)
        w = [
            dense(spec.d_model, cols, 1) if level == 0 else sparse(spec.d_model, cols)
            for cols in (dk, dk, dv)
        ]
        if friendly(x, *w, spec):
            break
    else:
        raise OptionError(
            _("no friendly problem of this size in {draws} draws (scaled scores within ±6, no weight "
              "above 0.95, no zero row or column): try fewer tokens, a smaller --d-model or --d-k")
            .format(draws=DRAWS)
        )  # fmt: skip
    doc: dict[str, Any] = {
        "_about": _("practice problem: qkv new {args}").format(args=_args(spec)),
        "tokens": [f"x{i}" for i in range(1, spec.tokens + 1)],
        "X": x,
        "W_Q": w[0],
        "W_K": w[1],
        "W_V": w[2],
    }
    if spec.heads > 1:
        doc["heads"] = spec.heads
    if spec.scale == "none":
        doc["scale"] = "none"
    if spec.mask:
        doc["mask"] = spec.mask
    return doc


def _mul(a: Matrix, b: Matrix) -> Matrix:
    return [[sum(r[t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))] for r in a]


def _no_zero_lines(m: Matrix) -> bool:
    return all(any(row) for row in m) and all(any(col) for col in zip(*m))


def friendly(x: Matrix, wq: Matrix, wk: Matrix, wv: Matrix, spec: Spec) -> bool:
    """Whole entries, no zero row or column in X, W_Q, W_K, W_V, Q, K, V; Q ≠ K in every head;
    every scaled score within ±6 and no weight above 0.95 (a row with one key excepted)."""
    if not all(_no_zero_lines(m) for m in (x, wq, wk, wv)):
        return False
    q, k, v = _mul(x, wq), _mul(x, wk), _mul(x, wv)
    if not all(_no_zero_lines(m) for m in (q, k, v)):
        return False
    scale = 1.0 if spec.scale == "none" else 1 / math.sqrt(spec.d_k)
    for h in range(spec.heads):
        cols = range(h * spec.d_k, (h + 1) * spec.d_k)
        if all(qi[c] == ki[c] for qi, ki in zip(q, k) for c in cols):
            return False  # Q = K in this head: scores would be symmetric Q·Qᵀ
        for i, qi in enumerate(q):
            keys = k[: i + 1] if spec.mask else k
            row = [sum(qi[c] * kj[c] for c in cols) * scale for kj in keys]
            if max(abs(z) for z in row) > MOST_SCALED:
                return False
            if len(row) > 1:
                top = max(row)
                total = sum(math.exp(z - top) for z in row)
                if 1 / total > MOST_WEIGHT:
                    return False
    return True


def _args(spec: Spec) -> str:
    """The command line that makes this problem again."""
    words = [f"--seed {spec.seed}", f"--tokens {spec.tokens}", f"--d-model {spec.d_model}"]
    words.append(f"--d-k {spec.d_k}")
    if spec.d_v is not None:
        words.append(f"--d-v {spec.d_v}")
    if spec.heads > 1:
        words.append(f"--heads {spec.heads}")
    if spec.scale != "sqrt":
        words.append(f"--scale {spec.scale}")
    if spec.mask:
        words.append(f"--mask {spec.mask}")
    if spec.negative:
        words.append("--negative")
    return " ".join(words)


def _number(v: float, precision: int) -> str:
    if math.isinf(v):
        return '"-inf"' if v < 0 else '"inf"'
    if math.isnan(v):
        return "null"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.{precision}f}"


def _nested(a: Any, precision: int, indent: str) -> str:
    """A nested list with one matrix row per line."""
    if not isinstance(a, list):
        return _number(float(a), precision)
    if a and not isinstance(a[0], list):
        return "[" + ", ".join(_number(float(v), precision) for v in a) + "]"
    inner = indent + " "
    parts = [_nested(v, precision, inner) for v in a]
    return "[" + (",\n" + inner).join(parts) + "]"


def to_json(doc: dict[str, Any], precision: int = 4) -> str:
    """A problem or key as JSON text with one matrix row per line."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], (list, int, float)):
            text = _nested(value, precision, " " * (len(json.dumps(key)) + 3))
        else:
            text = json.dumps(value, ensure_ascii=False)
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def answer_key(trace: Trace) -> dict[str, Any]:
    """Every stage of a run, keyed by stage name: the ``check`` format."""
    import numpy as np

    doc: dict[str, Any] = {"_about": _("answer key (qkv new --answers): every stage")}
    for name, stage in trace.stages.items():
        doc[name] = np.asarray(stage.array, dtype=float).tolist()
    return doc
