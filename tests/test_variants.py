"""Every variant of the pipeline against the slow reference (tests/reference.py) and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from qkvcli.attention import run
from qkvcli.errors import ComputeError, OptionError, ShapeError
from qkvcli.options import Options
from qkvcli.problem import Problem, resolve

TOL = {"rtol": 1e-12, "atol": 1e-12}


def compute(options: Options | None = None, **mats):
    problem = Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()})
    return run(resolve(problem, options or Options()))


def rows_with_one(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """A random 0/1 mask (n, m) with at least one 1 in every row."""
    mask = rng.random((n, m)) < 0.5
    mask[np.arange(n), rng.integers(0, m, size=n)] = True
    return mask


@st.composite
def variants(draw):
    """A random problem and options, with what the reference needs to redo it."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    g = draw(st.integers(1, 3))
    h = g * draw(st.integers(1, 3))
    dk, dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    d, d_kv, d_out = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    cross = draw(st.booleans())
    if not cross:
        m, d_kv = n, d
    mats = {
        "X": rng.normal(size=(n, d)),
        "W_Q": rng.normal(size=(d, h * dk)),
        "W_K": rng.normal(size=(d_kv, g * dk)),
        "W_V": rng.normal(size=(d_kv, g * dv)),
    }
    if cross:
        mats["X_kv"] = rng.normal(size=(m, d_kv))
    for name, width in (("b_Q", h * dk), ("b_K", g * dk), ("b_V", g * dv)):
        if draw(st.booleans()):
            mats[name] = rng.normal(size=width)
    if draw(st.booleans()):
        mats["W_O"] = rng.normal(size=(h * dv, d_out))
        if draw(st.booleans()):
            mats["b_O"] = rng.normal(size=d_out)
    allowed = None
    if draw(st.booleans()):
        allowed = rows_with_one(rng, n, m)
        mats["mask"] = allowed.astype(float)
    bias = None
    if draw(st.booleans()):
        bias = rng.normal(size=(n, m))
        ok = allowed if allowed is not None else np.ones((n, m), dtype=bool)
        keep = [rng.choice(np.flatnonzero(row)) for row in ok]  # one open key per row
        blocked = rng.random((n, m)) < 0.5
        blocked[np.arange(n), keep] = False
        bias[blocked] = -math.inf
        mats["attn_bias"] = bias
    options = Options(
        heads=h,
        kv_heads=g,
        similarity=draw(st.sampled_from(["dot", "cosine"])),
        normalize=draw(st.sampled_from(["softmax", "sigmoid"])),
        temperature=draw(st.sampled_from([1.0, 0.5, 2.5])),
        scale=draw(st.sampled_from(["sqrt", "none", 0.3])),
    )
    return mats, options, allowed, bias


@settings(deadline=None)
@given(variants())
def test_every_variant_matches_the_slow_reference(case):
    mats, o, allowed, bias = case
    t = compute(o, **mats)
    x = mats["X"].tolist()
    x_kv = mats.get("X_kv", mats["X"]).tolist()
    Q = reference.project(x, mats["W_Q"].tolist(), _list(mats.get("b_Q")))
    K = reference.project(x_kv, mats["W_K"].tolist(), _list(mats.get("b_K")))
    V = reference.project(x_kv, mats["W_V"].tolist(), _list(mats.get("b_V")))
    dk = len(Q[0]) // o.heads
    scale = {"sqrt": 1 / math.sqrt(dk), "none": 1.0}.get(o.scale, o.scale)
    ref = reference.attention(
        Q, K, V, scale=scale, heads=o.heads, kv_heads=o.kv_heads,
        allowed=_list(allowed), bias=_list(bias), W_O=_list(mats.get("W_O")),
        b_O=_list(mats.get("b_O")), similarity=o.similarity, normalize=o.normalize,
        temperature=o.temperature,
    )  # fmt: skip
    for name, ours in (("Q", Q), ("K", K), ("V", V)):
        np.testing.assert_allclose(t[name], ours, **TOL)
    per_head = (lambda a: a) if o.heads > 1 else (lambda a: a[0])
    for name in ("scores", "weights"):
        np.testing.assert_allclose(t[name], per_head(np.array(ref[name])), **TOL)
    if o.heads > 1:
        np.testing.assert_allclose(t["head_outputs"], ref["head_outputs"], **TOL)
        np.testing.assert_allclose(t["concat"], ref["concat"], **TOL)
    np.testing.assert_allclose(t["output"], ref["output"], **TOL)
    masked = allowed is not None or bias is not None
    assert ("masked" in t.stages) == masked
    if masked:
        blocked = np.zeros((len(x), len(x_kv)), dtype=bool)  # (n, m)
        if allowed is not None:
            blocked |= ~allowed
        if bias is not None:
            blocked |= np.isneginf(bias)
        expected = np.where(blocked, -np.inf, np.array(ref["scaled"]))  # (h, n, m)
        np.testing.assert_allclose(t["masked"], per_head(expected), **TOL)


