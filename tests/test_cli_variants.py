"""``qkv compute`` with every variant: the samples, the options, and each bad input's exact message."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import reference
from typer.testing import CliRunner

from qkvcli.cli import app

WORKED = "samples/worked_example.json"


def qkv(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["compute", *args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def as_json(*args: str) -> dict:
    doc = json.loads(qkv(*args, "--format", "json").stdout)
    return {k: (np.array(v, dtype=float) if k != "meta" else v) for k, v in doc.items()}


def same(a: dict, b: dict, stages=("weights", "output")) -> None:
    for name in stages:
        np.testing.assert_array_equal(a[name], b[name])


def plain(tmp_path, sample: str, keep: tuple[str, ...], change=None) -> str:
    """A copy of ``sample`` with only the keys ``keep`` (optionally changed): the option's input."""
    with open(sample) as fh:
        doc = {k: v for k, v in json.load(fh).items() if k in keep}
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(change(doc) if change else doc))
    return str(path)


def load(sample: str) -> dict:
    with open(sample) as fh:
        return json.load(fh)


def error(*args: str) -> str:
    result = qkv(*args, code=2)
    assert result.stdout == ""
    return result.stderr


# ---------------------------------------------------------------- each variant, from a sample and from options


def test_multihead_sample_has_a_head_axis_and_w_o():
    doc = as_json("samples/multihead.json")
    shapes = doc["meta"]["shapes"]
    assert shapes["scores"] == shapes["weights"] == [2, 3, 3]  # (heads, queries, keys)
    assert (
        shapes["head_outputs"] == [2, 3, 2]
        and shapes["concat"] == [3, 4]
        and shapes["output"] == [3, 4]
    )
    np.testing.assert_allclose(
        doc["output"], doc["concat"] @ np.array(load("samples/multihead.json")["W_O"]), atol=1e-12
    )
    assert list(doc)[1:] == [
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


def test_heads_and_wo_from_options_equal_the_sample(tmp_path):
    path = plain(tmp_path, "samples/multihead.json", ("X", "W_Q", "W_K", "W_V", "tokens"))
    same(
        as_json(path, "--heads", "2", "--wo", "samples/variants/W_O.csv"),
        as_json("samples/multihead.json"),
    )


def test_grouped_query_from_options():
    base = as_json("samples/grouped_query.json")
    assert base["meta"]["heads"] == 4 and base["meta"]["kv_heads"] == 2
    assert base["meta"]["shapes"]["weights"] == [4, 3, 3]
    same(as_json("samples/grouped_query.json", "--heads", "4", "--kv-heads", "2"), base)
    # K/V head 1 (columns 1-2 of K, column 1-2 of V) serves query heads 1 and 2
    np.testing.assert_array_equal(base["scores"][1], base["Q"][:, 2:4] @ base["K"][:, 0:2].T)
    np.testing.assert_array_equal(base["scores"][2], base["Q"][:, 4:6] @ base["K"][:, 2:4].T)
    assert error("samples/grouped_query.json", "--kv-heads", "1") == (
        "qkv: error: samples/grouped_query.json: K has 4 columns but --kv-heads 1 with d_k=2 per head needs 2\n"
    )


def test_causal_option_equals_the_causal_sample_and_shows_the_masked_stage():
    same(as_json(WORKED, "--mask", "causal"), as_json("samples/causal.json"))
    lines = qkv("samples/causal.json", "--stage", "masked").stdout.splitlines()
    assert lines[1] == "masks: causal"
    # scaled = the worked example's scores 2, 4, 16, 12, 10 over √3; −∞ above the diagonal
    assert lines[-7:] == [
        "┏━━━━┳━━━━━━━━┳━━━━━━━━┳━━━━━━━━┓",
        "┃    ┃     x1 ┃     x2 ┃     x3 ┃",
        "┡━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━┩",
        "│ x1 │ 1.1547 │     −∞ │     −∞ │",
        "│ x2 │ 2.3094 │ 9.2376 │     −∞ │",
        "│ x3 │ 2.3094 │ 6.9282 │ 5.7735 │",
        "└────┴────────┴────────┴────────┘",
    ]


def test_causal_lower_right_aligns_the_last_query_with_the_last_key():
    args = ("samples/cross_attention.json", "--mask", "causal-lower-right", "--stage", "masked")
    doc = json.loads(qkv(*args, "-f", "json").stdout)
    assert [[v is None for v in row] for row in doc["masked"]] == [
        [False, False, True],
        [False, False, False],
    ]
    assert doc["meta"]["mask"] == ["causal-lower-right"]


def test_explicit_mask_csv_equals_the_sample_and_block_polarity_flips_it():
    same(
        as_json(WORKED, "--mask", "samples/variants/mask.csv"),
        as_json("samples/explicit_mask.json"),
    )
    flipped = as_json("samples/explicit_mask.json", "--mask-polarity", "block")
    assert (
        flipped["weights"][np.array(load("samples/explicit_mask.json")["mask"]) == 1] == 0
    ).all()


def test_mask_option_replaces_the_files_mask():
    same(as_json("samples/explicit_mask.json", "--mask", "causal"), as_json("samples/causal.json"))
    same(
        as_json("samples/causal.json", "--mask", "samples/variants/mask.csv"),
        as_json("samples/explicit_mask.json"),
    )


def test_valid_lens_sample_and_option():
    doc = as_json("samples/padding.json")
    assert doc["meta"]["shapes"]["weights"] == [2, 3, 3]  # (batch, queries, keys)
    assert (doc["weights"][0][:, 2] == 0).all() and (doc["weights"][1] > 0).all()
    same(as_json("samples/padding.json", "--valid-lens", "2,3"), doc)
    short = as_json("samples/padding.json", "--valid-lens", "1,1")
    assert short["weights"][:, :, 0].tolist() == [[1, 1, 1], [1, 1, 1]]


def test_attn_bias_csv_equals_the_alibi_sample():
    alibi = as_json("samples/alibi.json")
    same(as_json(WORKED, "--attn-bias", "samples/variants/alibi.csv"), alibi)
    # By hand for x2: scaled scores 4/√3 and 16/√3 (the worked example), bias -0.5 and 0.
    a, b = 4 / math.sqrt(3) - 0.5, 16 / math.sqrt(3)
    np.testing.assert_allclose(
        alibi["weights"][1],
        [math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b)), 0],
        atol=1e-15,
    )


