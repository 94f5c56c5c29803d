"""--exact: fractions from the decimals as written, the scale as a surd, checked against
fractions computed here independently (plain loops over `fractions.Fraction`)."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from qkvcli.attention import run
from qkvcli.errors import OptionError
from qkvcli.exact import Surd, latex, text
from qkvcli.explain import explain
from qkvcli.options import Options
from qkvcli.problem import Problem, resolve

X = ["0.1 0.2 1.5", "2 0.25 0", "0.3 1 0.7"]
W_Q = ["1 0.5 0", "0 1 0.1", "0.2 0 1"]
W_K = ["0.5 0 1", "1 1 0", "0 0.3 1"]
W_V = ["1 2", "0.5 0", "0 1"]


def exact(rows):
    return [[F(t) for t in r.split()] for r in rows]


def floats(rows):
    return np.array([[float(t) for t in r.split()] for r in rows])


def matmul(a, b):
    return [
        [sum(a[i][t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))]
        for i in range(len(a))
    ]


def trace(options=None, **extra):
    options = options or Options(exact=True)
    mats = {"X": floats(X), "W_Q": floats(W_Q), "W_K": floats(W_K), "W_V": floats(W_V)} | extra
    return run(resolve(Problem(mats), options))


def test_linear_stages_are_exact_fractions():
    t = trace()
    Q, K, V = (matmul(exact(X), exact(w)) for w in (W_Q, W_K, W_V))
    assert t["Q"].tolist() == Q
    assert t["K"].tolist() == K
    assert t["V"].tolist() == V
    assert t["Q"][0][0] == F(1, 10) + F(2, 10) * 0 + F(3, 2) * F(
        1, 5
    )  # 0.1·1 + 0.2·0 + 1.5·0.2 = 2/5
    scores = [[sum(q * k for q, k in zip(qi, kj)) for kj in K] for qi in Q]
    assert t["scores"].tolist() == scores
    assert all(isinstance(v, F) for row in t["scores"] for v in row)


def test_scale_stays_a_surd():
    t = trace()
    K = matmul(exact(X), exact(W_K))
    Q = matmul(exact(X), exact(W_Q))
    for i in range(3):
        for j in range(3):
            s = sum(q * k for q, k in zip(Q[i], K[j]))
            v = t["scaled"][i][j]
            # s/√3 = (s/3)·√3, and squaring gives s²/3 exactly
            assert isinstance(v, Surd) and (v.a, v.b, v.r) == (0, s / 3, 3)
            assert v * v == s * s / 3
    assert float(t["scaled"][0][0]) == pytest.approx(float(t["scores"][0][0]) / 3**0.5, rel=1e-15)


@pytest.mark.parametrize(
    "d, b, r",
    [(4, F(1, 2), 1), (12, F(1, 6), 3), (8, F(1, 4), 2), (9, F(1, 3), 1), (5, F(1, 5), 5)],
)
def test_one_over_root_d(d, b, r):
    s = Surd.sqrt_inverse(d)
    if r == 1:
        assert s == b and isinstance(s, F)
    else:
        assert (s.a, s.b, s.r) == (0, b, r)
        assert s * s == F(1, d)


def test_perfect_square_scale_is_a_fraction():
    t = trace(
        W_Q=floats(["1 0 0 0", "0 1 0 0", "0 0 1 0"]), W_K=floats(["1 0 0 1", "0 1 0 0", "0 0 1 0"])
    )
    assert all(isinstance(v, F) for row in t["scaled"] for v in row)  # d_k = 4: × 1/2
    assert t["scaled"][1][0] == t["scores"][1][0] / 2


def test_softmax_weights_match_the_float_run():
    exact_t, float_t = trace(), trace(Options())
    np.testing.assert_allclose(
        np.asarray(exact_t["weights"], float), float_t["weights"], rtol=1e-14
    )
    np.testing.assert_allclose(np.asarray(exact_t["output"], float), float_t["output"], rtol=1e-13)


def test_written_forms():
    s = Surd(0, F(16, 3), 3)
    assert (text(s), latex(s)) == ("16√3/3", r"\frac{16\sqrt{3}}{3}")
    assert text(Surd(F(1), F(-1, 2), 2)) == "1 − √2/2"
    assert latex(Surd(F(1), F(-1, 2), 2)) == r"1 - \frac{\sqrt{2}}{2}"
    assert text(F(-3, 10)) == "−3/10"
    assert latex(F(-3, 10)) == r"-\frac{3}{10}"


def test_explain_exact_shows_surds_and_e_powers():
    t = trace()
    lines = explain(
        Problem({"X": floats(X), "W_Q": floats(W_Q), "W_K": floats(W_K), "W_V": floats(W_V)}),
        Options(exact=True),
        "weights[1,1]",
    )
    Q = matmul(exact(X), exact(W_Q))
    K = matmul(exact(X), exact(W_K))
    s = sum(q * k for q, k in zip(Q[0], K[0]))
    assert lines[1].endswith(f"= {s.numerator}/{s.denominator} ≈ {float(s):.4f}")
    assert f"× √3/3 = {text(Surd(0, s / 3, 3))} ≈ {float(s) / 3**0.5:.4f}" in lines[2]
    assert lines[5].startswith(f"  = e^{{{text(t['scaled'][0][0])} − ")  # shifted by the row's max
    assert lines[6].startswith("  = e^{")


def test_exact_needs_dot_products():
    with pytest.raises(OptionError, match="exact arithmetic works with dot-product similarity"):
        trace(Options(exact=True, similarity="cosine"))
