"""The variants of today's models by hand and by their properties: RoPE, QK-norm, windows and
chunks, soft-caps, sinks, ALiBi, the decode step, negative scales — and their CLI."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qkvcli import attention, stream
from qkvcli.cli import app
from qkvcli.errors import OptionError, QkvError, ShapeError
from qkvcli.options import Options
from qkvcli.problem import Problem, resolve

TOL = {"rtol": 1e-12, "atol": 1e-12}
SAMPLES = ("rope", "rope_interleaved", "sliding_window", "chunked", "qk_norm", "qk_norm_olmo2",
           "softcap", "sinks", "alibi_heads", "decode", "decode_rope")  # fmt: skip


def resolved(options: Options | None = None, **mats):
    return resolve(
        Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()}), options or Options()
    )


def both(options: Options | None = None, **mats):
    """The dense trace, after checking that the streamed one gives the same O(n·d) stages."""
    r = resolved(options, **mats)
    full, streamed = attention.run(r), stream.run(r, block=6)
    for name in streamed.stages:
        np.testing.assert_allclose(streamed[name], full[name], err_msg=name, **TOL)
    return full


def sample(name: str) -> dict:
    return json.loads(Path(f"samples/{name}.json").read_text())


def qkv(*args: str, stdin: str | None = None):
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


RNG = np.random.default_rng(15)


def rand(*shape):
    return RNG.standard_normal(shape)


# ---------------------------------------------------------------- RoPE


def test_rope_turns_each_pair_by_position_times_its_frequency():
    """d = 4, θ = 100: pair i = (x_i, x_{i+2}) turns by p·100^(−i/2) — written out by hand."""
    q = rand(3, 4)
    t = both(Options(rope="half", rope_theta=100.0, position_offset=5), Q=q, K=q, V=rand(3, 1))
    for row, p in enumerate((5, 6, 7)):
        for i, freq in enumerate((1.0, 0.1)):  # 100^0, 100^(−1/2)
            c, s = math.cos(p * freq), math.sin(p * freq)
            x, y = q[row, i], q[row, i + 2]
            assert t["Q_rotated"][row, i] == pytest.approx(x * c - y * s, abs=1e-14)
            assert t["Q_rotated"][row, i + 2] == pytest.approx(y * c + x * s, abs=1e-14)


def test_interleaved_is_half_with_the_features_regrouped():
    """Pairs (2i, 2i + 1) are pairs (i, i + d/2) after a fixed reordering of the features."""
    d = 6
    order = [0, 2, 4, 1, 3, 5]  # interleaved position of half-layout feature k
    q, k = rand(5, d), rand(5, d)
    half = both(Options(rope="half"), Q=q[:, order], K=k[:, order], V=rand(5, 2))
    inter = both(Options(rope="interleaved"), Q=q, K=k, V=rand(5, 2))
    np.testing.assert_allclose(inter["Q_rotated"][:, order], half["Q_rotated"], **TOL)
    np.testing.assert_allclose(inter["scores"], half["scores"], **TOL)


@pytest.mark.parametrize("pairing", ["half", "interleaved"])
def test_rope_scores_depend_only_on_the_distance(pairing):
    """Moving every position by the same offset leaves q·k unchanged (the point of RoPE)."""
    q, k, v = rand(2, 6, 8), rand(2, 6, 8), rand(2, 6, 4)
    a = both(Options(rope=pairing, heads=2), Q=q, K=k, V=v)
    b = both(Options(rope=pairing, heads=2, position_offset=1234), Q=q, K=k, V=v)
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-9, atol=1e-9)
    assert not np.allclose(a["Q_rotated"], b["Q_rotated"])


def test_partial_rotary_leaves_the_last_features_alone():
    q = rand(4, 8)
    t = both(Options(rope="half", partial_rotary_factor=0.5, heads=2), Q=q, K=q, V=rand(4, 2))
    for head in range(2):
        kept = slice(head * 4 + 2, head * 4 + 4)  # d = 4 per head, 2 rotated
        np.testing.assert_array_equal(t["Q_rotated"][:, kept], q[:, kept])
    assert t.meta["rotary_dim"] == 2


def test_position_ids_per_batch_item():
    q = rand(2, 3, 4)
    pos = np.array([[0, 1, 2], [7, 3, 9]])
    t = both(Options(rope="half"), Q=q, K=q, V=rand(2, 3, 2), position_ids=pos)
    one = both(Options(rope="half"), Q=q[1], K=q[1], V=rand(3, 2), position_ids=pos[1])
    np.testing.assert_allclose(t["Q_rotated"][1], one["Q_rotated"], **TOL)
    assert t.meta["position_ids"] == pos.tolist()


# ---------------------------------------------------------------- QK-norm


def test_qk_norm_per_head_gives_rows_of_rms_one_times_the_weight():
    q, w = rand(5, 6), np.array([1.0, 2.0, 0.5])
    t = both(Options(heads=2, qk_norm="head", rms_norm_eps=1e-12), Q=q, K=q, V=rand(5, 2), q_norm=w)
    for head in range(2):
        block = t["Q_normed"][:, head * 3 : head * 3 + 3] / w
        np.testing.assert_allclose(np.sqrt((block**2).mean(axis=1)), 1.0, rtol=1e-10)
    ratio = t["Q_normed"][:, :3] / q[:, :3]
    np.testing.assert_allclose(ratio / w, (ratio / w)[:, :1] * np.ones(3), **TOL)


def test_qk_norm_over_all_heads_is_one_norm_per_row():
    q = rand(4, 6)
    t = both(Options(heads=3, qk_norm="all", rms_norm_eps=1e-12), Q=q, K=q, V=rand(4, 3))
    np.testing.assert_allclose(np.sqrt((t["Q_normed"] ** 2).mean(axis=1)), 1.0, rtol=1e-10)


def test_gemma_unit_offset_with_zero_weights_is_weight_one():
    q = rand(4, 4)
    plain = both(Options(qk_norm="head"), Q=q, K=q, V=rand(4, 2))
    gemma = both(Options(qk_norm="head", rms_norm_unit_offset=True), Q=q, K=q, V=rand(4, 2),
                 q_norm=np.zeros(4), k_norm=np.zeros(4))  # fmt: skip
    np.testing.assert_allclose(gemma["Q_normed"], plain["Q_normed"], **TOL)
    twice = both(Options(qk_norm="head", rms_norm_unit_offset=True), Q=q, K=q, V=rand(4, 2),
                 q_norm=np.ones(4))  # fmt: skip
    np.testing.assert_allclose(twice["Q_normed"], 2 * plain["Q_normed"], **TOL)


def test_qk_norm_comes_before_rope():
    q = rand(4, 4) * 3
    t = both(Options(qk_norm="head", rope="half"), Q=q, K=q, V=rand(4, 2))
    alone = both(Options(rope="half"), Q=t["Q_normed"], K=t["K_normed"], V=rand(4, 2))
    np.testing.assert_allclose(t["Q_rotated"], alone["Q_rotated"], **TOL)
    assert t.stages["Q_rotated"].formula.startswith("Q_rotated = RoPE(Q_normed)")


# ---------------------------------------------------------------- windows and chunks


def test_sliding_window_by_hand():
    r = resolved(Options(sliding_window=2), Q=rand(4, 2), K=rand(4, 2), V=rand(4, 2))
    assert r.rules.allowed()[0, 0].astype(int).tolist() == [
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1],
    ]  # fmt: skip


def test_window_and_chunk_pieces_are_the_pieces_of_the_whole_grid():
    """The streamed path asks each block for its piece: the same cells as the whole grid."""
    q = rand(13, 2)
    r = resolved(Options(sliding_window=4, attention_chunk_size=5, mask="causal"), Q=q, K=q,
                 V=rand(13, 2), valid_lens=[9], past_key=rand(3, 2), past_value=rand(3, 2))  # fmt: skip
    whole = r.rules.allowed()[0, 0]  # (13, 16)
    assert whole.shape == (13, 16)
    for rows in (slice(0, 5), slice(5, 13)):
        for cols in (slice(0, 7), slice(7, 16)):
            np.testing.assert_array_equal(r.rules.allowed(rows, cols, 0, 0), whole[rows, cols])


def test_chunks_without_causal_see_the_whole_chunk():
    r = resolved(Options(attention_chunk_size=2), Q=rand(4, 2), K=rand(4, 2), V=rand(4, 2))
    assert r.rules.allowed()[0, 0].astype(int).tolist() == [
        [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1],
    ]  # fmt: skip


# ---------------------------------------------------------------- soft-cap


def test_softcap_is_c_tanh_of_the_scaled_scores_before_bias_and_mask():
    q, bias = rand(4, 3) * 4, rand(4, 4)
    t = both(Options(attn_logit_softcapping=2.0, mask="causal"), Q=q, K=q, V=rand(4, 2),
             attn_bias=bias)  # fmt: skip
    np.testing.assert_allclose(t["scaled"], q @ q.T / math.sqrt(3), **TOL)
    np.testing.assert_allclose(t["capped"], 2 * np.tanh(t["scaled"] / 2) + bias, **TOL)
    assert np.all(np.abs(t["capped"] - bias) <= 2)  # tanh rounds to ±1 far out
    assert t.stages["capped"].formula == "capped = 2·tanh(scaled / 2) + attn_bias"
    assert t.stages["masked"].formula == "masked = capped, −∞ where the mask blocks"


# ---------------------------------------------------------------- sinks


def test_sinks_join_each_denominator_and_drop_out():
    q, k, v = rand(5, 4), rand(5, 4), rand(5, 2)
    sinks = np.array([0.3, -2.0])
    t = both(Options(heads=2, mask="causal"), Q=q, K=k, V=v, sinks=sinks)
    logits = t["masked"]  # (2, 5, 5)
    for hh in range(2):
        e = np.exp(logits[hh])  # −∞ gives 0
        np.testing.assert_allclose(
            t["weights"][hh], e / (e.sum(axis=1, keepdims=True) + math.exp(sinks[hh])), **TOL
        )
    assert np.all(t["weights"].sum(axis=-1) < 1)


def test_a_row_with_every_key_masked_gives_all_to_the_sink():
    q = rand(3, 2)
    t = both(Options(), Q=q, K=q, V=rand(3, 2), sinks=[1.0], valid_lens=[[0, 2, 3]])
    assert t["weights"][0].tolist() == [0.0, 0.0, 0.0]
    assert t["output"][0].tolist() == [0.0, 0.0]


def test_streamed_logsumexp_counts_the_sink():
    q = rand(6, 2)
    r = resolved(Options(), Q=q, K=q, V=rand(6, 2), sinks=[0.7])
    lse = stream.run(r, block=4).stats["row_logsumexp"]
    s = attention.run(r)["scaled"]
    want = np.log(np.exp(s).sum(axis=1) + math.exp(0.7))
    np.testing.assert_allclose(lse, want, **TOL)


def test_a_huge_sink_does_not_overflow_the_streamed_sum():
    q = rand(6, 2)
    t = both(Options(), Q=q, K=q, V=rand(6, 2), sinks=[800.0])
    assert np.all(np.isfinite(t["output"])) and np.all(t["weights"] < 1e-300)


# ---------------------------------------------------------------- ALiBi


def test_alibi_adds_slope_times_distance_and_its_slopes_for_three_heads():
    q = rand(4, 6)
    t = both(Options(heads=3, alibi=True, mask="causal"), Q=q, K=q, V=rand(4, 3))
    plain = both(Options(heads=3, mask="causal"), Q=q, K=q, V=rand(4, 3))
    slopes = [1 / 16, 1 / 256, 1 / 4]
    assert t.meta["alibi_slopes"] == slopes
    dist = np.arange(4)[None, :] - np.arange(4)[:, None]  # j − i
    for hh, m in enumerate(slopes):
        np.testing.assert_allclose(t["scaled"][hh] - plain["scaled"][hh], m * dist, **TOL)


def test_alibi_without_causal_streams_with_later_keys_lifted():
    q = rand(9, 2) * 3
    both(Options(alibi=True, heads=2), Q=q, K=q, V=rand(9, 2))


# ---------------------------------------------------------------- the decode step


DECODE = [
    Options(heads=2, kv_heads=1),
    Options(heads=2, rope="half", rope_theta=500.0),
    Options(heads=2, kv_heads=1, rope="interleaved", qk_norm="head", rms_norm_unit_offset=True),
    Options(heads=2, qk_norm="all", sliding_window=3),
    Options(heads=2, attention_chunk_size=3, alibi=True, attn_logit_softcapping=1.5),
    Options(heads=2, rope="half", partial_rotary_factor=0.5, scale=-0.7),
]


@pytest.mark.parametrize("options", DECODE)
@pytest.mark.parametrize("past", [1, 4])
def test_decode_step_is_the_last_rows_of_the_full_causal_pass(options, past):
    """Cache = the full pass's keys as the scores used them and its values."""
    n, new = past + 3, 3
    x = rand(2, n, 5)
    g = options.kv_heads or 2  # K/V heads of the two query heads
    mats = {"X": x, "W_Q": rand(5, 8), "W_K": rand(5, g * 4), "W_V": rand(5, g * 3),
            "sinks": [0.5, -0.5]}  # fmt: skip
    full = both(Options(**{**options.__dict__, "mask": "causal"}), **mats)
    keys = next(full[s] for s in ("K_rotated", "K_normed", "K") if s in full.stages)
    step = both(options, **(mats | {"X": x[:, past:], "past_key": keys[:, :past],
                                     "past_value": full["V"][:, :past]}))  # fmt: skip
    np.testing.assert_allclose(step["output"], full["output"][:, past:], **TOL)
    np.testing.assert_allclose(step["weights"], full["weights"][:, :, past:], **TOL)
    assert step.meta["past_length"] == past and step.meta["mask"][0] == "causal"
    assert step["K"].shape == full["K"].shape == (2, n, keys.shape[-1])
    assert new == step["Q"].shape[1]


