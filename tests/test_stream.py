"""The streamed evaluation (qkvcli.stream) gives the full pipeline's numbers, masks and heads included."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import reference

from qkvcli import attention, stream
from qkvcli.errors import ComputeError, OptionError
from qkvcli.options import Options
from qkvcli.plan import LARGE, plan, square_bytes
from qkvcli.problem import Problem, resolve

RNG = np.random.default_rng(7)
N, M, D = 37, 29, 6


def rand(*shape):
    return RNG.standard_normal(shape)


def both(mats, options=None, block=48, key_block=7, monkeypatch=None):
    """The full trace and the streamed one, with blocks small enough that there are many."""
    options = options or Options()
    r = resolve(Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()}), options)
    full = attention.run(r)
    if monkeypatch is not None:
        monkeypatch.setattr(stream, "KEY_BLOCK", key_block)
    return full, stream.run(r, block=block), r


def assert_same(full, streamed):
    assert set(streamed.stages) <= set(full.stages)
    assert not {"scores", "scaled", "masked", "weights"} & set(streamed.stages)
    for name in streamed.stages:
        np.testing.assert_allclose(streamed[name], full[name], rtol=1e-12, atol=1e-12, err_msg=name)
        assert streamed.stages[name].formula == full.stages[name].formula


def logsumexp(full):
    """log Σⱼ exp(logitᵢⱼ) from the full trace's own n×n stage, by hand."""
    x = full["masked"] if "masked" in full.stages else full["scaled"]
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))
    return np.where(top == -np.inf, -np.inf, out)[..., 0]  # log 0 for a fully masked row


SELF = {"X": rand(N, D), "W_Q": rand(D, 4), "W_K": rand(D, 4), "W_V": rand(D, 4)}
GQA = {"X": rand(N, D), "W_Q": rand(D, 8), "W_K": rand(D, 4), "W_V": rand(D, 6)}
CROSS = {
    "X": rand(N, D),
    "X_kv": rand(M, D),
    "W_Q": rand(D, 4),
    "W_K": rand(D, 4),
    "W_V": rand(D, 5),
}


@pytest.mark.parametrize(
    "mats, options",
    [
        (SELF, Options()),
        (CROSS, Options()),
        (SELF, Options(scale="none")),
        (SELF, Options(scale=0.37, temperature=2.5)),
        (SELF, Options(mask="causal")),
        (CROSS, Options(mask="causal-lower-right", empty_rows="nan")),
        (CROSS, Options(mask="causal-lower-right", empty_rows="zero")),
        (CROSS, Options(mask="causal-lower-right", empty_rows="uniform")),
        (SELF, Options(similarity="cosine")),
        (CROSS, Options(normalize="sigmoid")),
        (SELF, Options(normalize="sigmoid", mask="causal")),
        (SELF, Options(heads=2)),
        (GQA, Options(heads=4, kv_heads=2, mask="causal")),
        (GQA | {"W_K": rand(D, 2), "W_V": rand(D, 3)}, Options(heads=4, kv_heads=1)),
        (SELF | {"W_O": rand(4, 5), "b_O": rand(5)}, Options(heads=2)),
        (SELF | {"b_Q": rand(4), "b_K": rand(4), "b_V": rand(4)}, Options()),
    ],
)
def test_streamed_equals_full(mats, options, monkeypatch):
    full, streamed, _ = both(mats, options, monkeypatch=monkeypatch)
    assert_same(full, streamed)


