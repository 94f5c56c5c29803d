"""explain: hand-checked lines for the worked example, and every cell of every stage
agreeing with the slow reference (single head, two heads, causal mask, W_O)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import reference

from qkvcli.errors import OptionError
from qkvcli.explain import explain, parse_cell
from qkvcli.load import load
from qkvcli.options import Options
from qkvcli.problem import Problem

X = [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]]
W_Q = [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]]
W_K = [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]]
W_V = [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]]


def worked():
    p, settings = load("samples/worked_example.json")
    return p, Options().merged(settings)


def test_scores_cell_written_out():
    p, o = worked()
    lines = explain(p, o, "scores[2,2]")
    assert lines == [
        "scores[2,2]: rows and columns count from 1; row = query 2 (x2), column = key 2 (x2).",
        "scores[2,2] = q₂·k₂ = 2·4 + 2·4 + 2·0 = 16",
    ]


def test_weights_cell_written_out():
    p, o = worked()
    lines = explain(p, o, "weights[1,2]")
    # By hand: q₁ = (1, 0, 2), k₂ = (4, 4, 0): 4; ×1/√3 = 2.3094; row 1 scaled = (1.1547, 2.3094, 2.3094).
    assert lines[1:] == [
        "scores[1,2] = q₁·k₂ = 1·4 + 0·4 + 2·0 = 4",
        "scaled[1,2] = scores[1,2] × 1/√3 = 4 × 0.57735 = 2.3094",  # 4 × 0.5774 would be 2.3096
        "weights[1,2] = e^{scaled[1,2] − m} / Σₖ e^{scaled[1,k] − m}, where m = scaled[1,2], "
        "the largest in row 1",
        "  (row 1 of weights sums to 1: 0.1361 + 0.4319 + 0.4319 = 0.9999, 1 before rounding)",
        "  = e^{2.3094 − 2.3094} / (e^{1.1547 − 2.3094} + e^{2.3094 − 2.3094} + e^{2.3094 − 2.3094})",
        "  = e^{0} / (e^{−1.1547} + e^{0} + e^{0})",
        f"  = 1 / ({math.exp(-1.1547):.6f} + 1 + 1) = 1 / {2 + math.exp(-1.1547):.6f}",
        "  = 0.4319",
    ]


def test_output_cell_written_out():
    p, o = worked()
    lines = explain(p, o, "output[3,1]")
    # 0.0074·1 + 0.7547·2 + 0.2378·2 = 1.9924: the weights need 5 decimals to give 1.9926
    assert lines[1] == "weights[3,·] = (0.00744, 0.75471, 0.23785)"
    assert lines[2] == (
        "output[3,1] = Σⱼ weights[3,j]·V[j,1] = 0.00744·1 + 0.75471·2 + 0.23785·2 = 1.9926"
    )


def test_q_cell_written_out():
    p, o = worked()
    assert explain(p, o, "Q[2,3]")[1] == (
        "Q[2,3] = x₂ · (column 3 of W_Q) = 0·1 + 2·0 + 0·1 + 2·1 = 2"
    )


def test_masked_cells():
    p, o = worked()
    o = Options(mask="causal")
    blocked = explain(p, o, "masked[1,3]")
    assert blocked[-1] == "masked[1,3] = −∞ (the mask blocks key 3 for query 1)"
    w = explain(p, o, "weights[1,3]")
    assert w[-1] == "weights[1,3] = 0: key 3 is masked, so it gets no weight"
    w = explain(p, o, "weights[2,2]")
    assert "(key 3 masked, left out)" in w[4]


def _number(line: str) -> float:
    """The value a line ends with (−∞ allowed)."""
    last = line.rsplit("=", 1)[1].strip().split(" ")[0].replace("−", "-")
    return -math.inf if last == "-∞" else float(last)


CASES = {
    "one head": (dict(X=X, W_Q=W_Q, W_K=W_K, W_V=W_V), Options(), None),
    "causal": (dict(X=X, W_Q=W_Q, W_K=W_K, W_V=W_V), Options(mask="causal"), "causal"),
    "two heads, W_O": (
        dict(
            X=X,
            W_Q=[[1, 0, 1, 2], [1, 0, 0, 1], [0, 0, 1, 0], [0, 1, 1, 1]],
            W_K=[[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 2], [1, 1, 0, 0]],
            W_V=[[0, 2, 0, 1], [0, 3, 0, 0], [1, 0, 3, 1], [1, 1, 0, 2]],
            W_O=[[1, 0], [0, 1], [1, 1], [2, 0]],
        ),
        Options(heads=2),
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_cell_of_every_stage_ends_with_the_reference_value(case):
    mats, o, mask = CASES[case]
    p = Problem({k: np.array(v, dtype=float) for k, v in mats.items()})
    heads = o.heads or 1
    Q, K, V = (reference.matmul(X, mats[w]) for w in ("W_Q", "W_K", "W_V"))
    allowed = [[j <= i for j in range(3)] for i in range(3)] if mask else None
    ref = reference.attention(Q, K, V, heads=heads, allowed=allowed, W_O=mats.get("W_O"))
    ref |= {"Q": Q, "K": K, "V": V}
    ref["masked"] = [
        [[s if (allowed is None or allowed[i][j]) else -math.inf for j, s in enumerate(row)]
         for i, row in enumerate(h)]
        for h in ref["scaled"]
    ]  # fmt: skip
    stages = ["Q", "K", "V", "scores", "scaled", "weights", "output"]
    stages += ["masked"] if mask else []
    stages += ["head_outputs", "concat"] if heads > 1 else []
    for name in stages:
        per_head = name in ("scores", "scaled", "masked", "weights", "head_outputs")
        for h in range(heads if per_head else 1):
            grid = ref[name][h] if per_head else ref[name]
            for i, row in enumerate(grid):
                for j, value in enumerate(row):
                    lines = explain(
                        p,
                        o,
                        f"{name}[{i + 1},{j + 1}]",
                        head=h + 1 if per_head and heads > 1 else None,
                    )
                    assert lines[0].startswith(f"{name}[{i + 1},{j + 1}]")
                    got = 0.0 if "gets no weight" in lines[-1] else _number(lines[-1])
                    if math.isinf(value):
                        assert got == value
                    else:
                        assert got == pytest.approx(value, abs=5e-5), (name, h, i, j, lines)


def test_dot_products_add_up():
    """Every written dot product a·b + c·d … equals the number after it."""
    p, o = worked()
    checked = 0
    for name in ("Q", "K", "V", "scores", "output"):
        for i in range(3):
            for j in range(3):
                for line in explain(p, o, f"{name}[{i + 1},{j + 1}]"):
                    m = re.search(r"= ((?:−?[\d.]+·\(?−?[\d.]+\)?(?: \+ )?)+) = (−?[\d.]+)$", line)
                    if m:
                        terms = [t.split("·") for t in m[1].split(" + ")]
                        total = sum(float(a) * float(b.strip("()")) for a, b in terms)
                        assert total == pytest.approx(float(m[2]), abs=2e-3), line
                        checked += 1
    assert checked == 45


def test_cell_references():
    assert parse_cell(" scores [ 2 , 3 ] ") == ("scores", 1, 2)
    with pytest.raises(
        OptionError, match=r"cell 'scores\(2,3\)' is not of the form STAGE\[ROW,COLUMN\]"
    ):
        parse_cell("scores(2,3)")
    with pytest.raises(OptionError, match="rows and columns count from 1"):
        parse_cell("scores[0,1]")


def test_bad_cells_are_named():
    p, o = worked()
    with pytest.raises(OptionError, match=r"scores is 3×3: scores\[4,1\] is outside it"):
        explain(p, o, "scores[4,1]")
    with pytest.raises(OptionError, match="no stage 'masked' in this problem"):
        explain(p, o, "masked[1,1]")
    with pytest.raises(OptionError, match=r"scores is computed per head: give --head 1…3"):
        explain(p, Options(heads=3), "scores[1,1]")
    with pytest.raises(OptionError, match="--head 4: this problem has 3 head"):
        explain(p, Options(heads=3), "scores[1,1]", head=4)


def test_sigmoid_temperature_bias_and_batch():
    """Batch item 2: q₂ = (0, 2), k₁ = (1, 0); scaled = 0·(1/√2)/2 + 0.5; σ(0.5) = 0.6225 by hand."""
    p = Problem(
        {
            "Q": np.array([[[1.0, 0], [0, 1]], [[1, 1], [0, 2]]]),
            "K": np.array([[[1.0, 0], [0, 1]], [[1, 0], [1, 1]]]),
            "V": np.array([[[1.0, 2], [3, 4]], [[0, 1], [1, 0]]]),
            "attn_bias": np.array([[0.0, -1], [0.5, 0]]),
        }
    )
    o = Options(normalize="sigmoid", temperature=2.0)
    lines = explain(p, o, "weights[2,1]", item=2)
    assert lines == [
        "weights[2,1] (batch item 2): rows and columns count from 1; row = query 2, column = key 1.",
        "scores[2,1] = q₂·k₁ = 0·1 + 2·0 = 0",
        "scaled[2,1] = scores[2,1] × 1/√2 / 2 = 0 × 0.3536 + attn_bias[2,1] (0.5) = 0.5000",
        "masked[2,1] = scaled[2,1] = 0.5000 (query 2 may attend key 1)",
        "weights[2,1] = σ(masked[2,1]) = 1 / (1 + e^{−0.5}) = 1 / (1 + 0.606531) = 1 / 1.606531"
        f" = {1 / (1 + math.exp(-0.5)):.4f}",
    ]
    with pytest.raises(OptionError, match="--item 3: this problem has 2 batch item"):
        explain(p, o, "weights[2,1]", item=3)