def test_decode_labels_show_the_cache_apart():
    code, out, _ = qkv("compute", "samples/decode.json", "--stage", "weights")
    assert code == 0
    assert "│ down │" in out and "c1" in out and "c3" in out
    assert "1 query × 4 keys (3 from the KV cache)" in out
    code, out, _ = qkv("compute", "samples/decode.json", "--stage", "K")
    assert "K = [past_key; X·W_K] (3 cached rows first) (4×4)" in out


def test_decode_sample_equals_the_causal_run_of_all_four_tokens():
    doc = sample("decode")
    # the cache is X[:3]·W_K and X[:3]·W_V of the worked example's first three tokens
    full = both(Options(mask="causal"), X=np.vstack([[[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]],
                                                     doc["X"]]),
                W_Q=doc["W_Q"], W_K=doc["W_K"], W_V=doc["W_V"])  # fmt: skip
    _, out, _ = qkv("compute", "samples/decode.json", "-f", "json", "--stage", "output")
    np.testing.assert_allclose(json.loads(out)["output"], full["output"][3:], **TOL)
    _, rope, _ = qkv("compute", "samples/rope.json", "-f", "json", "--stage", "output")
    _, step, _ = qkv("compute", "samples/decode_rope.json", "-f", "json", "--stage", "output")
    np.testing.assert_allclose(json.loads(step)["output"], json.loads(rope)["output"][3:], **TOL)