def test_streamed_equals_the_slow_reference():
    """Independent of the full path: the pure-Python reference, two heads."""
    Q, K, V = rand(9, 4), rand(7, 4), rand(7, 6)
    r = resolve(Problem({"Q": Q, "K": K, "V": V}), Options(heads=2))
    got = stream.run(r, block=6)["output"]
    want = reference.attention(Q.tolist(), K.tolist(), V.tolist(), heads=2)["output"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_explicit_mask_padding_valid_lens_and_batch(monkeypatch):
    B = 3
    mats = {
        "Q": rand(B, N, 4),
        "K": rand(B, M, 4),
        "V": rand(B, M, 2),
        "mask": (RNG.random((B, N, M)) > 0.3).astype(float),
        "key_padding_mask": np.array([[1] * M, [1] * (M - 4) + [0] * 4, [1] * 3 + [0] * (M - 3)]),
        "valid_lens": np.array([M, 20, 3]),
    }
    full, streamed, _ = both(mats, Options(heads=2, empty_rows="zero"), monkeypatch=monkeypatch)
    assert_same(full, streamed)
    np.testing.assert_allclose(
        streamed.stats["row_logsumexp"], logsumexp(full), rtol=1e-12, atol=1e-12
    )


def test_additive_bias_with_blocked_entries(monkeypatch):
    bias = rand(1, 2, N, N)
    bias[0, 0, 3, :] = -math.inf  # a row with every key blocked (head 1)
    bias[0, 1, :, 5] = -math.inf
    mats = {"Q": rand(N, 4), "K": rand(N, 4), "V": rand(N, 2), "attn_bias": bias}
    full, streamed, _ = both(mats, Options(heads=2, empty_rows="nan"), monkeypatch=monkeypatch)
    assert_same(full, streamed)
    assert np.isnan(streamed["head_outputs"][0, 3]).all()


def test_row_logsumexp_matches_the_full_logits(monkeypatch):
    full, streamed, _ = both(SELF, Options(mask="causal"), monkeypatch=monkeypatch)
    np.testing.assert_allclose(
        streamed.stats["row_logsumexp"], logsumexp(full), rtol=1e-12, atol=1e-12
    )


def test_rows_far_below_their_bound_are_redone_exactly(monkeypatch):
    """Long vectors at right angles: the Cauchy–Schwarz shift is ~10⁵ above every logit."""
    q = np.zeros((N, 4))
    q[:, 0] = 1000.0
    q[:, 1] = rand(N)
    k = np.zeros((N, 4))
    k[:, 2] = 1000.0
    k[:, 1] = rand(N)
    full, streamed, _ = both({"Q": q, "K": k, "V": rand(N, 3)}, monkeypatch=monkeypatch)
    assert_same(full, streamed)


def test_rows_whose_shifted_sum_is_tiny_are_redone_exactly(monkeypatch):
    """Logits ≈ 737 below the bound: exp(logit − bound) would be subnormal and inexact."""
    q = np.column_stack([np.full(N, 740.0), np.full(N, 3.0)])
    k = np.column_stack([np.zeros(N), np.linspace(-1, 1, N)])
    mats = {"Q": q, "K": k, "V": rand(N, 3)}
    full, streamed, _ = both(mats, Options(scale="none"), monkeypatch=monkeypatch)
    assert_same(full, streamed)


@pytest.mark.parametrize("scale", [1.0, 1e290, 1e306])
def test_huge_values_are_summed_shifted_so_nothing_overflows(monkeypatch, scale):
    """e^logit·v for v near the float64 limit would overflow unshifted: those heads are shifted."""
    qk = rand(N, 4)  # logits up to ‖q‖² ≈ 16: e^16·v overflows for v ≈ 1e306
    v = scale * (1.0 + rand(N, 3) ** 2)  # all positive: no cancellation
    chosen = []
    real = stream.unshifted
    monkeypatch.setattr(stream, "unshifted", lambda *a: chosen.append(real(*a)) or chosen[-1])
    mats = {"Q": qk, "K": qk, "V": v}
    full, streamed, _ = both(mats, Options(scale="none"), monkeypatch=monkeypatch)
    assert chosen and set(chosen) == {scale < 1e300}
    assert np.isfinite(streamed["output"]).all()
    np.testing.assert_allclose(streamed["output"], full["output"], rtol=1e-12, atol=0)


def test_unshifted_only_for_bounds_between_zero_and_the_limit():
    ones = np.ones((4, 2))
    assert stream.unshifted(np.array([0.0, 499.0]), ones, 4)
    assert not stream.unshifted(np.array([0.0, 501.0]), ones, 4)  # e^501 and up: shifted
    assert not stream.unshifted(np.array([-1.0, 3.0]), ones, 4)  # ALiBi lowered a row: shifted
    assert not stream.unshifted(np.array([np.nan]), ones, 4)
    assert stream.unshifted(np.array([59.0], dtype=np.float32), ones.astype(np.float32), 4)
    assert not stream.unshifted(np.array([61.0], dtype=np.float32), ones.astype(np.float32), 4)


def test_float32_streams_in_float32(monkeypatch):
    full, streamed, _ = both(SELF, Options(dtype="float32"), monkeypatch=monkeypatch)
    assert streamed["output"].dtype == np.float32
    np.testing.assert_allclose(streamed["output"], full["output"], rtol=2e-5, atol=2e-5)


def test_same_errors_as_the_full_path(monkeypatch):
    mats = {
        "Q": rand(5, 3),
        "K": rand(5, 3),
        "V": rand(5, 2),
        "valid_lens": np.array([3, 0, 1, 2, 5]),
    }
    r = resolve(Problem(mats), Options())
    with pytest.raises(ComputeError) as full:
        attention.run(r)
    with pytest.raises(ComputeError) as streamed:
        stream.run(r, block=4)
    assert (
        str(streamed.value)
        == str(full.value)
        == (
            "every key is masked for query row 2: softmax over no keys is undefined "
            "(--empty-rows nan|zero|uniform fills such rows as frameworks do)"
        )
    )


def test_overflow_is_reported_at_the_same_cell():
    q = rand(6, 2)
    k = rand(6, 2)
    q[4] = [1e300, 1e300]
    k[2] = [1e300, 1e300]
    r = resolve(Problem({"Q": q, "K": k, "V": rand(6, 2)}), Options(heads=2))
    with pytest.raises(ComputeError) as full:
        attention.run(r)
    with pytest.raises(ComputeError) as streamed:
        stream.run(r, block=4)
    assert str(streamed.value) == str(full.value)
    assert str(full.value).startswith("Q·Kᵀ overflows the float range at scores[5,3]")


def tiny_problem(n):
    return resolve(
        Problem({"Q": np.ones((n, 2)), "K": np.ones((n, 2)), "V": np.ones((n, 2))}), Options()
    )


def test_plan_streams_large_runs_unless_a_square_stage_is_asked_for():
    small, big = tiny_problem(8), tiny_problem(2049)
    assert square_bytes(big) > LARGE >= square_bytes(tiny_problem(2048))
    assert plan(small, None).stream is False and plan(small, None).note is None
    assert plan(big, None).stream is True
    assert plan(big, None).note == (
        "the 2049×2049 stages (scores, scaled, weights: 32 MiB each) are left out; "
        "name one with --stage to get it"
    )
    assert plan(big, ["output"]).stream is True and plan(big, ["output"]).note is None
    assert plan(big, ["weights"], available=2**40).stream is False
    assert plan(small, ["output"], stream=True).stream is True


def test_plan_refuses_a_square_stage_that_does_not_fit():
    big = tiny_problem(16384)
    with pytest.raises(OptionError) as e:
        plan(big, ["output", "scores"], available=4 * 2**30)
    assert str(e.value) == (
        "--stage scores needs the 16384×16384 matrices in memory: about 14.0 GiB, "
        "but 4.0 GiB is available (--stage output is computed in blocks)"
    )
    with pytest.raises(OptionError, match="--stream computes no 8×8 stage: drop --stage weights"):
        plan(tiny_problem(8), ["weights"], stream=True)


@pytest.mark.slow  # torch: seconds to import
def test_streamed_matches_torch_sdpa_with_gqa_and_causal_mask():
    torch = pytest.importorskip("torch")
    B, h, g, n, d = 2, 4, 2, 33, 8
    q, k, v = rand(B, h, n, d), rand(B, g, n, d), rand(B, g, n, d)
    mats = {
        name: a.transpose(0, 2, 1, 3).reshape(B, n, -1)
        for name, a in (("Q", q), ("K", k), ("V", v))
    }
    r = resolve(Problem(mats), Options(heads=h, kv_heads=g, mask="causal"))
    got = stream.run(r, block=40)["head_outputs"]  # (B, h, n, d)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    tk, tv = tk.repeat_interleave(h // g, dim=1), tv.repeat_interleave(h // g, dim=1)
    want = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_note_names_the_masked_stage_when_there_is_one():
    n = 2049
    r = resolve(
        Problem({"Q": np.ones((n, 2)), "K": np.ones((n, 2)), "V": np.ones((n, 2))}),
        Options(mask="causal"),
    )
    assert plan(r, None).note == (
        "the 2049×2049 stages (scores, scaled, masked, weights: 32 MiB each) are left out; "
        "name one with --stage to get it"
    )


def random_case(rng):
    """A random problem and options drawing on every variant both evaluators support."""
    B = int(rng.integers(1, 3)) if rng.random() < 0.3 else None
    g = int(rng.choice([1, 2]))
    h = g * int(rng.choice([1, 2]))
    rope = rng.random() < 0.3
    dk = int(rng.choice([2, 4])) if rope else int(rng.integers(1, 4))
    dv, d = int(rng.integers(1, 4)), int(rng.integers(2, 6))
    n = int(rng.integers(1, 30))
    cross = not rope and rng.random() < 0.3
    m = int(rng.integers(1, 30)) if cross else n
    past = int(rng.integers(1, 6)) if not cross and rng.random() < 0.2 else 0
    keys = past + m  # every key the scores see
    lead = (B,) if B else ()

    def r(*shape):
        return rng.standard_normal(shape) * float(rng.choice([0.3, 1.0, 4.0]))

    mats = {"X": r(*lead, n, d), "W_Q": r(d, h * dk), "W_K": r(d, g * dk), "W_V": r(d, g * dv)}
    if cross:
        mats["X_kv"] = r(*lead, m, d)
    if past:
        mats |= {"past_key": r(*lead, past, g * dk), "past_value": r(*lead, past, g * dv)}
    if rng.random() < 0.3:
        mats |= {"b_Q": r(h * dk), "b_K": r(g * dk), "b_V": r(g * dv)}
    if rng.random() < 0.4:
        mats["W_O"] = r(h * dv, int(rng.integers(1, 5)))
        if rng.random() < 0.5:
            mats["b_O"] = r(mats["W_O"].shape[1])
    kw = {"heads": h, "kv_heads": g, "empty_rows": str(rng.choice(["nan", "zero", "uniform"]))}
    kw["scale"] = rng.choice(["sqrt", "none", 0.37, -0.37])
    kw["temperature"] = float(rng.choice([1.0, 0.5, 3.0]))
    kw["similarity"] = str(rng.choice(["dot", "dot", "cosine"]))
    kw["normalize"] = str(rng.choice(["softmax", "softmax", "sigmoid"]))
    kw["layout"] = str(rng.choice(["rows", "rows", "columns"]))
    if rope:
        kw["rope"] = str(rng.choice(["half", "interleaved"]))
        kw["rope_theta"] = float(rng.choice([10000.0, 100.0, 1e6]))
        if dk == 4 and rng.random() < 0.5:
            kw["partial_rotary_factor"] = 0.5
        if rng.random() < 0.3:
            mats["position_ids"] = rng.integers(0, 5000, size=(B or 1, n)).astype(float)
        elif rng.random() < 0.5:
            kw["position_offset"] = int(rng.integers(0, 100))
    if rng.random() < 0.25:
        kw["qk_norm"] = str(rng.choice(["head", "all"]))
        kw["rms_norm_eps"] = float(rng.choice([1e-6, 0.1]))
        kw["rms_norm_unit_offset"] = bool(rng.random() < 0.3)
        if rng.random() < 0.7:
            per_head = kw["qk_norm"] == "head"
            mats["q_norm"] = r(dk if per_head else h * dk)
            mats["k_norm"] = r(dk if per_head else g * dk)
    if rng.random() < 0.25:
        kw["attn_logit_softcapping"] = float(rng.choice([0.5, 5.0, 50.0]))
    if kw["normalize"] == "softmax" and rng.random() < 0.2:
        mats["sinks"] = r(h)
    if rng.random() < 0.2:
        kw["alibi"] = True
    if not cross and rng.random() < 0.2:
        kw["sliding_window"] = int(rng.integers(1, 8))
    if rng.random() < 0.15:
        kw["attention_chunk_size"] = int(rng.integers(1, 8))
    if kw["layout"] == "columns":
        swap = ("X", "X_kv", "W_Q", "W_K", "W_V", "W_O", "past_key", "past_value")
        mats = {k: (np.swapaxes(v, -1, -2) if k in swap else v) for k, v in mats.items()}
    elif rng.random() < 0.3:
        kw["weights_layout"] = "out-in"
        mats = {k: (v.T if k.startswith("W_") else v) for k, v in mats.items()}
    batch = B or 1
    masks = rng.random()
    if masks < 0.15:
        kw["mask"] = str(rng.choice(["causal", "causal-lower-right"]))
    elif masks < 0.3:
        mats["mask"] = (rng.random((*lead, n, keys)) > 0.3).astype(float)
        kw["mask_polarity"] = str(rng.choice(["attend", "block"]))
    elif masks < 0.4:
        mats["key_padding_mask"] = (rng.random((batch, keys)) > 0.3).astype(float)
    elif masks < 0.5:
        mats["valid_lens"] = rng.integers(0, keys + 1, size=batch).astype(float)
    elif masks < 0.6:
        bias = r(batch, h, n, keys)
        bias[rng.random(bias.shape) < 0.2] = -np.inf
        mats["attn_bias"] = bias
    return mats, Options(**kw)


@pytest.mark.parametrize("shifted", [False, True], ids=["unshifted-where-safe", "always-shifted"])
@pytest.mark.parametrize("cases", [pytest.param(80), pytest.param(1500, marks=pytest.mark.slow)])
def test_every_variant_streams_to_the_dense_numbers(monkeypatch, cases, shifted):
    """Random configurations of every variant: the two evaluators agree to 1e-12, errors alike
    — summing e^logit as it is where that is safe, and with every row shifted by its bound."""
    rng = np.random.default_rng(2026 + cases)
    monkeypatch.setattr(stream, "KEY_BLOCK", 5)
    if shifted:
        monkeypatch.setattr(stream, "PLAIN", {"float64": -1.0, "float32": -1.0})
    for case in range(cases):
        mats, options = random_case(rng)
        r = resolve(Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()}), options)
        try:
            full = attention.run(r)
        except ComputeError as e:
            with pytest.raises(ComputeError) as streamed_error:
                stream.run(r, block=12)
            assert str(streamed_error.value) == str(e), case
            continue
        streamed = stream.run(r, block=12)
        rows = {"head_outputs", "concat", "Q_normed", "K_normed", "Q_rotated", "K_rotated"}
        assert set(streamed.stages) == {"Q", "K", "V", "output"} | (rows & set(full.stages))
        for name in streamed.stages:
            np.testing.assert_allclose(
                streamed[name], full[name], rtol=1e-12, atol=1e-12, err_msg=f"{case} {name}"
            )