def test_cross_attention_sample_and_memory_option(tmp_path):
    doc = as_json("samples/cross_attention.json")
    assert doc["meta"]["n_queries"] == 2 and doc["meta"]["n_keys"] == 3
    assert doc["meta"]["kv_tokens"] == ["the", "black", "cat"]
    sample = load("samples/cross_attention.json")
    Q, K, V = (
        reference.matmul(sample[s], sample[w])
        for s, w in (("X", "W_Q"), ("memory", "W_K"), ("memory", "W_V"))
    )
    np.testing.assert_allclose(doc["output"], reference.attention(Q, K, V)["output"], atol=1e-12)
    path = plain(tmp_path, "samples/cross_attention.json", ("X", "W_Q", "W_K", "W_V"))
    via_option = as_json(path, "--memory", "samples/variants/memory.csv", "--tokens", "le,chat")
    same(via_option, doc)
    assert via_option["meta"]["kv_tokens"] == ["the", "black", "cat"]  # the CSV's first column
    same(as_json(path, "--x-kv", "samples/variants/memory.csv"), doc)


def test_biases_sample_adds_b_to_every_row():
    doc = as_json("samples/biases.json")
    base = as_json(WORKED)
    np.testing.assert_array_equal(doc["Q"] - base["Q"], [[1, 0, -1]] * 3)
    np.testing.assert_array_equal(doc["V"] - base["V"], [[0.5, 0, 0.5]] * 3)


def test_torch_state_dict_sample_reads_out_in_weights():
    out = qkv("samples/torch_state_dict.json", "--stage", "output").stdout
    assert out.splitlines()[0].endswith("layout rows, weights out-in; scale 1/√2 = 0.707107")
    assert out.splitlines()[1] == "masks: key_padding_mask (1 = blocked)"
    assert "W_Q ← in_proj_weight[0:4]" in out and "output = concat·W_Oᵀ + b_O" in out
    assert error("samples/torch_state_dict.json", "--weights-layout", "in-out") == (
        "qkv: error: in_proj_weight holds PyTorch (out, in) weights: not with --weights-layout in-out\n"
    )