# ---------------------------------------------------------------- scale


def test_a_negative_scale_streams_like_the_dense_path():
    q = rand(20, 4) * 5
    t = both(Options(scale=-0.5, mask="causal"), Q=q, K=rand(20, 4) * 5, V=rand(20, 2))
    np.testing.assert_allclose(t["scaled"], -0.5 * t["scores"], **TOL)
    code, out, _ = qkv("compute", "samples/worked_example.json", "--scale", "-0.25")
    assert code == 0 and "scale given = -0.25" in out


# ---------------------------------------------------------------- CLI, files and refusals


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_runs_dense_and_streamed_to_the_same_output(name):
    code, dense, err = qkv("compute", f"samples/{name}.json", "-f", "json", "--stage", "output")
    assert code == 0, err
    code, streamed, err = qkv("compute", f"samples/{name}.json", "-f", "json", "--stream")
    assert code == 0, err
    np.testing.assert_allclose(json.loads(streamed)["output"], json.loads(dense)["output"], **TOL)


def test_json_meta_uses_the_hugging_face_names():
    code, out, _ = qkv("compute", "samples/qk_norm.json", "-f", "json")
    meta = json.loads(out)["meta"]
    assert code == 0
    assert meta["rope"] == "half" and meta["rope_theta"] == 10000.0
    assert meta["qk_norm"] == "head" and meta["rms_norm_eps"] == 1e-6
    assert meta["stages"][:7] == ["Q", "K", "V", "Q_normed", "K_normed", "Q_rotated", "K_rotated"]
    for key in ("partial_rotary_factor", "sliding_window", "attention_chunk_size",
                "attn_logit_softcapping", "sinks", "alibi", "past_length"):  # fmt: skip
        assert key in meta


