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

if TYPE_CHECKING:
    from .trace import Trace


@dataclass(frozen=True)
class Spec:
    """What to generate. ``d_k`` and ``d_v`` are per head; ``scale`` is sqrt or none."""

    seed: int = 0
    tokens: int = 3
    d_model: int = 4
    d_k: int = 4
    d_v: int | None = None
    heads: int = 1
    scale: str = "sqrt"
    mask: str | None = None
    negative: bool = False


def _check(spec: Spec) -> None:
    for name in ("tokens", "d_model", "d_k", "heads"):
        value = getattr(spec, name)
        if not 1 <= value <= 12:
            raise OptionError(f"--{name.replace('_', '-')} must be from 1 to 12, not {value}")
    if spec.d_v is not None and not 1 <= spec.d_v <= 12:
        raise OptionError(f"--d-v must be from 1 to 12, not {spec.d_v}")
    if spec.scale not in ("sqrt", "none"):
        raise OptionError(f"--scale must be sqrt or none, not {spec.scale!r}")
    if spec.mask not in (None, "causal"):
        raise OptionError(f"--mask must be causal, not {spec.mask!r}")


def practice(spec: Spec) -> dict[str, Any]:
    """A problem as a JSON-ready dict: tokens, X, W_Q, W_K, W_V and its settings."""
    _check(spec)
    rng = random.Random(spec.seed)
    low = -1 if spec.negative else 0

    def matrix(rows: int, cols: int, high: int) -> list[list[int]]:
        out = []
        while len(out) < rows:
            row = [rng.randint(low, high) for _ in range(cols)]
            if any(row):  # a zero row makes a dull problem
                out.append(row)
        return out

    dk, dv = spec.heads * spec.d_k, spec.heads * (spec.d_v or spec.d_k)
    for _ in range(500):  # draw until no softmax row is all but one-hot
        x = matrix(spec.tokens, spec.d_model, 2)
        wq, wk = matrix(spec.d_model, dk, 1), matrix(spec.d_model, dk, 1)
        if _spread(x, wq, wk, spec) <= 3:
            break
    doc: dict[str, Any] = {
        "_about": f"practice problem: qkv new {_args(spec)}",
        "tokens": [f"x{i}" for i in range(1, spec.tokens + 1)],
        "X": x,
        "W_Q": wq,
        "W_K": wk,
        "W_V": matrix(spec.d_model, dv, 1),
    }
    if spec.heads > 1:
        doc["heads"] = spec.heads
    if spec.scale != "sqrt":
        doc["scale"] = spec.scale
    if spec.mask:
        doc["mask"] = spec.mask
    return doc


def _spread(x: list[list[int]], wq: list[list[int]], wk: list[list[int]], spec: Spec) -> float:
    """The widest range of scaled scores in any row of any head (3 keeps weights readable)."""

    def mul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
        return [[sum(r[t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))] for r in a]

    q, k = mul(x, wq), mul(x, wk)
    scale = 1 / math.sqrt(spec.d_k) if spec.scale == "sqrt" else 1.0
    widest = 0.0
    for h in range(spec.heads):
        cols = range(h * spec.d_k, (h + 1) * spec.d_k)
        for i, qi in enumerate(q):
            keys = k[: i + 1] if spec.mask else k
            row = [sum(qi[c] * kj[c] for c in cols) * scale for kj in keys]
            widest = max(widest, max(row) - min(row))
    return widest


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

    doc: dict[str, Any] = {"_about": "answer key (qkv new --answers): every stage"}
    for name, stage in trace.stages.items():
        doc[name] = np.asarray(stage.array, dtype=float).tolist()
    return doc
