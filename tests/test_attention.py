"""The pipeline against known numbers, a slow reference, and the properties attention must have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qkvcli.attention import run, softmax
from qkvcli.options import Options
from qkvcli.problem import Problem, resolve

X = [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]]
W_Q = [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]]
W_K = [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]]
W_V = [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]]


def compute(options=None, **mats):
    options = options or Options()
    problem = Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()})
    return run(resolve(problem, options))


def test_worked_example_stages():
    """The numbers of the worked example in shared/seeds/004 (worked by hand)."""
    t = compute(X=X, W_Q=W_Q, W_K=W_K, W_V=W_V)
    assert t["Q"].tolist() == [[1, 0, 2], [2, 2, 2], [2, 1, 3]]
    assert t["K"].tolist() == [[0, 1, 1], [4, 4, 0], [2, 3, 1]]
    assert t["V"].tolist() == [[1, 2, 3], [2, 8, 0], [2, 6, 3]]
    assert t["scores"].tolist() == [[2, 4, 4], [4, 16, 12], [4, 12, 10]]
    np.testing.assert_allclose(
        t["scaled"],
        np.array([[2, 4, 4], [4, 16, 12], [4, 12, 10]]) / math.sqrt(3),
        rtol=0,
        atol=1e-15,
    )
    # Row 1 by hand: e^(2/√3), e^(4/√3), e^(4/√3) normalised.
    e = [math.exp(2 / math.sqrt(3)), math.exp(4 / math.sqrt(3)), math.exp(4 / math.sqrt(3))]
    assert t["weights"][0].tolist() == pytest.approx([x / sum(e) for x in e], abs=1e-15)
    np.testing.assert_allclose(t["weights"], [[0.1361258, 0.4319371, 0.4319371],
                                              [0.0008904, 0.9088426, 0.0902669],
                                              [0.0074449, 0.7547076, 0.2378475]], atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(t["output"], [[1.8638742, 6.3193710, 1.7041887],
                                             [1.9991096, 7.8141235, 0.2734721],
                                             [1.9925551, 7.4796356, 0.7358773]], atol=1e-7)  # fmt: skip
    assert list(t.stages) == ["Q", "K", "V", "scores", "scaled", "weights", "output"]


def test_unscaled_matches_the_article():
    """Without scaling (as the article's code does) row 1 is softmax([2, 4, 4])."""
    t = compute(Options(scale="none"), X=X, W_Q=W_Q, W_K=W_K, W_V=W_V)
    np.testing.assert_allclose(t["weights"][0], [0.0634, 0.4683, 0.4683], atol=5e-5)


def test_columns_layout_is_the_transpose():
    rows = compute(X=X, W_Q=W_Q, W_K=W_K, W_V=W_V)
    cols = compute(
        Options(layout="columns"),
        X=np.array(X).T,
        W_Q=np.array(W_Q).T,
        W_K=np.array(W_K).T,
        W_V=np.array(W_V).T,
    )
    for name in ("Q", "K", "V", "output"):
        np.testing.assert_array_equal(cols[name], rows[name].T)
    np.testing.assert_array_equal(cols["weights"], rows["weights"])
    assert cols.stages["Q"].formula == "Q = W_Q·X"


finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def problems(draw):
    n = draw(st.integers(1, 5))
    m = draw(st.integers(1, 5))
    dk = draw(st.integers(1, 4))
    dv = draw(st.integers(1, 4))
    q = draw(arrays(np.float64, (n, dk), elements=finite))
    k = draw(arrays(np.float64, (m, dk), elements=finite))
    v = draw(arrays(np.float64, (m, dv), elements=finite))
    return q, k, v


@settings(deadline=None)
@given(problems())
def test_pipeline_matches_slow_reference(qkv):
    q, k, v = qkv
    t = compute(Q=q, K=k, V=v)
    ref = reference.attention(q.tolist(), k.tolist(), v.tolist())
    for name in ("scores", "scaled", "weights"):
        np.testing.assert_allclose(t[name], ref[name][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t["output"], ref["output"], rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_projection_matches_slow_reference(n, d_model, dk, seed):
    rng = np.random.default_rng(seed)
    x, wq, wk, wv = (
        rng.normal(size=s) for s in ((n, d_model), (d_model, dk), (d_model, dk), (d_model, dk + 1))
    )
    t = compute(X=x, W_Q=wq, W_K=wk, W_V=wv)
    Q, K, V = (reference.matmul(x.tolist(), w.tolist()) for w in (wq, wk, wv))
    ref = reference.attention(Q, K, V)
    np.testing.assert_allclose(t["Q"], Q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t["output"], ref["output"], rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(problems())
def test_weights_rows_sum_to_one(qkv):
    t = compute(Q=qkv[0], K=qkv[1], V=qkv[2])
    np.testing.assert_allclose(t["weights"].sum(axis=-1), 1.0, atol=1e-12)
    assert np.all(t["weights"] >= 0)


@settings(deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=finite), finite)
def test_softmax_ignores_a_constant_added_to_a_row(scores, c):
    np.testing.assert_allclose(softmax(scores + c), softmax(scores), atol=1e-12)


@settings(deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_tokens_permutes_output_rows(qkv, rnd):
    q, k, v = qkv
    n = min(len(q), len(k))
    q, k, v = q[:n], k[:n], v[:n]
    perm = list(range(n))
    rnd.shuffle(perm)
    base = compute(Q=q, K=k, V=v)
    moved = compute(Q=q[perm], K=k[perm], V=v[perm])
    np.testing.assert_allclose(moved["output"], base["output"][perm], atol=1e-12)
    np.testing.assert_allclose(moved["weights"], base["weights"][perm][:, perm], atol=1e-12)


def test_self_attention_permutation_via_x():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4))
    w = {n: rng.normal(size=(4, 3)) for n in ("W_Q", "W_K", "W_V")}
    perm = [3, 0, 4, 1, 2]
    a, b = compute(X=x, **w), compute(X=x[perm], **w)
    np.testing.assert_allclose(b["output"], a["output"][perm], atol=1e-12)


@pytest.mark.parametrize("scale, factor", [("none", 1.0), (0.25, 0.25), ("sqrt", 1 / math.sqrt(3))])
def test_scale_choices(scale, factor):
    t = compute(Options(scale=scale), X=X, W_Q=W_Q, W_K=W_K, W_V=W_V)
    np.testing.assert_allclose(t["scaled"], t["scores"] * factor, rtol=0, atol=1e-15)
    assert t.meta["scale"] == pytest.approx(factor, abs=0)


def test_dk_differs_from_dv():
    q, k, v = np.ones((2, 3)), np.ones((4, 3)), np.arange(8.0).reshape(4, 2)
    t = compute(Q=q, K=k, V=v)
    assert t["weights"].shape == (2, 4)
    assert t["output"].shape == (2, 2)
    np.testing.assert_allclose(t["output"], [[3, 4], [3, 4]])  # equal scores: the mean of V