def test_options_equal_the_file_keys():
    by_file = qkv("compute", "samples/softcap.json", "-f", "json")[1]
    doc = sample("softcap")
    del doc["attn_logit_softcapping"]
    by_option = qkv("compute", "-", "--attn-logit-softcapping", "1", "-f", "json",
                    stdin=json.dumps(doc))[1]  # fmt: skip
    a, b = json.loads(by_file), json.loads(by_option)
    assert a["weights"] == b["weights"] and a["meta"]["attn_logit_softcapping"] == 1.0
    code, out, _ = qkv("compute", "samples/worked_example.json", "--rope", "half", "--sinks",
                       "0.5", "--alibi", "--sliding-window", "2", "--qk-norm", "head",
                       "--q-norm", "1,2,3", "-f", "json")  # fmt: skip
    assert code == 2  # d_k = 3: rope needs an even number of features
    code, out, err = qkv("compute", "samples/multihead.json", "--rope", "interleaved",
                         "--position-ids", "3,1,2", "--sinks", "0.5,-1", "--alibi",
                         "--attention-chunk-size", "2", "--qk-norm", "all",
                         "--k-norm", "1,2,3,4", "--rms-norm-eps", "1e-5",
                         "--rms-norm-unit-offset", "-f", "json")  # fmt: skip
    assert code == 0, err
    meta = json.loads(out)["meta"]
    assert meta["position_ids"] == [[3, 1, 2]] and meta["sinks"] == [0.5, -1.0]
    assert meta["alibi"] is True and meta["attention_chunk_size"] == 2
    assert meta["rms_norm_unit_offset"] is True and meta["rms_norm_eps"] == 1e-5