def test_a_state_dict_without_heads_says_it_computes_one_head(tmp_path):
    doc = load("samples/torch_state_dict.json")
    del doc["heads"]
    f = tmp_path / "sd.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    result = qkv(str(f), "-f", "json")
    assert json.loads(result.stdout)["meta"]["heads"] == 1
    assert result.stderr == (
        f"qkv: note: {f}: a PyTorch state dict does not say how many heads it has: computed as 1 "
        'head; give nn.MultiheadAttention\'s num_heads as --heads N (or "heads": N)\n'
    )
    quiet = qkv(str(f), "--heads", "2", "-f", "json")
    assert quiet.stderr == "" and json.loads(quiet.stdout)["meta"]["heads"] == 2


def test_weights_layout_out_in_is_the_transpose(tmp_path):
    def transpose(doc):
        return {k: np.array(v).T.tolist() if k.startswith("w_") else v for k, v in doc.items()}

    path = plain(tmp_path, WORKED, ("X", "w_query", "w_key", "w_value"), transpose)
    same(as_json(path, "--weights-layout", "out-in"), as_json(WORKED))


def test_x_beside_q_k_v_is_unused_and_a_note_says_so(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(load("samples/qkv_direct.json") | {"X": [[1, 2], [3, 4], [5, 6]]}))
    result = qkv(str(f), "-f", "json")
    same(json.loads(result.stdout), json.loads(qkv("samples/qkv_direct.json", "-f", "json").stdout))
    assert result.stderr == (
        f"qkv: note: {f}: X not used: Q, K and V are given directly (drop X, or give the weights "
        "instead)\n"
    )


def test_one_transposed_w_is_named_not_sent_round_the_layouts(tmp_path):
    doc = load(WORKED)
    doc["w_query"] = [list(r) for r in zip(*doc["w_query"])]  # only W_Q transposed
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    assert error(str(f)) == (
        f"qkv: error: {f}: W_Q (w_query) is 3×4 but X has 4 columns: it fits transposed, but W_K "
        "and W_V fit as they are: transpose W_Q itself (--weights-layout out-in would turn every W)\n"
    )
    out_in = {
        k: [list(r) for r in zip(*v)] if k.startswith("w_") else v for k, v in load(WORKED).items()
    }
    f.write_text(json.dumps(out_in))  # every W transposed: the layout is the answer, and it works
    assert error(str(f)).endswith("did you mean its transpose (--weights-layout out-in)?\n")
    same(as_json(str(f), "--weights-layout", "out-in"), as_json(WORKED))


def test_cosine_and_sigmoid_samples_and_options():
    same(
        as_json(WORKED, "--similarity", "cosine", "--scale", "none", "--temperature", "0.5"),
        as_json("samples/cosine.json"),
    )
    cos = as_json("samples/cosine.json")
    q, k = cos["Q"], cos["K"]
    np.testing.assert_allclose(
        cos["scores"][0, 1], q[0] @ k[1] / np.linalg.norm(q[0]) / np.linalg.norm(k[1]), atol=1e-15
    )
    sig = as_json("samples/sigmoid.json")
    np.testing.assert_allclose(
        sig["weights"][0], [1 / (1 + math.exp(-s / math.sqrt(2))) for s in (1, 0, -1)], atol=1e-15
    )
    assert as_json("samples/sigmoid.json", "--normalize", "softmax")["weights"].sum(axis=1).round(
        12
    ).tolist() == [1, 1, 1]


def test_batch_sample_labels_each_item_and_keeps_the_batch_axis():
    doc = as_json("samples/batch.json")
    assert doc["meta"]["batch"] == 2 and doc["meta"]["shapes"]["output"] == [2, 3, 3]
    same({k: v[0] for k, v in doc.items() if k != "meta"}, as_json(WORKED))
    out = qkv("samples/batch.json", "--stage", "weights").stdout
    assert "weights [item 1]" in out and "weights [item 2]" in out
    both = as_json("samples/batch.json", "--heads", "3")
    assert both["meta"]["shapes"]["weights"] == [2, 3, 3, 3]  # (batch, heads, queries, keys)


def test_empty_rows_options():
    zero = as_json(WORKED, "--valid-lens", "0,2,3", "--empty-rows", "zero")
    assert zero["output"][0].tolist() == [0, 0, 0]
    nan = json.loads(
        qkv(WORKED, "--valid-lens", "0,2,3", "--empty-rows", "nan", "-f", "json").stdout
    )
    assert nan["output"][0] == [None, None, None]
    uniform = as_json(WORKED, "--valid-lens", "0,2,3", "--empty-rows", "uniform")
    np.testing.assert_allclose(uniform["weights"][0], [1 / 3] * 3, atol=1e-15)
    table = qkv(WORKED, "--valid-lens", "0,2,3", "--empty-rows", "nan", "--stage", "weights").stdout
    assert "│ x1 │    NaN │    NaN │    NaN │    NaN │" in table