@pytest.mark.parametrize(
    "mats, options, where",
    [
        ({"W_V": [[1e308, 1.0], [1e308, 1.0]]}, Options(), "the projection V overflows"),
        ({"W_K": [[1e308, 1e308], [1e308, 1e308]]}, Options(), "the projection K overflows"),
        ({"W_O": [[1.5e308, 1.0], [1.5e308, 1.0]]}, Options(), "the output overflows"),
        (
            {"W_V": [[1.7e308, 1.0], [0.0, 1.0]]},
            Options(normalize="sigmoid"),
            "the output overflows",
        ),
    ],
)
def test_overflow_of_v_or_w_o_is_reported_on_both_paths(mats, options, where):
    base = {"X": [[1.0, 1.0], [1.0, 0.0]], "W_Q": np.eye(2), "W_K": np.eye(2), "W_V": np.eye(2)}
    r = resolve(Problem({k: np.asarray(v, dtype=float) for k, v in (base | mats).items()}), options)
    with pytest.raises(ComputeError) as full:
        attention.run(r)
    with pytest.raises(ComputeError) as streamed:
        stream.run(r)
    assert str(streamed.value) == str(full.value)
    assert str(full.value).startswith(where)


def test_openblas_runs_single_threaded_inside_the_block_and_is_restored():
    from qkvcli.blas import single_threaded, threads

    before = threads()
    if before is None:
        pytest.skip("no OpenBLAS found in this numpy: qkv uses one worker")
    with single_threaded() as ok:
        assert ok is True
        assert threads() == 1
    assert threads() == before