def _list(a):
    return None if a is None else np.asarray(a).tolist()


@settings(deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_a_batch_is_each_item_computed_alone(B, n, h, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, n, 3))
    w = {k: rng.normal(size=(3, 2 * h)) for k in ("W_Q", "W_K", "W_V")}
    lens = rng.integers(1, n + 1, size=B)
    batch = compute(Options(heads=h), X=x, valid_lens=lens, **w)
    assert batch["output"].shape == (B, n, 2 * h)
    for b in range(B):
        alone = compute(Options(heads=h), X=x[b], valid_lens=lens[b], **w)
        for name in ("weights", "output"):
            np.testing.assert_allclose(batch[name][b], alone[name], **TOL)


# ---------------------------------------------------------------- by hand


def test_heads_split_columns_in_contiguous_blocks():
    """Head 1 sees Q, K columns 1–2 and V column 1; head 2 the rest (as PyTorch splits)."""
    q = np.array([[1.0, 0, 0, 2], [0, 1, 1, 0]])
    v = np.array([[1.0, 10], [3, 30]])
    t = compute(Options(heads=2, scale="none"), Q=q, K=q, V=v)
    assert t["scores"].tolist() == [[[1, 0], [0, 1]], [[4, 0], [0, 1]]]
    e = math.exp(1)
    np.testing.assert_allclose(
        t["weights"][0], [[e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]], **TOL
    )
    np.testing.assert_allclose(t["head_outputs"][0][:, 0], t["weights"][0] @ [1, 3], **TOL)
    np.testing.assert_allclose(t["head_outputs"][1][:, 0], t["weights"][1] @ [10, 30], **TOL)
    np.testing.assert_allclose(
        t["concat"], np.concatenate([t["head_outputs"][0], t["head_outputs"][1]], axis=1), **TOL
    )
    assert list(t.stages) == [
        "Q",
        "K",
        "V",
        "scores",
        "scaled",
        "weights",
        "head_outputs",
        "concat",
        "output",
    ]


def test_scale_uses_the_per_head_d_k():
    t = compute(Options(heads=2), Q=np.ones((1, 8)), K=np.ones((1, 8)), V=np.ones((1, 2)))
    assert t.meta["scale"] == 0.5  # 1/√(8/2)


def test_per_head_weight_lists_equal_the_joined_matrix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    blocks = {k: rng.normal(size=(2, 4, 3)) for k in ("W_Q", "W_K", "W_V")}
    w_o = rng.normal(size=(2, 3, 5))  # per-head W_O blocks: head i's rows
    listed = compute(X=x, W_O=w_o, **blocks)
    joined = compute(Options(heads=2), X=x, W_O=np.concatenate(list(w_o), axis=0),
                     **{k: np.concatenate(list(b), axis=1) for k, b in blocks.items()})  # fmt: skip
    assert listed.heads == 2
    np.testing.assert_allclose(listed["output"], joined["output"], **TOL)


def test_grouped_query_heads_share_key_heads_in_contiguous_groups():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(3, 8)), rng.normal(size=(4, 4)), rng.normal(size=(4, 2))
    t = compute(Options(heads=4, kv_heads=2), Q=q, K=k, V=v)
    for head, group in ((0, 0), (1, 0), (2, 1), (3, 1)):
        alone = compute(
            Q=q[:, 2 * head : 2 * head + 2],
            K=k[:, 2 * group : 2 * group + 2],
            V=v[:, group : group + 1],
        )
        np.testing.assert_allclose(t["head_outputs"][head], alone["output"], **TOL)


