"""qkv new: friendly by construction, proven over many seeds and sizes; a random seed by default."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from qkvcli.cli import app
from qkvcli.errors import OptionError
from qkvcli.generate import Spec, practice

SIZES = [
    {},
    {"tokens": 4, "d_model": 3, "d_k": 2},
    {"tokens": 5, "d_model": 6, "d_k": 2, "heads": 3},
    {"tokens": 4, "heads": 2, "d_k": 2, "mask": "causal"},
    {"tokens": 3, "negative": True},
    pytest.param({"tokens": 6, "d_model": 8, "d_k": 4, "d_v": 3}, marks=pytest.mark.slow),
    {"scale": "none", "d_k": 2, "d_model": 3},
    {"scale": "nice", "d_k": 9, "d_model": 9},
]


def mul(a, b):
    return [[sum(r[t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))] for r in a]


def lines(m):
    return list(m) + [list(c) for c in zip(*m)]


@pytest.mark.parametrize(
    "size", SIZES, ids=[str(s.values[0] if hasattr(s, "marks") else s) for s in SIZES]
)
def test_friendly_over_many_seeds(size):
    for seed in range(60):
        spec = Spec(seed=seed, **size)
        doc = practice(spec)
        assert doc == practice(spec)  # the same seed, the same problem
        assert f"--seed {seed}" in doc["_about"]
        X, Wq, Wk, Wv = doc["X"], doc["W_Q"], doc["W_K"], doc["W_V"]
        Q, K, V = mul(X, Wq), mul(X, Wk), mul(X, Wv)
        for m in (X, Wq, Wk, Wv, Q, K, V):
            assert all(isinstance(v, int) for row in m for v in row)
            assert all(any(line) for line in lines(m)), (seed, m)
        heads, d = spec.heads, spec.d_k
        scale = 1.0 if spec.scale == "none" else 1 / math.sqrt(d)
        for h in range(heads):
            cols = range(h * d, (h + 1) * d)
            assert any(Q[i][c] != K[i][c] for i in range(len(Q)) for c in cols)  # Q ≠ K
            for i, q in enumerate(Q):
                keys = K[: i + 1] if spec.mask else K
                row = [sum(q[c] * k[c] for c in cols) * scale for k in keys]
                assert max(abs(z) for z in row) <= 6
                e = [math.exp(z) for z in row]
                if len(row) > 1:
                    assert max(e) / sum(e) <= 0.95


def test_nice_scale_needs_a_square():
    with pytest.raises(OptionError, match=r"--scale nice needs d_k a perfect square"):
        practice(Spec(scale="nice", d_k=3))


def test_a_random_seed_by_default_printed_to_make_it_again():
    runner = CliRunner()
    first = runner.invoke(app, ["new"])
    assert first.exit_code == 0
    note = first.stderr.strip()
    assert note.startswith("note: seed ") and "makes this problem again" in note
    seed = note.split()[2]
    assert f"--seed {seed}" in json.loads(first.stdout)["_about"]
    again = runner.invoke(app, ["new", "--seed", seed])
    assert again.stdout == first.stdout and again.stderr == ""


def test_a_size_that_cannot_be_friendly_is_refused():
    with pytest.raises(OptionError, match=r"no friendly problem of this size"):
        practice(Spec(tokens=12, d_model=2, d_k=1))