# ---------------------------------------------------------------- bad input, exact messages


@pytest.mark.parametrize(
    "args, message",
    [
        ((WORKED, "--mask", "tests/data/mask_2x2.csv"), "samples/worked_example.json: mask is 2×2 but the scores are 3×3 (queries × keys)"),
        ((WORKED, "--heads", "2"), "samples/worked_example.json: --heads 2 does not divide d_k=3 (Q has 3 columns)"),
        (("samples/multihead.json", "--heads", "4", "--kv-heads", "3"), "samples/multihead.json: --kv-heads 3 does not divide --heads 4"),
        (("samples/multihead.json", "--wo", "tests/data/W_O_2x4.csv"),
         "samples/multihead.json: W_O (tests/data/W_O_2x4.csv) is 2×4 but concat has 4 columns (heads × d_v = 2×2): W_O needs 4 rows; "
         "did you mean its transpose (--weights-layout out-in)?"),
        ((WORKED, "--wo", "samples/variants/W_O.csv"),
         "samples/worked_example.json: W_O (samples/variants/W_O.csv) is 4×4 but concat has 3 columns (heads × d_v = 1×3): W_O needs 3 rows"),
        ((WORKED, "--mask", "tests/data/mask_row1_empty.csv"),
         "every key is masked for query row 1 (x1): softmax over no keys is undefined "
         "(--empty-rows nan|zero|uniform fills such rows as frameworks do)"),
        (("samples/batch.json", "--heads", "3", "--valid-lens", "3,0"),
         "every key is masked for query row 1, head 1, batch item 2: softmax over no keys is undefined "
         "(--empty-rows nan|zero|uniform fills such rows as frameworks do)"),
        ((WORKED, "--mask", "casual"), "--mask must be causal, causal-lower-right or a CSV file of 0/1, not 'casual' (did you mean causal?)"),
        ((WORKED, "--mask", "nosuch.csv"), "--mask must be causal, causal-lower-right or a CSV file of 0/1, not 'nosuch.csv' (no such file)"),
        ((WORKED, "--mask", "tests/data/mask_2x2.csv", "--mask-polarity", "yes"), "--mask-polarity must be attend or block, not 'yes'"),
        ((WORKED, "--valid-lens", "2,x"), "--valid-lens: 'x' is not a number"),
        ((WORKED, "--valid-lens", "4"), "samples/worked_example.json: valid_lens must be whole numbers from 0 to 3 (the number of keys)"),
        ((WORKED, "--empty-rows", "maybe"), "--empty-rows must be error, nan, zero or uniform, not 'maybe'"),
        ((WORKED, "--similarity", "cos"), "--similarity must be dot or cosine, not 'cos' (did you mean cosine?)"),
        ((WORKED, "--normalize", "max"), "--normalize must be softmax or sigmoid, not 'max' (did you mean softmax?)"),
        ((WORKED, "--weights-layout", "io"), "--weights-layout must be in-out or out-in, not 'io'"),
        ((WORKED, "--temperature", "0"), "--temperature must be a positive finite number, not 0"),
        ((WORKED, "--heads", "0"), "--heads must be a positive whole number, not 0"),
        ((WORKED, "--tokens", "a,b"), "samples/worked_example.json: --tokens has 2 labels but there are 3 queries"),
        ((WORKED, "--weights-layout", "out-in"),
         "samples/worked_example.json: W_Q (w_query) is 4×3 but X has 4 columns (weights layout out-in: W_Q must be d_k×4): "
         "did you mean its transpose (--weights-layout in-out)?"),
        ((WORKED, "--attn-bias", "tests/data/mask_2x2.csv"), "samples/worked_example.json: attn_bias is 2×2 but the scores are 3×3 (queries × keys)"),
        (("samples/cosine.json", "--x", "tests/data/X_zero_row.csv"),
         "Q row 2 is all zeros: its cosine similarity is undefined"),
    ],
)  # fmt: skip
def test_bad_variant_input_has_one_exact_line(args, message):
    assert error(*args) == f"qkv: error: {message}\n"