def test_alibi_true_and_an_alibi_matrix_both_read():
    code, out, _ = qkv("compute", "samples/alibi.json", "-f", "json")
    assert code == 0 and json.loads(out)["meta"]["keys"]["attn_bias"] == "attn_bias"
    doc = sample("worked_example") | {"alibi": True}
    code, out, _ = qkv("compute", "-", "-f", "json", stdin=json.dumps(doc))
    assert code == 0 and json.loads(out)["meta"]["alibi_slopes"] == [2**-8]


def test_null_settings_from_a_config_are_off():
    doc = sample("worked_example")
    doc |= {"sliding_window": None, "rope": None, "attn_logit_softcapping": None}
    code, out, _ = qkv("compute", "-", "-f", "json", stdin=json.dumps(doc))
    assert code == 0 and json.loads(out)["meta"]["sliding_window"] is None


def test_the_header_names_every_variant_in_force():
    cases = {
        "rope_interleaved": "RoPE interleaved (θ 10000, position_ids, 2 of 4 features); masks: causal",
        "sliding_window": "masks: sliding window 3",
        "chunked": "masks: causal, chunks of 3",
        "qk_norm": "RoPE half (θ 10000, positions 0…3); QK-norm per head (eps 1e-06); masks: causal",
        "softcap": "soft-cap 1; masks: causal",
        "sinks": "sinks (weights sum to < 1); masks: causal",
        "alibi_heads": "ALiBi (slopes 0.0625, 0.00390625, 0.25); masks: causal",
        "decode_rope": "RoPE half (θ 10000, position 3); masks: causal",
    }
    for name, line in cases.items():
        code, out, _ = qkv("compute", f"samples/{name}.json")
        assert code == 0 and line in out.splitlines(), (name, out.splitlines()[:3])


