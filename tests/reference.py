"""A slow, obviously correct attention: plain lists, loops and math.exp.

Independent of qkvcli (no numpy): the tests compare the pipeline against it.
"""

from __future__ import annotations

import math


def matmul(a, b):
    return [
        [sum(a[i][t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))]
        for i in range(len(a))
    ]


def transpose(a):
    return [list(col) for col in zip(*a)]


def project(x, w, b=None):
    out = matmul(x, w)
    if b is not None:
        out = [[v + b[j] for j, v in enumerate(row)] for row in out]
    return out


def columns(a, start, stop):
    return [row[start:stop] for row in a]


def softmax(row, allowed):
    live = [v for v, ok in zip(row, allowed) if ok]
    top = max(live)
    exps = [math.exp(v - top) if ok else 0.0 for v, ok in zip(row, allowed)]
    total = sum(exps)
    return [e / total for e in exps]


def attention(Q, K, V, *, scale=None, heads=1, kv_heads=None, allowed=None, bias=None,
              W_O=None, b_O=None, similarity="dot", normalize="softmax", temperature=1.0):  # fmt: skip
    """Every stage for one sequence. ``allowed[i][j]`` True = query i may attend key j."""
    n, m = len(Q), len(K)
    kv_heads = kv_heads or heads
    dk = len(Q[0]) // heads
    dv = len(V[0]) // kv_heads
    if scale is None:
        scale = 1 / math.sqrt(dk)
    group = heads // kv_heads
    out = {"scores": [], "scaled": [], "weights": [], "head_outputs": []}
    for h in range(heads):
        g = h // group
        q = columns(Q, h * dk, (h + 1) * dk)
        k = columns(K, g * dk, (g + 1) * dk)
        v = columns(V, g * dv, (g + 1) * dv)
        scores = [[0.0] * m for _ in range(n)]
        for i in range(n):
            for j in range(m):
                dot = sum(q[i][t] * k[j][t] for t in range(dk))
                if similarity == "cosine":
                    dot /= math.sqrt(sum(a * a for a in q[i])) * math.sqrt(sum(b * b for b in k[j]))
                scores[i][j] = dot
        scaled = [[s * scale / temperature + (bias[i][j] if bias else 0.0) for j, s in enumerate(row)]
                  for i, row in enumerate(scores)]  # fmt: skip
        ok = [
            [(allowed[i][j] if allowed else True) and scaled[i][j] != -math.inf for j in range(m)]
            for i in range(n)
        ]
        if normalize == "sigmoid":
            weights = [[sigmoid(s) if ok[i][j] else 0.0 for j, s in enumerate(row)]
                       for i, row in enumerate(scaled)]  # fmt: skip
        else:
            weights = [softmax(row, ok[i]) for i, row in enumerate(scaled)]
        head_out = [
            [sum(weights[i][j] * v[j][t] for j in range(m)) for t in range(dv)] for i in range(n)
        ]
        for key, val in (
            ("scores", scores),
            ("scaled", scaled),
            ("weights", weights),
            ("head_outputs", head_out),
        ):
            out[key].append(val)
    concat = [[x for h in range(heads) for x in out["head_outputs"][h][i]] for i in range(n)]
    out["concat"] = concat
    out["output"] = project(concat, W_O, b_O) if W_O is not None else concat
    return out


def sigmoid(s: float) -> float:
    """1 / (1 + e^−s), written so that e^−s never overflows for a large negative s."""
    return 1 / (1 + math.exp(-s)) if s >= 0 else math.exp(s) / (1 + math.exp(s))