def test_causal_masks_top_left_and_lower_right():
    q, k, v = np.zeros((2, 1)), np.zeros((4, 1)), np.arange(4.0)[:, None]
    top = compute(Options(mask="causal"), Q=q, K=k, V=v)
    assert np.isneginf(top["masked"]).tolist() == [
        [False, True, True, True],
        [False, False, True, True],
    ]
    assert top["output"].tolist() == [[0.0], [0.5]]
    low = compute(Options(mask="causal-lower-right"), Q=q, K=k, V=v)
    assert np.isneginf(low["masked"]).tolist() == [
        [False, False, False, True],
        [False, False, False, False],
    ]
    assert low["output"].tolist() == [[1.0], [1.5]]


def test_valid_lens_as_d2l_uses_them():
    """d2l's masked_softmax: item b attends to its first valid_lens[b] keys."""
    x = np.zeros((2, 3, 1))
    v = np.array([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])
    t = compute(valid_lens=[2, 3], Q=x, K=x, V=v)
    np.testing.assert_allclose(t["weights"][0], [[0.5, 0.5, 0]] * 3, **TOL)
    np.testing.assert_allclose(t["weights"][1], [[1 / 3] * 3] * 3, **TOL)
    per_query = compute(valid_lens=[[1, 2, 3], [3, 3, 1]], Q=x, K=x, V=v)
    assert per_query["output"][:, :, 0].tolist() == [[1.0, 1.5, 2.0], [5.0, 5.0, 4.0]]


def test_mask_polarity_block_is_the_opposite_of_attend():
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    allowed = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]])
    a = compute(Options(mask_polarity="attend"), Q=q, K=k, V=v, mask=allowed)
    b = compute(Options(mask_polarity="block"), Q=q, K=k, V=v, mask=1 - allowed)
    np.testing.assert_array_equal(a["weights"], b["weights"])
    assert (a["weights"][allowed == 0] == 0).all()


def test_masking_excludes_and_is_not_an_added_minus_1e9():
    """An added −1e9 vanishes next to scores of 1e30 in float64; exclusion masks."""
    q, k, v = np.array([[1.0e30]]), np.array([[1.0], [1.0]]), np.array([[0.0], [1.0]])
    t = compute(Options(scale="none"), Q=q, K=k, V=v, mask=[[1, 0]])
    assert t["weights"].tolist() == [[1.0, 0.0]]
    added = compute(Options(scale="none"), Q=q, K=k, V=v, attn_bias=[[0, -1e9]])
    assert added["weights"].tolist() == [[0.5, 0.5]]  # what −1e9 "masking" would give


def test_an_overflow_next_to_a_bias_is_reported_not_taken_for_a_mask():
    with pytest.raises(
        ComputeError, match=r"scores × scale overflows the float range at scaled\[1,1\]"
    ):
        compute(
            Options(scale=1e300),
            Q=[[1e10]],
            K=[[1.0], [1.0]],
            V=[[0.0], [1.0]],
            attn_bias=[[0.0, -math.inf]],
        )


def test_fully_masked_rows():
    q, k, v = np.zeros((2, 1)), np.zeros((2, 1)), np.array([[2.0], [4.0]])
    with pytest.raises(ComputeError, match="every key is masked for query row 2"):
        compute(Q=q, K=k, V=v, mask=[[1, 1], [0, 0]])
    out = {
        e: compute(Options(empty_rows=e), Q=q, K=k, V=v, mask=[[1, 1], [0, 0]])
        for e in ("nan", "zero", "uniform")
    }
    assert np.isnan(out["nan"]["output"][1, 0]) and out["nan"]["output"][0, 0] == 3.0
    assert out["zero"]["output"][:, 0].tolist() == [3.0, 0.0]
    assert out["uniform"]["weights"][1].tolist() == [0.5, 0.5]
    sig = compute(Options(normalize="sigmoid"), Q=q, K=k, V=v, mask=[[1, 1], [0, 0]])
    assert sig["weights"].tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_cosine_similarity_by_hand():
    t = compute(
        Options(similarity="cosine", scale="none"),
        Q=[[3.0, 4.0]],
        K=[[4.0, 3.0], [0.0, 2.0]],
        V=[[1.0], [0.0]],
    )
    np.testing.assert_allclose(t["scores"], [[24 / 25, 4 / 5]], **TOL)
    with pytest.raises(ComputeError, match="K row 2 is all zeros"):
        compute(Options(similarity="cosine"), Q=[[1.0]], K=[[1.0], [0.0]], V=[[1.0], [2.0]])