@pytest.mark.parametrize("seed", range(40))
def test_each_block_of_the_masks_is_the_dense_masks_piece(seed):
    """Blocks judged from intervals (open: None, shut: a (1, 1) False) match the dense grid."""
    from qkvcli.masks import Rules

    rng = np.random.default_rng(seed)
    B, h, n, m = 2, 2, int(rng.integers(1, 40)), int(rng.integers(1, 40))
    kw = {}
    if rng.random() < 0.6:
        kw["causal"] = int(rng.integers(-5, 6))
    if rng.random() < 0.4:
        kw["window"] = int(rng.integers(1, 9))
    if rng.random() < 0.3:
        kw["chunk"] = int(rng.integers(1, 9))
    if rng.random() < 0.3:
        kw["lens"] = rng.integers(0, m + 1, size=(B, n)).astype(float)
    if rng.random() < 0.3:
        kw["padding"] = rng.random((B, m)) > 0.2
    if rng.random() < 0.2:
        kw["grid"] = rng.random((B, h, n, m)) > 0.3
    rules = Rules(B=B, h=h, n=n, m=m, q0=int(rng.integers(0, 4)), **kw)
    dense = rules.allowed()
    dense = np.ones((B, h, n, m), bool) if dense is None else np.broadcast_to(dense, (B, h, n, m))
    for _ in range(30):
        i0, j0 = int(rng.integers(0, n)), int(rng.integers(0, m))
        rows = slice(i0, int(rng.integers(i0 + 1, n + 1)))
        cols = slice(j0, int(rng.integers(j0 + 1, m + 1)))
        b, hh = int(rng.integers(0, B)), int(rng.integers(0, h))
        want = dense[b, hh, rows, cols]
        got = rules.allowed(rows, cols, b, hh)
        if got is None:
            assert want.all()
        else:
            np.testing.assert_array_equal(np.broadcast_to(got, want.shape), want)
        fancy = np.arange(n)[rows][::-1]  # the rows of a redo
        got = rules.allowed(fancy, cols, b, hh)
        want = dense[b, hh][fancy][:, cols]
        assert want.all() if got is None else (np.broadcast_to(got, want.shape) == want).all()