BAD = [
    (["--rope", "sideways"], "qkv: error: --rope must be half or interleaved, not 'sideways'"),
    (
        ["--sliding-window", "0"],
        "qkv: error: --sliding-window must be a positive whole number, not 0",
    ),
    (
        ["--rope-theta", "100"],
        "qkv: error: --rope-theta is set but --rope is not: add --rope half (Llama) or --rope interleaved (GPT-J)",
    ),
    (
        ["--position-ids", "0,1,2"],
        "qkv: error: --position-ids is set but --rope is not: add --rope half (Llama) or --rope interleaved (GPT-J)",
    ),
    (
        ["--rope", "half"],
        "qkv: error: samples/worked_example.json: rope rotates pairs of features: partial_rotary_factor 1 × d_k 3 gives 3, not an even number ≥ 2",
    ),
    (
        ["--q-norm", "1,2"],
        "qkv: error: --q-norm is set but --qk-norm is not: add --qk-norm head (Qwen3, Gemma 3) or --qk-norm all (OLMo 2)",
    ),
    (
        ["--qk-norm", "head", "--q-norm", "1,2"],
        "qkv: error: samples/worked_example.json: --q-norm has 2 values but qk_norm head needs 3 (d_k = 3)",
    ),
    (
        ["--sinks", "1,2"],
        "qkv: error: samples/worked_example.json: --sinks has 2 values but there is 1 head (one sink logit per query head)",
    ),
    (
        ["--sinks", "1", "--normalize", "sigmoid"],
        "qkv: error: --sinks adds a sink to the softmax's denominator: not with --normalize sigmoid",
    ),
    (
        ["--past-key", "samples/csv/X.csv"],
        "qkv: error: samples/worked_example.json: past_key (samples/csv/X.csv) is given but past_value is missing: a KV cache holds both",
    ),
    (
        ["--attn-logit-softcapping", "-1"],
        "qkv: error: --attn-logit-softcapping must be a positive finite number, not -1",
    ),
    (
        ["--qk-norm", "head", "--exact"],
        "qkv: error: exact arithmetic keeps the linear stages as fractions: --qk-norm needs cosines, square roots or tanh; drop --exact",
    ),
    (
        ["--partial-rotary-factor", "1.5", "--rope", "half"],
        "qkv: error: --partial-rotary-factor must be a number in (0, 1], not 1.5",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_variant_input_is_one_line_and_exit_2(args, message):
    code, out, err = qkv("compute", "samples/worked_example.json", *args)
    assert (code, out, err) == (2, "", message + "\n")


def test_rope_refuses_cross_attention_and_unequal_keys():
    with pytest.raises(ShapeError, match="rope rotates a sequence against itself: not with X_kv"):
        resolved(Options(rope="half"), X=rand(3, 2), X_kv=rand(4, 2), W_Q=rand(2, 2),
                 W_K=rand(2, 2), W_V=rand(2, 2))  # fmt: skip
    with pytest.raises(ShapeError, match="3 queries and 4 new keys"):
        resolved(Options(rope="half"), Q=rand(3, 2), K=rand(4, 2), V=rand(4, 2))
    with pytest.raises(ShapeError, match="not with X_kv"):
        resolved(Options(), X=rand(3, 2), X_kv=rand(4, 2), W_Q=rand(2, 2), W_K=rand(2, 2),
                 W_V=rand(2, 2), past_key=rand(1, 2), past_value=rand(1, 2))  # fmt: skip
    with pytest.raises(OptionError, match="position_ids and position_offset are both given"):
        resolved(Options(rope="half", position_offset=2), Q=rand(3, 2), K=rand(3, 2),
                 V=rand(3, 2), position_ids=[0, 1, 2])  # fmt: skip
    with pytest.raises(ShapeError, match="past_key has 3 columns but K has 2"):
        resolved(Options(), Q=rand(3, 2), K=rand(3, 2), V=rand(3, 2), past_key=rand(1, 3),
                 past_value=rand(1, 2))  # fmt: skip


def test_every_error_of_a_variant_is_a_qkv_error():
    """Random bad combinations never escape as a traceback."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        opts = {"rope": rng.choice([None, "half"]), "qk_norm": rng.choice([None, "head", "all"]),
                "sliding_window": rng.choice([None, 2]), "heads": int(rng.choice([1, 2]))}  # fmt: skip
        opts = {k: (v.item() if hasattr(v, "item") else v) for k, v in opts.items()}
        d = int(rng.integers(1, 5))
        mats = {"Q": rand(3, d), "K": rand(int(rng.integers(2, 4)), d), "V": rand(3, 2)}
        if rng.random() < 0.5:
            mats["q_norm"] = rand(int(rng.integers(1, 5)))
        if rng.random() < 0.3:
            mats["sinks"] = rand(int(rng.integers(1, 3)))
        with contextlib.suppress(QkvError):
            both(Options(**opts, empty_rows="zero"), **mats)


@pytest.mark.slow
def test_streamed_variants_keep_memory_linear():
    """n = 4096 with a window, chunks, ALiBi, sinks, a soft-cap and RoPE: far below one n×n."""
    import tracemalloc

    n = 4096
    q = rand(n, 8)
    r = resolved(Options(sliding_window=64, attention_chunk_size=1024, alibi=True, rope="half",
                         attn_logit_softcapping=30.0, heads=2), Q=q, K=q, V=rand(n, 4),
                 sinks=[0.5, 1.0])  # fmt: skip
    tracemalloc.start()
    stream.run(r)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * n * 8 / 8  # one n×n float64 would be 128 MiB; the blocks need a few