def test_sigmoid_and_temperature_by_hand():
    t = compute(
        Options(normalize="sigmoid", scale="none", temperature=2.0),
        Q=[[2.0]],
        K=[[1.0], [-1.0]],
        V=[[1.0], [1.0]],
    )
    np.testing.assert_allclose(
        t["weights"], [[1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))]], **TOL
    )


@pytest.mark.parametrize(
    "mats, options, error, message",
    [
        ({"Q": np.ones((2, 6)), "K": np.ones((2, 6)), "V": np.ones((2, 2))}, Options(heads=4), ShapeError,
         "heads=4 does not divide d_k=6 (Q has 6 columns)"),
        ({"Q": np.ones((2, 6)), "K": np.ones((2, 6)), "V": np.ones((2, 2))}, Options(heads=3, kv_heads=2), ShapeError,
         "kv_heads=2 does not divide heads=3"),
        ({"Q": np.ones((2, 2)), "K": np.ones((3, 2)), "V": np.ones((3, 2))}, Options(), ShapeError,
         "mask is 3×2 but the scores are 2×3 (queries × keys)"),
        ({"X": np.ones((2, 3)), "W_Q": np.ones((3, 2)), "W_K": np.ones((3, 2)), "W_V": np.ones((3, 2)), "W_O": np.ones((4, 2))},
         Options(), ShapeError,
         "W_O is 4×2 but concat has 2 columns (heads × d_v = 1×2): W_O needs 2 rows; it fits transposed, but W_Q, W_K and W_V fit as they are: transpose W_O itself (--weights-layout out-in would turn every W)"),
        ({"Q": np.ones((1, 2)), "K": np.ones((1, 2)), "V": np.ones((1, 2)), "b_Q": np.ones(2)}, Options(), ShapeError,
         "b_Q is given but W_Q is missing (Q is given directly)"),
    ],
)  # fmt: skip
def test_bad_variant_input(mats, options, error, message):
    if "mask is" in message:
        mats = mats | {"mask": np.ones((3, 2))}
    with pytest.raises(error) as e:
        compute(options, **mats)
    assert str(e.value) == message


def test_torch_weights_refuse_in_out():
    p = Problem(
        {
            "X": np.ones((1, 2)),
            "W_Q": np.ones((2, 2)),
            "W_K": np.ones((2, 2)),
            "W_V": np.ones((2, 2)),
        }
    )
    p.torch_key = "in_proj_weight"
    with pytest.raises(OptionError, match="in_proj_weight holds PyTorch"):
        resolve(p, Options(weights_layout="in-out"))


def test_columns_layout_with_heads_w_o_biases_and_memory_is_the_transpose():
    rng = np.random.default_rng(4)
    x, mem = rng.normal(size=(3, 4)), rng.normal(size=(5, 2))
    w = {
        "W_Q": rng.normal(size=(4, 6)),
        "W_K": rng.normal(size=(2, 6)),
        "W_V": rng.normal(size=(2, 4)),
    }
    extra = {"b_Q": rng.normal(size=6), "b_V": rng.normal(size=4), "W_O": rng.normal(size=(4, 3))}
    mask = rows_with_one(rng, 3, 5).astype(float)
    rows = compute(Options(heads=2), X=x, X_kv=mem, mask=mask, **w, **extra)
    flipped = {k: (v.T if v.ndim == 2 else v) for k, v in (w | extra).items()}
    cols = compute(Options(heads=2, layout="columns"), X=x.T, X_kv=mem.T, mask=mask, **flipped)
    np.testing.assert_allclose(cols["weights"], rows["weights"], **TOL)
    np.testing.assert_allclose(cols["head_outputs"], rows["head_outputs"].swapaxes(-1, -2), **TOL)
    np.testing.assert_allclose(cols["output"], rows["output"].T, **TOL)