def written_by_rows(r, path, stages=("weights",), monkeypatch=None):
    """``--stage … -f npz`` of a big problem: the n×n stages written a block of a few rows at a time."""
    from qkvcli import plan as plan_module
    from qkvcli.plan import evaluate
    from qkvcli.render import machine
    from qkvcli.trace import SQUARE

    monkeypatch.setattr(plan_module, "LARGE", 0)  # every n×n stage counts as big
    monkeypatch.setattr(machine, "ROW_BLOCK", 40)  # blocks of a few rows
    how = plan(r, list(stages), by_rows=True)
    assert how.later and how.stream == (not set(stages) <= set(SQUARE))
    machine.to_npz(evaluate(r, how), list(stages), str(path))
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


@pytest.mark.parametrize("cases", [pytest.param(60), pytest.param(600, marks=pytest.mark.slow)])
def test_every_variant_written_by_blocks_of_rows_gives_the_dense_weights(
    tmp_path, monkeypatch, cases
):
    """Random configurations: the weights written a block of rows at a time are the dense ones,
    row_logsumexp is the streamed one, and an error names the same kind of cell or row."""
    rng = np.random.default_rng(17 + cases)
    for case in range(cases):
        mats, options = random_case(rng)
        r = resolve(Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()}), options)
        path = tmp_path / f"{case}.npz"
        try:
            full = attention.run(r)
        except ComputeError as e:
            with pytest.raises(ComputeError) as blocked:
                written_by_rows(r, path, monkeypatch=monkeypatch)
            single = r.B * r.heads == 1  # else the first bad cell found may be another matrix's
            said = str(blocked.value)
            assert said == str(e) if single else said.split(" at ")[0] == str(e).split(" at ")[0]
            assert not path.exists() and not list(tmp_path.glob(".qkv-*")), case
            continue
        # Any of the n×n stages: those not asked for are overwritten by the step after them.
        square = [
            s for s in ("scores", "scaled", "capped", "masked", "weights") if s in full.stages
        ]
        asked = [s for s in square if rng.random() < 0.4] or ["weights"]
        z = written_by_rows(r, path, tuple(asked), monkeypatch=monkeypatch)
        assert z.keys() == {*asked, "meta"} | (
            {"row_logsumexp"} if options.normalize == "softmax" else set()
        )
        for name in asked:
            np.testing.assert_allclose(z[name], full[name], rtol=1e-12, atol=1e-12, err_msg=name)
        if options.normalize == "softmax":
            lse = stream.run(r, block=12).stats["row_logsumexp"]
            np.testing.assert_allclose(z["row_logsumexp"], lse, rtol=1e-12, atol=1e-12)
        else:
            assert "row_logsumexp" not in z
        shapes = json.loads(str(z["meta"]))["shapes"]
        assert shapes == {name: list(full[name].shape) for name in asked}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_row_logsumexp_of_blocks_counts_the_sink_and_marks_empty_rows(tmp_path, monkeypatch, dtype):
    h, n, m = 2, 9, 5
    mats = {"Q": rand(n, h * 3), "K": rand(m, h * 3), "V": rand(m, h * 2), "sinks": rand(h)}
    r = resolve(Problem(mats), Options(heads=h, dtype=dtype))
    z = written_by_rows(r, tmp_path / "s.npz", monkeypatch=monkeypatch)
    full = attention.run(r)
    sinks = mats["sinks"][:, None, None]  # (h, 1, 1)
    by_hand = np.log(np.exp(full["scaled"]).sum(axis=-1) + np.exp(sinks[..., 0]))  # (h, n)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(z["row_logsumexp"], by_hand, rtol=tol, atol=tol)
    assert z["row_logsumexp"].dtype == np.dtype(dtype)
    # A lower-right causal mask over fewer keys than queries leaves the first rows with no key.
    cross = {"Q": rand(n, 3), "K": rand(m, 3), "V": rand(m, 2)}
    for empty in ("nan", "zero", "uniform"):
        r = resolve(Problem(cross), Options(mask="causal-lower-right", empty_rows=empty))
        z = written_by_rows(r, tmp_path / f"{empty}.npz", ("masked", "weights"), monkeypatch)
        np.testing.assert_array_equal(z["row_logsumexp"][: n - m], -np.inf)
        np.testing.assert_allclose(z["row_logsumexp"], logsumexp(attention.run(r)), rtol=1e-12)
        np.testing.assert_allclose(z["weights"], attention.run(r)["weights"], rtol=1e-12)


def test_an_error_in_a_later_block_of_rows_names_the_users_row(tmp_path, monkeypatch):
    """Blocks of rows count rows from their own start; messages must not."""
    n = 30
    q = rand(n, 3)
    q[25] = 1e300  # its scores overflow, and only its
    mats = {"Q": q, "K": rand(n, 3) * 1e10, "V": rand(n, 2)}
    r = resolve(Problem(mats), Options())
    with pytest.raises(ComputeError, match=r"at scores\[26,1\]"):
        written_by_rows(r, tmp_path / "o.npz", monkeypatch=monkeypatch)
    keep = np.ones((n, n))
    keep[27] = 0  # row 28 sees no key
    r = resolve(
        Problem({"Q": rand(n, 3), "K": rand(n, 3), "V": rand(n, 2), "mask": keep}), Options()
    )
    with pytest.raises(ComputeError, match=r"every key is masked for query row 28:"):
        written_by_rows(r, tmp_path / "o.npz", monkeypatch=monkeypatch)
    assert not list(tmp_path.iterdir())  # nothing half-written is left
